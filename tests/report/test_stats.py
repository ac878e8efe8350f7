"""stats / inspect / sweep agree with an independent count from the shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER
from tfpack.cli import app
from tfpack.workdir import shard_paths

runner = CliRunner()


def test_stats_agree_with_the_shards(packed: Path, tmp_path: Path) -> None:
    plot = tmp_path / "stats.png"
    result = runner.invoke(app, ["stats", str(packed), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.stderr
    s = orjson.loads(result.stdout)
    table = pq.read_table(shard_paths(packed))
    tokens = sum(len(x) for x in table.column("input_ids").to_pylist())
    samples = sum(len(x) for x in table.column("sample_ids").to_pylist())
    assert (s["packs"], s["samples"], s["tokens"]) == (table.num_rows, samples, tokens)
    assert s["fill_rate"] == pytest.approx(tokens / (table.num_rows * 128), abs=1e-6)
    assert s["padding_tokens"] == table.num_rows * 128 - tokens
    assert sum(s["sample_length_histogram"].values()) == samples
    assert sum(s["pack_fill_histogram"].values()) == table.num_rows
    assert 0 <= s["near_duplicate_rate"] <= 1 and -1 <= s["random_pack_similarity"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and s["plot"] == str(plot)


def test_stats_table_for_people(packed: Path) -> None:
    result = runner.invoke(app, ["stats", str(packed)])
    assert result.exit_code == 0 and "mean_pack_similarity" in result.stdout and "median:" in result.stdout


def test_inspect_shows_every_token_of_the_pack(packed: Path) -> None:
    result = runner.invoke(app, ["inspect", str(packed), "--pack", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    view = orjson.loads(result.stdout)
    row = pq.read_table(shard_paths(packed)[0]).slice(1, 1).to_pylist()[0]
    assert [s["sample_id"] for s in view["samples"]] == row["sample_ids"]
    assert sum(s["tokens"] for s in view["samples"]) == view["tokens"] == row["num_tokens"]
    trained = sum(x != -100 for x in row["labels"])
    assert sum(s["trained_tokens"] for s in view["samples"]) == trained
    assert any(p["trained"] for s in view["samples"] for p in s["pieces"])
    human = runner.invoke(app, ["inspect", str(packed), "--pack", "1"])
    assert human.exit_code == 0 and f"sample {row['sample_ids'][0]}" in human.stdout
    bad = runner.invoke(app, ["inspect", str(packed), "--pack", "9999"])
    assert bad.exit_code == 2 and "--pack" in bad.stderr


def test_inspect_reads_the_row_group_of_the_pack(packed: Path, tmp_path: Path) -> None:
    """Shards of several row groups: every pack is found in its own; a shard shorter than the manifest says is named."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(packed, out, symlinks=True)
    for path in shard_paths(out):
        pq.write_table(pq.read_table(path), path, row_group_size=3)
    rows = pq.read_table(shard_paths(out)).to_pylist()
    assert pq.ParquetFile(shard_paths(out)[0]).num_row_groups > 1
    for index, row in enumerate(rows):
        result = runner.invoke(app, ["inspect", str(out), "--pack", str(index), "--json"])
        assert result.exit_code == 0, result.stderr
        assert [s["sample_id"] for s in orjson.loads(result.stdout)["samples"]] == row["sample_ids"]
    first = shard_paths(out)[0]
    table = pq.read_table(first)
    pq.write_table(table.slice(0, table.num_rows - 1), first, row_group_size=3)
    last = runner.invoke(app, ["inspect", str(out), "--pack", str(table.num_rows - 1)])
    assert last.exit_code == 1 and f"{first.name}: holds fewer packs than manifest.json lists" in last.stderr


def test_stats_and_inspect_show_the_attention_mode(packed: Path, packed_default: Path) -> None:
    """The mode is in `stats` and `inspect`, as data and for people; a default pack is one segment, its samples
    continuing one another."""
    for out, mode in ((packed, "segment"), (packed_default, "pack")):
        assert orjson.loads(runner.invoke(app, ["stats", str(out), "--json"]).stdout)["attention"] == mode
        index = next(i for i, r in enumerate(pq.read_table(shard_paths(out)).to_pylist()) if len(r["sample_ids"]) > 1)
        assert f"attention={mode}" in runner.invoke(app, ["inspect", str(out), "--pack", str(index)]).stdout
        view = orjson.loads(runner.invoke(app, ["inspect", str(out), "--pack", str(index), "--json"]).stdout)
        assert view["attention"] == mode and len(view["samples"]) > 1
        expected_segments = len(view["samples"]) if mode == "segment" else 1
        assert view["segments"] == expected_segments
        assert [s["new_segment"] for s in view["samples"]][1:] == [mode == "segment"] * (len(view["samples"]) - 1)
    human = runner.invoke(app, ["stats", str(packed_default)])
    assert human.exit_code == 0 and "attention" in human.stdout and "pack" in human.stdout


def test_sweep_one_object_per_threshold(packed: Path) -> None:
    result = runner.invoke(
        app,
        [
            "sweep",
            str(packed / ".tfpack" / "embed"),
            "--thresholds",
            "0.5,0.9,none",
            *DEMO_TOKENIZER,
            "--max-len",
            "128",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [r["threshold"] for r in rows] == ["0.5", "0.9", "none"]
    assert all(0 < r["fill_rate"] <= 1 for r in rows)
    strict, plain = rows[0], rows[2]
    assert strict["threshold_cosine"] == 0.5 and plain["threshold_cosine"] is None
    assert plain["mean_adjacent_similarity"] > strict["mean_adjacent_similarity"], "the filter trades similarity away"
    assert np.isfinite([r["mean_pack_similarity"] for r in rows]).all()
    bad = runner.invoke(app, ["sweep", str(packed / ".tfpack" / "embed"), "--thresholds", "1.5"])
    assert bad.exit_code == 2
