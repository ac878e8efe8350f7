import numpy as np
import pytest

from tfpack.errors import ConfigError
from tfpack.ordering.knn import build_knn, inverted_lists


def clustered(n: int, d: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(clusters, d))[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_graph_matches_brute_force():
    x = clustered(300)
    ids, sims, used = build_knn(x, 10, "exact")
    assert used == "exact"
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    assert np.allclose(np.sort(s, 1)[:, ::-1][:, :10], sims, atol=1e-5)
    assert (ids != np.arange(300)[:, None]).all()


@pytest.mark.parametrize("nprobe,min_recall", [(2, 0.6), (10_000, 1.0)])
def test_ivf_graph_recall_and_shape(nprobe, min_recall):
    x = clustered(6000)
    exact, _, _ = build_knn(x, 16, "exact")
    ids, sims, used = build_knn(x, 16, "ivf", nprobe=nprobe)
    assert used == "ivf" and ids.shape == (6000, 16) and ids.dtype == np.int32
    assert (ids != np.arange(6000)[:, None]).all(), "a sample is never its own neighbour"
    assert (np.diff(sims, axis=1) <= 0).all(), "rows sorted by decreasing similarity"
    assert np.allclose((x[np.maximum(ids, 0)] * x[:, None, :]).sum(-1), sims, atol=1e-5)
    recall = np.mean([len(set(a) & set(b)) / 16 for a, b in zip(ids, exact, strict=True)])
    assert recall >= min_recall, recall


def test_inverted_lists_cover_every_label():
    labels = np.array([[0, 2], [2, 1], [0, 1]])
    lists = inverted_lists(labels, 3)
    assert [x.tolist() for x in lists] == [[0, 2], [1, 2], [0, 1]]


def test_bad_k_is_a_usage_error():
    with pytest.raises(ConfigError, match="--k"):
        build_knn(clustered(10), 10)


@pytest.mark.slow  # trains an IVF-PQ index
def test_ivfpq_graph_from_a_float16_memmap(tmp_path):
    x = clustered(6000, d=384, clusters=50).astype(np.float16)  # PQ codes are sized for sentence-embedding widths
    np.save(tmp_path / "emb.npy", x)
    emb = np.load(tmp_path / "emb.npy", mmap_mode="r")
    x32 = x.astype(np.float32)
    exact, _, _ = build_knn(x32, 16, "exact")
    ids, sims, used = build_knn(emb, 16, "ivfpq", nprobe=8)
    assert used == "ivfpq" and ids.shape == (6000, 16) and ids.dtype == np.int32 and sims.dtype == np.float32
    assert (ids != np.arange(6000)[:, None]).all() and (ids >= 0).all()
    assert (np.diff(sims, axis=1) <= 0).all()
    # similarities are exact (re-ranked from the float16 rows), not the codes' approximations
    assert np.allclose((x32[ids] * x32[:, None, :]).sum(-1), sims, atol=1e-5)
    recall = np.mean([len(set(a) & set(b)) / 16 for a, b in zip(ids, exact, strict=True)])
    assert recall >= 0.95, recall


def test_rerank_keeps_the_best_exact_candidates():
    from tfpack.ordering.knn import rerank

    x = clustered(50)
    own = np.array([3, 7])
    cand = np.array([[3, 10, 11, 12, -1, 13], [1, 2, 7, -1, -1, -1]])
    ids, sims = rerank(x, own, x[own], cand, 3)
    for row, q in enumerate(own):
        pool = [c for c in cand[row] if c >= 0 and c != q]
        best = sorted(pool, key=lambda c: -float(x[q] @ x[c]))[:3]
        assert ids[row].tolist() == best + [-1] * (3 - len(best))
        assert np.allclose(sims[row][: len(best)], [x[q] @ x[c] for c in best], atol=1e-6)
