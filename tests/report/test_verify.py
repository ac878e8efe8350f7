"""`tfpack stats --verify` passes what `pack` writes and names the first violation in a corrupted copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tfpack.cli import app
from tfpack.packing.shards import SCHEMA
from tfpack.report.verify import VerifyError, verify
from tfpack.workdir import shard_paths

runner = CliRunner()


def corrupt(packed: Path, tmp_path: Path, edit: Callable[[list[dict]], None], shard: int = 0) -> Path:
    """A copy of `packed` whose shard `shard` has its rows edited in place by `edit`."""
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    path = shard_paths(copy)[shard]
    rows = pq.read_table(path).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return copy


def test_good_output_verifies(packed: Path) -> None:
    result = verify(packed)
    assert result["ok"] and result["ids_checked_against_input"] and result["samples"] + result["dropped"] == 60
    cli = runner.invoke(app, ["stats", str(packed), "--verify", "--json"])
    assert cli.exit_code == 0, cli.stderr
    assert orjson.loads(cli.stdout)["verify"]["ok"] is True


def _shift_position(rows: list[dict]) -> None:
    rows[1]["position_ids"][3] += 1


def _unmask_segment_start(rows: list[dict]) -> None:
    r = rows[2]
    r["labels"][r["seq_start_id"][-1]] = r["input_ids"][r["seq_start_id"][-1]]


def _flip_loss_mask(rows: list[dict]) -> None:
    rows[0]["loss_mask"][0] ^= 1


def _wrong_label(rows: list[dict]) -> None:
    r = rows[0]
    j = next(i for i, x in enumerate(r["labels"]) if x != -100)
    r["labels"][j] = r["input_ids"][j] + 1


def _duplicate_sample(rows: list[dict]) -> None:
    rows[1]["sample_ids"][0] = rows[0]["sample_ids"][0]


def _bad_start_ids(rows: list[dict]) -> None:
    rows[3]["seq_start_id"][-1] += 1


@pytest.mark.parametrize(
    "edit,message",
    [
        (_shift_position, r"train-00000-of-\d+\.parquet: row 1: column position_ids"),
        (_unmask_segment_start, r"train-00000-of-\d+\.parquet: row 2: column labels: a segment's first token"),
        (_flip_loss_mask, r"train-00000-of-\d+\.parquet: row 0: column loss_mask"),
        (_wrong_label, r"train-00000-of-\d+\.parquet: row 0: column labels: neither"),
        (_duplicate_sample, r"sample_id \d+ appears more than once"),
        (_bad_start_ids, r"train-00000-of-\d+\.parquet: row 3: column seq_start_id"),
    ],
)
def test_corruption_is_named(packed: Path, tmp_path: Path, edit: Callable[[list[dict]], None], message: str) -> None:
    copy = corrupt(packed, tmp_path, edit)
    with pytest.raises(VerifyError, match=message):
        verify(copy)
    cli = runner.invoke(app, ["stats", str(copy), "--verify"])
    assert cli.exit_code == 1 and "error:" in cli.stderr


def test_missing_shard_and_wrong_type(packed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    shard_paths(copy)[-1].unlink()
    with pytest.raises(VerifyError, match="shards on disk and in manifest.json differ"):
        verify(copy)
    shutil.rmtree(copy)
    shutil.copytree(packed, copy)
    path = shard_paths(copy)[0]
    table = pq.read_table(path)
    table = table.set_column(0, "input_ids", table.column("input_ids").cast(pa.list_(pa.int64())))
    pq.write_table(table, path)
    with pytest.raises(VerifyError, match=r"column input_ids: type list<int64>, expected list<int32>"):
        verify(copy)


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            lambda meta: meta[0].update(max_samples_per_bin=meta[0]["max_samples_per_bin"] - 1),
            "max_samples_per_bin is .*, the shards give",
        ),
        (lambda meta: meta.clear(), "a JSON list holding one object"),
    ],
)
def test_stale_megatron_metadata_is_caught(
    packed: Path, tmp_path: Path, damage: Callable[[list[dict]], None], message: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    [path] = copy.glob("*_metadata.jsonl")
    meta = orjson.loads(path.read_bytes())
    damage(meta)
    path.write_bytes(orjson.dumps(meta))
    with pytest.raises(VerifyError, match=message):
        verify(copy)
    path.unlink()
    with pytest.raises(VerifyError, match="missing"):
        verify(copy)


def test_lost_sample_is_caught(packed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    dropped = (copy / "dropped.jsonl").read_bytes().splitlines()
    if not dropped:
        path = shard_paths(copy)[0]
        rows = pq.read_table(path).to_pylist()
        lost = rows.pop(0)
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
        message = f"sample_id {min(lost['sample_ids'])} is missing"
    else:
        (copy / "dropped.jsonl").write_bytes(b"\n".join(dropped[1:]) + b"\n" if dropped[1:] else b"")
        message = "is missing"
    with pytest.raises(VerifyError, match=message):
        verify(copy)
