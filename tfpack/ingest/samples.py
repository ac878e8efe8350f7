"""Ingest: read every input, normalise each record into turns and store the samples as Parquet.

`samples.parquet` in a run directory is what later stages read instead of re-parsing the inputs (stdin included).
Each record gets `sample_id` = its position in the concatenated input (files in the order given), whether or not
it is valid, so ids are stable under `--on-error skip`.

Schema: `sample_id` int64, `input_index` int32 (position of its file in the manifest's `inputs`),
`record_index` int64 (line, item or row number within that file), `turns` list<struct<role: string, content: string,
extra: string>> (`content` null for a tool-call message without text; `extra` the message's other keys as JSON),
`source_id` string (the record's own id with `--id-field`, which must be unique across all inputs; else null),
`tools` string (the record's tool schemas as a JSON list; else null), `label` string (a tabular row's label, the
text of its answer; else null). Runs written before a column existed lack it; readers treat it as all null.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.config import check_on_error
from tfpack.errors import InputError
from tfpack.ingest.formats import Conversation, FieldMap, FormatOptions, Turn, resolve_field_map, to_conversation
from tfpack.ingest.readers import STDIN, BadRecord, Location, expand_inputs, read_records
from tfpack.parallel import LOCAL, engine_for
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import Fingerprint, atomic_path, fingerprint_file

TURN_TYPE = pa.struct([("role", pa.string()), ("content", pa.string()), ("extra", pa.string())])
SAMPLES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.int64()),
        ("input_index", pa.int32()),
        ("record_index", pa.int64()),
        ("turns", pa.list_(TURN_TYPE)),
        ("source_id", pa.string()),
        ("tools", pa.string()),
        ("label", pa.string()),
    ]
)
_BATCH = 8192


@dataclass
class IngestResult:
    """What ingest saw: per-input descriptions for the manifest, counts, and the skipped records."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    n_records: int = 0
    n_samples: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class _BatchWriter:
    """Accumulates samples into record batches of `SAMPLES_SCHEMA`."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.rows: dict[str, list[Any]] = {name: [] for name in SAMPLES_SCHEMA.names}

    def add(
        self,
        sample_id: int,
        input_index: int,
        record_index: int,
        conversation: Conversation,
        source_id: str | None,
        label: str | None,
    ) -> None:
        self.rows["source_id"].append(source_id)
        self.rows["sample_id"].append(sample_id)
        self.rows["input_index"].append(input_index)
        self.rows["record_index"].append(record_index)
        self.rows["turns"].append([t._asdict() for t in conversation.turns])
        self.rows["tools"].append(conversation.tools)
        self.rows["label"].append(label)
        if len(self.rows["sample_id"]) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows["sample_id"]:
            self.writer.write_batch(pa.RecordBatch.from_pydict(self.rows, schema=SAMPLES_SCHEMA))
            self.rows = {name: [] for name in SAMPLES_SCHEMA.names}


@dataclass
class InputPart:
    """One input read into its own Parquet part (sample ids count from 0 within the input)."""

    path: str
    part: Path
    unit: str
    records: int
    errors: list[dict[str, Any]]
    field_map: dict[str, Any] | None
    fingerprint: str
    failure: str | None = None  # on_error='fail': the first bad record's message; the part ends before it


def read_input(
    path: str,
    input_index: int,
    options: FormatOptions,
    on_error: str,
    part: Path,
    advance: Callable[[int], None] = lambda n: None,
) -> InputPart:
    """Read and normalise one input into `part`. Ids are checked for form here, for uniqueness by `merge_parts`."""
    digest = Fingerprint() if path == STDIN else None
    fmap: FieldMap | None = None
    records, unit = 0, "line"
    errors: list[dict[str, Any]] = []
    failure = None
    with atomic_path(part) as tmp, pq.ParquetWriter(tmp, SAMPLES_SCHEMA, compression="zstd") as writer:
        batches = _BatchWriter(writer)
        for loc, record in read_records(path, digest, options.csv_columns):
            local_id, unit = records, loc.unit
            records += 1
            advance(1)
            try:
                if isinstance(record, BadRecord):
                    raise InputError(f"{loc}: {record.reason}")
                if fmap is None:
                    fmap = resolve_field_map(record, options, str(loc))
                conversation = to_conversation(record, fmap, str(loc))
                source_id = record_id(record, loc, options.id_field) if options.id_field else None
            except InputError as e:
                if on_error == "fail":
                    failure = str(e)
                    break
                errors.append(_error_entry(loc, local_id, str(e)))
                continue
            label = conversation.turns[-1].content if options.format == "tabular" else None
            batches.add(local_id, input_index, loc.index, conversation, source_id, label)
        batches.flush()
    fingerprint = digest.hexdigest() if digest else fingerprint_file(Path(path))
    return InputPart(path, part, unit, records, errors, fmap.to_dict() if fmap else None, fingerprint, failure)


def merge_parts(parts: list[InputPart], samples_path: Path, options: FormatOptions, on_error: str) -> IngestResult:
    """Concatenate the parts in input order into `samples_path`: global sample ids, ids unique across inputs.

    The first failure in input order is raised, so both engines fail on the record a sequential read would.
    """
    result = IngestResult()
    ids = _UniqueIds(options.id_field) if options.id_field else None
    with atomic_path(samples_path) as tmp, pq.ParquetWriter(tmp, SAMPLES_SCHEMA, compression="zstd") as writer:
        for part in parts:
            offset = result.n_records
            errors = [{**e, "sample_id": e["sample_id"] + offset} for e in part.errors]
            for batch in pq.ParquetFile(part.part).iter_batches(batch_size=_BATCH):
                table = pa.Table.from_batches([batch])
                table = table.set_column(0, "sample_id", pc.add(table.column("sample_id"), offset))
                if ids is not None:
                    table = table.filter(pa.array(ids.check_column(table, part, on_error, errors)))
                writer.write_table(table)
                result.n_samples += table.num_rows
            if part.failure is not None:
                raise InputError(part.failure)
            result.errors += sorted(errors, key=lambda e: e["sample_id"])
            result.n_records += part.records
            result.inputs.append(
                {
                    "path": part.path,
                    "fingerprint": part.fingerprint,
                    "field_map": part.field_map,
                    "records": part.records,
                    "unit": part.unit,
                }
            )
        if result.n_samples == 0:
            detail = f"all {result.n_records} records are invalid" if result.n_records else "the input is empty"
            raise InputError(f"{', '.join(p.path for p in parts)}: no samples to process ({detail})")
    return result


def ingest(
    patterns: list[str],
    options: FormatOptions,
    samples_path: Path,
    on_error: str = "fail",
    progress: Progress = NULL_PROGRESS,
    engine: str = "local",
) -> IngestResult:
    """Read and normalise all inputs into `samples_path`; bad records raise (`fail`) or are listed (`skip`).

    Each input is read into a part under `.ingest/` next to `samples_path` (by the engine: one Ray task per input
    with `engine='ray'`; stdin is always read here), then the parts are merged in input order.
    """
    check_on_error(on_error)
    paths = expand_inputs(patterns)
    parts_dir = samples_path.parent / ".ingest"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    runner = LOCAL if STDIN in paths else engine_for(engine)  # stdin can only be read here
    try:
        parts = []
        with progress.task("reading" if runner.in_process else "reading (Ray tasks)", total=None) as task:
            advance = (task.advance,) if runner.in_process else ()  # per record here; a task reports nothing
            calls = (
                (path, i, options, on_error, parts_dir.resolve() / f"{i}.parquet", *advance)
                for i, path in enumerate(paths)
            )
            for part in runner.imap(read_input, calls):
                parts.append(part)
                if part.failure is not None:
                    break
        with progress.task("merging inputs", total=None):
            return merge_parts(parts, samples_path, options, on_error)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def record_id(record: Any, loc: Location, field_name: str) -> str:
    """A record's explicit id (`--id-field`): present, and a string or integer."""
    value = record.get(field_name) if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int):
        kind = "missing" if value is None else f"a {type(value).__name__}, expected a string or integer"
        raise InputError(f"{loc}: field '{field_name}': id is {kind}")
    return str(value)


