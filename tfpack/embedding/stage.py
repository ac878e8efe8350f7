"""`tfpack embed`: ingest the inputs into `samples.parquet`, then one L2-normalised embedding per sample.

Embeddings (`[N, d]` float32 or float16 `.npy`) come from a model (`encoders`) or from the user's own `.npy`, and are
written chunk by chunk into `embeddings.npy.partial`, each chunk's completion recorded so that `--resume` continues
an interrupted run; the manifest is written last.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack.arrays import first_bad_row, unit_rows
from tfpack.config import DEFAULT_MODEL, STATIC_FROM_SAMPLES, EmbedConfig, check_on_error
from tfpack.embedding.encoders import check_embeddings, embedding_dim, encode_texts, load_encoder, text_selector
from tfpack.embedding.models import STATIC, resolve_backend, resolve_device, resolve_model, static_source
from tfpack.embedding.routes import MEASURE_TEXTS, choose_backend
from tfpack.errors import ConfigError, InputError, StaleArtifactError, note
from tfpack.ingest.formats import FormatOptions, Turn
from tfpack.ingest.readers import STDIN, expand_inputs
from tfpack.ingest.samples import batch_conversations, count_samples, has_multi_turn, ingest, iter_sample_batches
from tfpack.parallel import RayEngine, engine_for
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.version import __version__
from tfpack.workdir import (
    EMBEDDINGS_FILE,
    ERRORS_FILE,
    MANIFEST,
    PARTIAL_FILE,
    PROGRESS_FILE,
    SAMPLES_FILE,
    check_apart,
    check_out_dir,
    fingerprint_file,
    prepare_out_dir,
    rerun_embed,
    write_json,
    write_jsonl,
    write_manifest,
)

_CHUNK = 1024


VectorsFor = Callable[[int, list[tuple[Turn, ...]]], NDArray[np.float32]]


def model_source(cfg: EmbedConfig, progress: Progress = NULL_PROGRESS) -> tuple[VectorsFor, int, dict[str, Any]]:
    """Embeddings from a sentence-transformers model: (vectors for rows from `row`, dim, manifest fields)."""
    model, resolved = load_encoder(cfg, progress)
    select = text_selector(cfg.embed_on)

    def vectors_for(row: int, turns: list[tuple[Turn, ...]]) -> NDArray[np.float32]:
        return encode_texts(model, [select(t) for t in turns], resolved["batch_size"])

    return vectors_for, embedding_dim(model), resolved


def open_precomputed(path: Path) -> Any:
    """The user's `--embeddings` .npy, memory-mapped; raise unless it is a float `[N, d]` array."""
    try:
        source = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"--embeddings {path}: cannot read a .npy array: {e}") from e
    if source.ndim != 2 or source.dtype.kind != "f":
        raise InputError(f"--embeddings {path}: expected a float [N, d] array, got {source.dtype} {source.shape}")
    return source


def precomputed_source(path: Path, n: int) -> tuple[VectorsFor, int, dict[str, Any]]:
    """Embeddings from the user's `[n, d]` .npy (memory-mapped), L2-normalised chunk by chunk."""
    source = open_precomputed(path)
    if len(source) != n:
        raise InputError(
            f"--embeddings {path}: has {len(source)} rows, the inputs hold {n} samples (one row per sample)"
        )

    def vectors_for(row: int, turns: list[tuple[Turn, ...]]) -> NDArray[np.float32]:
        block = np.asarray(source[row : row + len(turns)], dtype=np.float32)
        bad = first_bad_row(np.linalg.norm(block, axis=1))
        if bad is not None:
            raise InputError(f"--embeddings {path}: row {row + bad[0]} {bad[1]}; fix that row of the file")
        return unit_rows(block)

    resolved = {
        "model": f"precomputed:{path}",
        "model_path": str(path),
        "embeddings_fingerprint": fingerprint_file(path),
        "device": "cpu",
        "backend": "precomputed",
        "batch_size": 0,
    }
    return vectors_for, int(source.shape[1]), resolved


