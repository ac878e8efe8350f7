"""Configuration: dataclass defaults are the single source of truth; YAML overrides them; CLI flags override YAML.

A YAML file has one mapping per stage (`embed:`, `order:`, `pack:`); an unknown section or key is an error, and
each dataclass checks its ranges in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfpack.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# `--model auto` on CPU: the static model distilled from DEFAULT_MODEL for single-turn samples, and for any samples
# from this many on; else DEFAULT_MODEL. On a 2-core AVX2 CPU the full model embeds ~100 prompts/s (200k: ~35 min)
# and the static one ~9,000/s, keeping 82-97% of TFP's pack-similarity gain on single-turn sets and ~60% on
# multi-turn chats (scripts/bench_static.py).
STATIC_FROM_SAMPLES = 200_000


# Every integer option fits an int32 (token counts, offsets and seeds are stored or computed as int32/int64).
INT_MAX = 2**31 - 1
ON_ERROR = ("fail", "skip")


class OptionError(ConfigError):
    """An invalid value of the config field `field`; `tfpack.options.build` names it as the user gave it (a flag, a
    config key or a keyword), and on its own it reads as the flag."""

    def __init__(self, field: str, detail: str) -> None:
        self.field, self.detail = field, detail
        super().__init__(f"--{field.replace('_', '-')}: {detail}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(name, f"expected one of {', '.join(choices)}, got '{value}'")


def check_on_error(value: str) -> None:
    """`--on-error`: fail or skip, checked wherever a command takes it (anything else is refused, never 'skip')."""
    _choice("on_error", value, ON_ERROR)


def _between(name: str, value: float, lo: float, hi: float, note: str = "") -> None:
    """A number in [lo, hi] (NaN refused); `note` says what the value means."""
    if not lo <= value <= hi:
        bounds = f">= {lo:g}" if hi == INT_MAX else f"in [{lo:g}, {hi:g}]"
        raise OptionError(name, f"must be {bounds}{note}, got {value}")


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


def _allowed(hint: Any) -> tuple[type, ...]:
    """The Python types a field annotation admits (`int | None` -> (int, NoneType); `tuple[str, ...]` -> tuple)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _allowed(arg))
    return (typing.get_origin(hint) or hint,)


