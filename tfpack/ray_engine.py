"""`--engine ray`: the parallel stages on Ray Data instead of in-process loops.

Embedding runs as `map_batches` over an actor pool (one model replica per actor; one GPU each, fp16, when the
cluster has GPUs), tokenizing as `map_batches` CPU tasks; both read `samples.parquet` with Ray's Parquet reader.
Batches are cut at the same `batch_size` boundaries as the local engine and the output order is preserved, so the
results are those of the local engine: identical token ids and labels, embeddings equal within float tolerance.
Inputs are read by Ray tasks, one per input file (samples.ingest; stdin is read on the driver), shards are written
by Ray tasks (pack.write_packs) and `--buckets` walks run as Ray tasks (buckets.py); the global walk stays on the
driver (it is sequential by nature). Connects to `RAY_ADDRESS` when set (an
existing cluster), else starts a local Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tfpack.errors import DependencyError


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise DependencyError("--engine ray needs Ray Data; run `pip install 'tfpack[ray]'` (ray[data])") from e
    return ray


def ensure_ray() -> Any:
    """Initialised Ray (the cluster at RAY_ADDRESS, else local), quiet, with ordered Ray Data output."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    return ray


def _conversations(batch: dict[str, Any]) -> list[Any]:
    from tfpack.ingest.samples import as_conversations

    tools = batch.get("tools")
    return as_conversations(list(batch["turns"]), None if tools is None else list(tools))


class EmbedWorker:
    """Ray actor: one model replica; maps a batch of samples to their embeddings."""

    def __init__(self, config: dict[str, Any]) -> None:
        from tfpack.config import EmbedConfig
        from tfpack.embedding.stage import load_encoder, text_selector

        cfg = EmbedConfig(**config)
        self.model, self.resolved = load_encoder(cfg)
        self.select = text_selector(cfg.embed_on)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from tfpack.embedding.stage import encode_texts

        texts = [self.select(c.turns) for c in _conversations(batch)]
        vectors = encode_texts(self.model, texts, self.resolved["batch_size"])
        return {"sample_id": np.asarray(batch["sample_id"]), "embedding": vectors}


class TokenizeWorker:
    """Ray task body: renders and tokenizes a batch of samples (ids, labels, prompt length, refusal per sample)."""

    def __init__(self, tokenizer: str | None, template: str | None, train_on: str) -> None:
        from tfpack.packing.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer, template)
        self.train_on = train_on

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from tfpack.packing.tokenizer import Refusal, tokenize_batch

        out = tokenize_batch(_conversations(batch), self.tokenizer, self.train_on)
        empty = np.zeros(0, dtype=np.int32)
        done = [(empty, empty, 0, r.reason) if isinstance(r, Refusal) else (*r, "") for r in out]
        return {"sample_id": np.asarray(batch["sample_id"]), "input_ids": [d[0] for d in done],
                "labels": [d[1] for d in done], "prompt_len": np.asarray([d[2] for d in done]),
                "refusal": np.asarray([d[3] for d in done], dtype=object)}


def map_samples(samples_file: Path, worker: type, kwargs: dict[str, Any], batch_size: int, actors: int,
                num_gpus: float = 0) -> Iterator[dict[str, Any]]:
    """Run `worker` over `samples_file` in batches of `batch_size` on `actors` actors; yield outputs in order."""
    ray = ensure_ray()
    ds = ray.data.read_parquet(str(samples_file))
    ds = ds.select_columns([c for c in ("sample_id", "turns", "tools") if c in ds.schema().names])
    mapped = ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                            concurrency=actors, num_gpus=num_gpus)
    yield from mapped.iter_batches(batch_size=None, batch_format="numpy")


def read_inputs(paths: list[str], options: Any, on_error: str, parts_dir: Path) -> list[Any]:
    """Read each input in its own Ray task (samples.read_input) into `parts_dir`; the parts, in input order.

    Input paths and `parts_dir` must be visible to every node (a shared file system) on a multi-node cluster.
    """
    from tfpack.ingest.samples import read_input

    ray = ensure_ray()
    task = ray.remote(num_cpus=1, max_retries=0)(read_input)
    refs = [task.remote(path, i, options, on_error, parts_dir.resolve() / f"{i}.parquet")
            for i, path in enumerate(paths)]
    return list(ray.get(refs))


def actor_count(num_gpus: float) -> int:
    """One actor per GPU when embedding on GPUs; else one per CPU but one, which stays free for Ray Data's read
    tasks (actors holding every CPU would starve the reader and stall the pipeline)."""
    ray = ensure_ray()
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) - 1)