Batches = Iterator[tuple[list[int], NDArray[np.float32]]]


def auto_model(device: str, n: int, multi_turn: bool) -> tuple[str, str]:
    """The model `--model auto` means on resolved `device` for `n` samples, `multi_turn` when any has two or more
    assistant turns, and why in a few words: the full model on a GPU; on CPU the static one for single-exchange
    samples (it keeps 82-97% of the full model's TFP gain there, ~60% on multi-turn chats: docs/benchmarks.md) or from
    STATIC_FROM_SAMPLES samples (the full model would take hours), else the full model.

    >>> auto_model("cpu", 10, multi_turn=False)
    ('static', 'CPU, single-turn samples')
    >>> auto_model("cuda", 10**6, multi_turn=False)
    ('sentence-transformers/all-MiniLM-L6-v2', 'GPU')
    """
    if device != "cpu":
        return DEFAULT_MODEL, "GPU"
    if n >= STATIC_FROM_SAMPLES:
        return STATIC, f"CPU, {STATIC_FROM_SAMPLES:,}+ samples"
    if not multi_turn:
        return STATIC, "CPU, single-turn samples"
    return DEFAULT_MODEL, "CPU, multi-turn samples"


def choose_model(cfg: EmbedConfig, n: int, samples_file: Path) -> tuple[str, str | None]:
    """The model to run for `n` samples stored in `samples_file` and, for `--model auto`, what it picked and why
    (`auto_model`; the samples' turns are read only when the choice depends on them); any other `--model` as given."""
    if cfg.model != "auto":
        return cfg.model, None
    device = resolve_device(cfg.device)
    multi_turn = device == "cpu" and n < STATIC_FROM_SAMPLES and has_multi_turn(samples_file)
    model, why = auto_model(device, n, multi_turn)
    return model, f"auto: {model.rpartition('/')[2]} ({why})"