def check_types(obj: Any) -> None:
    """Each field of a config dataclass holds its annotated type, whatever the source (a YAML value, an API
    keyword): an integer is no float (`max_len: 512.7`) and no boolean, a number may be an integer, a tuple of
    strings holds strings; integers fit INT_MAX."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, allowed = getattr(obj, f.name), _allowed(hints[f.name])
        ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
        if not ok and float in allowed and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if ok and isinstance(value, tuple):
            ok = all(isinstance(item, str) for item in value)
        if not ok:
            words = " or ".join(_TYPE_WORDS.get(t, "a list of strings") for t in allowed)
            raise OptionError(f.name, f"expected {words}, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
            raise OptionError(f.name, f"{value} is beyond tfpack's limit of {INT_MAX:,} (int32)")
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f.name, f"expected a finite number, got {value}")


def parse_threshold(value: str) -> str | float:
    """`--threshold`: 'auto', 'none', or a cosine similarity in [-1, 1]."""
    if value in ("auto", "none"):
        return value
    try:
        cosine = float(value)
    except ValueError:
        raise ConfigError(
            f"--threshold: expected a cosine similarity in [-1, 1], 'auto' or 'none', got '{value}'"
        ) from None
    if not -1.0 <= cosine <= 1.0 or math.isnan(cosine):
        raise ConfigError(f"--threshold: {cosine} is outside [-1, 1] (it is a cosine similarity ceiling)")
    return cosine


@dataclass(frozen=True)
class EmbedConfig:
    """How samples are embedded.

    `backend='auto'` uses torch (fp16) on CUDA and, on CPU, the fastest exact route measured on this CPU
    (embedding/routes.py: OpenVINO, ONNX Runtime or torch), OpenVINO before any measurement; scripts/bench_embed.py
    measures each against plain sentence-transformers with recall@10 of the kNN graph.
    `batch_size=0` picks 16 on CPU and 256 on CUDA.
    `model='auto'` is DEFAULT_MODEL on CUDA; on CPU its static distillation ('static') when no sample has two
    assistant turns or from STATIC_FROM_SAMPLES samples, else DEFAULT_MODEL (embedding/stage.py `auto_model`).
    """

    model: str = "auto"
    embed_on: str = "prompt"
    device: str = "auto"
    backend: str = "auto"
    batch_size: int = 0
    dtype: str = "float32"
    max_seq_length: int = 256

    def __post_init__(self) -> None:
        check_types(self)
        _choice("embed_on", self.embed_on, ("prompt", "full"))
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        _choice("backend", self.backend, ("auto", "torch", "onnx", "onnx-int8", "openvino"))
        _choice("dtype", self.dtype, ("float32", "float16"))
        _between("batch_size", self.batch_size, 0, INT_MAX, " (0 = automatic)")
        _between("max_seq_length", self.max_seq_length, 8, INT_MAX)


@dataclass(frozen=True)
class OrderConfig:
    """How the TFP path is walked (see tfpack/ordering: threshold.py, knn.py and walk.py).

    `threshold`: a cosine-similarity ceiling in [-1, 1], 'auto' (the paper's pairwise-distance `quantile`) or
    'none' (plain greedy TSP); `distance_threshold` gives the paper's L2 threshold directly instead.
    """

    threshold: str | float = "auto"
    distance_threshold: float | None = None
    quantile: float = 0.02
    window: int = 4
    k: int = 64
    knn: str = "auto"
    nprobe: int = 16
    exact: bool = False
    start: int = 0
    seed: int = 0
    n_random: int = 256
    hops: int = 8
    sample_pairs: int = 4_000_000
    buckets: int = 0
    engine: str = "local"

    def __post_init__(self) -> None:
        check_types(self)
        try:
            parse_threshold(str(self.threshold))
        except ConfigError as e:
            raise OptionError("threshold", str(e).removeprefix("--threshold: ")) from None
        if self.distance_threshold is not None and self.threshold not in ("auto",):
            raise OptionError("distance_threshold", "exclusive with --threshold; give one of them")
        if self.distance_threshold is not None:
            _between("distance_threshold", self.distance_threshold, 0, 2, " (an L2 distance of unit vectors)")
        if not 0.0 < self.quantile < 1.0:
            raise OptionError("quantile", f"must be in (0, 1), got {self.quantile}")
        _between("window", self.window, 1, INT_MAX)
        _choice("engine", self.engine, ("local", "ray"))
        _between("buckets", self.buckets, 0, INT_MAX, " (0 or 1 = one global walk)")
        _between("k", self.k, 1, INT_MAX)
        _choice("knn", self.knn, ("auto", "exact", "ivf", "ivfpq"))
        _between("nprobe", self.nprobe, 1, INT_MAX)
        _between("n_random", self.n_random, 1, INT_MAX)
        _between("hops", self.hops, 0, INT_MAX)
        _between("sample_pairs", self.sample_pairs, 1000, INT_MAX)
        _between("start", self.start, 0, INT_MAX)
        _between("seed", self.seed, 0, INT_MAX)


@dataclass(frozen=True)
class PackConfig:
    """How samples are tokenized and packed (see tfpack/packing: tokenizer.py, packer.py, shards.py)."""

    max_len: int = 2048
    tokenizer: str | None = None
    template: str | None = None
    train_on: str = "assistant"
    attention: str = "pack"
    long: str = "truncate"
    lookahead: int = 256
    shard_packs: int = 5000
    row_group_packs: int = 500
    seed: int = 0
    batch_size: int = 1024
    workers: int = 0
    engine: str = "local"
    pack_filter: float | None = None
    dedup: float | None = None
    dedup_keep: str = "first"
    dedup_on: str = "full"
    decontaminate: tuple[str, ...] = ()
    decontaminate_threshold: float | None = None
    decontaminate_report: bool = False
    epochs: int = 1
    weights: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.decontaminate, list):  # a YAML list
            object.__setattr__(self, "decontaminate", tuple(self.decontaminate))
        if isinstance(self.weights, list):  # a YAML list of 'name=weight'
            object.__setattr__(self, "weights", tuple(self.weights))
        if isinstance(self.weights, dict):  # a YAML mapping or an API dict {name: weight}
            object.__setattr__(self, "weights", tuple(f"{k}={v}" for k, v in self.weights.items()))
        check_types(self)
        _choice("train_on", self.train_on, ("completion", "assistant", "all"))
        _choice("attention", self.attention, ("segment", "pack"))
        _choice("long", self.long, ("truncate", "turns", "drop"))
        _choice("engine", self.engine, ("local", "ray"))
        _between("max_len", self.max_len, 8, INT_MAX)
        _between("lookahead", self.lookahead, 0, INT_MAX, " (0 = next-fit)")
        _between("shard_packs", self.shard_packs, 1, INT_MAX)
        if self.max_len * self.shard_packs > INT_MAX:  # a shard's list columns have int32 offsets
            raise OptionError(
                "shard_packs",
                f"{self.shard_packs} packs of --max-len {self.max_len} is over 2^31 - 1 tokens a shard (Parquet list "
                "offsets are int32); lower --shard-packs",
            )
        _between("row_group_packs", self.row_group_packs, 1, INT_MAX)
        _between("batch_size", self.batch_size, 1, INT_MAX)
        _between("seed", self.seed, 0, INT_MAX)
        _between("workers", self.workers, 0, INT_MAX, " (0 = every core)")
        for name in ("pack_filter", "dedup", "decontaminate_threshold"):
            value = getattr(self, name)
            if value is not None:
                _between(name, value, -1, 1, " (a cosine similarity)")
        _choice("dedup_keep", self.dedup_keep, ("first", "longest"))
        _choice("dedup_on", self.dedup_on, ("full", "prompt"))
        _between("epochs", self.epochs, 1, INT_MAX)
        weight_map(self.weights)
        if self.weights and self.epochs > 1:
            raise OptionError("weights", "cannot be combined with --epochs > 1 yet; pack each epoch separately")


def weight_map(entries: tuple[str, ...]) -> dict[str, float]:
    """`--weights`: 'name=weight' entries as {source name: weight}; a weight is a finite number >= 0.

    >>> weight_map(("gsm8k=2.0", "codegen=0.5"))
    {'gsm8k': 2.0, 'codegen': 0.5}
    """
    weights: dict[str, float] = {}
    for entry in entries:
        name, sep, value = entry.rpartition("=")
        try:
            weight = float(value) if sep and name and "=" not in name else math.nan
        except ValueError:
            weight = math.nan
        if math.isnan(weight):
            raise OptionError("weights", f"expected NAME=WEIGHT (e.g. gsm8k=2.0), got '{entry}'")
        if not 0 <= weight < math.inf:
            raise OptionError("weights", f"{name}: a weight must be a finite number >= 0, got {value}")
        if name in weights:
            raise OptionError("weights", f"{name}: given twice")
        weights[name] = weight
    return weights


def load_yaml(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read a config file into `{section: {key: value}}`, rejecting unknown sections."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections (embed, order, pack)")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}")
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: section '{name}' must be a mapping")
    return data


SECTIONS: dict[str, type] = {"embed": EmbedConfig, "order": OrderConfig, "pack": PackConfig}
