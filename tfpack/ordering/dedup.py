"""Near-duplicate removal on the kNN graph (`--dedup S`): one sample kept per group of near-duplicates.

A group is a connected component of the graph whose edges are the kNN pairs with cosine >= S, each re-checked in
float64 from the embeddings (the graph stores float32 similarities). Samples in `skip` (already left out) take no
part. In each group the sample of lowest `rank` stays (`--dedup-keep first`: input order; `longest`: most tokens,
then input order); the others are removed, each reported with the kept sample and their cosine.

Example: cosines a-b 0.97, b-c 0.96, a-c 0.93, S 0.95 → one group {a, b, c} (b links a and c), `a` kept with
`--dedup-keep first`, `b` and `c` removed as near-duplicates of `a` (cos 0.97 and 0.93).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import pair_cosines

_SLACK = 1e-3  # float32 graph similarities this far below S are re-checked too


class Duplicates(NamedTuple):
    """Per sample: the row kept in its place (-1 when it is kept or in no group) and their float64 cosine."""

    kept_as: NDArray[np.int64]
    cosine: NDArray[np.float64]

    @property
    def removed(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.kept_as >= 0)

    def group_sizes(self) -> NDArray[np.int64]:
        """Size of each group of two or more samples (the kept one included)."""
        counts = np.bincount(self.kept_as[self.kept_as >= 0])
        return counts[counts > 0] + 1


@numba.njit(cache=True)
def _root(parent: Any, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True)
def _components(n: int, a: Any, b: Any) -> Any:
    """Component label (its lowest member) of each of `n` nodes, given the edges `a[i]`-`b[i]` (union-find)."""
    parent = np.arange(n)
    for i in range(len(a)):
        ra, rb = _root(parent, a[i]), _root(parent, b[i])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    for i in range(n):
        parent[i] = _root(parent, i)
    return parent


def exact_cosines(
    vectors: NDArray[Any], a: NDArray[np.int64], b: NDArray[np.int64], chunk: int = 16_384
) -> NDArray[np.float64]:
    """`pair_cosines` of rows converted to float64, a chunk of pairs at a time (bounded memory for many pairs)."""
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), chunk):
        ids = np.concatenate([a[start : start + chunk], b[start : start + chunk]])
        rows, inverse = np.unique(ids, return_inverse=True)
        block = np.asarray(vectors[rows], dtype=np.float64)
        half = len(ids) // 2
        out[start : start + half] = pair_cosines(block, inverse[:half], inverse[half:])
    return out


def duplicate_edges(
    vectors: NDArray[Any],
    nbr_ids: NDArray[Any],
    nbr_sims: NDArray[Any],
    min_cos: float,
    skip: NDArray[np.bool_],
    chunk: int = 65_536,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The graph's pairs (a < b) with float64 cosine >= `min_cos`, neither in `skip`; read chunk by chunk."""
    found_a, found_b = [], []
    for start in range(0, len(nbr_ids), chunk):
        ids = np.asarray(nbr_ids[start : start + chunk])
        sims = np.asarray(nbr_sims[start : start + chunk])
        rows, cols = np.nonzero((sims >= min_cos - _SLACK) & (ids >= 0))
        a, b = rows.astype(np.int64) + start, ids[rows, cols].astype(np.int64)
        a, b = np.minimum(a, b), np.maximum(a, b)
        ok = ~skip[a] & ~skip[b]
        found_a.append(a[ok])
        found_b.append(b[ok])
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    if a.size:
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)
        a, b = pairs[:, 0], pairs[:, 1]
        close = exact_cosines(vectors, a, b) >= min_cos
        a, b = a[close], b[close]
    return a, b


def near_duplicates(
    vectors: NDArray[Any],
    nbr_ids: NDArray[Any],
    nbr_sims: NDArray[Any],
    min_cos: float,
    rank: NDArray[np.int64],
    skip: NDArray[np.bool_] | None = None,
) -> Duplicates:
    """Group near-duplicates (cosine >= `min_cos` on the graph, transitively) and keep the lowest `rank` of each."""
    n = len(vectors)
    skip = np.zeros(n, dtype=np.bool_) if skip is None else skip
    a, b = duplicate_edges(vectors, nbr_ids, nbr_sims, min_cos, skip)
    label = _components(n, a, b)
    grouped = np.zeros(n, dtype=np.bool_)
    grouped[a] = grouped[b] = True
    members = np.flatnonzero(grouped)
    order = members[np.lexsort((rank[members], label[members]))]  # by group, best rank first
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = label[order][1:] != label[order][:-1]
    keeper = order[first][np.cumsum(first) - 1]  # each member's group keeper
    kept_as = np.full(n, -1, dtype=np.int64)
    cosine = np.full(n, np.nan)
    gone = order[~first]
    kept_as[gone] = keeper[~first]
    if gone.size:
        cosine[gone] = exact_cosines(vectors, gone, keeper[~first])
    return Duplicates(kept_as, cosine)


def keep_rank(keep: str, lengths: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
    """Rank of each row for `--dedup-keep`: `first` by row (input order), `longest` by most tokens, then row.

    >>> keep_rank("longest", np.array([5, 9, 9, 2])).tolist()
    [2, 0, 1, 3]
    """
    rows = np.arange(len(lengths))
    if keep == "first":
        return rows
    rank = np.empty(len(lengths), dtype=np.int64)
    rank[np.lexsort((rows, -np.asarray(lengths, dtype=np.int64)))] = rows
    return rank
