"""The job's steps (tfpack/pipeline.py): every path that runs them gets all of them, and each is timed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, chat_rows, write_jsonl
from tfpack.cli import app
from tfpack.pipeline import STEPS

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 chats and 8 copies of the first 8 with one word changed: near-duplicates for `--dedup 0.9` to remove."""
    tmp = tmp_path_factory.mktemp("pipeline")
    rows = chat_rows(16)
    for row in rows[:8]:
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        copy = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer.replace("e", "E", 1)}]
        rows.append({"messages": copy})
    data = write_jsonl(tmp / "chat.jsonl", rows)
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp / "run"), "--quiet"])
    assert result.exit_code == 0, result.stderr
    return tmp / "run"


def test_sweep_gets_the_filters_pack_gets(run_dir: Path, tmp_path: Path) -> None:
    """--dedup (a flag for sweep, a config key for pack): sweep's row for a threshold is what pack writes at that
    threshold (before the pipeline, sweep ordered every sample and reported a fill rate no pack would have)."""
    config = tmp_path / "cfg.yaml"
    config.write_text("pack:\n  dedup: 0.9\n")
    swept = runner.invoke(
        app, ["sweep", str(run_dir), "--thresholds", "auto", "--dedup", "0.9", *DEMO_TOKENIZER, "--json"]
    )
    assert swept.exit_code == 0, swept.stderr
    row = orjson.loads(swept.stdout.splitlines()[0])
    packed = runner.invoke(
        app, ["pack", str(run_dir), "-o", str(tmp_path / "out"), "--config", str(config), *DEMO_TOKENIZER]
    )
    assert packed.exit_code == 0, packed.stderr
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())
    assert manifest["counts"]["near_duplicates"] > 0
    assert row["dropped"] == manifest["counts"]["dropped"]
    assert (row["packs"], row["fill_rate"]) == (manifest["counts"]["packs"], manifest["counts"]["fill_rate"])


def test_pack_times_each_step(run_dir: Path, tmp_path: Path) -> None:
    done = runner.invoke(app, ["pack", str(run_dir), "-o", str(tmp_path / "out"), *DEMO_TOKENIZER, "--json"])
    assert done.exit_code == 0, done.stderr
    summary = orjson.loads(done.stdout)
    steps = summary["step_seconds"]
    assert list(steps) == list(STEPS) and all(seconds >= 0 for seconds in steps.values())
    assert sum(steps.values()) <= summary["seconds"] + 0.01
