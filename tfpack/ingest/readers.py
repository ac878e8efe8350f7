"""Read raw records from JSONL (plain, .gz, .zst), JSON arrays, Parquet and stdin, streaming where the format allows.

A reader yields `(Location, object)` pairs; a record that cannot be decoded is yielded as a `BadRecord` so that
the caller decides between failing and skipping. File-level failures (missing file, truncated JSON array,
unreadable Parquet) raise `InputError`.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from tfpack.errors import DependencyError, InputError, note
from tfpack.workdir import Fingerprint, not_an_input

STDIN = "-"
UTF8_BOM = b"\xef\xbb\xbf"
_PARQUET_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Location:
    """Where a record came from: `unit` is 'line' (1-based), 'item' (1-based, JSON array) or 'row' (0-based)."""

    source: str
    unit: str
    index: int

    def __str__(self) -> str:
        if self.unit == "line":
            return f"{self.source}:{self.index}"
        return f"{self.source}:{self.unit} {self.index}"


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that could not be decoded, with the reason."""

    reason: str


def expand_inputs(patterns: list[str]) -> list[str]:
    """Expand globs (sorted per pattern) keeping the given order; `-` stands for stdin and may appear once.

    A path that exists is taken literally, never as a glob (`d[1].jsonl`). A file named again (`g.jsonl ./g.jsonl`,
    or matched by a later glob) is read once, at its first place, with a note."""
    paths: list[str] = []
    seen: dict[str, str] = {}
    for pattern in patterns:
        if pattern == STDIN:
            paths.append(STDIN)
            continue
        literal = Path(pattern).exists() or not glob.has_magic(pattern)
        matches = [pattern] if literal else sorted(glob.glob(pattern))
        if not matches:
            raise InputError(f"{pattern}: no file matches this pattern")
        for match in matches:
            if not Path(match).is_file():
                raise InputError(not_an_input(match))
            key = os.path.realpath(match)
            if key in seen:
                note(f"{match}: the same file as {seen[key]}, given twice; read once")
                continue
            seen[key] = match
            paths.append(match)
    if paths.count(STDIN) > 1:
        raise InputError("-: stdin can be read only once")
    if not paths:
        raise InputError("no input files given")
    return paths


def file_kind(path: str) -> str:
    """'jsonl', 'json' or 'parquet', from the file name (stdin is JSONL)."""
    name = path.lower()
    if path == STDIN or name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise InputError(f"{path}: unknown file type; expected .jsonl, .jsonl.gz, .jsonl.zst, .json or .parquet")


def read_records(path: str, stdin_digest: Fingerprint | None = None) -> Iterator[tuple[Location, Any]]:
    """Yield `(location, record)` for every record of one input; undecodable records come as `BadRecord`."""
    kind = file_kind(path)
    if kind == "jsonl":
        yield from _read_jsonl(path, stdin_digest)
    elif kind == "json":
        yield from _read_json_array(path)
    else:
        yield from _read_parquet(path)


def _open_binary(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:
            raise DependencyError(f"{path}: reading .zst needs zstandard; run `pip install zstandard`") from e
        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115 - the reader owns it
        return io.BufferedReader(reader)  # type: ignore[arg-type]
    return open(path, "rb")


def _read_jsonl(path: str, stdin_digest: Fingerprint | None) -> Iterator[tuple[Location, Any]]:
    stream = sys.stdin.buffer if path == STDIN else _open_binary(path)
    try:
        for line_no, line in enumerate(stream, start=1):
            if stdin_digest is not None:
                stdin_digest.update(line)
            if line_no == 1:
                line = line.removeprefix(UTF8_BOM)
            if not line.strip():
                continue
            loc = Location(path, "line", line_no)
            try:
                yield loc, orjson.loads(line)
            except orjson.JSONDecodeError as e:
                yield loc, BadRecord(f"invalid JSON: {e}")
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read: {e}") from e
    finally:
        if path != STDIN:
            stream.close()


def _read_json_array(path: str) -> Iterator[tuple[Location, Any]]:
    """One JSON array of records (alpaca_data.json style); a `.json` file that holds JSON Lines is read as such."""
    raw = Path(path).read_bytes().removeprefix(UTF8_BOM)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if raw.lstrip()[:1] == b"{":  # several objects: JSON Lines under a .json name
            yield from _read_jsonl(path, None)
            return
        raise InputError(f"{path}: invalid JSON (truncated or malformed file): {e}") from e
    if isinstance(data, dict):  # a single record (JSON Lines of one line)
        yield Location(path, "line", 1), data
        return
    if not isinstance(data, list):
        raise InputError(f"{path}: a .json input must hold one array of records, found {type(data).__name__}")
    for index, record in enumerate(data, start=1):
        yield Location(path, "item", index), record


def _read_parquet(path: str) -> Iterator[tuple[Location, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        row = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
            for record in batch.to_pylist():
                yield Location(path, "row", row), record
                row += 1
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: cannot read Parquet: {e}") from e
