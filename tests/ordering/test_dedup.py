"""Near-duplicate groups (`--dedup`) against a brute-force computation, and the walk's skip/avoid rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfpack.ordering.dedup import keep_rank, near_duplicates
from tfpack.ordering.knn import build_knn
from tfpack.ordering.walk import walk


def clustered(n: int, dim: int, seed: int, spread: float) -> np.ndarray:
    """Unit rows around a few centres: many pairs near any cosine threshold."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 5), dim))
    rows = centres[rng.integers(0, len(centres), n)] + spread * rng.normal(size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_force_groups(vectors: np.ndarray, min_cos: float, skip: np.ndarray) -> list[set[int]]:
    """Connected components of 'cosine >= min_cos' over every pair (float64), skipped rows left out."""
    x = vectors.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    close = (x @ x.T) >= min_cos
    n = len(x)
    seen, groups = set(), []
    for s in range(n):
        if s in seen or skip[s]:
            continue
        group, todo = {s}, [s]
        while todo:
            i = todo.pop()
            for j in np.flatnonzero(close[i]):
                if j not in group and not skip[j]:
                    group.add(int(j))
                    todo.append(int(j))
        seen |= group
        if len(group) > 1:
            groups.append(group)
    return groups


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 40),
    seed=st.integers(0, 10_000),
    spread=st.sampled_from([0.05, 0.2, 0.5]),
    min_cos=st.floats(0.5, 0.99),
    keep=st.sampled_from(["first", "longest"]),
)
def test_groups_equal_brute_force(n: int, seed: int, spread: float, min_cos: float, keep: str) -> None:
    vectors = clustered(n, 8, seed, spread)
    rng = np.random.default_rng(seed)
    skip = rng.random(n) < 0.1
    lengths = rng.integers(1, 50, n)
    rank = keep_rank(keep, lengths)
    ids, sims, _ = build_knn(vectors, n - 1, "exact")  # k = N-1: the graph holds every pair
    found = near_duplicates(vectors, ids, sims, min_cos, rank, skip)
    expected = brute_force_groups(vectors, min_cos, skip)
    keepers = {min(g, key=lambda r: rank[r]) for g in expected}
    removed = set().union(*expected) - keepers if expected else set()
    assert set(found.removed.tolist()) == removed
    for group in expected:
        keeper = min(group, key=lambda r: rank[r])
        assert all(found.kept_as[r] == keeper for r in group - {keeper})
        assert found.kept_as[keeper] == -1
    assert sorted(found.group_sizes().tolist()) == sorted(len(g) for g in expected)
    kept = np.flatnonzero((found.kept_as < 0) & ~skip)
    x = vectors[kept].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ x.T
    assert not (cos[np.triu_indices(len(kept), 1)] >= min_cos).any(), "two kept samples at cosine >= S"
    reported = found.cosine[found.removed]
    direct = (vectors[found.removed].astype(np.float64) * vectors[found.kept_as[found.removed]]).sum(1)
    np.testing.assert_allclose(reported, direct, atol=1e-6)


def test_chained_group_keeps_first_or_longest() -> None:
    """a-b and b-c are near-duplicates, a-c is not: one group of three (b links them)."""
    angle = np.radians([0.0, 14.0, 28.0])  # cos 14° = 0.970, cos 28° = 0.883
    vectors = np.stack([np.cos(angle), np.sin(angle), np.zeros(3)], axis=1).astype(np.float32)
    ids, sims, _ = build_knn(vectors, 2, "exact")
    first = near_duplicates(vectors, ids, sims, 0.95, keep_rank("first", np.array([3, 9, 5])))
    assert first.kept_as.tolist() == [-1, 0, 0]
    assert round(first.cosine[2], 3) == 0.883
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
