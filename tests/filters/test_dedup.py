"""Near-duplicate removal (`--dedup`) against a slow float64 brute force, and the walk's skip/avoid rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, Counted, chat_rows, write_jsonl
from tfpack import api
from tfpack.cli import app
from tfpack.config import DEFAULT_MODEL, EmbedConfig
from tfpack.embedding.encoders import encode_texts, load_encoder
from tfpack.filters import dedup
from tfpack.filters.dedup import close_pairs, deciding_model, keep_rank, near_duplicates
from tfpack.ordering.knn import build_knn
from tfpack.ordering.walk import walk

runner = CliRunner()


def clustered(n: int, dim: int, seed: int, spread: float) -> np.ndarray:
    """Unit rows around a few centres: many pairs near any cosine threshold."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 5), dim))
    rows = centres[rng.integers(0, len(centres), n)] + spread * rng.normal(size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, min_cos: float, rank: np.ndarray, skip: np.ndarray) -> tuple[list, list]:
    """The judge: every pair's cosine in float64, rows visited in rank order, a row removed in the name of its most
    similar kept near-duplicate (ties: the better rank); returns (kept_as, cosine) per row."""
    x = vectors.astype(np.float64)
    norms = np.sqrt((x * x).sum(1))
    n = len(x)
    kept_as: list[int] = [-1] * n
    cosine: list[float] = [float("nan")] * n
    kept: list[int] = []
    for row in sorted(range(n), key=lambda r: rank[r]):
        if skip[row]:
            continue
        best, best_cos = -1, -np.inf
        for other in kept:
            cos = float(np.dot(x[row], x[other]) / (norms[row] * norms[other]))
            if cos >= min_cos and (cos > best_cos or (cos == best_cos and rank[other] < rank[best])):
                best, best_cos = other, cos
        if best >= 0:
            kept_as[row], cosine[row] = best, best_cos
        else:
            kept.append(row)
    return kept_as, cosine


def copies(n_groups: int, size: int, dim: int, seed: int, spread: float) -> np.ndarray:
    """Unit rows in `n_groups` tight groups of `size` near-copies (groups larger than a small k)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim))
    rows = np.repeat(centres, size, axis=0) + spread * rng.normal(size=(n_groups * size, dim))
    rows = rows[rng.permutation(len(rows))]
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def check_against_judge(vectors: np.ndarray, k: int, min_cos: float, keep: str, seed: int) -> None:
    n = len(vectors)
    rng = np.random.default_rng(seed)
    skip = rng.random(n) < 0.1
    rank = keep_rank(keep, rng.integers(1, 50, n))
    ids, sims, _ = build_knn(vectors, k, "exact")
    found = near_duplicates(vectors, ids, sims, min_cos, rank, skip)
    kept_as, cosine = brute_force(vectors, min_cos, rank, skip)
    assert found.kept_as.tolist() == kept_as
    np.testing.assert_allclose(found.cosine, np.array(cosine), rtol=1e-12)
    assert (found.cosine[found.removed] >= min_cos).all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 40),
    seed=st.integers(0, 10_000),
    spread=st.sampled_from([0.05, 0.2, 0.5]),
    min_cos=st.floats(0.5, 0.99),
    keep=st.sampled_from(["first", "longest"]),
    k=st.integers(1, 6),
)
def test_rule_equals_brute_force(n: int, seed: int, spread: float, min_cos: float, keep: str, k: int) -> None:
    """Any k (even 1): rows whose k neighbours are all near-duplicates are scanned exactly, so nothing is missed."""
    check_against_judge(clustered(n, 8, seed, spread), min(k, n - 1), min_cos, keep, seed)


@settings(max_examples=25, deadline=None)
@given(
    n_groups=st.integers(1, 4),
    size=st.integers(5, 30),
    seed=st.integers(0, 10_000),
    spread=st.sampled_from([0.02, 0.1, 0.3]),
    min_cos=st.floats(0.6, 0.99),
    keep=st.sampled_from(["first", "longest"]),
)
def test_groups_larger_than_k_equal_brute_force(
    n_groups: int, size: int, seed: int, spread: float, min_cos: float, keep: str
) -> None:
    check_against_judge(copies(n_groups, size, 8, seed, spread), 3, min_cos, keep, seed)


def test_a_float16_memmap_in_small_blocks_equals_brute_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `pack` reads (a float16 `embeddings.npy`, memory-mapped), with the scan's blocks and the re-check's
    chunks far smaller than N, so every block boundary is crossed."""
    for name, size in (("_SCAN_ROWS", 7), ("_SCAN_BLOCK", 11), ("_PAIR_CHUNK", 13)):
        monkeypatch.setattr(dedup, name, size)
    np.save(tmp_path / "emb.npy", copies(3, 25, 8, 0, 0.1).astype(np.float16))
    vectors = np.load(tmp_path / "emb.npy", mmap_mode="r")
    check_against_judge(vectors, 3, 0.9, "longest", 0)
    ids, sims, _ = build_knn(vectors, 3, "exact")
    a, b, cos = close_pairs(vectors, ids, sims, 0.9, np.zeros(len(vectors), dtype=np.bool_))
    x = vectors.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.argwhere(np.triu(x @ x.T >= 0.9, 1))
    assert np.column_stack([a, b]).tolist() == truth.tolist()
    np.testing.assert_allclose(cos, (x[a] * x[b]).sum(1), rtol=1e-12)


