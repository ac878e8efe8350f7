from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from tfpack.ordering.knn import build_knn
from tfpack.ordering.stage import window_metrics
from tfpack.ordering.threshold import from_cosine, gram_matrix
from tfpack.ordering.walk import WalkResult, walk


def slow_greedy(x: NDArray[np.float32], reject_d2: float, window: int, start: int) -> list[int]:
    """The paper's dense algorithm in plain Python (float64 distances; ties go to the lower id)."""
    x64 = x.astype(np.float64)
    n = len(x)

    def d2(a: int, b: int) -> float:
        return float(x64[a] @ x64[a] + x64[b] @ x64[b] - 2 * (x64[a] @ x64[b]))

    path = [start]
    unvisited = set(range(n)) - {start}
    while unvisited:
        cur = path[-1]
        by_distance = sorted(unvisited, key=lambda c: (d2(cur, c), c))
        valid = [c for c in by_distance if all(d2(p, c) >= reject_d2 for p in path[-window:])]
        nxt = valid[0] if valid else by_distance[0]
        path.append(nxt)
        unvisited.remove(nxt)
    return path


def unit_rows(seed: int, n: int, d: int, clusters: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 10_000),
        "n": st.integers(2, 40),
        "d": st.integers(2, 8),
        "clusters": st.integers(1, 5),
        "cosine": st.floats(-0.5, 0.99),
        "window": st.integers(1, 5),
        "k": st.integers(1, 12),
    }
)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_exact_kernel_equals_slow_greedy(case: dict) -> None:
    x = unit_rows(case["seed"], case["n"], case["d"], case["clusters"])
    k = min(case["k"], case["n"] - 1)
    ids, sims, _ = build_knn(x, k, "exact")
    reject_d2 = 2 - 2 * case["cosine"]
    start = case["seed"] % case["n"]
    got = walk(x, ids, sims, reject_d2, window=case["window"], start=start, exact=True)
    assert got.path.tolist() == slow_greedy(x, reject_d2, case["window"], start)
    assert dense_walk(x, reject_d2, case["window"], start).path.tolist() == got.path.tolist()


def dense_walk(x: np.ndarray, reject_d2: float, window: int, start: int) -> WalkResult:
    """The exact walk over no kNN graph, screened by the inner-product matrix (`tfpack order --exact` up to 8192)."""
    empty = np.zeros((len(x), 0))
    return walk(
        x,
        empty.astype(np.int32),
        empty.astype(np.float32),
        reject_d2,
        window=window,
        start=start,
        exact=True,
        gram=gram_matrix(x),
    )


@settings(max_examples=40, deadline=None)
@given(cases, st.sampled_from([0.0, 1e-7, 1e-4]))
def test_exact_kernel_equals_slow_greedy_on_near_ties(case: dict, jitter: float) -> None:
    """Near-copies (exact copies when `jitter` is 0) put many candidates within float32 rounding of each other:
    the fallback scan's float32 screen must still leave every decision to the float64 distances, ties to the lower
    id."""
    base = unit_rows(case["seed"], case["n"], max(case["d"], 16), case["clusters"])
    rng = np.random.default_rng(case["seed"])
    x = np.concatenate([base, base + jitter * rng.normal(size=base.shape)]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids, sims, _ = build_knn(x, 1, "exact")  # one neighbour: most steps fall back to the scan
    reject_d2 = 2 - 2 * case["cosine"]
    start = case["seed"] % len(x)
    got = walk(x, ids, sims, reject_d2, window=case["window"], start=start, exact=True)
    assert got.path.tolist() == slow_greedy(x, reject_d2, case["window"], start)
    dense = dense_walk(x, reject_d2, case["window"], start)
    assert dense.path.tolist() == got.path.tolist() and dense.fallbacks == 0


@settings(max_examples=60, deadline=None)
@given(cases)
def test_default_walk_is_a_permutation_that_honours_the_window(case: dict) -> None:
    x = unit_rows(case["seed"], case["n"], case["d"], case["clusters"])
    k = min(case["k"], case["n"] - 1)
    ids, sims, _ = build_knn(x, k, "exact")
    reject_d2 = 2 - 2 * case["cosine"]
    got = walk(x, ids, sims, reject_d2, window=case["window"], start=0, n_random=4, seed=case["seed"])
    assert sorted(got.path.tolist()) == list(range(case["n"]))
    assert got.path[0] == 0
    violations = window_metrics(x, got.path, case["window"], reject_d2, 0)["threshold_violations"]
    assert violations <= got.forced


def test_no_threshold_is_plain_nearest_neighbour() -> None:
    x = unit_rows(1, 30, 4, 3)
    ids, sims, _ = build_knn(x, 29, "exact")
    got = walk(x, ids, sims, -1.0, exact=True)
    assert got.path.tolist() == slow_greedy(x, -1.0, 4, 0)
    assert got.fallbacks == 0


def test_duplicates_are_never_adjacent_when_avoidable() -> None:
    base = unit_rows(2, 10, 6, 10)
    x = np.concatenate([base, base])  # each sample twice: the duplicate is always the nearest neighbour
    ids, sims, _ = build_knn(x, 5, "exact")
    got = walk(x, ids, sims, 2 - 2 * 0.999, window=1)
    pairs = {frozenset((int(a) % 10, int(b) % 10)) for a, b in zip(got.path[:-1], got.path[1:], strict=True)}
    assert all(len(p) == 2 for p in pairs)


def test_float16_embeddings_walk_like_their_float32_values(tmp_path) -> None:
    from tfpack.arrays import gather_float32

    rng = np.random.default_rng(3)
    x = rng.normal(size=(800, 24)).astype(np.float16)
    x[5, 0] = np.float16(6e-8)  # a subnormal entry decodes too
    np.save(tmp_path / "emb.npy", x)
    emb = np.load(tmp_path / "emb.npy", mmap_mode="r")
    x32 = x.astype(np.float32)
    ids, sims, _ = build_knn(x32, 12, "exact")
    for exact in (False, True):
        half = walk(emb, ids, sims, from_cosine(0.4).reject_d2, exact=exact).path
        full = walk(x32, ids, sims, from_cosine(0.4).reject_d2, exact=exact).path
        assert np.array_equal(half, full)
    rows = np.array([5, 0, 799, 5])
    assert np.array_equal(gather_float32(emb, rows), x32[rows])
