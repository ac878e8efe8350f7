"""The threshold of threshold filtering: fixed (cosine or L2), derived from the data as the paper does, or none.

The walk rejects a candidate whose squared L2 distance to any of the last `window` path samples is below
`reject_d2`. On unit vectors a cosine-similarity ceiling S and the paper's L2 threshold t are the same rule:
`t² = 2 − 2S`, i.e. `S = 1 − t²/2` (the paper's 2% quantile on GSM8K, t ≈ 0.90, is S ≈ 0.596).

`auto` is the paper's rule: t = the `quantile` of pairwise L2 distances over all ordered off-diagonal pairs with
zero distances excluded, interpolated linearly as `torch.quantile` does. Distances are computed in float64 and
rounded to float32, the precision the reference compares in; like the reference, a pair *equal* to t in float32 is
allowed, so the rejection bound is the float64 midpoint just below t (boundary pairs decide: see
`../shared/golden/README.md`). Up to `EXACT_MAX_N` samples the quantile is exact; beyond, it is estimated from
`sample_pairs` random pairs and the estimate's error (a 95% rank interval mapped to distances) is reported. The
sampled distances are computed by parallel numba kernels straight from the rows (float16 read as bits, memory-mapped
or not) in numpy's float64 summation order, so they equal the plain numpy computation bit for bit (1M × 384, 4M
pairs: ~2 s and ~40 MiB on 2 cores; `scripts/bench_order.py threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import as_kernel_array, value
from tfpack.config import OrderConfig
from tfpack.errors import ConfigError

EXACT_MAX_N = 8192
_HIST_BINS = 1 << 16  # exact quantile pre-pass: bins of ~3e-5 over the distances of unit rows
_BAND = 2e-4  # bound on the float32 pre-pass error of a distance
_ZERO_BAND = 2e-2  # approximate distances below this are checked for exact zeros


@dataclass(frozen=True)
class Threshold:
    """A resolved threshold: the walk uses `reject_d2`; the rest is reported."""

    mode: str  # none | cosine | distance | auto-exact | auto-sampled
    reject_d2: float
    cosine: float | None = None
    distance: float | None = None
    quantile: float | None = None
    estimate_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def float32_bound(distance: float) -> float:
    """Squared float64 bound below which a distance rounds to a float32 value strictly less than `distance`."""
    t32 = np.float32(distance)
    below = np.nextafter(t32, np.float32(0))
    midpoint = (float(t32) + float(below)) / 2
    return midpoint * midpoint


def from_cosine(cosine: float) -> Threshold:
    distance = math.sqrt(max(0.0, 2 - 2 * cosine))
    return Threshold("cosine", reject_d2=2 - 2 * cosine, cosine=cosine, distance=distance)


def from_distance(distance: float, mode: str = "distance", **extra: Any) -> Threshold:
    """A paper-style L2 threshold, compared in float32 like the reference."""
    if distance < 0 or math.isnan(distance):
        raise ConfigError(f"--distance-threshold: must be a non-negative L2 distance, got {distance}")
    t32 = float(np.float32(distance))
    return Threshold(mode, reject_d2=float32_bound(t32), cosine=1 - t32 * t32 / 2, distance=t32, **extra)


NO_THRESHOLD = Threshold("none", reject_d2=-1.0)


def pair_distances(a: NDArray[np.floating[Any]], b: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """L2 distances between rows of `a` and `b`, `[len(a), len(b)]`, computed in float64, rounded to float32."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    d2 = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2 * (a64 @ b64.T)
    return np.sqrt(np.maximum(d2, 0)).astype(np.float32)


def torch_lerp(v_lo: np.float32, v_hi: np.float32, weight: float) -> np.float32:
    """Linear interpolation in float32 the way `torch.lerp` (and so `torch.quantile`) computes it."""
    w = np.float32(weight)
    if w < 0.5:
        return np.float32(v_lo + w * (v_hi - v_lo))
    return np.float32(v_hi - (v_hi - v_lo) * (np.float32(1) - w))


def torch_quantile(values: NDArray[np.float32], q: float) -> np.float32:
    """`torch.quantile(values, q)` (linear interpolation), finding only the two order statistics needed."""
    return torch_quantiles(values, [q])[0]


def torch_quantiles(values: NDArray[np.float32], qs: list[float]) -> list[np.float32]:
    """`torch.quantile(values, q)` for each q, from one partition around just the order statistics needed."""
    spots = []
    for q in qs:
        pos = q * (values.size - 1)
        lo = math.floor(pos)
        spots.append((lo, min(lo + 1, values.size - 1), pos - lo))
    picked = np.partition(values, sorted({rank for lo, hi, _ in spots for rank in (lo, hi)}))
    return [torch_lerp(picked[lo], picked[hi], weight) for lo, hi, weight in spots]


