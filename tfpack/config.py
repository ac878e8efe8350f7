"""Configuration: dataclass defaults are the single source of truth; YAML overrides them; CLI flags override YAML.

A YAML file has one mapping per stage (`embed:`, `order:`, `pack:`); an unknown section or key is an error, and
each dataclass checks its ranges in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tfpack.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# `--model auto`: the static model distilled from DEFAULT_MODEL on CPU from this many samples, else DEFAULT_MODEL.
# On a 2-core AVX2 CPU the full model embeds ~100 prompts/s (200k: ~35 min) and the static one ~9,000/s, keeping
# 85-90% of TFP's pack-similarity gain (scripts/bench_static.py).
STATIC_FROM_SAMPLES = 200_000


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got '{value}'")


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
    `model='auto'` is DEFAULT_MODEL, or on CPU from STATIC_FROM_SAMPLES samples its static distillation ('static').
    """

    model: str = "auto"
    embed_on: str = "prompt"
    device: str = "auto"
    backend: str = "auto"
    batch_size: int = 0
    dtype: str = "float32"
    max_seq_length: int = 256

    def __post_init__(self) -> None:
        _choice("--embed-on", self.embed_on, ("prompt", "full"))
        _choice("--device", self.device, ("auto", "cpu", "cuda"))
        _choice("--backend", self.backend, ("auto", "torch", "onnx", "onnx-int8", "openvino"))
        _choice("--dtype", self.dtype, ("float32", "float16"))
        if self.batch_size < 0:
            raise ConfigError(f"--batch-size: must be >= 0 (0 = automatic), got {self.batch_size}")
        if self.max_seq_length < 8:
            raise ConfigError(f"--max-seq-length: must be >= 8, got {self.max_seq_length}")


@dataclass(frozen=True)
class OrderConfig:
    """How the TFP path is walked (see tfpack/ordering: threshold.py, knn.py and walk.py).

    `threshold`: a cosine-similarity ceiling in [-1, 1], 'auto' (the paper's pairwise-distance `quantile`) or
    'none' (plain greedy TSP); `distance_threshold` gives the paper's L2 threshold directly instead.
    """

    threshold: str = "auto"
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
        parse_threshold(str(self.threshold))
        if self.distance_threshold is not None and self.threshold not in ("auto",):
            raise ConfigError("--distance-threshold and --threshold are exclusive; give one")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"--quantile: must be in (0, 1), got {self.quantile}")
        if self.window < 1:
            raise ConfigError(f"--window: must be >= 1, got {self.window}")
        _choice("--engine", self.engine, ("local", "ray"))
        if self.buckets < 0:
            raise ConfigError(f"--buckets: must be >= 0 (0 or 1 = one global walk), got {self.buckets}")
        if self.k < 1:
            raise ConfigError(f"--k: must be >= 1, got {self.k}")
        _choice("--knn", self.knn, ("auto", "exact", "ivf", "ivfpq"))
        if self.nprobe < 1 or self.n_random < 1 or self.hops < 0 or self.sample_pairs < 1000:
            raise ConfigError("nprobe and n_random must be >= 1, hops >= 0, sample_pairs >= 1000")
        if self.start < 0:
            raise ConfigError(f"--start: must be >= 0, got {self.start}")


@dataclass(frozen=True)
class PackConfig:
    """How samples are tokenized and packed (see tfpack/packing: tokenizer.py, packer.py, shards.py)."""

    max_len: int = 2048
    tokenizer: str | None = None
    template: str | None = None
    train_on: str = "assistant"
    attention: str = "pack"
    long: str = "truncate"
    lookahead: int = 64
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

    def __post_init__(self) -> None:
        _choice("--train-on", self.train_on, ("completion", "assistant", "all"))
        _choice("--attention", self.attention, ("segment", "pack"))
        _choice("--long", self.long, ("truncate", "turns", "drop"))
        _choice("--engine", self.engine, ("local", "ray"))
        if self.max_len < 8:
            raise ConfigError(f"--max-len: must be >= 8, got {self.max_len}")
        if self.max_len * self.shard_packs > 2**31 - 1:  # a shard's list columns have int32 offsets
            raise ConfigError(
                f"--max-len {self.max_len} × --shard-packs {self.shard_packs} is over 2^31 - 1 tokens a shard "
                "(Parquet list offsets are int32); lower --shard-packs"
            )
        if self.lookahead < 0 or self.shard_packs < 1 or self.row_group_packs < 1 or self.batch_size < 1:
            raise ConfigError("--lookahead must be >= 0; --shard-packs, row_group_packs and batch_size >= 1")
        if self.pack_filter is not None and not -1.0 <= self.pack_filter <= 1.0:
            raise ConfigError(f"--pack-filter: a cosine similarity in [-1, 1], got {self.pack_filter}")
        if self.workers < 0:
            raise ConfigError(f"--workers: must be >= 0 (0 = every core), got {self.workers}")
        if self.dedup is not None and not -1.0 <= self.dedup <= 1.0:
            raise ConfigError(f"--dedup: a cosine similarity in [-1, 1], got {self.dedup}")
        _choice("--dedup-keep", self.dedup_keep, ("first", "longest"))
        _choice("--dedup-on", self.dedup_on, ("full", "prompt"))
        if self.decontaminate_threshold is not None and not -1.0 <= self.decontaminate_threshold <= 1.0:
            raise ConfigError(
                f"--decontaminate-threshold: a cosine similarity in [-1, 1], got {self.decontaminate_threshold}"
            )
        if isinstance(self.decontaminate, str):
            raise ConfigError("decontaminate: a list of benchmark files, not one string")
        if self.epochs < 1:
            raise ConfigError(f"--epochs: must be >= 1, got {self.epochs}")


C = TypeVar("C")


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


def build(cls: type[C], yaml_section: dict[str, Any] | None, flags: dict[str, Any], source: str = "config") -> C:
    """Dataclass defaults, then `yaml_section`, then the flags that were given (not None)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = dict(yaml_section or {})
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from e


SECTIONS: dict[str, type] = {"embed": EmbedConfig, "order": OrderConfig, "pack": PackConfig}
