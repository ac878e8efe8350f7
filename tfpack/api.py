"""The Python API: each command as a function, and `pack_dataset` for a training script that never runs the CLI.

Paths are `str` or `os.PathLike`; options are keyword-only and named as in the table of tfpack/options.py (the
flag without `--`, dashes as underscores), whose defaults are the config dataclasses': an unknown option is a
`ConfigError` naming it and the nearest known name. Results are
typed; each carries the full `summary` dict the CLI prints with `--json`. A call prints nothing, nor lets the
libraries it loads print (bars such as "Loading weights", warnings, log lines), unless asked: `progress=True` draws
tqdm bars on stderr and leaves other libraries as they are; a `tfpack.progress.Progress` object is reported to.

    >>> import tempfile, tfpack
    >>> out = tempfile.mkdtemp()
    >>> rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"It is {2 * i}."} for i in range(60)]
    >>> result = tfpack.pack(tfpack.api.write_records(rows, out + "/rows.jsonl"), out + "/packed",
    ...                      tokenizer="packaged-minilm", max_len=256)
    >>> result.samples, result.dropped, tfpack.verify(result.out_dir).ok
    (60, 0, True)
"""

from __future__ import annotations

import inspect
import os
import tempfile
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack.config import EmbedConfig, OrderConfig, PackConfig
from tfpack.errors import ConfigError, DependencyError
from tfpack.ingest.formats import FormatOptions
from tfpack.options import build, keyword_list, keywords, refuse_embed_options
from tfpack.parallel import LOCAL
from tfpack.progress import Progress, reporting
from tfpack.workdir import DATA_DIR, DROPPED_FILE, ERRORS_FILE, atomic_path, output_path, shard_paths

if TYPE_CHECKING:
    import datasets

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class EmbedResult:
    run_dir: Path
    n: int  # samples embedded
    dim: int
    summary: dict[str, Any]


@dataclass(frozen=True)
class OrderResult:
    path: NDArray[np.int64]  # the TFP path: every row index once
    threshold: float | None  # the cosine ceiling used (None for a plain greedy path)
    summary: dict[str, Any]


@dataclass(frozen=True)
class PackResult:
    out_dir: Path
    packs: int
    samples: int  # samples in the packs
    dropped: int  # listed in dropped.jsonl with the reason
    refused: int  # listed in errors.jsonl: the chat template did not let tfpack verify their trained spans
    summary: dict[str, Any]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    packs: int
    samples: int
    summary: dict[str, Any]


def _paths(inputs: PathLike | Iterable[PathLike]) -> list[str]:
    return [os.fspath(inputs)] if isinstance(inputs, str | os.PathLike) else [os.fspath(p) for p in inputs]


# The option sections each verb takes as keywords (tfpack/options.py): `pack` embeds input files, so it takes all.
API_SECTIONS = {
    "embed": ("embed", "format"),
    "order": ("order",),
    "pack": ("embed", "format", "order", "pack"),
}
F = TypeVar("F", bound=Callable[..., Any])