def test_a_group_larger_than_k_is_found_whole() -> None:
    """40 near-copies with k = 4: every copy but the first is removed, in the first's name."""
    vectors = copies(1, 40, 16, 0, 0.01)
    ids, sims, _ = build_knn(vectors, 4, "exact")
    found = near_duplicates(vectors, ids, sims, 0.95, np.arange(40))
    assert found.kept_as.tolist() == [-1] + [0] * 39


def test_a_chain_removes_only_what_is_close_to_a_kept_sample() -> None:
    """a-b and b-c are near-duplicates, a-c is not: `first` keeps a and c (b is gone, so nothing kept is near c)."""
    angle = np.radians([0.0, 14.0, 28.0])  # cos 14° = 0.970, cos 28° = 0.883
    vectors = np.stack([np.cos(angle), np.sin(angle), np.zeros(3)], axis=1).astype(np.float32)
    ids, sims, _ = build_knn(vectors, 2, "exact")
    first = near_duplicates(vectors, ids, sims, 0.95, keep_rank("first", np.array([3, 9, 5])))
    assert first.kept_as.tolist() == [-1, 0, -1]
    assert round(first.cosine[1], 3) == 0.970
    longest = near_duplicates(vectors, ids, sims, 0.95, keep_rank("longest", np.array([3, 9, 5])))
    assert longest.kept_as.tolist() == [1, -1, 1]


def test_walk_skips_rows_and_moves_a_skipped_start() -> None:
    vectors = clustered(30, 8, 1, 0.3)
    ids, sims, _ = build_knn(vectors, 10, "exact")
    skip = np.zeros(30, dtype=bool)
    skip[[0, 1, 7, 20]] = True
    result = walk(vectors, ids, sims, 0.0, start=0, skip=skip)
    assert sorted(result.path.tolist()) == np.flatnonzero(~skip).tolist()
    assert result.path[0] == 2
    assert walk(vectors, ids, sims, 0.0, skip=np.ones(30, dtype=bool)).path.size == 0


