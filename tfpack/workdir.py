"""The run directory contract: every file name, the rerun hints, atomic writes, content fingerprints and the
manifest written last.

Every file is written under a temporary name and renamed into place with `os.replace`, so a crash never
leaves a file that looks complete. `manifest.json` is written after everything else: its presence is the
completion marker of a stage.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from tfpack.errors import ConfigError, StaleArtifactError

MANIFEST = "manifest.json"
# An embed run directory (`tfpack embed -o RUN_DIR`): the samples, their embeddings and the cached kNN graph.
SAMPLES_FILE = "samples.parquet"
EMBEDDINGS_FILE = "embeddings.npy"
PARTIAL_FILE = "embeddings.npy.partial"  # embeddings being written; renamed to EMBEDDINGS_FILE when complete
PROGRESS_FILE = "embed.progress.json"  # rows of PARTIAL_FILE written so far, for `embed --resume`
KNN_DIR = "knn"
THRESHOLD_FILE = "threshold.json"  # under KNN_DIR: the cached `--threshold auto` estimate
# A `tfpack pack` output directory is laid out as a Hugging Face dataset repository: the shards under `data/`, a dataset
# card and the lists of left-out samples at the top, working files in a hidden directory that loaders skip.
DATA_DIR = "data"
SHARD_GLOB = "train-*.parquet"
WORK_DIR = ".tfpack"
DROPPED_FILE = "dropped.jsonl"
ERRORS_FILE = "errors.jsonl"
CONTAMINATION_FILE = "contamination.jsonl"  # `pack --decontaminate`: the contaminated samples, dropped or not
CARD_FILE = "README.md"
EMBED_RUN = "embed"  # under WORK_DIR: the embed run of `pack INPUT...`
TOKENS_DIR = "tokens.tmp"  # under WORK_DIR: the token store while packing
EPOCH_GLOB = "epoch-*"  # `pack --epochs E`: one complete pack output per epoch, OUT_DIR/epoch-0 .. epoch-<E-1>
# Label of a token that is not trained (PyTorch's cross-entropy `ignore_index`), in the shards' `labels` column.
IGNORE_INDEX = -100
_CHUNK = 1 << 20


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


class Fingerprint:
    """A content fingerprint built from streamed bytes (a file, stdin): `blake2b-128:<hex>`."""

    def __init__(self, data: bytes = b"") -> None:
        self._digest = hashlib.blake2b(data, digest_size=16)

    def update(self, data: bytes) -> None:
        self._digest.update(data)

    def hexdigest(self) -> str:
        return f"blake2b-128:{self._digest.hexdigest()}"


def fingerprint_file(path: Path) -> str:
    """Content fingerprint of a file: `blake2b-128:<hex>` of its bytes."""
    digest = Fingerprint()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_bytes(data: bytes) -> str:
    """Fingerprint of an in-memory byte string, in the same form as `fingerprint_file`."""
    return Fingerprint(data).hexdigest()


def short_hash(text: str) -> str:
    """A 16-hex-digit hash of `text` (blake2b-64) for cache keys and manifest identities, not for integrity.

    >>> short_hash("chatml")
    'fb33642980c3c068'
    """
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write `run_dir/manifest.json` last: the marker that the stage finished."""
    write_json(run_dir / MANIFEST, manifest)


_NONE = type(None)
_INT = (int,)
# What readers of each stage's manifest rely on, and the JSON types each may have; a manifest without one of these is
# not a finished run of that stage. `counts` is an object of integers; `inputs` and `shards` are lists of objects.
REQUIRED_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "embed": {"n": _INT, "dim": _INT, "model": (str,), "backend": (str,), "dtype": (str,), "inputs": (list,)},
    "pack": {
        "counts": (dict,),
        "shards": (list,),
        "max_len": _INT,
        "attention": (str,),
        "tokenizer": (str,),
        "threshold": (int, float, _NONE),
        "window": _INT,
        "k": _INT,
        "run_dir": (str,),
        "embedding_model": (str, _NONE),
    },
    "pack-epochs": {"epochs": (list,)},
}
REQUIRED_COUNTS = ("packs", "samples", "tokens", "loss_tokens", "dropped", "truncated")
REQUIRED_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "counts": dict.fromkeys(REQUIRED_COUNTS, _INT),
    "inputs": {"path": (str,), "fingerprint": (str,)},
    "shards": {"file": (str,), "packs": _INT},
    "epochs": {"dir": (str,), "packs": _INT, "repeat_rate": (int, float)},
}
_JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    _NONE: "null",
}


def _load_manifest(path: Path, rerun: str) -> dict[str, Any]:
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise StaleArtifactError(f"{path}: corrupt or partial manifest ({e}); run `{rerun}`") from None
    if not isinstance(manifest, dict):
        raise StaleArtifactError(f"{path}: not a manifest (a JSON {type(manifest).__name__}); run `{rerun}`")
    return manifest


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _field_problems(obj: dict[str, Any], fields: dict[str, tuple[type, ...]], prefix: str) -> list[str]:
    """`lacks counts.packs`, `max_len is a string, expected an integer`, ... for each field of `obj` that is not as
    `fields` requires (a JSON boolean is no integer)."""
    problems = []
    for name, types in fields.items():
        if name not in obj:
            problems.append(f"lacks {prefix}{name}")
        elif not isinstance(obj[name], types) or (isinstance(obj[name], bool) and bool not in types):
            expected = " or ".join(_JSON_NAMES[t] for t in types)
            problems.append(f"{prefix}{name} is {_json_name(obj[name])}, expected {expected}")
    return problems


