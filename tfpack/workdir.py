"""The run directory contract: every file name, the rerun hints, atomic writes, content fingerprints and the
manifest written last.

Every file is written under a temporary name and renamed into place with `os.replace`, so a crash never
leaves a file that looks complete. `manifest.json` is written after everything else: its presence is the
completion marker of a stage.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from tfpack.errors import ConfigError, StaleArtifactError, note

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
REPEATS_FILE = "repeats.jsonl"  # `pack --weights`: the samples packed more than once, with their number of copies
CARD_FILE = "README.md"
EMBED_RUN = "embed"  # under WORK_DIR: the embed run of `pack INPUT...`
TOKENS_DIR = "tokens.tmp"  # under WORK_DIR: the token store while packing
EPOCH_GLOB = "epoch-*"  # `pack --epochs E`: one complete pack output per epoch, OUT_DIR/epoch-0 .. epoch-<E-1>
# A `tfpack export` folder: the trainer's rows (axolotl: Parquet under DATA_DIR; LLaMA-Factory: a `save_to_disk`
# folder, whose own names follow) and the recipe to merge into the trainer's config.
RECIPE_FILE = "recipe.yaml"
SAVE_TO_DISK_NAMES = ("data-*.arrow", "dataset_info.json", "state.json")
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
    """Write `run_dir/manifest.json` last: the marker that the stage finished. It lists what the stage wrote there
    (`written`: the names `--overwrite` may remove later; folders end in /)."""
    patterns = OWNED.get(str(manifest.get("stage")), ())
    written = [
        name + ("/" if (run_dir / name).is_dir() else "")
        for name in sorted(os.listdir(run_dir))
        if name != MANIFEST and any(fnmatch.fnmatch(name, p) for p in patterns)
    ]
    write_json(run_dir / MANIFEST, {**manifest, "written": written})


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
    """The stage a finished directory's manifest records (None when it records none); an export, which no command
    reads, raises naming its source."""
    path = run_dir / MANIFEST
    if not path.is_file() or (stage := _load_manifest(path, rerun).get("stage")) == "export":
        raise StaleArtifactError(mismatch(classify(run_dir), ("pack", "embed"), rerun))
    return stage


def read_manifest(run_dir: Path, stage: str, rerun: str) -> dict[str, Any]:
    """Load a completed stage's manifest, or raise naming the file, what is wrong and the command that rewrites it."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise StaleArtifactError(mismatch(classify(run_dir), (stage,), rerun))
    manifest = _load_manifest(path, rerun)
    if "stage" not in manifest:
        raise StaleArtifactError(f"{path}: manifest lacks stage (edited, or not written by tfpack); run `{rerun}`")
    if manifest["stage"] != stage:
        info = classify(run_dir)
        if info.kind in STAGE_KINDS.values():
            raise StaleArtifactError(mismatch(info, (stage,), rerun))
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
    stage = manifest_stage(Path(out_dir), f"tfpack pack RUN_DIR -o {out_dir} --overwrite")
    if stage != "pack-epochs":
        return [Path(out_dir)]
    manifest = read_manifest(Path(out_dir), "pack-epochs", f"tfpack pack RUN_DIR -o {out_dir} --epochs E")
    return [Path(out_dir) / entry["dir"] for entry in manifest["epochs"]]


# ---- What a path is, and what each command may read and write -------------------------------------------------


class Kind(Enum):
    """What a path on disk is, as far as tfpack is concerned (`classify`)."""

    MISSING = "missing"
    FILE = "file"
    EMPTY = "empty folder"
    EMBED = "embed"  # a finished `tfpack embed` run directory
    PACK = "pack"  # a finished `tfpack pack` output
    PACK_EPOCHS = "pack-epochs"  # a finished `tfpack pack --epochs` output
    EXPORT = "export"  # a finished `tfpack export` folder
    INCOMPLETE = "incomplete"  # tfpack's working files without a readable manifest: a run that did not finish
    FOREIGN = "foreign"  # a non-empty folder tfpack did not write