def choose_route(cfg: EmbedConfig, n: int, samples_file: Path) -> tuple[EmbedConfig, dict[str, Any] | None]:
    """`cfg` with `--backend auto` settled for a CPU run of a transformer model (`routes.choose_backend`, timed on
    texts spread over the first samples of `samples_file`), and the record of how; any other run unchanged, None."""
    if cfg.backend != "auto" or static_source(cfg.model) or resolve_device(cfg.device) != "cpu":
        return cfg, None
    select = text_selector(cfg.embed_on)

    def sample_texts() -> list[str]:
        _, conversations = next(iter_sample_batches(samples_file, 4 * MEASURE_TEXTS))
        step = max(1, len(conversations) // MEASURE_TEXTS)
        return [select(c.turns) for c in conversations[::step][:MEASURE_TEXTS]]

    backend, record = choose_backend(cfg, n, sample_texts)
    return replace(cfg, backend=backend), record


def chunk_rows(batch_size: int) -> int:
    """Samples per chunk (one model call, one progress record): 1024, or 64 model batches when those are larger
    (a GPU's batches of 256: the model sorts 16k texts by length and this loop's overhead stays small)."""
    return max(_CHUNK, 64 * batch_size)


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """`items`, each produced in a worker thread while the caller works on the one before (reading and decoding
    the next chunk of samples overlaps the model's work on this one)."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def local_batches(samples_file: Path, vectors_for: VectorsFor, rows_done: int, chunk: int) -> Batches:
    """(sample ids, vectors) per chunk of `chunk` samples, in order, skipping the first `rows_done` rows."""
    row = 0
    for ids, conversations in prefetched(iter_sample_batches(samples_file, chunk)):
        if row + len(ids) > rows_done:
            yield ids, vectors_for(row, [c.turns for c in conversations])
        row += len(ids)


class EmbedWorker:
    """A model replica (one per Ray actor) mapping a batch of samples to their embeddings."""

    def __init__(self, config: dict[str, Any]) -> None:
        cfg = EmbedConfig(**config)
        self.model, self.resolved = load_encoder(cfg)
        self.select = text_selector(cfg.embed_on)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [self.select(c.turns) for c in batch_conversations(batch)]
        vectors = encode_texts(self.model, texts, self.resolved["batch_size"])
        return {"sample_id": np.asarray(batch["sample_id"]), "embedding": vectors}


def ray_batches(samples_file: Path, cfg: EmbedConfig, engine: RayEngine) -> tuple[Batches, int, dict[str, Any]]:
    """The same batches computed by model replicas on Ray (`--engine ray`); also (dim, manifest fields)."""
    device = resolve_device(cfg.device)
    gpus = 1 if device == "cuda" else 0
    stream = (
        (b["sample_id"].tolist(), np.asarray(b["embedding"], dtype=np.float32))
        for b in engine.map_batches(samples_file, EmbedWorker, {"config": vars(cfg)}, _CHUNK, gpus)
    )
    first = next(stream)
    resolved = {
        "model": cfg.model,
        "model_path": resolve_model(cfg.model),
        "device": device,
        "backend": "static" if static_source(cfg.model) else resolve_backend(cfg.backend, device),
        "engine": "ray",
    }
    return itertools.chain([first], stream), int(first[1].shape[1]), resolved


def settings_diff(before: Any, now: dict[str, Any]) -> str:
    """`--model: static -> auto; --on-error: fail -> skip`: the settings that differ between two `settings_of`, named
    as flags."""
    if not isinstance(before, dict):
        return "the recorded settings are unreadable"
    flat_before, flat_now = _flat(before), _flat(now)
    keys = [k for k in {**flat_before, **flat_now} if flat_before.get(k) != flat_now.get(k)]
    names = {"input_format": "format"}
    return "; ".join(
        f"--{names.get(k, k).replace('_', '-')}: {flat_before.get(k)!r} -> {flat_now.get(k)!r}" for k in keys
    )


def _flat(settings: dict[str, Any]) -> dict[str, Any]:
    """`{"config": {"model": m}, "on_error": e}` -> `{"model": m, "on_error": e}`."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        out.update(value if isinstance(value, dict) else {key: value})
    return out


def settings_of(cfg: EmbedConfig, formats: FormatOptions, on_error: str, precomputed: Path | None) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    return {
        "config": vars(cfg),
        "formats": formats.to_dict(),
        "on_error": on_error,
        "embeddings": str(precomputed) if precomputed else None,
    }


def resume_state(
    run_dir: Path,
    inputs: list[str],
    cfg: EmbedConfig,
    formats: FormatOptions,
    on_error: str,
    precomputed: Path | None,
) -> dict[str, Any]:
    """The progress record of an interrupted embed run, checked against this invocation (same inputs, settings)."""
    if (run_dir / MANIFEST).is_file():
        raise ConfigError(f"--resume: {run_dir} is already complete (manifest.json present)")
    path = run_dir / PROGRESS_FILE
    if not path.is_file() or not (run_dir / SAMPLES_FILE).is_file() or not (run_dir / PARTIAL_FILE).is_file():
        raise StaleArtifactError(f"--resume: {run_dir} holds no resumable embed run; start it again with --overwrite")
    if STDIN in inputs:
        raise ConfigError("--resume cannot re-read stdin; save the input to a file")
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
        before = [{"path": i["path"], "fingerprint": i["fingerprint"]} for i in state["ingest"]["inputs"]]
        int(state["rows_done"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise StaleArtifactError(
            f"{path}: corrupt or partial progress record ({type(e).__name__}: {e}); start the run again: "
            f"`{rerun_embed(run_dir, inputs)}`"
        ) from None
    now = [{"path": p, "fingerprint": fingerprint_file(Path(p))} for p in expand_inputs(inputs)]
    if now != before:
        raise StaleArtifactError(
            f"--resume: the inputs differ from those {run_dir} was started with; run `{rerun_embed(run_dir)}`"
        )
    settings = settings_of(cfg, formats, on_error, precomputed)
    if state.get("settings") != settings:
        raise ConfigError(
            f"--resume: {run_dir} was started with other settings ({settings_diff(state.get('settings'), settings)}); "
            "resume with the same ones, or start again with --overwrite"
        )
    return state


def save_progress(run_dir: Path, state: dict[str, Any], rows_done: int) -> None:
    """Record that the first `rows_done` rows of the partial embeddings file are written and flushed."""
    write_json(run_dir / PROGRESS_FILE, {**state, "rows_done": rows_done})


def ignored_options(cfg: EmbedConfig, precomputed: Path | None) -> None:
    """Say which options given explicitly have no effect on this run (a note each, never silence)."""
    if precomputed is not None:
        unused = [f"--{k.replace('_', '-')}" for k, v in vars(cfg).items() if v != getattr(EmbedConfig, k)]
        unused = [u for u in unused if u != "--dtype"]  # the stored dtype still applies
        if unused:
            note(f"{', '.join(unused)}: ignored with --embeddings (no model runs)")
    elif static_source(cfg.model) is not None:
        unused = [f"--{k} {getattr(cfg, k)}" for k in ("device", "backend") if getattr(cfg, k) != "auto"]
        if unused:
            note(f"{', '.join(unused)}: ignored with the static model (a table lookup on the CPU)")


def run_embed(
    inputs: list[str],
    run_dir: Path,
    cfg: EmbedConfig,
    formats: FormatOptions,
    *,
    on_error: str = "fail",
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    resume: bool = False,
    precomputed: Path | None = None,
    engine: str = "local",
) -> dict[str, Any]:
    """Ingest `inputs` and embed them into `run_dir`; return the one-object summary.

    `precomputed`: an `[N, d]` .npy of the user's own embeddings, one row per sample in input order, used instead
    of a model (checked, L2-normalised, stored like model output).

    Embeddings are written chunk by chunk into `embeddings.npy.partial`, each chunk's completion recorded in
    `embed.progress.json`; `resume=True` continues an interrupted run from its last completed chunk.
    """
    started = time.perf_counter()
    check_on_error(on_error)
    runner = engine_for(engine)
    if resume and not runner.in_process:
        raise ConfigError("--resume works with --engine local")
    ignored_options(cfg, precomputed)
    if resume:
        state = resume_state(run_dir, inputs, cfg, formats, on_error, precomputed)
    else:
        given = [p for p in inputs if p != STDIN] + ([str(precomputed)] if precomputed is not None else [])
        check_out_dir(run_dir, "embed", overwrite, given, resumable=(run_dir / PARTIAL_FILE).is_file())
        paths = expand_inputs(inputs)  # every input named for what it is before anything is created
        check_apart(run_dir, [p for p in paths if p != STDIN])
        if precomputed is not None:  # before --overwrite removes anything
            open_precomputed(precomputed)
        prepare_out_dir(run_dir, "embed", overwrite, given)
        for stale in (PROGRESS_FILE, PARTIAL_FILE, EMBEDDINGS_FILE, ERRORS_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        write_json(run_dir / PROGRESS_FILE, {"rows_done": 0})  # marks the folder as tfpack's unfinished run
        ingested = ingest(inputs, formats, run_dir / SAMPLES_FILE, on_error, progress, engine)
        if ingested.errors:
            write_jsonl(run_dir / ERRORS_FILE, ingested.errors)
        state = {
            "ingest": {"inputs": ingested.inputs, "n_records": ingested.n_records, "n_errors": len(ingested.errors)},
            "settings": settings_of(cfg, formats, on_error, precomputed),
        }
    n = count_samples(run_dir / SAMPLES_FILE)
    asked = cfg.model
    route = choice = None
    if precomputed is None:
        model, choice = choose_model(cfg, n, run_dir / SAMPLES_FILE)
        cfg = replace(cfg, model=model)
        cfg, route = choose_route(cfg, n, run_dir / SAMPLES_FILE)
    embed_started = time.perf_counter()
    rows_done = int(state.get("rows_done", 0)) if resume else 0
    if precomputed is not None:
        vectors_for, dim, resolved = precomputed_source(precomputed, n)
        batches = local_batches(run_dir / SAMPLES_FILE, vectors_for, rows_done, _CHUNK)
    elif isinstance(runner, RayEngine):
        batches, dim, resolved = ray_batches(run_dir / SAMPLES_FILE, cfg, runner)
    else:
        vectors_for, dim, resolved = model_source(cfg, progress)
        batches = local_batches(run_dir / SAMPLES_FILE, vectors_for, rows_done, chunk_rows(resolved["batch_size"]))
    if route is not None:
        resolved = {**resolved, "backend_choice": route}
    partial = run_dir / PARTIAL_FILE
    if resume:
        out = np.load(partial, mmap_mode="r+")
        if out.shape != (n, dim):
            raise StaleArtifactError(f"--resume: {partial} has shape {out.shape}, expected {(n, dim)}; use --overwrite")
    else:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(cfg.dtype), shape=(n, dim))
        save_progress(run_dir, state, 0)
    row = rows_done
    with progress.task("embedding", total=n) as task:
        task.advance(rows_done)
        for ids, vectors in batches:
            check_embeddings(vectors, ids, str(run_dir / SAMPLES_FILE))
            out[row : row + len(ids)] = vectors
            out.flush()
            row += len(ids)
            save_progress(run_dir, state, row)
            task.advance(len(ids))
    if row != n:
        raise StaleArtifactError(f"{run_dir}: embedded {row} of {n} samples; samples.parquet changed during the run")
    del out
    os.replace(partial, run_dir / EMBEDDINGS_FILE)
    seconds = time.perf_counter() - embed_started
    manifest = {
        "stage": "embed",
        "tfpack_version": __version__,
        **resolved,
        "dim": dim,
        "n": n,
        "dtype": cfg.dtype,
        "embed_on": cfg.embed_on,
        "formats": formats.to_dict(),
        "inputs": state["ingest"]["inputs"],
        "n_records": state["ingest"]["n_records"],
        "n_errors": state["ingest"]["n_errors"],
        "resumed": resume,
        "on_error": on_error,
        "files": {
            SAMPLES_FILE: {"rows": n},
            EMBEDDINGS_FILE: {"shape": [n, dim], "dtype": cfg.dtype},
        },
        "model_asked": asked,
        **({"model_choice": choice} if choice else {}),
        "config": {"embed": vars(cfg)},
        "seconds": round(time.perf_counter() - started, 3),
        "embed_seconds": round(seconds, 3),
    }
    write_manifest(run_dir, manifest)
    (run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    return {
        "run_dir": str(run_dir),
        "n": n,
        "dim": dim,
        "model": resolved["model"],
        **({"model_choice": choice} if choice else {}),
        "backend": resolved["backend"],
        "device": resolved["device"],
        "errors": state["ingest"]["n_errors"],
        "resumed": resume,
        "seconds": round(seconds, 3),
        "samples_per_s": round(n / seconds, 2) if seconds > 0 else None,
    }


def embed_texts(texts: list[str], manifest: dict[str, Any]) -> NDArray[np.float32]:
    """Embed `texts` with the model and settings of the embed run whose manifest this is: L2-normalised float32 rows
    ([len(texts), dim]) comparable with the run's embeddings (e.g. benchmark items to decontaminate against).

    The run's recorded config is loaded again (its model as resolved, `max_seq_length`, backend and device as asked,
    so they resolve as they did on the same machine); a run of precomputed embeddings has no model to reuse.
    """
    if manifest["backend"] == "precomputed":
        raise ConfigError(
            f"the run's embeddings were precomputed ({manifest['model']}): there is no model to embed other texts "
            "with; embed the run with a model (--model) instead"
        )
    cfg = EmbedConfig(**manifest["config"]["embed"])
    model, resolved = load_encoder(cfg)
    vectors = encode_texts(model, texts, resolved["batch_size"])
    if vectors.shape[1] != manifest["dim"]:
        raise StaleArtifactError(
            f"model {cfg.model} now gives {vectors.shape[1]}-dimensional embeddings, the run's have {manifest['dim']} "
            "(the model changed since the run); embed the run again with --overwrite"
        )
    return vectors