class _UniqueIds:
    """Explicit record ids (`--id-field`) must be unique across all inputs."""

    def __init__(self, field_name: str) -> None:
        self.field = field_name
        self.first_seen: dict[str, str] = {}

    def check_column(self, table: pa.Table, part: InputPart, on_error: str, errors: list[dict[str, Any]]) -> list[bool]:
        """Which rows of `table` keep their sample; a repeated id raises (`fail`) or becomes an error entry."""
        keep = []
        columns = (table.column(name).to_pylist() for name in ("sample_id", "record_index", "source_id"))
        for sample_id, index, key in zip(*columns, strict=True):
            loc = Location(part.path, part.unit, index)
            if key in self.first_seen:
                message = f"{loc}: field '{self.field}': duplicate id {key!r} (first at {self.first_seen[key]})"
                if on_error == "fail":
                    raise InputError(message)
                errors.append(_error_entry(loc, sample_id, message))
                keep.append(False)
                continue
            self.first_seen[key] = str(loc)
            keep.append(True)
        return keep


def _error_entry(loc: Location, sample_id: int, message: str) -> dict[str, Any]:
    prefix = f"{loc}: "
    return {
        "file": loc.source,
        loc.unit: loc.index,
        "sample_id": sample_id,
        "reason": message[len(prefix) :] if message.startswith(prefix) else message,
    }