def test_walk_avoids_earlier_packs_within_reach() -> None:
    """Rows 2i and 2i+1 are near-twins packed together before; with reach 3, no twin follows its twin within 3."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16))
    vectors = np.concatenate([base, base + 0.01 * rng.normal(size=base.shape)])
    order = np.argsort(np.r_[np.arange(20) * 2, np.arange(20) * 2 + 1])
    vectors = vectors[order]
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids, sims, _ = build_knn(vectors, 39, "exact")
    earlier = (np.arange(40) // 2)[None]
    plain = walk(vectors, ids, sims, 0.0).path

    def twins(path: np.ndarray, lag: int) -> int:
        return int((path[:-lag] // 2 == path[lag:] // 2).sum())

    assert twins(plain, 1) > 10, "control: the greedy walk steps from a sample to its twin"
    result = walk(vectors, ids, sims, 0.0, avoid=earlier, reach=3)
    assert result.forced == 0
    assert all(twins(result.path, lag) == 0 for lag in (1, 2, 3))


def near_copies() -> list[dict]:
    """12 chats, then 6 near-copies of the first 6 (one word of the answer changed, some longer), then 4 chats that
    share a prompt with chats 0-3 but answer something else."""
    rows = chat_rows(12)
    for i in range(6):
        prompt, answer = rows[i]["messages"][0]["content"], rows[i]["messages"][1]["content"]
        rows.append(message_row(prompt, answer.replace("answer", "result", 1) + " Indeed." * (i % 2)))
    rows += [message_row(rows[i]["messages"][0]["content"], "Something unrelated: the sky is blue.") for i in range(4)]
    return rows


def message_row(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dedup")
    data = write_jsonl(tmp / "chat.jsonl", near_copies())
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp / "run"), "--model", "all-MiniLM-L6-v2", "--quiet"])
    assert result.exit_code == 0, result.stderr
    return tmp / "run"


@pytest.mark.parametrize("keep", ["first", "longest"])
def test_stats_preview_is_what_pack_removes(run_dir: Path, tmp_path: Path, keep: str) -> None:
    """The preview and `pack` share one function and its options: the same (removed, kept) pairs and cosines."""
    options = ["--dedup", "0.9", "--dedup-keep", keep]
    preview = runner.invoke(app, ["stats", str(run_dir), *options, "--show", "100", "--json"])
    assert preview.exit_code == 0, preview.stderr
    report = orjson.loads(preview.stdout)["near_duplicates"]
    shown = {(r["sample_id"], g["kept"]["sample_id"], r["cos"]) for g in report["shown"] for r in g["removed"]}
    packed = runner.invoke(app, ["pack", str(run_dir), "-o", str(tmp_path / "out"), *options, *DEMO_TOKENIZER, "-q"])
    assert packed.exit_code == 0, packed.stderr
    dropped = [orjson.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_bytes().splitlines()]
    removed = {(d["sample_id"], d["duplicate_of"], round(d["cos"], 4)) for d in dropped if "duplicate_of" in d}
    assert removed == shown and len(removed) == report["removed"] > 0
    assert all(cos >= 0.9 for _, _, cos in removed)
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())["dedup"]
    assert manifest["keep"] == keep and manifest["compared"] == "full" and manifest["removed"] == len(removed)


def test_dedup_on_full_keeps_samples_that_share_only_a_prompt(run_dir: Path) -> None:
    """Chats 18-21 repeat prompts 0-3 with another answer: duplicates by prompt, not as whole samples. The run
    embedded prompts (the default), so whole-sample vectors come from the run's model, proposed by its static
    distillation."""
    full = api.stats(run_dir, dedup=0.95, show=100)["near_duplicates"]
    prompt = api.stats(run_dir, dedup=0.95, dedup_on="prompt", show=100)["near_duplicates"]
    removed_full = {r["sample_id"] for g in full["shown"] for r in g["removed"]}
    removed_prompt = {r["sample_id"] for g in prompt["shown"] for r in g["removed"]}
    assert not removed_full & set(range(18, 22))
    assert set(range(18, 22)) <= removed_prompt
    assert full["compared"] == "full" and full["proposed_by"].startswith("static:")
    assert prompt["compared"] == "prompt" and "proposed_by" not in prompt, "the run's own prompt embeddings decide"


def test_a_static_run_removes_what_a_full_model_run_removes(run_dir: Path, tmp_path: Path) -> None:
    """S means the full model's cosine: a `--model static` run of the same data previews the same removals."""
    data = write_jsonl(tmp_path / "chat.jsonl", near_copies())
    embedded = runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "static"), "--model", "static", "-q"])
    assert embedded.exit_code == 0, embedded.stderr

    def removed(run: Path) -> set[tuple[int, int]]:
        report = api.stats(run, dedup=0.9, show=100)["near_duplicates"]
        return {(r["sample_id"], g["kept"]["sample_id"]) for g in report["shown"] for r in g["removed"]}

    assert removed(tmp_path / "static") == removed(run_dir) != set()


def test_precomputed_embeddings_are_compared_as_they_are(tmp_path: Path) -> None:
    """No model to embed whole samples with: the run's prompt vectors decide, and the summary says so."""
    rows = chat_rows(6)
    vectors = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    vectors[4] = vectors[1]
    np.save(tmp_path / "emb.npy", vectors)
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    args = ["embed", str(data), "-o", str(tmp_path / "run"), "--embeddings", str(tmp_path / "emb.npy"), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    report = api.stats(tmp_path / "run", dedup=0.99, show=5)["near_duplicates"]
    assert report["removed"] == 1 and report["shown"][0]["kept"]["sample_id"] == 1
    assert report["compared"] == "prompt" and "not the full" in report["note"]


def test_the_deciding_model_is_a_static_runs_source_and_embeds_each_text_once() -> None:
    shown = Counted()
    decider = deciding_model(EmbedConfig(model="static"), shown)
    assert decider.name == DEFAULT_MODEL
    assert deciding_model(EmbedConfig(model="all-MiniLM-L6-v2")).name == "all-MiniLM-L6-v2"
    texts = ["How far does the train travel in total?", "Name three primary colours.", "Name three primary colours."]
    vectors = decider.encode(texts, "dedup candidates")
    bar = f"embedding 2 dedup candidates with {DEFAULT_MODEL}"  # the slow part of a static run's filters, shown
    assert shown.totals == {bar: 2} and shown.done == {bar: 2}
    model, resolved = load_encoder(EmbedConfig())
    np.testing.assert_allclose(vectors, encode_texts(model, texts[:2], resolved["batch_size"])[[0, 1, 1]], atol=1e-5)
    assert (vectors[1] == vectors[2]).all(), "an exact copy gets the same vector: cosine 1"
