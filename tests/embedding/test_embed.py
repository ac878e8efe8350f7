from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tfpack.config import EmbedConfig
from tfpack.embedding import models
from tfpack.embedding.encoders import check_embeddings, encode_texts, load_encoder
from tfpack.embedding.models import packaged_model_path, resolve_model
from tfpack.errors import ConfigError, DependencyError, InputError

TEXTS = [
    "How many apples are left?",
    "Write a Python function to sort a list.",
    "What is the capital of France?",
    "Compute 12 times 7.",
    "Implement binary search in Python.",
    "Name the largest city in Japan.",
]


def test_default_model_is_the_packaged_copy() -> None:
    path = packaged_model_path()
    assert path is not None and (path / "model.safetensors").is_file()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)
    assert resolve_model("some/other-model") == "some/other-model"


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    model, resolved = load_encoder(EmbedConfig(backend="torch", device="cpu"))
    assert resolved["precision"] == "fp32"
    return encode_texts(model, TEXTS, 4)


def test_torch_embeddings_are_normalised(torch_vectors: np.ndarray) -> None:
    assert torch_vectors.shape == (6, 384) and torch_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(torch_vectors, axis=1), 1.0, atol=1e-5)
    sims = torch_vectors @ torch_vectors.T
    assert sims[0, 3] > sims[0, 1] and sims[1, 4] > sims[1, 2]  # related topics are closer


def test_onnx_int8_agrees_with_fp32(torch_vectors: np.ndarray) -> None:
    model, resolved = load_encoder(EmbedConfig(backend="onnx-int8", device="cpu"))
    assert resolved["precision"] == "int8"
    vectors = encode_texts(model, TEXTS, 4)
    assert np.min(np.sum(vectors * torch_vectors, axis=1)) > 0.95


def test_openvino_agrees_with_fp32(torch_vectors: np.ndarray) -> None:
    model, resolved = load_encoder(EmbedConfig(backend="openvino", device="cpu"))
    assert resolved["backend"] == "openvino" and resolved["precision"] in ("bf16", "fp32")
    vectors = encode_texts(model, TEXTS, 4)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(vectors * torch_vectors, axis=1)) > 0.995
    assert np.array_equal(encode_texts(model, TEXTS[::-1], 2)[::-1], vectors)  # batching and order do not matter


def test_onnx_fp32_matches_torch(torch_vectors: np.ndarray) -> None:
    model, resolved = load_encoder(EmbedConfig(backend="onnx", device="cpu"))
    assert resolved["backend"] == "onnx" and resolved["precision"] == "fp32"
    vectors = encode_texts(model, TEXTS, 4)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    assert np.min(np.sum(vectors * torch_vectors, axis=1)) > 0.9999  # the same fp32 weights and graph
    np.testing.assert_allclose(encode_texts(model, TEXTS[::-1], 3)[::-1], vectors, atol=1e-5)


def test_export_is_cached_under_a_key_of_exporter_and_versions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from importlib import metadata

    model_path = resolve_model("all-MiniLM-L6-v2")
    key = models.model_key(model_path)
    monkeypatch.setattr(models, "EXPORTER", "optimum")
    assert models.model_key(model_path) != key
    monkeypatch.undo()
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "5.0.0" if name == "transformers" else real_version(name))
    assert models.model_key(model_path) != key
    monkeypatch.undo()

    monkeypatch.setenv("TFPACK_CACHE", str(tmp_path))
    exports: list[Path] = []

    def fake_export(path: str, out: Path) -> None:
        exports.append(out)
        out.parent.mkdir(parents=True)
        out.write_bytes(b"graph")

    monkeypatch.setattr(models, "export_onnx", fake_export)
    assert models.onnx_model_dir(model_path, int8=False) == (tmp_path / "onnx" / key, "model.onnx")
    assert models.onnx_model_dir(model_path, int8=False) == (tmp_path / "onnx" / key, "model.onnx")
    assert len(exports) == 1 and exports[0].parent != tmp_path / "onnx" / key  # written aside, then renamed
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [key]


def test_export_without_onnxscript_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "installed", lambda *modules: "onnxscript" not in modules)
    with pytest.raises(DependencyError, match=r"needs onnx and onnxscript; run `pip install 'tfpack\[cpu\]'`"):
        load_encoder(EmbedConfig(backend="onnx", device="cpu"))


def test_auto_backend_on_cpu_is_openvino() -> None:
    assert load_encoder(EmbedConfig(device="cpu"))[1]["backend"] == "openvino"


def test_unknown_model_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"--model {tmp_path}/nope: cannot load"):
        load_encoder(EmbedConfig(model=str(tmp_path / "nope"), backend="torch", device="cpu"))


def test_check_embeddings_names_the_sample() -> None:
    vectors = np.eye(3, dtype=np.float32)
    vectors[1] = 0
    with pytest.raises(InputError, match="embedding of sample_id 11 has zero norm"):
        check_embeddings(vectors, [10, 11, 12], "run/samples.parquet")
    vectors[1, 0] = np.nan
    with pytest.raises(InputError, match="sample_id 11 is not finite"):
        check_embeddings(vectors, [10, 11, 12], "run/samples.parquet")


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="--embed-on: expected one of prompt, full"):
        EmbedConfig(embed_on="all")
    with pytest.raises(ConfigError, match="--backend"):
        EmbedConfig(backend="tensorrt")


def test_precomputed_embeddings(tmp_path: Path, qa_file: Path) -> None:
    from typer.testing import CliRunner

    from tfpack.cli import app

    rng = np.random.default_rng(0)
    own = rng.normal(size=(24, 16)).astype(np.float32)
    np.save(tmp_path / "own.npy", own)
    result = CliRunner().invoke(
        app, ["embed", str(qa_file), "-o", str(tmp_path / "run"), "--embeddings", str(tmp_path / "own.npy"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    stored = np.load(tmp_path / "run" / "embeddings.npy")
    np.testing.assert_allclose(stored, own / np.linalg.norm(own, axis=1, keepdims=True), rtol=1e-6)
    np.save(tmp_path / "short.npy", own[:20])
    result = CliRunner().invoke(
        app, ["embed", str(qa_file), "-o", str(tmp_path / "run2"), "--embeddings", str(tmp_path / "short.npy")]
    )
    assert result.exit_code == 1 and "has 20 rows, the inputs hold 24 samples" in result.stderr
    own[3] = 0
    np.save(tmp_path / "zero.npy", own)
    result = CliRunner().invoke(
        app, ["embed", str(qa_file), "-o", str(tmp_path / "run3"), "--embeddings", str(tmp_path / "zero.npy")]
    )
    assert result.exit_code == 1 and "zero.npy: row 3 has zero norm; fix that row of the file" in result.stderr


def test_chunks_grow_with_the_model_batch_and_prefetching_keeps_order() -> None:
    from tfpack.embedding.stage import chunk_rows, prefetched

    assert chunk_rows(16) == 1024 and chunk_rows(256) == 16384  # CPU chunks unchanged; a GPU's are 16k samples
    assert list(prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("broken chunk")

    with pytest.raises(ValueError, match="broken chunk"):
        list(prefetched(failing()))
