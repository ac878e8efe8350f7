"""`tfpack embed --model static`: a model2vec model distilled once from the packaged default, cached, unit rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import qa_rows, write_jsonl
from tfpack.cli import app
from tfpack.config import DEFAULT_MODEL
from tfpack.embedding import models
from tfpack.workdir import EMBEDDINGS_FILE, MANIFEST

pytest.importorskip("model2vec")


def test_static_embed_run(tmp_path: Path) -> None:
    rows = qa_rows(30) + [
        {"question": "How many apples are left if Ava eats two of her five apples?", "answer": "3"},
        {"question": "Ava had five apples and ate two. How many apples does she have now?", "answer": "3"},
        {"question": "Name the capital city of Norway.", "answer": "Oslo"},
    ]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    result = CliRunner().invoke(app, ["embed", str(data), "-o", str(tmp_path / "run"), "--model", "static"])
    assert result.exit_code == 0, result.output
    manifest = orjson.loads((tmp_path / "run" / MANIFEST).read_bytes())
    assert manifest["backend"] == "static" and manifest["dim"] == models.STATIC_PCA_DIMS
    assert manifest["static_source"] == models.resolve_model(DEFAULT_MODEL)
    x = np.load(tmp_path / "run" / EMBEDDINGS_FILE)
    assert x.shape == (33, models.STATIC_PCA_DIMS) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    paraphrase, unrelated = float(x[30] @ x[31]), float(x[30] @ x[32])
    assert paraphrase > unrelated + 0.2


def test_distilled_once_then_read_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    source = models.resolve_model(DEFAULT_MODEL)
    first = models.static_model_dir(source)
    import model2vec.distill

    def no_second_distillation(*args: object, **kwargs: object) -> None:
        raise AssertionError("distilled again although the cache holds the model")

    monkeypatch.setattr(model2vec.distill, "distill", no_second_distillation)
    assert models.static_model_dir(source) == first
    assert (first / models.STATIC_VECTORS).is_file() and not list(first.parent.glob("*.tmp-*"))


def test_static_names_their_source() -> None:
    assert models.static_source("static") == models.resolve_model(DEFAULT_MODEL)
    assert models.static_source("static:/models/my-st") == "/models/my-st"
    assert models.static_source(DEFAULT_MODEL) is None


def test_auto_picks_static_on_cpu_for_large_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tfpack.embedding.stage as stage
    from tfpack.config import EmbedConfig

    assert stage.choose_model(EmbedConfig(device="cpu"), 10) == DEFAULT_MODEL
    assert stage.choose_model(EmbedConfig(device="cpu"), stage.STATIC_FROM_SAMPLES) == models.STATIC
    assert stage.choose_model(EmbedConfig(model="my/model", device="cpu"), 10**9) == "my/model"
    monkeypatch.setattr(stage, "STATIC_FROM_SAMPLES", 20)
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(25))
    result = CliRunner().invoke(app, ["embed", str(data), "-o", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = orjson.loads((tmp_path / "run" / MANIFEST).read_bytes())
    assert (manifest["model_asked"], manifest["model"], manifest["backend"]) == ("auto", "static", "static")
