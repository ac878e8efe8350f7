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

from tfpack.config import PackConfig, load_yaml
from tfpack.errors import NOTE_LISTENERS, TfpackError
from tfpack.options import OPTIONS, build, configs, default, help_text, refuse_embed_options, split
from tfpack.progress import NULL_PROGRESS, Progress, Task, silence_third_party
from tfpack.version import __version__

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


def opt(name: str) -> Any:
    """The flag of the option `name` of tfpack/options.py (its one definition): declarations, and help with the
    config dataclass's default. Every such parameter defaults to None, "not given", so a config file's value stays."""
    option = OPTIONS[name]
    return typer.Option(*option.flags, help=help_text(option))


@app.command()
def embed(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Input files or globs (.jsonl, .jsonl.gz, .jsonl.zst, .json array, .parquet, .csv, .csv.gz, .tsv, "
            ".tsv.gz); '-' = JSONL on stdin."
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Run directory to create (samples, embeddings, manifest).")],
    model: Annotated[str | None, opt("model")] = None,
    embed_on: Annotated[str | None, opt("embed_on")] = None,
    device: Annotated[str | None, opt("device")] = None,
    backend: Annotated[str | None, opt("backend")] = None,
    batch_size: Annotated[int | None, opt("batch_size")] = None,
    dtype: Annotated[str | None, opt("dtype")] = None,
    max_seq_length: Annotated[int | None, opt("max_seq_length")] = None,
    format: Annotated[str | None, opt("format")] = None,
    prompt_field: Annotated[str | None, opt("prompt_field")] = None,
    response_field: Annotated[str | None, opt("response_field")] = None,
    text_field: Annotated[str | None, opt("text_field")] = None,
    id_field: Annotated[str | None, opt("id_field")] = None,
    label_field: Annotated[str | None, opt("label_field")] = None,
    columns: Annotated[str | None, opt("columns")] = None,
    prompt_template: Annotated[str | None, opt("prompt_template")] = None,
    csv_columns: Annotated[str | None, opt("csv_columns")] = None,
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
    engine: Annotated[str | None, opt("engine")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Read and normalise INPUTS, then embed every sample into OUT/embeddings.npy (L2-normalised rows)."""
    from tfpack.embedding.stage import run_embed
    from tfpack.ingest.formats import FormatOptions
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        values = split(ctx.params)
        cfg = configs(values, ("embed",), load_yaml(config), str(config))["embed"]
        with _progress(quiet, as_json) as progress:
            return run_embed(
                inputs,
                output_path(out),
                cfg,
                FormatOptions(**values["format"]),
                on_error=on_error,
                overwrite=overwrite,
                progress=progress,
                resume=resume,
                precomputed=embeddings,
                engine=engine or default(OPTIONS["engine"]),
            )

    _emit(_run(action), as_json, quiet, "tfpack embed")


@app.command()
def order(
    ctx: typer.Context,
    embeddings: Annotated[
        Path, typer.Argument(help="A run directory from `tfpack embed`, or an [N, d] float16/float32 .npy.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write the int64 permutation (.npy).")],
    threshold: Annotated[str | None, opt("threshold")] = None,
    distance_threshold: Annotated[float | None, opt("distance_threshold")] = None,
    quantile: Annotated[float | None, opt("quantile")] = None,
    window: Annotated[int | None, opt("window")] = None,
    k: Annotated[int | None, opt("k")] = None,
    knn: Annotated[str | None, opt("knn")] = None,
    nprobe: Annotated[int | None, opt("nprobe")] = None,
    exact: Annotated[bool | None, opt("exact")] = None,
    buckets: Annotated[int | None, opt("buckets")] = None,
    engine: Annotated[str | None, opt("engine")] = None,
    start: Annotated[int | None, opt("start")] = None,
    seed: Annotated[int | None, opt("seed")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing .npy at OUT (never any other file).")] = False,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Walk the threshold-filtered nearest-neighbour path over EMBEDDINGS and write it as a permutation."""
    from tfpack.ordering.stage import run_order
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        cfg = configs(split(ctx.params), ("order",), load_yaml(config), str(config))["order"]
        with _progress(quiet, as_json) as progress:
            return run_order(embeddings, output_path(out), cfg, progress, overwrite=overwrite)

    summary = _run(action)
    if not as_json:
        summary.pop("config")
    _emit(summary, as_json, quiet, "tfpack order")


@app.command()
def pack(
    ctx: typer.Context,
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
    model: Annotated[str | None, opt("model")] = None,
    embed_on: Annotated[str | None, opt("embed_on")] = None,
    device: Annotated[str | None, opt("device")] = None,
    backend: Annotated[str | None, opt("backend")] = None,
    batch_size: Annotated[int | None, opt("batch_size")] = None,
    dtype: Annotated[str | None, opt("dtype")] = None,
    max_seq_length: Annotated[int | None, opt("max_seq_length")] = None,
    max_len: Annotated[int | None, opt("max_len")] = None,
    tokenizer: Annotated[str | None, opt("tokenizer")] = None,
    template: Annotated[str | None, opt("template")] = None,
    train_on: Annotated[str | None, opt("train_on")] = None,
    attention: Annotated[str | None, opt("attention")] = None,
    long: Annotated[str | None, opt("long")] = None,
    lookahead: Annotated[int | None, opt("lookahead")] = None,
    shard_packs: Annotated[int | None, opt("shard_packs")] = None,
    pack_seed: Annotated[int | None, opt("pack_seed")] = None,
    workers: Annotated[int | None, opt("workers")] = None,
    pack_filter: Annotated[float | None, opt("pack_filter")] = None,
    dedup: Annotated[float | None, opt("dedup")] = None,
    dedup_keep: Annotated[str | None, opt("dedup_keep")] = None,
    dedup_on: Annotated[str | None, opt("dedup_on")] = None,
    decontaminate: Annotated[list[str] | None, opt("decontaminate")] = None,
    decontaminate_threshold: Annotated[float | None, opt("decontaminate_threshold")] = None,
    decontaminate_report: Annotated[bool | None, opt("decontaminate_report")] = None,
    format: Annotated[str | None, opt("format")] = None,
    prompt_field: Annotated[str | None, opt("prompt_field")] = None,
    response_field: Annotated[str | None, opt("response_field")] = None,
    text_field: Annotated[str | None, opt("text_field")] = None,
    id_field: Annotated[str | None, opt("id_field")] = None,
    label_field: Annotated[str | None, opt("label_field")] = None,
    columns: Annotated[str | None, opt("columns")] = None,
    prompt_template: Annotated[str | None, opt("prompt_template")] = None,
    csv_columns: Annotated[str | None, opt("csv_columns")] = None,
    epochs: Annotated[int | None, opt("epochs")] = None,
    weights: Annotated[list[str] | None, opt("weights")] = None,
    engine: Annotated[str | None, opt("engine")] = None,
    threshold: Annotated[str | None, opt("threshold")] = None,
    distance_threshold: Annotated[float | None, opt("distance_threshold")] = None,
    quantile: Annotated[float | None, opt("quantile")] = None,
    window: Annotated[int | None, opt("window")] = None,
    k: Annotated[int | None, opt("k")] = None,
    knn: Annotated[str | None, opt("knn")] = None,
    exact: Annotated[bool | None, opt("exact")] = None,
    buckets: Annotated[int | None, opt("buckets")] = None,
    seed: Annotated[int | None, opt("seed")] = None,
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
    from tfpack.ingest.formats import FormatOptions
    from tfpack.pipeline import run_pack
    from tfpack.workdir import output_path

    def action() -> dict[str, Any]:
        values = split(ctx.params)
        formats = FormatOptions(**values["format"])
        refuse_embed_options(sources, values)
        cfg = configs(values, ("embed", "pack", "order"), load_yaml(config), str(config))
        with _progress(quiet, as_json) as progress:
            return run_pack(
                sources,
                output_path(out),
                pack_cfg=cfg["pack"],
                order_cfg=cfg["order"],
                embed_cfg=cfg["embed"],
                formats=formats,
                on_error=on_error,
                overwrite=overwrite,
                progress=progress,
            )

    _emit(_run(action), as_json, quiet, "tfpack pack")


@app.command()
def stats(
    ctx: typer.Context,
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
    dedup_keep: Annotated[str | None, opt("dedup_keep")] = None,
    dedup_on: Annotated[str | None, opt("dedup_on")] = None,
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
        options = build(PackConfig, None, split(ctx.params)["pack"]) if dedup is not None else None
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
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `tfpack embed`.")],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated --threshold values to compare, e.g. 0.5,0.6,0.7,auto,none.")
    ] = "0.5,0.6,0.7,0.8,0.9,auto,none",
    max_len: Annotated[int | None, opt("max_len")] = None,
    tokenizer: Annotated[str | None, opt("tokenizer")] = None,
    template: Annotated[str | None, opt("template")] = None,
    lookahead: Annotated[int | None, opt("lookahead")] = None,
    window: Annotated[int | None, opt("window")] = None,
    k: Annotated[int | None, opt("k")] = None,
    knn: Annotated[str | None, opt("knn")] = None,
    exact: Annotated[bool | None, opt("exact")] = None,
    seed: Annotated[int | None, opt("seed")] = None,
    dedup: Annotated[float | None, opt("dedup")] = None,
    dedup_keep: Annotated[str | None, opt("dedup_keep")] = None,
    dedup_on: Annotated[str | None, opt("dedup_on")] = None,
    decontaminate: Annotated[list[str] | None, opt("decontaminate")] = None,
    decontaminate_threshold: Annotated[float | None, opt("decontaminate_threshold")] = None,
    decontaminate_report: Annotated[bool | None, opt("decontaminate_report")] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per threshold (JSON lines).")] = False,
) -> None:
    """Compare thresholds without writing shards: fill rate, relatedness, near-duplicates and fallbacks of each.
    The filters (--dedup, --decontaminate) remove what `pack` would remove before each walk."""
    from tfpack.pipeline import run_sweep
    from tfpack.report.sweep import parse_thresholds

    def action() -> list[dict[str, Any]]:
        cfg = configs(split(ctx.params), ("pack", "order"), load_yaml(config), str(config))
        values = parse_thresholds(thresholds)
        with _progress(quiet, as_json) as progress:
            return run_sweep(run_dir, values, cfg["order"], cfg["pack"], progress)

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