STAGE_KINDS = {"embed": Kind.EMBED, "pack": Kind.PACK, "pack-epochs": Kind.PACK_EPOCHS, "export": Kind.EXPORT}
TFPACK_KINDS = (*STAGE_KINDS.values(), Kind.INCOMPLETE)
INGEST_DIR = ".ingest"  # the per-input parts while `embed` reads its inputs
METADATA_GLOB = "[0-9]*_metadata.jsonl"
# What each stage writes at the top of its directory (shell patterns): all that `--overwrite` ever removes there.
OWNED: dict[str, tuple[str, ...]] = {
    "embed": (MANIFEST, SAMPLES_FILE, EMBEDDINGS_FILE, PARTIAL_FILE, PROGRESS_FILE, ERRORS_FILE, KNN_DIR, INGEST_DIR),
    "pack": (
        MANIFEST,
        DATA_DIR,
        WORK_DIR,
        CARD_FILE,
        DROPPED_FILE,
        ERRORS_FILE,
        CONTAMINATION_FILE,
        REPEATS_FILE,
        METADATA_GLOB,
    ),
    "pack-epochs": (MANIFEST, WORK_DIR, EPOCH_GLOB),
    "export": (MANIFEST, RECIPE_FILE, DATA_DIR, *SAVE_TO_DISK_NAMES),
}
# What tfpack adds to a finished output after its manifest, so unlisted yet tfpack's: an embed run's kNN cache (written
# by order, pack and sweep).
ADDED_LATER: dict[str, tuple[str, ...]] = {"embed": (KNN_DIR,)}
# Names only tfpack writes: a folder without a manifest that holds one of these is an unfinished tfpack run.
MARKERS = (PROGRESS_FILE, PARTIAL_FILE, WORK_DIR, INGEST_DIR)
# What --overwrite removes from an unfinished run: the names of the stages that leave markers (an export is renamed
# into place whole, so it never leaves one), a README.md only as part of a finished pack output.
UNFINISHED_OWNED = tuple(
    sorted({p for stage in ("embed", "pack", "pack-epochs") for p in OWNED[stage] if p != CARD_FILE})
)
WHAT = {
    "embed": "an embed run directory",
    "pack": "a pack output",
    "pack-epochs": "a `pack --epochs` output",
    "export": "a tfpack export",
}
# The input files tfpack reads, by kind (ingest/readers.py reads them; messages here name them).
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")
JSON_SUFFIXES = (".json",)
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
INPUT_SUFFIXES = JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES


@dataclass(frozen=True)
class PathInfo:
    """A classified path: its `kind`, the manifest of a finished tfpack output, what a folder holds."""

    path: Path
    kind: Kind
    manifest: dict[str, Any] | None = None
    names: tuple[str, ...] = field(default=())  # a folder's entries, sorted

    @property
    def stage(self) -> str | None:
        return None if self.manifest is None else str(self.manifest["stage"])

    @property
    def export_source(self) -> str:
        """The pack output an export was made from, as its manifest records it."""
        source = (self.manifest or {}).get("source")
        return str(source.get("out_dir", "OUT_DIR")) if isinstance(source, dict) else "OUT_DIR"

    def describe(self) -> str:
        """`is an embed run directory`, `does not exist`, ...: what the path is, for a message."""
        if self.kind is Kind.MISSING:
            return "does not exist"
        if self.kind is Kind.FILE:
            owner = tfpack_owner(self.path)
            return f"is a file inside the tfpack output {owner.path}" if owner else "is a file"
        if self.kind is Kind.EMPTY:
            return "is an empty folder"
        if self.kind is Kind.EMBED:
            return "is an embed run directory"
        if self.kind in (Kind.PACK, Kind.PACK_EPOCHS):
            what = "a pack output" if self.kind is Kind.PACK else "a `pack --epochs` output"
            return f"is {what} (packed from {(self.manifest or {}).get('run_dir', 'an embed run')})"
        if self.kind is Kind.EXPORT:
            return f"is a tfpack export (for {(self.manifest or {}).get('trainer')}, of {self.export_source})"
        if self.kind is Kind.INCOMPLETE:
            if MANIFEST in self.names:
                return "holds a tfpack run whose manifest.json is damaged"
            return "is incomplete (no manifest.json: the run did not finish)"
        return f"is a folder tfpack did not write (no tfpack manifest.json; holds {some(self.names)})"

    def owned(self) -> list[str]:
        """The entries tfpack wrote here, all that --overwrite may remove: those a finished output's manifest lists
        (`written`; for a manifest from before that list, its stage's names), its `ADDED_LATER` cache and the
        `NAME.tmp` it left on the way; in an unfinished run, the names the stages that leave markers write."""
        if self.kind not in TFPACK_KINDS:
            return []
        if self.stage is None:
            return [n for n in self.names if _owned(n, UNFINISHED_OWNED)]
        listed = (self.manifest or {}).get("written")
        names = {str(n).rstrip("/") for n in listed} | {MANIFEST} if isinstance(listed, list) else set(self.names)
        names |= set(ADDED_LATER.get(self.stage, ()))
        return [n for n in self.names if _owned(n, OWNED[self.stage]) and (n in names or n.endswith(".tmp"))]


def some(names: Iterable[str], limit: int = 4) -> str:
    """`a, b, c, d and 3 more`: up to `limit` names for a one-line message."""
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _owned(name: str, patterns: Iterable[str], tmp: bool = True) -> bool:
    """Whether `name` is one of `patterns`, or (with `tmp`) the `NAME.tmp` that `atomic_path` writes on the way."""
    stem = name.removesuffix(".tmp") if tmp else name
    return any(fnmatch.fnmatch(stem, p) for p in patterns)


