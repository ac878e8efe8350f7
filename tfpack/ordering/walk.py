"""The TFP walk: a greedy nearest-neighbour path with threshold filtering, as numba kernels over the kNN graph.

From `start`, each step moves to the nearest unvisited sample (in the current sample's kNN list, nearest first)
whose squared L2 distance to each of the last `window` path samples is at least `reject_d2` (see threshold.py).
When the list runs out, a fallback picks the next sample:

- `exact=True`: the true nearest valid unvisited sample, by a scan over every unvisited sample; with an exact,
  float64-reranked kNN graph this equals the paper's dense algorithm step for step.
- `exact=False` (default): the nearest valid unvisited sample among the kNN lists of the other recent path
  samples and of the current sample's first `hops` neighbours (two hops away), else among `n_random` random
  unvisited samples (seeded). On GSM8K this stays within 1% of the exact walk's mean adjacent similarity.

The dense walk (`gram`, the float32 inner products of all pairs, with an empty graph: `tfpack order --exact` up to
`threshold.EXACT_MAX_N` samples) needs no kNN graph: each step scans every unvisited sample through the matrix, and
computes float64 distances only for candidates that could be nearer than the best valid one, or whose distance to a
window sample lies within float32 error of the threshold; it takes the same steps as the exact walk.

If no examined candidate passes the filter, the nearest examined unvisited sample is taken (a *forced* step: a
threshold violation). Distances are computed in float64. The output is a permutation of the samples not marked
`skip` (all of them by default).

`avoid` ([E, N] pack ids of E earlier packings, -1 for none) adds a second rule for a fresh packing per epoch: a
candidate is also rejected when an earlier packing put it in one pack with any of the last `reach` path samples.

Embeddings may be float32 or float16 (e.g. a memory-mapped `embeddings.npy` too large to copy: see tfpack/arrays.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import as_kernel_array, value
from tfpack.config import OrderConfig
from tfpack.errors import ConfigError

_FAST = {"nsz", "arcp", "contract", "reassoc"}
_NEAR = 1e-4  # float32 similarities are trusted this far from the threshold
_CHUNK = 65_536


@numba.njit(cache=True, fastmath=_FAST)
def _d2(emb: Any, norms2: Any, a: int, b: int) -> float:
    dot = 0.0
    for t in range(emb.shape[1]):
        dot += value(emb[a, t]) * value(emb[b, t])
    return max(norms2[a] + norms2[b] - 2.0 * dot, 0.0)  # identical rows: 0, not a rounding error below it


@numba.njit(cache=True, fastmath=_FAST)
def _d2_screen(emb: Any, norms2: Any, a: int, b: int) -> float:
    """`_d2` with the dot product in float32 (twice the SIMD width): within `_screen_margin` of `_d2`."""
    dot = np.float32(0.0)
    for t in range(emb.shape[1]):
        dot += np.float32(value(emb[a, t])) * np.float32(value(emb[b, t]))
    return norms2[a] + norms2[b] - 2.0 * dot


@numba.njit(cache=True)
def _screen_margin(emb: Any, norms2: Any, a: int, b: int) -> float:
    """4x a bound on |_d2_screen - _d2|: a float32 sum of d products errs by at most d * 2**-24 * |a||b|, the
    distance by twice that, and |a||b| <= (|a|^2 + |b|^2) / 2."""
    return emb.shape[1] * 2.0**-22 * (norms2[a] + norms2[b])


@numba.njit(cache=True)
def _repeats(avoid: Any, reach: int, path: Any, step: int, cand: int) -> bool:
    """Whether an earlier packing (a row of `avoid`) packed `cand` with one of the last `reach` path samples."""
    for e in range(avoid.shape[0]):
        pack = avoid[e, cand]
        if pack < 0:
            continue
        for p in range(step - 1, max(0, step - reach) - 1, -1):
            if avoid[e, path[p]] == pack:
                return True
    return False


@numba.njit(cache=True)
def _closer(emb: Any, norms2: Any, gram: Any, a: int, b: int, bound: float) -> bool:
    """Whether `_d2(a, b) < bound`, read from `gram` (float32 inner products; 0 x 0 when absent) unless the float32
    value lies within `_screen_margin` of the bound."""
    if gram.shape[0] > 0:
        approx = norms2[a] + norms2[b] - 2.0 * gram[a, b]
        margin = _screen_margin(emb, norms2, a, b)
        if approx < bound - margin:
            return True
        if approx > bound + margin:
            return False
    return _d2(emb, norms2, a, b) < bound


@numba.njit(cache=True)
def _passes(
    emb: Any,
    norms2: Any,
    gram: Any,
    path: Any,
    step: int,
    rule: Any,
    cand: int,
    d2_cur: float,
) -> bool:
    """Whether `cand` is far enough from the last `window` path samples (`d2_cur`: its distance to the last) and,
    with `avoid`, was not packed with one of the last `reach` ones before. `rule`: (window, reject_d2, avoid,
    reach)."""
    window, reject_d2, avoid, reach = rule
    if d2_cur < reject_d2:
        return False
    for p in range(step - 2, max(0, step - window) - 1, -1):  # noqa: SIM110 - numba: no generators
        if _closer(emb, norms2, gram, path[p], cand, reject_d2):
            return False
    return not _repeats(avoid, reach, path, step, cand)


@numba.njit(cache=True)
def _scan_unvisited(
    emb: Any, norms2: Any, gram: Any, path: Any, step: int, rule: Any, candidates: Any, count: int
) -> tuple[int, bool]:
    """Nearest valid sample among `candidates[:count]` (ties: lower id), else the nearest one; (id, valid).

    Once a valid one is found, a float32 screen (`gram` when given, else a float32 dot product) skips the candidates
    that cannot be nearer; the decision is the float64 one."""
    cur = path[step - 1]
    best, best_d2 = -1, np.inf
    near, near_d2 = -1, np.inf
    for u in range(count):
        c = candidates[u]
        if best >= 0:
            if gram.shape[0] > 0:
                screen = norms2[cur] + norms2[c] - 2.0 * gram[cur, c]
            else:
                screen = _d2_screen(emb, norms2, cur, c)
            if screen - _screen_margin(emb, norms2, cur, c) > best_d2:
                continue  # surely farther than the best valid one found: the float64 distance cannot change that
        d2 = _d2(emb, norms2, cur, c)
        if d2 < near_d2 or (d2 == near_d2 and c < near):
            near, near_d2 = c, d2
        if (d2 < best_d2 or (d2 == best_d2 and c < best)) and _passes(emb, norms2, gram, path, step, rule, c, d2):
            best, best_d2 = c, d2
    if best >= 0:
        return best, True
    return near, False


@numba.njit(cache=True)
def walk_kernel(
    emb: Any,
    norms2: Any,
    gram: Any,
    nbr_ids: Any,
    nbr_sims: Any,
    start: int,
    window: int,
    reject_d2: float,
    exact: bool,
    n_random: int,
    seed: int,
    hops: int,
    skip: Any,
    avoid: Any,
    reach: int,
) -> tuple[Any, int, int]:
    """The walk over the samples not in `skip`; returns (path int64, fallbacks, forced steps). `nbr_sims` is used
    only when not exact. `gram`: float32 inner products [N, N] screening the float64 distances, or 0 x 0; with it
    and an empty graph (k = 0) the exact walk scans every unvisited sample at each step (the dense walk, no
    fallbacks counted)."""
    n, k = nbr_ids.shape
    hops = min(hops, k)
    rule = (window, reject_d2, avoid, reach)
    np.random.seed(seed)
    visited = skip.copy()
    unvisited = np.flatnonzero(~skip)  # unvisited[:n_left] holds the unvisited ids; pos[i] is i's index there
    n_left = len(unvisited)
    path = np.empty(n_left, np.int64)
    pos = np.zeros(n, np.int64)
    pos[unvisited] = np.arange(n_left)
    pool = np.empty(max(n_random, (window + hops) * k), np.int64)
    fallbacks = 0
    forced = 0
    nxt = start
    for step in range(len(path)):
        path[step] = nxt
        visited[nxt] = True
        n_left -= 1
        last = unvisited[n_left]
        unvisited[pos[nxt]] = last
        pos[last] = pos[nxt]
        if n_left == 0:
            break
        cur = nxt
        nxt = -1
        for j in range(k):
            c = nbr_ids[cur, j]
            if c < 0 or visited[c]:
                continue
            if exact:
                d2 = _d2(emb, norms2, cur, c)
            else:  # the graph's float32 similarity, recomputed in float64 near the threshold
                d2 = norms2[cur] + norms2[c] - 2.0 * nbr_sims[cur, j]
                if abs(d2 - reject_d2) < _NEAR:
                    d2 = _d2(emb, norms2, cur, c)
            if _passes(emb, norms2, gram, path, step + 1, rule, c, d2):
                nxt = c
                break
        if nxt >= 0:
            continue
        if k > 0:
            fallbacks += 1
        valid = False
        if exact or n_left <= n_random:
            nxt, valid = _scan_unvisited(emb, norms2, gram, path, step + 1, rule, unvisited, n_left)
        else:
            count = 0
            for h in range(min(window - 1, step) + hops):
                src = path[step - 1 - h] if h < min(window - 1, step) else nbr_ids[cur, h - min(window - 1, step)]
                if src < 0:
                    continue
                for j in range(k):
                    c = nbr_ids[src, j]
                    if c >= 0 and not visited[c]:
                        pool[count] = c
                        count += 1
            if count > 0:
                nxt, valid = _scan_unvisited(emb, norms2, gram, path, step + 1, rule, pool, count)
            if not valid:
                for u in range(n_random):
                    pool[u] = unvisited[np.random.randint(0, n_left)]
                nxt, valid = _scan_unvisited(emb, norms2, gram, path, step + 1, rule, pool, n_random)
        if not valid:
            forced += 1
    return path, fallbacks, forced


@numba.njit(cache=True)
def _lag_d2(emb: Any, norms2: Any, path: Any, lag: int) -> Any:
    """`_d2(path[s], path[s - lag])` for s = lag..len(path)-1: the distances the walk's decisions compared."""
    out = np.empty(max(len(path) - lag, 0), np.float64)
    for s in range(lag, len(path)):
        out[s - lag] = _d2(emb, norms2, path[s], path[s - lag])
    return out


