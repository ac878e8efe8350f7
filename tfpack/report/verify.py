"""`tfpack stats --verify`: check every invariant of the output contract, shard by shard, vectorised.

Stops at the first violation with its shard, row and column (a `VerifyError`, exit code 1). Checks: the schema;
list columns of one pack agree in length; `num_tokens` ≤ max_len; segments (`seq_lengths`, `seq_start_id`) tile
the pack and match the attention mode; `position_ids` restart per segment; `labels` are −100 or the token, and −100
on each segment's first token; `loss_mask` is the prediction-aligned view of `labels`; `num_loss_tokens` agrees;
samples (`sample_ids`, `sample_lengths`, `path_sim`) tile the pack and no pack holds a sample twice; every sample id
appears exactly once in the shards or in `dropped.jsonl` (a sample `repeats.jsonl` lists: exactly its `copies` times,
in as many packs); the manifest's counts and shard list agree with what is on disk, and so does
Megatron-Bridge's packing metadata (a trainer sizes `cu_seqlens` and the kernels' `max_seqlen` from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.errors import InputError
from tfpack.packing.card import megatron_metadata
from tfpack.packing.shards import SCHEMA
from tfpack.workdir import (
    DATA_DIR,
    DROPPED_FILE,
    ERRORS_FILE,
    IGNORE_INDEX,
    REPEATS_FILE,
    SAMPLES_FILE,
    epoch_dirs,
    megatron_metadata_name,
    read_manifest,
    read_parquet,
    rerun_pack,
    shard_paths,
)

TOKEN_COLUMNS = ("labels", "loss_mask", "position_ids")
SAMPLE_COLUMNS = ("sample_lengths", "path_sim")


class VerifyError(InputError):
    """A shard breaks the output contract."""


def type_name(t: pa.DataType) -> str:
    """'list<int32>' or 'int32': the type without the list item's field name (Parquet writers differ on it)."""
    return f"list<{t.value_type}>" if pa.types.is_list(t) else str(t)


class Shard:
    """One shard's list columns flattened to numpy, with per-row offsets."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.table = pq.read_table(path)
        got = {f.name: type_name(f.type) for f in self.table.schema}
        want = {f.name: type_name(f.type) for f in SCHEMA}
        if got != want:
            column = next((n for n in want if got.get(n) != want[n]), next(iter(set(got) - set(want)), "?"))
            raise VerifyError(
                f"{self.name}: column {column}: type {got.get(column, 'missing')}, "
                f"expected {want.get(column, 'no such column')}"
            )
        self.rows = self.table.num_rows

    def offsets(self, column: str) -> NDArray[np.int64]:
        array = self.table.column(column).combine_chunks()
        return np.asarray(array.offsets, dtype=np.int64) - int(array.offsets[0].as_py())

    def values(self, column: str) -> NDArray[Any]:
        array = self.table.column(column).combine_chunks()
        return np.asarray(array.flatten())

    def scalars(self, column: str) -> NDArray[Any]:
        return self.table.column(column).to_numpy()

    def fail(self, row_of_item: NDArray[np.int64] | None, bad: NDArray[np.bool_], column: str, what: str) -> None:
        """Raise for the first True in `bad` (items mapped to rows by `row_of_item`; rows when None)."""
        if bad.any():
            first = int(np.argmax(bad))
            row = first if row_of_item is None else int(row_of_item[first])
            raise VerifyError(f"{self.name}: row {row}: column {column}: {what}")


def row_of(offsets: NDArray[np.int64]) -> NDArray[np.int64]:
    """Row index of every flattened item, from list offsets."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def row_sums(values: NDArray[Any], offsets: NDArray[np.int64]) -> NDArray[np.int64]:
    cum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return cum[offsets[1:]] - cum[offsets[:-1]]


