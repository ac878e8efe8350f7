"""`tfpack embed --model static`: a static model distilled once from the packaged default, cached, unit rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import Counted, qa_rows, write_jsonl
from tfpack.cli import app
from tfpack.config import DEFAULT_MODEL
from tfpack.embedding import models
from tfpack.errors import NOTE_LISTENERS
from tfpack.workdir import EMBEDDINGS_FILE, MANIFEST


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

    def no_second_distillation(*args: object, **kwargs: object) -> None:
        raise AssertionError("distilled again although the cache holds the model")

    monkeypatch.setattr(models, "distil_static", no_second_distillation)
    assert models.static_model_dir(source) == first
    assert (first / models.STATIC_VECTORS).is_file() and not list(first.parent.glob("*.tmp-*"))


def test_static_names_their_source() -> None:
    assert models.static_source("static") == models.resolve_model(DEFAULT_MODEL)
    assert models.static_source("static:/models/my-st") == "/models/my-st"
    assert models.static_source(DEFAULT_MODEL) is None


def test_auto_model_rule() -> None:
    """GPU: the full model; CPU: static for single-exchange samples or from STATIC_FROM_SAMPLES, else the full one."""
    from tfpack.embedding.stage import STATIC_FROM_SAMPLES, auto_model

    big = STATIC_FROM_SAMPLES
    assert auto_model("cpu", 10, multi_turn=False) == (models.STATIC, "CPU, single-turn samples")
    assert auto_model("cpu", 10, multi_turn=True) == (DEFAULT_MODEL, "CPU, multi-turn samples")
    assert auto_model("cpu", big - 1, multi_turn=True)[0] == DEFAULT_MODEL
    assert auto_model("cpu", big, multi_turn=True) == (models.STATIC, f"CPU, {big:,}+ samples")
    assert auto_model("cpu", big, multi_turn=False) == (models.STATIC, f"CPU, {big:,}+ samples")
    for n, multi_turn in ((10, False), (10, True), (big, False), (big, True)):
        assert auto_model("cuda", n, multi_turn) == (DEFAULT_MODEL, "GPU")


def test_choose_model_reads_the_samples_only_when_the_choice_depends_on_them(tmp_path: Path) -> None:
    from tfpack.config import EmbedConfig
    from tfpack.embedding.stage import STATIC_FROM_SAMPLES, choose_model

    absent = tmp_path / "no-samples.parquet"
    assert choose_model(EmbedConfig(model="my/model", device="cpu"), 10, absent) == ("my/model", None)
    assert choose_model(EmbedConfig(device="cpu"), STATIC_FROM_SAMPLES, absent) == (
        models.STATIC,
        f"auto: static (CPU, {STATIC_FROM_SAMPLES:,}+ samples)",
    )


def chat(exchanges: int, i: int) -> dict[str, list[dict[str, str]]]:
    turns = [{"role": "system", "content": "Be brief."}]
    for k in range(exchanges):
        turns += [{"role": "user", "content": f"Question {i}.{k}?"}, {"role": "assistant", "content": f"Answer {k}."}]
    return {"messages": turns}


def auto_run(tmp_path: Path, qa: int, chats: list) -> dict:
    """`embed --device cpu` (model auto) of `qa` question/answer records and `chats`, one file each."""
    files = [str(write_jsonl(tmp_path / "qa.jsonl", qa_rows(qa))), str(write_jsonl(tmp_path / "chats.jsonl", chats))]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["embed", *files, "-o", str(out), "--device", "cpu", "--overwrite", "-q"])
    assert result.exit_code == 0, result.output
    return orjson.loads((out / MANIFEST).read_bytes())


def test_auto_on_cpu_picks_static_for_single_turn_samples(tmp_path: Path) -> None:
    """QA records and one-exchange chats (a system turn does not count): static, and the manifest says why."""
    manifest = auto_run(tmp_path, 6, [chat(1, i) for i in range(3)])
    assert (manifest["model_asked"], manifest["model"], manifest["backend"]) == ("auto", "static", "static")
    assert manifest["model_choice"] == "auto: static (CPU, single-turn samples)"


def test_auto_on_cpu_keeps_the_full_model_for_multi_turn_chats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One sample with two assistant turns among single-turn ones: the full model, up to STATIC_FROM_SAMPLES."""
    import tfpack.embedding.stage as stage

    chats = [chat(1, 0), chat(2, 1)]
    manifest = auto_run(tmp_path, 20, chats)
    assert (manifest["model_asked"], manifest["model"]) == ("auto", DEFAULT_MODEL)
    assert manifest["model_choice"] == "auto: all-MiniLM-L6-v2 (CPU, multi-turn samples)"
    monkeypatch.setattr(stage, "STATIC_FROM_SAMPLES", 20)
    manifest = auto_run(tmp_path, 20, chats)
    assert (manifest["model"], manifest["model_choice"]) == ("static", "auto: static (CPU, 20+ samples)")


def tiny_source(path: Path) -> Path:
    """A real BERT with the packaged model's tokenizer but one small layer: distilled in well under a second."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_model(DEFAULT_MODEL))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_first_build_says_what_it_builds_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFPACK_CACHE", str(tmp_path / "cache"))
    source = str(tiny_source(tmp_path / "tiny"))
    said: list[str] = []
    NOTE_LISTENERS.append(said.append)
    try:
        built = models.static_model_dir(source, Counted())
        assert said == [f"building the static model from {source} (once; cached in {built})"]
        assert models.static_model_dir(source, Counted()) == built and len(said) == 1  # cached: nothing to say
    finally:
        NOTE_LISTENERS.remove(said.append)
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(12))
    args = ["embed", str(data), "--model", f"static:{source}", "-o", str(tmp_path / "run"), "-q"]
    quiet = CliRunner().invoke(app, args)  # the cached model; a quiet run says nothing either way
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
    assert orjson.loads((tmp_path / "run" / MANIFEST).read_bytes())["model_path"] == str(built)


def test_distillation_follows_progress_and_zeroes_special_tokens(tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "tiny")
    out = tmp_path / "static"
    out.mkdir()
    counted = Counted()
    models.distil_static(str(source), out, counted)
    vectors = np.load(out / models.STATIC_VECTORS)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(out / models.STATIC_TOKENIZER)).get_vocab()
    zero = [t for t, i in vocab.items() if not vectors[i].any()]
    assert sorted(t for t in zero if not t.startswith("[unused")) == ["[CLS]", "[MASK]", "[PAD]", "[SEP]"]
    assert counted.done == {"distilling the static model": len(vocab) - len(zero)}
    assert vectors.shape == (len(vocab), 32) and vectors[vocab["[UNK]"]].any()


def test_static_vectors_are_centred_principal_components() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(50, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32) + 5
    ids = np.arange(2, 50)
    vectors = models.static_vectors(hidden, ids)
    assert vectors.shape == (50, 8) and not vectors[:2].any()
    centred = hidden[ids] - hidden[ids].mean(axis=0)
    assert np.allclose(vectors[ids].mean(axis=0), 0, atol=1e-4)  # the direction every token shares is gone
    gram = vectors[ids].T @ vectors[ids]
    assert np.allclose(gram, np.diag(np.diag(gram)), atol=1e-2)  # uncorrelated axes ...
    assert np.all(np.diff(np.diag(gram)) <= 1e-3)  # ... by decreasing variance
    assert np.allclose(vectors[ids] @ vectors[ids].T, centred @ centred.T, atol=1e-2)  # all 8 kept: a rotation