def lag_distances(emb: NDArray[Any], norms2: NDArray[np.float64], path: NDArray[np.int64], lag: int) -> NDArray[Any]:
    """Squared L2 distance of each path sample to the one `lag` steps earlier ([len(path) - lag] float64), computed
    as the walk computes it, reading rows in place (`emb`: float32/float16 rows; `norms2`: `squared_norms(emb)`)."""
    return _lag_d2(as_kernel_array(emb), norms2, np.ascontiguousarray(path, dtype=np.int64), lag)


@numba.njit(cache=True, parallel=True)
def _pair_d2(emb: Any, norms2: Any, nbr_ids: Any) -> Any:
    n, k = nbr_ids.shape
    out = np.empty((n, k), np.float64)
    for i in numba.prange(n):
        for j in range(k):
            c = nbr_ids[i, j]
            out[i, j] = _d2(emb, norms2, i, c) if c >= 0 else np.inf
    return out


def rerank_exact(emb: NDArray[Any], norms2: NDArray[np.float64], nbr_ids: NDArray[Any]) -> NDArray[np.int32]:
    """Sort each kNN list by float64 distance, ties by lower id (the reference's argmin order)."""
    d2 = _pair_d2(emb, norms2, nbr_ids)
    order = np.lexsort((nbr_ids, d2), axis=-1)
    return np.take_along_axis(np.asarray(nbr_ids), order, -1).astype(np.int32)