def _tfpack_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a finished tfpack output in `path`; None when absent, unreadable or not tfpack's."""
    try:
        manifest = orjson.loads((path / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("stage") in STAGE_KINDS else None


def classify(path: Path) -> PathInfo:
    """What `path` is: missing, a file, an empty folder, a finished tfpack output (embed, pack, pack --epochs), an
    unfinished tfpack run, or a folder tfpack did not write. The one place every command asks before it reads or
    writes a path."""
    if not path.exists():
        return PathInfo(path, Kind.MISSING)
    if not path.is_dir():
        return PathInfo(path, Kind.FILE)
    names = tuple(sorted(os.listdir(path)))
    if not names:
        return PathInfo(path, Kind.EMPTY)
    manifest = _tfpack_manifest(path)
    if manifest is not None:
        return PathInfo(path, STAGE_KINDS[manifest["stage"]], manifest, names)
    if any(name in MARKERS for name in names):
        return PathInfo(path, Kind.INCOMPLETE, None, names)
    return PathInfo(path, Kind.FOREIGN, None, names)


def tfpack_owner(path: Path) -> PathInfo | None:
    """The tfpack output or run directory `path` lies inside (its nearest such ancestor), if any."""
    for parent in path.absolute().parents:
        if (parent / MANIFEST).is_file() or any((parent / name).exists() for name in MARKERS):
            info = classify(parent)
            if info.kind in TFPACK_KINDS:
                return info
    return None


def mismatch(info: PathInfo, expected: tuple[str, ...], rerun: str, also: str = "") -> str:
    """The one-line message for a path that is not what a command reads: what it is, what was expected (the
    `expected` stages' outputs, or `also`), and the way on (the run a pack output was made from, an epoch of a
    `--epochs` output, the command that makes one)."""
    wanted = " or ".join([*(WHAT[stage] for stage in expected), *([also] if also else [])])
    message = f"{info.path}: {info.describe()}; expected {wanted}"
    if info.kind is Kind.INCOMPLETE:
        return f"{info.path}: {info.describe()}; run `{rerun}`"
    if info.kind in (Kind.PACK, Kind.PACK_EPOCHS) and "embed" in expected:
        return f"{message}: pass the run it was packed from, {(info.manifest or {}).get('run_dir', 'RUN_DIR')}"
    if info.kind is Kind.PACK_EPOCHS and "pack" in expected:
        return f"{message}: read one epoch, e.g. {info.path / epoch_dir_name(0)}"
    if info.kind is Kind.EMBED and "pack" in expected:
        return f"{message}: `tfpack pack {info.path} -o OUT` packs it"
    if info.kind is Kind.EXPORT and "pack" in expected:
        return f"{message}: pass the pack output it was exported from, {info.export_source}"
    if info.kind is Kind.FILE and (owner := tfpack_owner(info.path)) is not None:
        return f"{message}: pass {owner.export_source if owner.kind is Kind.EXPORT else owner.path}"
    if info.kind is Kind.FILE and info.path.name.lower().endswith(INPUT_SUFFIXES):
        return f"{message}: embed it first (`tfpack embed {info.path} -o RUN`)"
    return message


def not_an_input(path: str) -> str:
    """The message for an input argument that is no readable file (a folder, a run directory, nothing)."""
    info = classify(Path(path))
    if info.kind is Kind.MISSING:
        return f"{path}: no such file"
    advice = ""
    if info.kind in (Kind.EMBED, Kind.PACK, Kind.PACK_EPOCHS):
        advice = "; `tfpack pack` takes an embed run directory alone, not mixed with input files"
    return f"{path}: {info.describe()}; expected an input file ({', '.join(INPUT_SUFFIXES)}) or a glob{advice}"


def output_path(value: str | os.PathLike[str], flag: str = "-o") -> Path:
    """`value` as an output path; an empty one (an unset `$OUT`) is refused, never taken as the current folder."""
    if not os.fspath(value).strip():
        raise ConfigError(f"{flag}: empty path (an unset variable?); name the output, e.g. {flag} out")
    return Path(value)


def check_apart(out: Path, inputs: Iterable[str | os.PathLike[str]], flag: str = "-o") -> None:
    """Refuse an output that is, lies inside, or contains one of the `inputs` (files or run directories)."""
    target = out.resolve()
    for item in inputs:
        if os.fspath(item) == "-":
            continue
        source = Path(item).resolve()
        relation = (
            "is"
            if target == source
            else "is inside"
            if source in target.parents
            else "contains"
            if target in source.parents
            else None
        )
        if relation is not None:
            raise ConfigError(
                f"{flag} {out}: {relation} the input {item}; write the output somewhere else (nothing was changed)"
            )


def check_out_dir(
    out_dir: Path, writes: str, overwrite: bool, inputs: Iterable[str | os.PathLike[str]] = (), resumable: bool = False
) -> PathInfo:
    """Whether a command that writes a `writes` output ('embed', 'pack' or 'export') may use `out_dir`; raise before
    anything is created when not: a file, a folder tfpack did not write, another kind of tfpack output, one of the
    inputs, a folder inside another tfpack output (except in its working folder, where `pack INPUT...` embeds), an
    existing output without --overwrite, or one holding a file of the user's under a name tfpack writes there
    (--overwrite would replace it)."""
    check_apart(out_dir, inputs)
    owner = tfpack_owner(out_dir)
    if owner is not None and owner.path / WORK_DIR not in [out_dir.absolute(), *out_dir.absolute().parents]:
        raise ConfigError(
            f"-o {out_dir}: is inside the tfpack output {owner.path} (tfpack manages its files); write it somewhere "
            "else"
        )
    info = classify(out_dir)
    if info.kind in (Kind.MISSING, Kind.EMPTY):
        return info
    if info.kind is Kind.FILE:
        raise ConfigError(f"-o {out_dir}: exists and is not a directory; name a folder to write into")
    if info.kind is Kind.FOREIGN:
        raise ConfigError(
            f"-o {out_dir}: {info.describe()}; tfpack writes only into an empty or new folder (--overwrite replaces "
            "only tfpack's own outputs): pick an empty or new folder"
        )
    if info.stage is not None and info.stage.split("-")[0] != writes:
        raise ConfigError(
            f"-o {out_dir}: {info.describe()}, not {WHAT[writes]}; --overwrite replaces only an "
            f"earlier `tfpack {writes}` output: pick another folder"
        )
    if not overwrite:
        done = info.kind is not Kind.INCOMPLETE
        state = "holds a finished run" if done else "holds an incomplete run (no manifest.json)"
        how = (
            "pass --resume to continue it or --overwrite to start again"
            if resumable and not done
            else "pass --overwrite"
        )
        raise ConfigError(f"-o {out_dir}: output directory is not empty and {state}; {how}")
    if clash := _clashes(info, [p for stage, names in OWNED.items() if stage.split("-")[0] == writes for p in names]):
        raise ConfigError(
            f"-o {out_dir}: holds {some(clash)}, not listed as tfpack's but named as its outputs, so --overwrite "
            "would write over them: move them out or pick another folder"
        )
    return info


def _clashes(info: PathInfo, patterns: list[str]) -> list[str]:
    """The user's files in `info`'s folder that an output named by `patterns` would write over: unlisted files under
    those names, and shards in an unlisted folder of those names (tfpack writes beside anything else there)."""
    owned = info.owned()
    clash = []
    for name in info.names:
        if name in owned or not _owned(name, patterns, tmp=False):
            continue
        path = info.path / name
        if path.is_dir() and not path.is_symlink():
            clash += [f"{name}/{shard.name}" for shard in sorted(path.glob(SHARD_GLOB))]
        else:
            clash.append(name)
    return clash


def remove_owned(info: PathInfo) -> list[str]:
    """Remove what tfpack wrote in the folder `info` describes (`PathInfo.owned`; under `data/` only the shards, so a
    user's file there stays); anything else stays, and a note names it. Returns the names removed."""
    if info.kind not in TFPACK_KINDS:
        raise ConfigError(f"{info.path}: {info.describe()}; tfpack removes nothing there")
    owned = info.owned()
    removed, kept = [], [n for n in info.names if n not in owned]
    for name in owned:
        path = info.path / name
        if name == DATA_DIR and path.is_dir():
            for shard in [*path.glob(SHARD_GLOB), *path.glob(SHARD_GLOB + ".tmp")]:
                shard.unlink()
            if rest := sorted(os.listdir(path)):
                kept += [f"{DATA_DIR}/{n}" for n in rest]
                continue
            path.rmdir()
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(name)
    if kept:
        note(f"-o {info.path}: kept what tfpack did not write there ({some(kept)}); the new output goes beside it")
    return removed


def prepare_out_dir(
    out_dir: Path,
    writes: str,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str]] = (),
    resumable: bool = False,
) -> None:
    """`check_out_dir`, then (with --overwrite) remove the earlier output's own files, and create `out_dir`."""
    info = check_out_dir(out_dir, writes, overwrite, inputs, resumable)
    if info.kind in TFPACK_KINDS:
        remove_owned(info)
    out_dir.mkdir(parents=True, exist_ok=True)