def as_turns(row: list[dict[str, Any]]) -> tuple[Turn, ...]:
    """A stored `turns` value (list of {role, content, extra}) as turns."""
    return tuple(Turn(t["role"], t["content"], t.get("extra")) for t in row)


def as_conversations(turns: list[Any], tools: list[Any] | None) -> list[Conversation]:
    """Stored `turns` (and `tools`, absent in run directories written before tool support) as conversations."""
    return [Conversation(as_turns(row), tools[i] if tools is not None else None) for i, row in enumerate(turns)]


def batch_conversations(batch: dict[str, Any]) -> list[Conversation]:
    """The conversations of a batch of `samples.parquet` rows as columns (`turns`, optional `tools`), e.g. a Ray
    Data batch."""
    tools = batch.get("tools")
    return as_conversations(list(batch["turns"]), None if tools is None else list(tools))


def iter_sample_batches(samples_path: Path, batch_size: int = _BATCH) -> Iterator[tuple[list[int], list[Conversation]]]:
    """Stream `(sample_ids, conversations)` batches back from a samples file, in sample order."""
    parquet = pq.ParquetFile(samples_path)
    has_tools = "tools" in parquet.schema_arrow.names
    columns = ["sample_id", "turns", "tools"] if has_tools else ["sample_id", "turns"]
    for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
        tools = batch.column("tools").to_pylist() if has_tools else None
        yield batch.column("sample_id").to_pylist(), as_conversations(batch.column("turns").to_pylist(), tools)


def read_labels(samples_path: Path) -> dict[int, str] | None:
    """Each sample's label (tabular runs), by sample id; None when the run holds no labels."""
    parquet = pq.ParquetFile(samples_path)
    if "label" not in parquet.schema_arrow.names:
        return None
    table = parquet.read(columns=["sample_id", "label"]).filter(pc.is_valid(pc.field("label")))
    if not table.num_rows:
        return None
    return dict(zip(table.column("sample_id").to_pylist(), table.column("label").to_pylist(), strict=True))


def has_multi_turn(samples_path: Path) -> bool:
    """Whether any stored sample has two or more assistant turns (a multi-exchange chat), read from the roles alone."""
    for batch in pq.ParquetFile(samples_path).iter_batches(batch_size=_BATCH, columns=["turns"]):
        turns = batch.column("turns")
        roles = pc.struct_field(pc.list_flatten(turns), "role")
        assistant = pc.fill_null(pc.equal(roles, "assistant"), False).to_numpy(zero_copy_only=False)
        owners = pc.list_parent_indices(turns).to_numpy()[assistant]
        if np.bincount(owners).max(initial=0) > 1:
            return True
    return False


def count_samples(samples_path: Path) -> int:
    """Number of samples stored, from the Parquet footer."""
    return int(pq.ParquetFile(samples_path).metadata.num_rows)


def source_names(inputs: list[dict[str, Any]]) -> list[str]:
    """The source name of each input in a manifest's `inputs`: its file name without extension ('stdin' for `-`),
    or its path as given where two inputs share a name.

    >>> source_names([{"path": "data/gsm8k.jsonl"}, {"path": "code.json"}])
    ['gsm8k', 'code']
    """
    stems = ["stdin" if entry["path"] == STDIN else Path(entry["path"]).name.split(".")[0] for entry in inputs]
    return [stem if stems.count(stem) == 1 else entry["path"] for stem, entry in zip(stems, inputs, strict=True)]


def read_source_index(samples_path: Path) -> NDArray[np.int32]:
    """Each stored sample's source: the position of its input in the manifest's `inputs`, in row order."""
    parquet = pq.ParquetFile(samples_path)
    if "input_index" not in parquet.schema_arrow.names:  # a run of one input, written before the column existed
        return np.zeros(parquet.metadata.num_rows, dtype=np.int32)
    return parquet.read(columns=["input_index"]).column(0).to_numpy().astype(np.int32)