def manifest_problems(manifest: dict[str, Any], stage: str) -> list[str]:
    """What a `stage` manifest lacks or holds in the wrong type; empty when its readers can rely on it."""
    keys = REQUIRED_KEYS.get(stage, {})
    problems = _field_problems(manifest, keys, "")
    for key, fields in REQUIRED_FIELDS.items():
        value = manifest.get(key) if key in keys else None
        if isinstance(value, dict):
            problems += _field_problems(value, fields, f"{key}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    problems += _field_problems(item, fields, f"{key}[{i}].")
                else:
                    problems.append(f"{key}[{i}] is {_json_name(item)}, expected an object")
    return problems


def manifest_stage(run_dir: Path, rerun: str) -> Any:
    """The stage a finished directory's manifest records (None when it records none)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise StaleArtifactError(f"{run_dir}: {_absent(run_dir)}; {rerun}")
    return _load_manifest(path, rerun).get("stage")


def _absent(run_dir: Path) -> str:
    return "is incomplete (no manifest.json: the run did not finish)" if run_dir.is_dir() else "does not exist"


def read_manifest(run_dir: Path, stage: str, rerun: str) -> dict[str, Any]:
    """Load a completed stage's manifest, or raise naming the file, what is wrong and the command that rewrites it."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise StaleArtifactError(f"{run_dir}: {_absent(run_dir)}; run `{rerun}`")
    manifest = _load_manifest(path, rerun)
    if "stage" not in manifest:
        raise StaleArtifactError(f"{path}: manifest lacks stage (edited, or not written by tfpack); run `{rerun}`")
    if manifest["stage"] != stage:
        raise StaleArtifactError(f"{path}: is a '{manifest['stage']}' output, expected '{stage}'; run `{rerun}`")
    if problems := manifest_problems(manifest, stage):
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise StaleArtifactError(
            f"{path}: manifest {shown} (written by another tfpack version, or edited); run `{rerun}`"
        )
    return manifest


def epoch_dir_name(epoch: int) -> str:
    """Epoch `epoch`'s pack output under a `--epochs` output directory (0-based, as trainers count epochs)."""
    return EPOCH_GLOB.replace("*", str(epoch))


def epoch_dirs(out_dir: Path) -> list[Path]:
    """The pack outputs to read in turn, epoch after epoch: `OUT_DIR/epoch-<e>` of a `pack --epochs` output, or
    `[out_dir]` for a single packing (so `epoch_dirs(out)[epoch % len(...)]` serves both)."""
    stage = manifest_stage(Path(out_dir), f"run `tfpack pack RUN_DIR -o {out_dir}`")
    if stage != "pack-epochs":
        return [Path(out_dir)]
    manifest = read_manifest(Path(out_dir), "pack-epochs", f"tfpack pack RUN_DIR -o {out_dir} --epochs E")
    return [Path(out_dir) / entry["dir"] for entry in manifest["epochs"]]


def prepare_out_dir(out_dir: Path, overwrite: bool, resumable: bool = False) -> None:
    """Create `out_dir`, refusing a non-empty one unless `overwrite` (then its manifest goes first)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            done = (out_dir / MANIFEST).is_file()
            state = "holds a finished run" if done else "holds an incomplete run (no manifest.json)"
            how = (
                "pass --resume to continue it or --overwrite to start again"
                if resumable and not done
                else "pass --overwrite"
            )
            raise ConfigError(f"{out_dir}: output directory is not empty and {state}; {how}")
        (out_dir / MANIFEST).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def shard_name(index: int, count: int) -> str:
    """Shard `index` of `count` inside a pack output directory, as the manifest lists it: the Hub's naming, so that
    loaders take `data/train-*` as the train split and nothing else."""
    return f"{DATA_DIR}/train-{index:05d}-of-{count:05d}.parquet"


def listed_shards(out_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """The shards a pack output's manifest lists, in its order; raise naming the first one missing on disk."""
    paths = [out_dir / shard["file"] for shard in manifest["shards"]]
    if missing := [path for path in paths if not path.is_file()]:
        raise StaleArtifactError(
            f"{missing[0]}: listed in {out_dir / MANIFEST} but missing ({len(missing)} of "
            f"{len(paths)} shards): the output is damaged; run `tfpack pack RUN_DIR -o {out_dir} "
            "--overwrite`"
        )
    return paths


def shard_paths(out_dir: Path) -> list[Path]:
    """The shards on disk in a pack output directory, in name order."""
    return sorted((out_dir / DATA_DIR).glob(SHARD_GLOB))


def megatron_metadata_name(max_len: int) -> str:
    """Megatron-Bridge's packing-metadata file name for packs of `max_len` tokens."""
    return f"{max_len}_metadata.jsonl"


def megatron_metadata_paths(out_dir: Path) -> list[Path]:
    """The Megatron-Bridge packing-metadata files at the top of a pack output directory (one per --max-len written)."""
    return sorted(out_dir.glob("[0-9]*_metadata.jsonl"))


def rerun_embed(run_dir: Path | str, inputs: list[str] | None = None) -> str:
    """The command that rebuilds the embed run `run_dir` (from `inputs` when known)."""
    return f"tfpack embed {' '.join(inputs or []) or 'INPUT...'} -o {run_dir} --overwrite"


def rerun_pack(out_dir: Path | str) -> str:
    """The command that rebuilds the pack output `out_dir`."""
    return f"tfpack pack RUN_DIR -o {out_dir} --overwrite"