def check_out_file(
    out: Path,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str]] = (),
    flag: str = "-o",
    magic: bytes = b"",
    beside: Path | None = None,
) -> None:
    """Whether a command may write the file `out` (an order `.npy`, a plot): never a folder, never inside a tfpack
    output or run directory (except a new file at the top level of `beside`, e.g. a plot next to the shards it
    draws, which tfpack then treats as the user's), never an input, an existing file only with --overwrite and only
    when it starts with `magic` (the kind of file the command writes)."""
    if out.name == MANIFEST:
        raise ConfigError(f"{flag} {out}: choose another name than {MANIFEST}")
    top_of_beside = beside is not None and out.parent.resolve() == beside.resolve()
    if not top_of_beside:
        check_apart(out, inputs, flag)
    if out.is_dir():
        raise ConfigError(f"{flag} {out}: is a directory; name the file to write (e.g. {flag} {out / 'order.npy'})")
    if not top_of_beside and (owner := tfpack_owner(out)) is not None:
        raise ConfigError(
            f"{flag} {out}: is inside the tfpack output {owner.path} (tfpack manages its files); write it somewhere "
            "else"
        )
    if out.exists():
        if not overwrite:
            raise ConfigError(f"{flag} {out}: exists; pass --overwrite to replace it, or name another file")
        with open(out, "rb") as f:
            head = f.read(len(magic))
        if head != magic:
            raise ConfigError(
                f"{flag} {out}: exists and is not the kind of file this command writes; --overwrite replaces only "
                "such a file: name another file"
            )