def _options(function: str, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The keywords of `function` by section; one it does not take is a ConfigError naming the nearest."""
    return keywords(function, options, API_SECTIONS[function])


def _documented(fn: F) -> F:
    """Append to the verb's docstring the option keywords it takes, with their defaults (tfpack/options.py)."""
    listed = textwrap.fill(
        keyword_list(API_SECTIONS[fn.__name__], skip=set(inspect.signature(fn).parameters)),
        116,
        initial_indent="    ",
        subsequent_indent="    ",
    )
    fn.__doc__ = (
        f"{(fn.__doc__ or '').rstrip()}\n\n    Options (keyword-only; help in tfpack/options.py):\n\n{listed}\n"
    )
    return fn


@_documented
def embed(
    inputs: PathLike | Iterable[PathLike],
    out_dir: PathLike,
    *,
    on_error: str = "fail",
    overwrite: bool = False,
    resume: bool = False,
    embeddings: PathLike | None = None,
    engine: str = LOCAL.name,
    progress: Progress | bool = False,
    **options: Any,
) -> EmbedResult:
    """`tfpack embed`: read `inputs` (JSONL, JSON, Parquet, CSV/TSV; paths or globs) into the run directory
    `out_dir` and embed every sample. `progress`: True for bars, or a `tfpack.progress.Progress` to report to (quiet
    by default). `options`: the embedding's and the input format's, listed below.

    >>> import tempfile, tfpack
    >>> out = tempfile.mkdtemp()
    >>> rows = [{"instruction": f"Name the number {i}.", "output": str(i)} for i in range(12)]
    >>> run = tfpack.embed(tfpack.api.write_records(rows, out + "/rows.jsonl"), out + "/run", device="cpu")
    >>> run.n, run.summary["model_choice"]
    (12, 'auto: static (CPU, single-turn samples)')
    """
    from tfpack.embedding.stage import run_embed

    values = _options("embed", options)
    with reporting(progress) as reporter:
        summary = run_embed(
            _paths(inputs),
            output_path(out_dir, "out_dir"),
            build(EmbedConfig, None, values["embed"], "embed", api=True),
            FormatOptions(**values["format"]),
            on_error=on_error,
            overwrite=overwrite,
            progress=reporter,
            resume=resume,
            precomputed=Path(embeddings) if embeddings is not None else None,
            engine=engine,
        )
    return EmbedResult(Path(summary["run_dir"]), summary["n"], summary["dim"], summary)


@_documented
def order(
    source: PathLike,
    *,
    out: PathLike | None = None,
    overwrite: bool = False,
    progress: Progress | bool = False,
    **options: Any,
) -> OrderResult:
    """`tfpack order`: the TFP path over an embed run directory (its kNN graph cached there) or an `[N, d]` `.npy`;
    written to `out` (`.npy`; an existing `.npy` replaced only with `overwrite`) when given. `options`: the
    ordering's, listed below.

    >>> import tempfile, numpy as np, tfpack
    >>> x = np.eye(6, dtype=np.float32)[[0, 1, 2, 3, 4, 5, 0, 1]] + np.float32(0.01)
    >>> npy = tempfile.mkdtemp() + "/emb.npy"
    >>> np.save(npy, x / np.linalg.norm(x, axis=1, keepdims=True))
    >>> sorted(tfpack.order(npy, k=4, threshold=0.9).path.tolist())
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    from tfpack.ordering.stage import check_order_out, order_source, write_order

    cfg = build(OrderConfig, None, _options("order", options)["order"], "order", api=True)
    out_path = output_path(out, "out") if out is not None else None
    if out_path is not None:
        check_order_out(out_path, Path(source), overwrite)
    with reporting(progress) as reporter:
        result = order_source(Path(source), cfg, reporter)
    summary = dict(result.summary)
    if out_path is not None:
        summary = write_order(result, out_path, cfg)
    return OrderResult(result.path, result.threshold.cosine, summary)


@_documented
def pack(
    sources: PathLike | Iterable[PathLike],
    out_dir: PathLike,
    *,
    tokenizer: str,
    embed_config: EmbedConfig | None = None,
    on_error: str = "fail",
    overwrite: bool = False,
    progress: Progress | bool = False,
    **options: Any,
) -> PackResult:
    """`tfpack pack`: tokenize for `tokenizer` (a Hugging Face name or directory, or 'packaged-minilm') and write
    TFP-ordered packed shards to `out_dir`. `sources`: one embed run directory, or input files (embedded first with
    `embed_config`, or the embedding keywords, default settings when neither). `options`: the embedding's, the
    input format's, the ordering's and the packing's, listed below; `weights` also takes a mapping {source: weight}.
    """
    from tfpack.pipeline import run_pack

    values = _options("pack", options)
    paths = _paths(sources)
    if values["embed"] and embed_config is not None:
        raise ConfigError(f"pack(): {next(iter(values['embed']))}: give embed_config or embedding keywords, not both")
    refuse_embed_options(paths, values, api=True)
    with reporting(progress) as reporter:
        summary = run_pack(
            paths,
            output_path(out_dir, "out_dir"),
            pack_cfg=build(PackConfig, None, {**values["pack"], "tokenizer": tokenizer}, "pack", api=True),
            order_cfg=build(OrderConfig, None, values["order"], "order", api=True),
            embed_cfg=embed_config or build(EmbedConfig, None, values["embed"], "embed", api=True),
            formats=FormatOptions(**values["format"]),
            on_error=on_error,
            overwrite=overwrite,
            progress=reporter,
        )
    return PackResult(
        Path(summary["out_dir"]),
        summary["packs"],
        summary["samples"],
        summary["dropped"],
        summary.get("refused", 0),
        summary,
    )


def stats(
    path: PathLike,
    *,
    seed: int = OrderConfig.seed,
    plot: PathLike | None = None,
    dedup: float | None = PackConfig.dedup,
    dedup_keep: str = PackConfig.dedup_keep,
    dedup_on: str = PackConfig.dedup_on,
    show: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """`tfpack stats`: pack similarity, fill and near-duplicates of a pack output (per epoch for `--epochs`), or
    the embedding statistics of an embed run directory (with `dedup`, what `pack --dedup` would remove with the same
    `dedup_keep` and `dedup_on`, `show` groups listed); `plot`: a PNG to write (an existing one replaced only with
    `overwrite`); the same dict as `tfpack stats --json`."""
    from tfpack.report.stats import stats as compute

    options = PackConfig(dedup=dedup, dedup_keep=dedup_keep, dedup_on=dedup_on) if dedup is not None else None
    plot_path = output_path(plot, "plot") if plot is not None else None
    return compute(Path(path), seed, plot_path, options, show, overwrite)


def verify(out_dir: PathLike) -> VerifyResult:
    """`tfpack stats --verify`: check every shard of a pack output (of each epoch, for `--epochs`) against its
    manifest and its inputs; raises `VerifyError` naming the first problem."""
    from tfpack.report.verify import verify as check

    summary = check(Path(out_dir))
    return VerifyResult(bool(summary["ok"]), summary["packs"], summary["samples"], summary)


def write_records(records: Iterable[Mapping[str, Any]], path: PathLike) -> str:
    """Write `records` as JSON Lines to `path` (atomically); returns the path, for `embed` or `pack`."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"".join(orjson.dumps(dict(r), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in records))
    return os.fspath(target)


def pack_dataset(
    dataset: datasets.Dataset | Sequence[Mapping[str, Any]],
    *,
    tokenizer: Any,
    max_len: int,
    threshold: str | float = OrderConfig.threshold,
    attention: str = PackConfig.attention,
    train_on: str = PackConfig.train_on,
    embed_config: EmbedConfig | None = None,
    work_dir: PathLike | None = None,
    progress: Progress | bool = False,
    **options: Any,
) -> datasets.Dataset:
    """Pack a Hugging Face `datasets.Dataset` (or a list of records) along the TFP path, in memory; returns the packed
    `Dataset` in the shard schema (`input_ids`, `labels`, `position_ids`, `seq_lengths`, `sample_ids`, ...), ready for
    a trainer (see the README's recipes). Any record format `tfpack pack` reads works (messages, ShareGPT,
    prompt/completion, Alpaca, ...; table rows with `label_field=`).

    `tokenizer`: the model's tokenizer, loaded (`AutoTokenizer`) or by name/directory; its chat template renders
    the samples. Other `options` (and `progress`) as for `pack`. Samples left out (too long under `long='drop'`)
    are counted in a warning; the full output (manifest, `dropped.jsonl`) is kept when `work_dir` is given, else
    written to a temporary directory and removed.

    >>> import tfpack
    >>> rows = [{"messages": [{"role": "user", "content": f"Spell {i}."},
    ...                       {"role": "assistant", "content": f"{i} is spelled with digits."}]} for i in range(40)]
    >>> packed = tfpack.pack_dataset(rows, tokenizer="packaged-minilm", template="chatml", max_len=256)
    >>> sorted(i for ids in packed["sample_ids"] for i in ids) == list(range(40))
    True
    >>> max(packed["num_tokens"]) <= 256, packed[0]["position_ids"][:3]
    (True, [0, 1, 2])
    """
    try:
        import datasets as hf_datasets
        from datasets.table import InMemoryTable
    except ImportError as e:
        raise DependencyError("pack_dataset returns a datasets.Dataset; run `pip install datasets`") from e
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="tfpack-") as tmp:
        inputs = write_records(dataset, Path(tmp) / "records.jsonl")
        if not isinstance(tokenizer, str):  # a loaded tokenizer: saved where load_tokenizer reads it
            tokenizer.save_pretrained(Path(tmp) / "tokenizer")
            tokenizer = os.fspath(Path(tmp) / "tokenizer")
        out_dir = Path(work_dir) if work_dir is not None else Path(tmp) / "packed"
        result = pack(
            inputs,
            out_dir,
            tokenizer=tokenizer,
            embed_config=embed_config,
            max_len=max_len,
            threshold=threshold,
            attention=attention,
            train_on=train_on,
            progress=progress,
            **options,
        )
        if result.dropped or result.refused:
            warnings.warn(
                f"pack_dataset: {result.dropped} samples dropped, {result.refused} refused (listed in "
                f"{out_dir / DROPPED_FILE} and {out_dir / ERRORS_FILE}; pass work_dir to keep them)",
                stacklevel=2,
            )
        table = pq.ParquetDataset([os.fspath(p) for p in shard_paths(out_dir)]).read()
    if not len(table):
        raise ConfigError(f"pack_dataset: nothing packed under {DATA_DIR}/")
    return hf_datasets.Dataset(InMemoryTable(table))
