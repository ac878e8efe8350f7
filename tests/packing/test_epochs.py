"""`pack --epochs E` and `--dedup S` end to end: complete outputs per epoch, pairs rarely repeated, duplicates
listed."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, chat_rows, write_jsonl
from tfpack.cli import app
from tfpack.data import PackedDataset, epoch_dirs
from tfpack.packing.epochs import reach_of, repeated_pairs
from tfpack.workdir import shard_paths

runner = CliRunner()


def pack(args: list[str]) -> dict:
    result = runner.invoke(app, ["pack", *args, *DEMO_TOKENIZER, "--json"])
    assert result.exit_code == 0, result.stderr
    return orjson.loads(result.stdout)


def packed_pairs(out: Path) -> set[tuple[int, int]]:
    table = pq.read_table(shard_paths(out), columns=["sample_ids"])
    return {tuple(sorted(p)) for ids in table.column(0).to_pylist() for p in combinations(ids, 2)}


@pytest.fixture(scope="module")
def epochs_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("epochs")
    rows = chat_rows(80) + chat_rows(10)  # the first 10 chats twice: exact duplicates for --dedup
    data = write_jsonl(tmp / "chat.jsonl", rows)
    pack(
        [
            str(data),
            "-o",
            str(tmp / "out"),
            "--max-len",
            "256",
            "--epochs",
            "3",
            "--dedup",
            "0.98",
            "--model",
            "all-MiniLM-L6-v2",
        ]
    )
    return tmp / "out"


def test_each_epoch_is_a_complete_verified_output(epochs_out: Path) -> None:
    dirs = epoch_dirs(epochs_out)
    assert [d.name for d in dirs] == ["epoch-0", "epoch-1", "epoch-2"]
    result = runner.invoke(app, ["stats", str(epochs_out), "--verify", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert set(summary["verify"]["epochs"]) == {"epoch-0", "epoch-1", "epoch-2"}
    for d in dirs:
        one = runner.invoke(app, ["stats", str(d), "--verify", "--json"])
        assert one.exit_code == 0, one.stderr
        assert orjson.loads(one.stdout)["samples"] + orjson.loads(one.stdout)["dropped"] == 90
        assert len(PackedDataset(d)) == orjson.loads((d / "manifest.json").read_bytes())["counts"]["packs"]
    orders = [np.concatenate(pq.read_table(shard_paths(d), columns=["sample_ids"]).column(0).to_pylist()) for d in dirs]
    assert len({tuple(o) for o in orders}) == 3, "each epoch packs along another path"


def test_repeat_rate_is_reported_and_recomputed(epochs_out: Path) -> None:
    manifest = orjson.loads((epochs_out / "manifest.json").read_bytes())
    assert manifest["stage"] == "pack-epochs"
    seen: set[tuple[int, int]] = set()
    for entry, d in zip(manifest["epochs"], epoch_dirs(epochs_out), strict=True):
        pairs = packed_pairs(d)
        assert entry["repeat_rate"] == round(len(pairs & seen) / len(pairs), 6)
        seen |= pairs
    assert manifest["epochs"][0]["repeat_rate"] == 0
    assert max(e["repeat_rate"] for e in manifest["epochs"]) < 0.05


def test_near_duplicates_listed_and_absent_from_packs(epochs_out: Path) -> None:
    d = epoch_dirs(epochs_out)[0]
    dropped = [orjson.loads(line) for line in (d / "dropped.jsonl").read_bytes().splitlines()]
    dups = [e for e in dropped if e["reason"].startswith("near-duplicate of")]
    assert sorted(e["sample_id"] for e in dups) == list(range(80, 90)), "the later copy of each twin is removed"
    assert all(e["duplicate_of"] == e["sample_id"] - 80 and e["cos"] >= 0.98 for e in dups)
    manifest = orjson.loads((d / "manifest.json").read_bytes())
    assert manifest["counts"]["near_duplicates"] == 10 and manifest["dedup"]["group_sizes"] == {"2": 10}


def test_repeated_pairs_against_pairs_of_sets() -> None:
    rng = np.random.default_rng(3)
    n = 30
    for _ in range(20):
        earlier = rng.integers(-1, 6, (2, n))
        pack_of = rng.integers(-1, 6, n)

        def pairs(ids: np.ndarray) -> set[tuple[int, int]]:
            return {(a, b) for a, b in combinations(range(n), 2) if ids[a] >= 0 and ids[a] == ids[b]}

        now = pairs(pack_of)
        before = pairs(earlier[0]) | pairs(earlier[1])
        assert repeated_pairs(pack_of, earlier) == (len(now & before), len(now))
    assert reach_of(np.array([[0, 0, 0, 1, -1], [2, 2, 1, 1, 0]])) == 3


def test_stats_previews_dedup_on_an_embed_run(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(20) + chat_rows(4))
    assert runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "run"), "--quiet"]).exit_code == 0
    result = runner.invoke(app, ["stats", str(tmp_path / "run"), "--dedup", "0.98", "--show", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)["near_duplicates"]
    assert report["removed"] == 4 and report["group_sizes"] == {"2": 4}
    assert len(report["shown"]) == 2
    shown = report["shown"][0]
    assert shown["removed"][0]["sample_id"] == shown["kept"]["sample_id"] + 20
    assert shown["removed"][0]["prompt"] == shown["kept"]["prompt"]
