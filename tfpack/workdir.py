"""The run directory contract: atomic writes, content fingerprints and the manifest written last.

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
# A `tfpack pack` output directory is laid out as a Hugging Face dataset repository: the shards under `data/`, a dataset
# card and the lists of left-out samples at the top, working files in a hidden directory that loaders skip.
DATA_DIR = "data"
SHARD_GLOB = "train-*.parquet"
WORK_DIR = ".tfpack"
DROPPED_FILE = "dropped.jsonl"
ERRORS_FILE = "errors.jsonl"
CARD_FILE = "README.md"
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


def fingerprint_file(path: Path) -> str:
    """Content fingerprint of a file: `blake2b-128:<hex>` of its bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return f"blake2b-128:{digest.hexdigest()}"


def fingerprint_bytes(data: bytes) -> str:
    """Fingerprint of an in-memory byte string, in the same form as `fingerprint_file`."""
    return f"blake2b-128:{hashlib.blake2b(data, digest_size=16).hexdigest()}"


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write `run_dir/manifest.json` last: the marker that the stage finished."""
    write_json(run_dir / MANIFEST, manifest)


# What readers of each stage's manifest rely on; a manifest without one of these is not a finished run of that stage.
REQUIRED_KEYS = {
    "embed": ("n", "dim", "model", "backend", "dtype", "inputs"),
    "pack": ("counts", "shards", "max_len", "attention", "tokenizer", "threshold", "window", "k", "run_dir",
             "embedding_model"),
}
REQUIRED_COUNTS = ("packs", "samples", "tokens", "loss_tokens", "dropped", "truncated")


def _load_manifest(path: Path, rerun: str) -> dict[str, Any]:
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise StaleArtifactError(f"{path}: corrupt or partial manifest ({e}); run `{rerun}`") from None
    if not isinstance(manifest, dict):
        raise StaleArtifactError(f"{path}: not a manifest (a JSON {type(manifest).__name__}); run `{rerun}`")
    return manifest


def manifest_stage(run_dir: Path, rerun: str) -> Any:
    """The stage a finished directory's manifest records (None when it records none)."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise StaleArtifactError(f"{run_dir}: no manifest.json; {rerun}")
    return _load_manifest(path, rerun).get("stage")


def read_manifest(run_dir: Path, stage: str, rerun: str) -> dict[str, Any]:
    """Load a completed stage's manifest, or raise naming the file, what is wrong and the command that rewrites it."""
    path = run_dir / MANIFEST
    if not path.is_file():
        state = "is incomplete (no manifest.json: the run did not finish)" if run_dir.is_dir() else "does not exist"
        raise StaleArtifactError(f"{run_dir}: {state}; run `{rerun}`")
    manifest = _load_manifest(path, rerun)
    if manifest.get("stage") != stage:
        raise StaleArtifactError(
            f"{path}: is a '{manifest.get('stage')}' output, expected '{stage}'; run `{rerun}`"
        )
    missing = [key for key in REQUIRED_KEYS.get(stage, ()) if key not in manifest]
    if stage == "pack" and isinstance(manifest.get("counts"), dict):
        missing += [f"counts.{key}" for key in REQUIRED_COUNTS if key not in manifest["counts"]]
    if missing:
        raise StaleArtifactError(f"{path}: manifest lacks {', '.join(missing)} (written by another tfpack version, or "
                                 f"edited); run `{rerun}`")
    return manifest


def prepare_out_dir(out_dir: Path, overwrite: bool, resumable: bool = False) -> None:
    """Create `out_dir`, refusing a non-empty one unless `overwrite` (then its manifest goes first)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            done = (out_dir / MANIFEST).is_file()
            state = "holds a finished run" if done else "holds an incomplete run (no manifest.json)"
            how = ("pass --resume to continue it or --overwrite to start again" if resumable and not done
                   else "pass --overwrite")
            raise ConfigError(f"{out_dir}: output directory is not empty and {state}; {how}")
        (out_dir / MANIFEST).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def shard_name(index: int, count: int) -> str:
    """Shard `index` of `count` inside a pack output directory, as the manifest lists it: the Hub's naming, so that
    loaders take `data/train-*` as the train split and nothing else."""
    return f"{DATA_DIR}/train-{index:05d}-of-{count:05d}.parquet"


def shard_paths(out_dir: Path) -> list[Path]:
    """The shards on disk in a pack output directory, in name order."""
    return sorted((out_dir / DATA_DIR).glob(SHARD_GLOB))


def megatron_metadata_name(max_len: int) -> str:
    """Megatron-Bridge's packing-metadata file name for packs of `max_len` tokens."""
    return f"{max_len}_metadata.jsonl"


def megatron_metadata_paths(out_dir: Path) -> list[Path]:
    """The Megatron-Bridge packing-metadata files at the top of a pack output directory (one per --max-len written)."""
    return sorted(out_dir.glob("[0-9]*_metadata.jsonl"))
