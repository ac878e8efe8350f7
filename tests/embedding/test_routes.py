"""`--backend auto` on CPU: routes timed on the run's own texts, the fastest picked and cached per CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tfpack.cli import app
from tfpack.config import EmbedConfig
from tfpack.embedding import routes
from tfpack.embedding.models import resolve_backend


@pytest.mark.slow  # times every embedding route
def test_auto_backend_is_measured_on_the_run_then_cached_per_cpu(
    tmp_path: Path, qa_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "cache_root", lambda: tmp_path / "cache")  # choices only; exports stay shared
    monkeypatch.setattr(routes, "MEASURE_FROM_SAMPLES", 20)  # qa_file holds 24 samples
    result = CliRunner().invoke(
        app,
        ["embed", str(qa_file), "-o", str(tmp_path / "run"), "--model", "all-MiniLM-L6-v2", "--device", "cpu", "-q"],
    )
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    choice = manifest["backend_choice"]
    rates = choice["samples_per_s"]
    assert choice["by"] == "measured" and set(rates) == set(routes.available_routes()) and not choice["failed"]
    assert all(rate > 0 for rate in rates.values())
    assert manifest["backend"] == choice["backend"] == max(rates, key=rates.__getitem__)
    assert json.loads(Path(choice["cache"]).read_text())["backend"] == manifest["backend"]
    assert np.load(tmp_path / "run" / "embeddings.npy").shape == (24, 384)

    def no_texts() -> list[str]:
        raise AssertionError("a cached choice must not measure again")

    cfg = EmbedConfig(device="cpu")
    assert routes.choose_backend(cfg, 10**6, no_texts) == (
        manifest["backend"],
        {**json.loads(Path(choice["cache"]).read_text()), "by": "cached", "cache": choice["cache"]},
    )
    Path(choice["cache"]).write_text("{damaged")  # a damaged entry is ignored, not trusted
    assert routes.choose_backend(cfg, 10, no_texts)[1]["by"].startswith("fixed order")

    monkeypatch.setattr(routes, "cpu_identity", lambda: "another CPU | avx2 | threads=64")
    backend, record = routes.choose_backend(cfg, 10, no_texts)  # below the measuring size, nothing cached
    assert backend == resolve_backend("auto", "cpu") and record["by"].startswith("fixed order")


def test_explicit_backend_and_small_runs_are_not_measured(tmp_path: Path, qa_file: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["embed", str(qa_file), "-o", str(tmp_path / "run"), "--model", "all-MiniLM-L6-v2", "--backend", "torch", "-q"],
    )
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["backend"] == "torch" and "backend_choice" not in manifest
