"""Read raw records from JSONL (plain, .gz, .zst), JSON arrays, Parquet, CSV/TSV (plain, .gz) and stdin, streaming
where the format allows.

A reader yields `(Location, object)` pairs; a record that cannot be decoded is yielded as a `BadRecord` so that
the caller decides between failing and skipping. File-level failures (missing file, truncated JSON array,
unreadable Parquet, a CSV header with an empty or repeated name) raise `InputError`.

CSV rows are read by pyarrow's streaming CSV reader with every column as text, so a cell keeps the text it was
written with; the column types pyarrow infers from the first `CSV_INFER_BYTES` of the file decide which columns are
numeric, and a row whose cell in a numeric column is not a number is a `BadRecord`, as is a row with the wrong number
of cells. Each row is located by the physical line it starts on (blank lines and line breaks inside quoted cells
counted), found by a scan that follows pyarrow's quoting rules.
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
from tfpack.workdir import (
    CSV_SUFFIXES,
    INPUT_SUFFIXES,
    JSON_SUFFIXES,
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    Fingerprint,
    not_an_input,
)

STDIN = "-"
UTF8_BOM = b"\xef\xbb\xbf"
_PARQUET_BATCH = 4096
CSV_INFER_BYTES = 64 << 10  # pyarrow infers the column types from this much of the file (its first block)
_CSV_BLOCK = 1 << 20
_CSV_NUMBER = {  # what pyarrow parses as a number of the column's type (RE2, matched case-insensitively)
    "int": r"^\s*[+-]?\d+\s*$",
    "float": r"^\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity)\s*$",
}


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
    """'jsonl', 'json', 'parquet' or 'csv' (CSV or TSV), from the file name (stdin is JSONL)."""
    name = path.lower()
    if path == STDIN or name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise InputError(f"{path}: unknown file type; expected {', '.join(INPUT_SUFFIXES)}")


def read_records(
    path: str, stdin_digest: Fingerprint | None = None, csv_columns: tuple[str, ...] | None = None
) -> Iterator[tuple[Location, Any]]:
    """Yield `(location, record)` for every record of one input; undecodable records come as `BadRecord`.

    `csv_columns` names the columns of a CSV/TSV file that has no header row (else its first row is the header).
    """
    kind = file_kind(path)
    if kind == "jsonl":
        yield from _read_jsonl(path, stdin_digest)
    elif kind == "json":
        yield from _read_json_array(path)
    elif kind == "csv":
        yield from _read_csv(path, csv_columns)
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


class CsvRow(dict[str, str | None]):
    """A CSV row: each cell's text as written, None for an empty cell or a null marker (NA, null, ...) in a numeric
    column. `numeric` maps the columns inferred as numbers to 'int' or 'float'."""

    __slots__ = ("numeric",)

    def __init__(self, cells: dict[str, str | None], numeric: dict[str, str]) -> None:
        super().__init__(cells)
        self.numeric = numeric


def _read_csv(path: str, csv_columns: tuple[str, ...] | None) -> Iterator[tuple[Location, Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    delimiter = "\t" if path.lower().endswith((".tsv", ".tsv.gz")) else ","
    invalid: dict[int, str] = {}

    def on_invalid(row: Any) -> str:
        invalid[row.number] = f"expected {row.expected_columns} cells, found {row.actual_columns}"
        return "skip"

    def reader(block_size: int, types: dict[str, Any] | None) -> Any:
        return pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(
                column_names=list(csv_columns) if csv_columns else None, use_threads=False, block_size=block_size
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )

    try:
        schema = reader(CSV_INFER_BYTES, None).schema
        _check_header(path, schema.names)
        numeric = {f.name: kind for f in schema if (kind := _number_kind(f.type))}
        invalid.clear()
        batches = reader(_CSV_BLOCK, {name: pa.string() for name in schema.names})
        null_markers = pa.array(pa_csv.ConvertOptions().null_values)
        null = pa.scalar(None, pa.string())
        lines = _csv_record_lines(path, delimiter)
        number = 0  # pyarrow's 1-based row number (the header included) of the last row located
        if not csv_columns:
            number = 1
            _next_line(lines, path)
        for batch in batches:
            bad: dict[int, str] = {}
            cells = {name: batch.column(name) for name in schema.names}
            for name, kind in numeric.items():
                text = pc.utf8_trim_whitespace(cells[name])
                missing = pc.is_in(text, value_set=null_markers)
                cells[name] = pc.if_else(missing, null, cells[name])
                ok = pc.or_(missing, pc.match_substring_regex(text, _CSV_NUMBER[kind], ignore_case=True))
                for i in pc.indices_nonzero(pc.invert(ok)).to_pylist():
                    value = cells[name][i].as_py()
                    bad.setdefault(i, f"column '{name}': {value!r} is not a number (the column holds {kind}s)")
            for name in schema.names:
                if name not in numeric:
                    cells[name] = pc.if_else(pc.equal(pc.utf8_trim_whitespace(cells[name]), ""), null, cells[name])
            rows = pa.RecordBatch.from_arrays(list(cells.values()), names=schema.names).to_pylist()
            for i, row in enumerate(rows):
                number += 1
                while number in invalid:
                    yield Location(path, "line", _next_line(lines, path)), BadRecord(invalid.pop(number))
                    number += 1
                loc = Location(path, "line", _next_line(lines, path))
                yield loc, BadRecord(bad[i]) if i in bad else CsvRow(row, numeric)
        for number in sorted(invalid):
            yield Location(path, "line", _next_line(lines, path)), BadRecord(invalid[number])
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: cannot read CSV: {e}") from e


def _check_header(path: str, names: list[str]) -> None:
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name.strip():
            raise InputError(f"{path}:1: column {position} of the header has no name; name it, or pass --csv-columns")
        if name in seen:
            raise InputError(f"{path}:1: column '{name}' appears twice in the header; rename one")
        seen.add(name)


def _number_kind(arrow_type: Any) -> str | None:
    import pyarrow.types as pt

    if pt.is_integer(arrow_type):
        return "int"
    if pt.is_floating(arrow_type) or pt.is_decimal(arrow_type):
        return "float"
    return None


def _next_line(lines: Iterator[int], path: str) -> int:
    line = next(lines, None)
    if line is None:
        raise InputError(f"{path}: more rows than the line scan found; is a quoted cell left open?")
    return line


def _csv_record_lines(path: str, delimiter: str) -> Iterator[int]:
    """The 1-based line on which each row of a CSV file starts (the header included), skipping empty lines.

    Follows pyarrow's parser: a quote opens a quoted cell only at the start of a cell, a doubled quote inside one is
    a quote, and line breaks (\\n, \\r\\n or \\r) inside a quoted cell belong to the cell.
    """
    raw = cast(IO[bytes], gzip.open(path, "rb")) if path.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115
    with io.TextIOWrapper(raw, encoding="latin-1", newline=None) as text:  # quotes and separators are ASCII
        in_quote = False
        for line_no, line in enumerate(text, start=1):
            body = line.rstrip("\n")
            if not in_quote:
                if not body:
                    continue
                yield line_no
                if '"' not in body:
                    continue
            in_quote = _ends_in_quote(body, delimiter, in_quote)


def _ends_in_quote(body: str, delimiter: str, in_quote: bool) -> bool:
    """Whether a quoted cell is still open at the end of this line (`in_quote`: open at its start)."""
    at_cell_start = not in_quote
    i = 0
    while i < len(body):
        char = body[i]
        if in_quote:
            if char == '"':
                if body[i + 1 : i + 2] == '"':
                    i += 1
                else:
                    in_quote = False
        elif char == delimiter:
            at_cell_start = True
            i += 1
            continue
        elif char == '"' and at_cell_start:
            in_quote = True
        at_cell_start = False
        i += 1
    return in_quote