def read_parquet(paths: list[Path], columns: list[str], rerun: str) -> Any:
    """The `columns` of Parquet files tfpack wrote, concatenated (a `pyarrow.Table`); a corrupt, truncated or
    column-less file raises naming it and the command that rewrites it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path, columns=columns))
        except pa.ArrowException as e:
            raise damaged_parquet(path, e, rerun) from None
    if not tables:
        raise StaleArtifactError(f"no Parquet files to read; run `{rerun}`")
    return pa.concat_tables(tables)


def parquet_rows(path: Path, rerun: str) -> int:
    """Rows of a Parquet file tfpack wrote (from its footer); a damaged file raises naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except pa.ArrowException as e:
        raise damaged_parquet(path, e, rerun) from None


def damaged_parquet(path: Path, error: Exception, rerun: str) -> StaleArtifactError:
    """The error for a Parquet file tfpack wrote that cannot be read (truncated, overwritten, edited)."""
    return StaleArtifactError(f"{path}: not a readable Parquet file ({error}); it is damaged: run `{rerun}`")


def knn_cache_dir(run_dir: Path, work_dir: Path | None = None) -> Path:
    """Where the kNN graph and `--threshold auto` estimate of the run `run_dir` are cached: `RUN_DIR/knn/` when the
    user can write there; for a read-only run, `work_dir/knn/` (a pack output's working folder) or else
    `$TFPACK_CACHE/knn/<run>/` (default ~/.cache/tfpack)."""
    cache = run_dir / KNN_DIR
    if os.access(cache if cache.is_dir() else run_dir, os.W_OK):
        return cache
    if work_dir is not None:
        return work_dir / KNN_DIR
    return cache_root() / KNN_DIR / short_hash(str(run_dir.resolve()))


def cache_root() -> Path:
    """tfpack's cache folder (static models, ONNX exports, kNN graphs of read-only runs): $TFPACK_CACHE or
    ~/.cache/tfpack."""
    return Path(os.environ.get("TFPACK_CACHE", Path.home() / ".cache" / "tfpack"))


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
            f"{len(paths)} shards): the output is damaged; run `{rerun_pack(out_dir, manifest)}`"
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


def rerun_pack(out_dir: Path | str, manifest: dict[str, Any] | None = None) -> str:
    """The command that rebuilds the pack output `out_dir`: from the run its `manifest` records, or from the input
    files that run was embedded from when it is the output's own working copy (`pack INPUT...`)."""
    source = "RUN_DIR"
    run = manifest.get("run_dir") if manifest is not None else None
    if isinstance(run, str):
        source = run
        if Path(out_dir).resolve() in Path(run).resolve().parents:
            inputs = (_tfpack_manifest(Path(run)) or {}).get("inputs") or []
            source = " ".join(str(i.get("path")) for i in inputs if isinstance(i, dict)) or "INPUT..."
    return f"tfpack pack {source} -o {out_dir} --overwrite"