def gram_matrix(emb: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """All inner products `x @ x.T` of the rows as float32 ([N, N], BLAS): the exact quantile's pre-pass and the
    exact walk's screen up to `EXACT_MAX_N` rows (256 MiB there). One product of the whole matrix: computing only
    the upper triangle's blocks and mirroring them measured slower on 2 cores."""
    x32 = np.ascontiguousarray(emb, dtype=np.float32)
    return x32 @ x32.T


@numba.njit(cache=True)
def _approx_distance(gram: Any, norms2: Any, i: int, j: int) -> Any:
    """float32 L2 distance of rows i and j from their inner product (within `_BAND` of the float64 one)."""
    return np.sqrt(max(norms2[i] + norms2[j] - np.float32(2.0) * gram[i, j], np.float32(0.0)))


@numba.njit(cache=True)
def _histogram(gram: Any, norms2: Any, scale: float, counts: Any) -> None:
    """`counts[b]`: the pairs i < j whose approximate distance falls in bin b (`int(distance * scale)`)."""
    last = len(counts) - 1
    for i in range(len(gram)):
        for j in range(i + 1, len(gram)):
            counts[min(int(_approx_distance(gram, norms2, i, j) * scale), last)] += 1


@numba.njit(cache=True)
def _pairs_in_bins(gram: Any, norms2: Any, scale: float, lo: int, hi: int, size: int) -> tuple[Any, Any]:
    """(i, j) of the `size` pairs i < j whose approximate distance's bin lies in [lo, hi]."""
    out_i = np.empty(size, np.int64)
    out_j = np.empty(size, np.int64)
    last = _HIST_BINS - 1
    at = 0
    for i in range(len(gram)):
        for j in range(i + 1, len(gram)):
            b = min(int(_approx_distance(gram, norms2, i, j) * scale), last)
            if lo <= b <= hi:
                out_i[at] = i
                out_j[at] = j
                at += 1
    return out_i, out_j


def exact_quantile_distance(emb: NDArray[np.floating[Any]], q: float, gram: NDArray[np.float32] | None = None) -> float:
    """The paper's threshold over all ordered off-diagonal pairs with zero distances excluded (small N); 0.0 (the
    walk then filters nothing) when every distance is zero. `gram`: `gram_matrix(emb)` when the caller has it.

    Two passes keep it fast and exact: a histogram of float32 distances (from the inner products) locates the needed
    order statistics to within a band; only the pairs inside the band (and near zero) are recomputed in float64 and
    rounded to float32.
    """
    x32 = np.ascontiguousarray(emb, dtype=np.float32)
    gram = gram_matrix(x32) if gram is None else gram
    norms2 = np.einsum("ij,ij->i", x32, x32, dtype=np.float64).astype(np.float32)
    scale = (_HIST_BINS - 1) / (2 * math.sqrt(float(norms2.max())) + _ZERO_BAND)
    counts = np.zeros(_HIST_BINS, dtype=np.int64)
    _histogram(gram, norms2, scale, counts)
    before = np.concatenate([[0], np.cumsum(counts)])  # before[b]: pairs in bins below b

    def exact_in(lo: int, hi: int) -> NDArray[np.float32]:
        size = int(before[hi + 1] - before[lo])
        if size == 0:  # nothing there (as a rule, near zero): no pass over the pairs
            return np.zeros(0, dtype=np.float32)
        i, j = _pairs_in_bins(gram, norms2, scale, lo, hi, size)
        return exact_distances(x32, i, j)

    n_zero = int((exact_in(0, int(_ZERO_BAND * scale)) == 0).sum())
    count = 2 * (int(before[-1]) - n_zero)  # ordered pairs: each unordered distance stands twice
    if count == 0:  # all embeddings identical: no pair is closer than another, so nothing to filter
        return 0.0
    pos = q * (count - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, count - 1)
    ranks = (lo // 2 + n_zero, hi // 2 + n_zero)  # ranks among the unordered distances, zeros first
    band = math.ceil(_BAND * scale) + 1
    low = max(int(np.searchsorted(before, ranks[0], side="right")) - 1 - band, 0)
    high = min(int(np.searchsorted(before, ranks[1], side="right")) - 1 + band, _HIST_BINS - 1)
    below = int(before[low])
    exact = np.sort(exact_in(low, high))
    if below > ranks[0] or ranks[1] - below >= exact.size:
        raise ConfigError("--threshold auto: float32 pre-pass out of its error band; report this input")
    v_lo, v_hi = exact[ranks[0] - below], exact[ranks[1] - below]
    return float(torch_lerp(v_lo, v_hi, pos - lo))


def exact_distances(x: NDArray[Any], i: NDArray[np.int64], j: NDArray[np.int64]) -> NDArray[np.float32]:
    """Row-pair distances `|x[i] - x[j]|` computed in float64 like `pair_distances`, rounded to float32."""
    a = np.asarray(x[i], dtype=np.float64)
    b = np.asarray(x[j], dtype=np.float64)
    d2 = (a * a).sum(1) + (b * b).sum(1) - 2 * (a * b).sum(1)
    return np.sqrt(np.maximum(d2, 0)).astype(np.float32)


_DRAW = 1 << 18  # pairs drawn per round: i for the round, then j (the sequence, and so the sample, depends on it)
_SUM_BLOCK = 128  # numpy's pairwise summation adds blocks of up to 128 terms with 8 running sums
_ITEMS = 1024  # rows or pairs per parallel task


def summation_plan(d: int) -> NDArray[np.int64]:
    """numpy's pairwise summation of `d` terms (as in `(u * v).sum(1)` over float64 rows) as a postfix program:
    a row `[start, n]` sums the terms `start:start+n` (n <= 128) with 8 running sums; `[-1, 0]` adds the last two
    partial sums. Larger spans split in halves rounded down to a multiple of 8.

    >>> summation_plan(384).tolist()
    [[0, 96], [96, 96], [-1, 0], [192, 96], [288, 96], [-1, 0], [-1, 0]]
    """
    plan: list[tuple[int, int]] = []

    def visit(start: int, n: int) -> None:
        if n <= _SUM_BLOCK:
            plan.append((start, n))
            return
        half = n // 2 - (n // 2) % 8
        visit(start, half)
        visit(start + half, n - half)
        plan.append((-1, 0))

    visit(0, d)
    return np.asarray(plan, dtype=np.int64)


_U = np.uint64  # unsigned indices: numba then reads rows without its negative-index wraparound test


@numba.njit(cache=True, inline="always")
def _block_dot(u: Any, v: Any, start: Any, n: Any) -> float:
    """`sum(u[t] * v[t] for t in start:start+n)` in float64, in the order numpy sums a block (n <= 128).
    `start`, `n`: uint64."""
    if n < _U(8):
        res = 0.0
        for t in range(start, start + n):
            res += value(u[t]) * value(v[t])
        return res
    r0 = value(u[start]) * value(v[start])
    r1 = value(u[start + _U(1)]) * value(v[start + _U(1)])
    r2 = value(u[start + _U(2)]) * value(v[start + _U(2)])
    r3 = value(u[start + _U(3)]) * value(v[start + _U(3)])
    r4 = value(u[start + _U(4)]) * value(v[start + _U(4)])
    r5 = value(u[start + _U(5)]) * value(v[start + _U(5)])
    r6 = value(u[start + _U(6)]) * value(v[start + _U(6)])
    r7 = value(u[start + _U(7)]) * value(v[start + _U(7)])
    end = start + n - n % _U(8)
    for t in range(start + _U(8), end, _U(8)):
        r0 += value(u[t]) * value(v[t])
        r1 += value(u[t + _U(1)]) * value(v[t + _U(1)])
        r2 += value(u[t + _U(2)]) * value(v[t + _U(2)])
        r3 += value(u[t + _U(3)]) * value(v[t + _U(3)])
        r4 += value(u[t + _U(4)]) * value(v[t + _U(4)])
        r5 += value(u[t + _U(5)]) * value(v[t + _U(5)])
        r6 += value(u[t + _U(6)]) * value(v[t + _U(6)])
        r7 += value(u[t + _U(7)]) * value(v[t + _U(7)])
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for t in range(end, start + n):
        res += value(u[t]) * value(v[t])
    return res


@numba.njit(cache=True)
def _row_dot(x: Any, a: int, b: int, plan: Any, stack: Any) -> float:
    """Rows `a` and `b`'s dot product in float64, equal bit for bit to numpy's `(x[a] * x[b]).sum()` in float64
    (`plan`: `summation_plan(d)`; `stack`: scratch of `len(plan)` floats)."""
    u, v = x[a], x[b]
    top = 0
    for s in range(len(plan)):
        if plan[s, 0] >= 0:
            stack[top] = _block_dot(u, v, _U(plan[s, 0]), _U(plan[s, 1]))
            top += 1
        else:
            top -= 1
            stack[top - 1] += stack[top]
    return 0.0 + stack[0]  # numpy adds the sum to the reduction's identity, 0.0


@numba.njit(cache=True, parallel=True, nogil=True)
def _fill_norms2(x: Any, rows: Any, plan: Any, norms2: Any) -> None:
    """`norms2[r] = (x[r] * x[r]).sum()` in float64 for each (distinct) r in `rows`."""
    for task in numba.prange((len(rows) + _ITEMS - 1) // _ITEMS):
        stack = np.empty(len(plan))
        for k in range(task * _ITEMS, min(len(rows), (task + 1) * _ITEMS)):
            r = rows[k]
            norms2[r] = _row_dot(x, r, r, plan, stack)


@numba.njit(cache=True, parallel=True, nogil=True)
def _fill_distances(x: Any, norms2: Any, i: Any, j: Any, plan: Any, out: Any) -> None:
    """`out[p] = float32(sqrt(max(norms2[a] + norms2[b] - 2 x[a]·x[b], 0)))` for (a, b) = (i[p], j[p])."""
    for task in numba.prange((len(i) + _ITEMS - 1) // _ITEMS):
        stack = np.empty(len(plan))
        for p in range(task * _ITEMS, min(len(i), (task + 1) * _ITEMS)):
            a, b = i[p], j[p]
            d2 = (norms2[a] + norms2[b]) - 2.0 * _row_dot(x, a, b, plan, stack)
            out[p] = np.float32(np.sqrt(max(d2, 0.0)))


def sampled_pairs(n: int, n_pairs: int, seed: int) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """The random off-diagonal pairs (i, j) of the estimate, `_DRAW` at a time, uniform over ordered pairs."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_pairs, _DRAW):
        m = min(_DRAW, n_pairs - start)
        i = rng.integers(0, n, m)
        j = rng.integers(0, n - 1, m)
        j += j >= i  # off-diagonal
        yield i, j


def sampled_distances(emb: NDArray[np.floating[Any]], n_pairs: int, seed: int) -> NDArray[np.float32]:
    """Distances of the `sampled_pairs` (float32 [n_pairs]), equal bit for bit to `exact_distances` of the same
    pairs. Parallel kernels read the rows of `emb` (float16, float32 or float64; memory-mapped or not) where they
    lie: no gathered copies. Each sampled row's squared norm is computed once (the pairs are drawn twice: first to
    find those rows), so the extra memory is ~4 bytes per pair and ~17 bytes per row.
    """
    x = as_kernel_array(emb) if emb.dtype in (np.float16, np.float32) else np.asarray(emb, dtype=np.float64)
    n = len(emb)
    plan = summation_plan(emb.shape[1])
    sampled = np.zeros(n, dtype=bool)
    for i, j in sampled_pairs(n, n_pairs, seed):
        sampled[i] = True
        sampled[j] = True
    norms2 = np.zeros(n, dtype=np.float64)
    _fill_norms2(x, np.flatnonzero(sampled), plan, norms2)
    del sampled
    out = np.empty(n_pairs, dtype=np.float32)
    at = 0
    for i, j in sampled_pairs(n, n_pairs, seed):
        _fill_distances(x, norms2, i, j, plan, out[at : at + len(i)])
        at += len(i)
    return out


def sampled_quantile_distance(emb: NDArray[np.floating[Any]], q: float, n_pairs: int, seed: int) -> tuple[float, float]:
    """Estimate the threshold from random off-diagonal pairs; return (estimate, error half-width at 95%).

    The error maps the 95% interval of the sample rank, `q ± 1.96 sqrt(q (1 - q) / m)` over the m non-zero sampled
    distances, to distances, and reports the larger side.
    """
    distances = sampled_distances(emb, n_pairs, seed)
    sample = distances[distances > 0]
    del distances
    if sample.size == 0:  # every sampled pair identical: as in the exact case, nothing to filter
        return 0.0, 0.0
    spread = 1.96 * math.sqrt(q * (1 - q) / sample.size)
    estimate, lo, hi = (float(v) for v in torch_quantiles(sample, [q, max(q - spread, 0.0), min(q + spread, 1.0)]))
    return estimate, max(estimate - lo, hi - estimate)


def resolve_threshold(
    emb: NDArray[np.floating[Any]],
    threshold: str | float,
    *,
    distance: float | None = None,
    quantile: float = OrderConfig.quantile,
    sample_pairs: int = OrderConfig.sample_pairs,
    seed: int = OrderConfig.seed,
    gram: NDArray[np.float32] | None = None,
) -> Threshold:
    """Turn the user's choice into a `Threshold` (computing the data quantile for 'auto'; `gram`: the rows'
    `gram_matrix` when the caller has it, up to `EXACT_MAX_N` rows)."""
    if distance is not None:
        return from_distance(distance)
    if threshold == "none":
        return NO_THRESHOLD
    if isinstance(threshold, float):
        return from_cosine(threshold)
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"--quantile: must be in (0, 1), got {quantile}")
    if len(emb) < 2:  # one sample: no pair, nothing to filter
        return from_distance(0.0, mode="auto-exact", quantile=quantile)
    if len(emb) <= EXACT_MAX_N:
        return from_distance(exact_quantile_distance(emb, quantile, gram), mode="auto-exact", quantile=quantile)
    estimate, error = sampled_quantile_distance(emb, quantile, sample_pairs, seed)
    return from_distance(estimate, mode="auto-sampled", quantile=quantile, estimate_error=error)