def check_shard(shard: Shard, max_len: int, attention: str) -> NDArray[np.int64]:
    """Check one shard; returns its sample ids (flattened)."""
    tok_off = shard.offsets("input_ids")
    n = np.diff(tok_off)
    for column in TOKEN_COLUMNS:
        shard.fail(None, shard.offsets(column) != tok_off, column, "length differs from input_ids")
    shard.fail(None, shard.scalars("num_tokens") != n, "num_tokens", "differs from len(input_ids)")
    shard.fail(None, n > max_len, "input_ids", f"pack longer than max_len {max_len}")
    shard.fail(None, n == 0, "input_ids", "empty pack")

    seg_off = shard.offsets("seq_lengths")
    seq_lengths = shard.values("seq_lengths").astype(np.int64)
    shard.fail(None, shard.offsets("seq_start_id") != seg_off, "seq_start_id", "length differs from seq_lengths")
    shard.fail(row_of(seg_off), seq_lengths < 1, "seq_lengths", "a segment of length < 1")
    shard.fail(None, row_sums(seq_lengths, seg_off) != n, "seq_lengths", "sum differs from len(input_ids)")
    seg_rows = row_of(seg_off)
    cum = np.cumsum(seq_lengths)
    exclusive = cum - seq_lengths - np.concatenate([[0], cum])[seg_off[:-1]][seg_rows]
    seq_start = shard.values("seq_start_id").astype(np.int64)
    shard.fail(seg_rows, seq_start != exclusive, "seq_start_id", "not the exclusive cumulative sum of seq_lengths")

    samp_off = shard.offsets("sample_ids")
    for column in SAMPLE_COLUMNS:
        shard.fail(None, shard.offsets(column) != samp_off, column, "length differs from sample_ids")
    sample_ids = shard.values("sample_ids").astype(np.int64)
    pairs = np.lexsort((sample_ids, row_of(samp_off)))
    twice = np.zeros(len(sample_ids), dtype=bool)
    twice[pairs[1:]] = (np.diff(row_of(samp_off)[pairs]) == 0) & (np.diff(sample_ids[pairs]) == 0)
    shard.fail(row_of(samp_off), twice, "sample_ids", "a sample appears twice in one pack")
    sample_lengths = shard.values("sample_lengths").astype(np.int64)
    shard.fail(None, row_sums(sample_lengths, samp_off) != n, "sample_lengths", "sum differs from len(input_ids)")
    if attention == "segment":
        same = (seg_off == samp_off).all() and np.array_equal(seq_lengths, sample_lengths)
        shard.fail(
            None, np.asarray([not same] * shard.rows), "seq_lengths", "attention 'segment' needs one segment per sample"
        )
    else:
        shard.fail(None, np.diff(seg_off) != 1, "seq_lengths", "attention 'pack' needs one segment per pack")

    ids = shard.values("input_ids").astype(np.int64)
    labels = shard.values("labels").astype(np.int64)
    tok_rows = row_of(tok_off)
    segment = np.repeat(np.arange(len(seq_lengths)), seq_lengths)
    seg_first = tok_off[:-1][seg_rows] + seq_start
    positions = np.arange(len(ids)) - seg_first[segment]
    shard.fail(tok_rows, shard.values("position_ids") != positions, "position_ids", "do not restart at each segment")
    shard.fail(tok_rows, (labels != IGNORE_INDEX) & (labels != ids), "labels", "neither -100 nor the input token")
    starts = np.zeros(len(ids), dtype=bool)
    starts[seg_first] = True
    shard.fail(tok_rows, starts & (labels != IGNORE_INDEX), "labels", "a segment's first token is not -100")
    expected = np.zeros(len(ids), dtype=np.int8)
    expected[:-1] = (labels[1:] != IGNORE_INDEX) & (segment[1:] == segment[:-1])
    shard.fail(tok_rows, shard.values("loss_mask") != expected, "loss_mask", "not aligned with labels[j+1]")
    shard.fail(
        None,
        shard.scalars("num_loss_tokens") != row_sums(expected, tok_off),
        "num_loss_tokens",
        "differs from sum(loss_mask)",
    )
    return sample_ids