@dataclass(frozen=True)
class WalkResult:
    path: NDArray[np.int64]
    fallbacks: int
    forced: int


def squared_norms(rows: NDArray[Any]) -> NDArray[np.float64]:
    """Squared L2 norm of each row, in float64, one chunk at a time (no full-size temporaries)."""
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _CHUNK):
        block = np.asarray(rows[start : start + _CHUNK], dtype=np.float64)
        out[start : start + len(block)] = np.einsum("ij,ij->i", block, block)
    return out


def kernel_view(emb: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """What the kernels read (float32 rows, or float16 rows as uint16 bits: no copy) and squared row norms."""
    if emb.dtype not in (np.float32, np.float16) or emb.ndim != 2:
        raise ConfigError("walk: embeddings must be a float32 or float16 [N, d] array")
    return as_kernel_array(emb), squared_norms(emb)


def walk(
    emb: NDArray[Any],
    nbr_ids: NDArray[Any],
    nbr_sims: NDArray[np.float32],
    reject_d2: float,
    *,
    window: int = OrderConfig.window,
    start: int = OrderConfig.start,
    exact: bool = OrderConfig.exact,
    n_random: int = OrderConfig.n_random,
    seed: int = OrderConfig.seed,
    hops: int = OrderConfig.hops,
    skip: NDArray[np.bool_] | None = None,
    avoid: NDArray[np.int64] | None = None,
    reach: int = 0,
    gram: NDArray[np.float32] | None = None,
) -> WalkResult:
    """Validate inputs and run the walk over float32/float16 embeddings `[N, d]` and a kNN graph `[N, k]`.

    `skip` ([N] bool) leaves samples off the path; when `start` is one of them the path starts at the next sample
    that is not. `avoid` ([E, N] pack ids of earlier packings, -1 = none) with `reach` > 0 rejects candidates packed
    before with one of the last `reach` path samples. `gram` ([N, N] float32, `threshold.gram_matrix(emb)`) screens
    the float64 distances; with an exact walk over an empty graph (`k` = 0) it is the dense walk."""
    n = len(emb)
    if nbr_ids.shape[0] != n or nbr_sims.shape != nbr_ids.shape:
        raise ConfigError(f"walk: kNN graph {nbr_ids.shape} does not match {n} embeddings")
    if not 0 <= start < n:
        raise ConfigError(f"--start: must be in [0, {n - 1}], got {start}")
    skip = np.zeros(n, dtype=np.bool_) if skip is None else np.ascontiguousarray(skip, dtype=np.bool_)
    if skip.all():
        return WalkResult(np.zeros(0, dtype=np.int64), 0, 0)
    start = next_walked(skip, start)
    avoid = np.full((0, n), -1, dtype=np.int64) if avoid is None else np.ascontiguousarray(avoid, dtype=np.int64)
    if avoid.ndim != 2 or avoid.shape[1] != n:
        raise ConfigError(f"walk: avoid must be [E, {n}] pack ids, got {avoid.shape}")
    if window < 1:
        raise ConfigError(f"--window: must be >= 1, got {window}")
    if n_random < 1 or hops < 0:
        raise ConfigError(f"n_random must be >= 1 and hops >= 0, got {n_random} and {hops}")
    gram = np.zeros((0, 0), dtype=np.float32) if gram is None else np.ascontiguousarray(gram, dtype=np.float32)
    if gram.size and gram.shape != (n, n):
        raise ConfigError(f"walk: gram must be [{n}, {n}] inner products, got {gram.shape}")
    data, norms2 = kernel_view(emb)
    ids = np.ascontiguousarray(nbr_ids, dtype=np.int32)  # as built: no N x k int64 copy
    if exact and ids.shape[1]:
        ids = rerank_exact(data, norms2, ids)
    sims = np.ascontiguousarray(nbr_sims, dtype=np.float32)
    path, fallbacks, forced = walk_kernel(
        data, norms2, gram, ids, sims, start, window, reject_d2, exact, n_random, seed, hops, skip, avoid, reach
    )
    return WalkResult(path, int(fallbacks), int(forced))


def next_walked(skip: NDArray[np.bool_], start: int) -> int:
    """`start`, or when it is skipped the next sample that is not (wrapping around).

    >>> next_walked(np.array([False, True, True, False]), 1)
    3
    """
    ahead = np.flatnonzero(~skip[start:])
    return start + int(ahead[0]) if ahead.size else int(np.flatnonzero(~skip)[0])