def listed_ids(path: Path, stage: str | None = None) -> NDArray[np.int64]:
    """The sample ids of a JSON-lines list: dropped.jsonl, or errors.jsonl's entries of one `stage`."""
    ids = []
    for line_no, line in enumerate(path.read_bytes().splitlines() if path.is_file() else [], 1):
        try:
            row = orjson.loads(line)
            if stage is None or row.get("stage") == stage:
                ids.append(int(row["sample_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise VerifyError(f'{path}:{line_no}: not a {{"sample_id", "reason"}} record ({e})') from None
    return np.asarray(ids, dtype=np.int64)


def listed_copies(path: Path) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(sample ids, copies) of repeats.jsonl: the samples `--weights` packed more than once (none without it)."""
    ids, copies = [], []
    for line_no, line in enumerate(path.read_bytes().splitlines() if path.is_file() else [], 1):
        try:
            row = orjson.loads(line)
            ids.append(int(row["sample_id"]))
            copies.append(int(row["copies"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise VerifyError(f'{path}:{line_no}: not a {{"sample_id", "copies"}} record ({e})') from None
    return np.asarray(ids, dtype=np.int64), np.asarray(copies, dtype=np.int64)


def expected_ids(manifest: dict[str, Any]) -> NDArray[np.int64] | None:
    """The sample ids the pack's input held, from its embed run (None when that run is gone)."""
    samples = Path(manifest.get("run_dir", "")) / SAMPLES_FILE
    if not samples.is_file():
        return None
    rerun = f"tfpack embed INPUT... -o {samples.parent} --overwrite"
    return read_parquet([samples], ["sample_id"], rerun).column(0).to_numpy().astype(np.int64)


def verify(out_dir: Path) -> dict[str, Any]:
    """Check a pack output directory (each epoch's, for `--epochs`); returns what was checked, raises `VerifyError`
    at the first violation."""
    dirs = epoch_dirs(out_dir)
    if dirs != [out_dir]:
        checked = {d.name: verify_packing(d) for d in dirs}
        return {
            "ok": True,
            "packs": sum(c["packs"] for c in checked.values()),  # over all epochs
            "samples": checked[dirs[0].name]["samples"],  # per epoch: every epoch packs the same samples
            "epochs": checked,
        }
    return verify_packing(out_dir)


def verify_packing(out_dir: Path) -> dict[str, Any]:
    """Check one packing's output directory."""
    manifest = read_manifest(out_dir, "pack", f"tfpack pack RUN_DIR -o {out_dir} --overwrite")
    listed = [s["file"] for s in manifest["shards"]]
    on_disk = sorted(f"{DATA_DIR}/{p.name}" for p in shard_paths(out_dir))
    if sorted(listed) != on_disk:
        extra = sorted(set(on_disk) ^ set(listed))
        raise VerifyError(f"{out_dir}: shards on disk and in manifest.json differ: {', '.join(extra)}")
    packs = tokens = loss = 0
    seen = []
    for name in listed:
        try:
            shard = Shard(out_dir / name)
        except (pa.ArrowInvalid, OSError) as e:
            raise VerifyError(f"{name}: unreadable Parquet ({e})") from None
        seen.append(check_shard(shard, int(manifest["max_len"]), manifest["attention"]))
        packs += shard.rows
        tokens += int(shard.scalars("num_tokens").sum())
        loss += int(shard.scalars("num_loss_tokens").sum())
    packed = np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64)
    dropped = listed_ids(out_dir / DROPPED_FILE)
    refused = listed_ids(out_dir / ERRORS_FILE, stage="pack")
    everything = np.concatenate([packed, dropped, refused])
    values, counts = np.unique(everything, return_counts=True)
    allowed = np.ones(len(values), dtype=np.int64)
    repeated, copies = listed_copies(out_dir / REPEATS_FILE)
    where = np.searchsorted(values, repeated)
    found = (where < len(values)) & (values[np.minimum(where, len(values) - 1)] == repeated)
    allowed[where[found]] = copies[found]
    if (counts != allowed).any():
        bad = int(np.argmax(counts != allowed))
        times = (
            "more than once" if allowed[bad] == 1 else f"{int(counts[bad])} times, {REPEATS_FILE} lists {allowed[bad]}"
        )
        raise VerifyError(
            f"{out_dir}: sample_id {int(values[bad])} appears {times} (in the shards, dropped.jsonl or errors.jsonl)"
        )
    expected = expected_ids(manifest)
    if expected is not None and not np.array_equal(values, np.unique(expected)):
        missing = np.setdiff1d(expected, values)
        what = f"sample_id {int(missing[0])} is missing" if missing.size else "unknown sample ids present"
        raise VerifyError(f"{out_dir}: {what} (every input sample must be packed, dropped or refused)")
    counts_m = manifest["counts"]
    for key, value in (
        ("packs", packs),
        ("samples", len(packed)),
        ("tokens", tokens),
        ("loss_tokens", loss),
        ("dropped", len(dropped)),
        ("refused", len(refused)),
    ):
        if counts_m.get(key, 0 if key == "refused" else None) != value:
            raise VerifyError(f"{out_dir}/manifest.json: counts.{key} is {counts_m.get(key)}, the shards hold {value}")
    check_megatron_metadata(out_dir, manifest)
    return {
        "ok": True,
        "shards": len(listed),
        "packs": packs,
        "samples": int(len(packed)),
        "tokens": tokens,
        "loss_tokens": loss,
        "dropped": int(len(dropped)),
        "ids_checked_against_input": expected is not None,
    }


def check_megatron_metadata(out_dir: Path, manifest: dict[str, Any]) -> None:
    """`{max_len}_metadata.jsonl` holds exactly the statistics of the shards on disk."""
    max_len = int(manifest["max_len"])
    path = out_dir / megatron_metadata_name(max_len)
    rerun = f"run `{rerun_pack(out_dir, manifest)}`"
    if not path.is_file():
        raise VerifyError(f"{path}: missing (Megatron-Bridge's packing metadata); {rerun}")
    try:
        written = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise VerifyError(f"{path}: not JSON ({e}); {rerun}") from None
    expected = megatron_metadata(out_dir, max_len)
    got = written[0] if isinstance(written, list) and len(written) == 1 and isinstance(written[0], dict) else None
    if got is None:
        raise VerifyError(f"{path}: expected a JSON list holding one object; {rerun}")
    wrong = next((key for key in expected if got.get(key) != expected[key]), None)
    if wrong is not None:
        raise VerifyError(f"{path}: {wrong} is {got.get(wrong)}, the shards give {expected[wrong]}; {rerun}")
