"""The threshold of threshold filtering: fixed (cosine or L2), derived from the data as the paper does, or none.

The walk rejects a candidate whose squared L2 distance to any of the last `window` path samples is below
`reject_d2`. On unit vectors a cosine-similarity ceiling S and the paper's L2 threshold t are the same rule:
`t² = 2 − 2S`, i.e. `S = 1 − t²/2` (the paper's 2% quantile on GSM8K, t ≈ 0.90, is S ≈ 0.596).

`auto` is the paper's rule: t = the `quantile` of pairwise L2 distances over all ordered off-diagonal pairs with
zero distances excluded, interpolated linearly as `torch.quantile` does. Distances are computed in float64 and
rounded to float32, the precision the reference compares in; like the reference, a pair *equal* to t in float32 is
allowed, so the rejection bound is the float64 midpoint just below t (boundary pairs decide: see
`../shared/golden/README.md`). Up to `EXACT_MAX_N` samples the quantile is exact; beyond, it is estimated from
`sample_pairs` random pairs and the estimate's error (a 95% rank interval mapped to distances) is reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.config import OrderConfig
from tfpack.errors import ConfigError

EXACT_MAX_N = 8192
_BLOCK = 1024
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
    pos = q * (values.size - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, values.size - 1)
    picked = np.partition(values, sorted({lo, hi}))
    return torch_lerp(picked[lo], picked[hi], pos - lo)


def upper_distances(x32: NDArray[np.float32]) -> NDArray[np.float32]:
    """Approximate float32 distances of all pairs i < j, row-major (BLAS, one row block at a time)."""
    n = len(x32)
    norms2 = np.einsum("ij,ij->i", x32, x32, dtype=np.float64).astype(np.float32)
    out = np.empty(n * (n - 1) // 2, dtype=np.float32)
    at = 0
    for start in range(0, n, _BLOCK):
        rows = x32[start : start + _BLOCK]
        d2 = norms2[start : start + len(rows), None] + norms2[None, start:] - 2 * (rows @ x32[start:].T)
        for r in range(len(rows)):
            seg = d2[r, r + 1 :]
            out[at : at + len(seg)] = seg
            at += len(seg)
    np.sqrt(np.maximum(out, 0, out=out), out=out)
    return out


def pair_of(flat: NDArray[np.int64], n: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(i, j) of positions in the row-major list of pairs i < j."""
    rows = np.arange(n, dtype=np.int64)
    row_start = rows * n - rows * (rows + 1) // 2
    i = np.searchsorted(row_start, flat, side="right") - 1
    return i, i + 1 + (flat - row_start[i])


def exact_quantile_distance(emb: NDArray[np.floating[Any]], q: float) -> float:
    """The paper's threshold over all ordered off-diagonal pairs with zero distances excluded (small N).

    Two passes keep it fast and exact: float32 BLAS distances locate the needed order statistics to within a
    band; only the pairs inside the band (and near zero) are recomputed in float64 and rounded to float32.
    """
    x32 = np.ascontiguousarray(emb, dtype=np.float32)
    n = len(x32)
    approx = upper_distances(x32)

    def exact_in(low: float, high: float) -> NDArray[np.float32]:
        i, j = pair_of(np.flatnonzero((approx >= low) & (approx <= high)), n)
        return exact_distances(x32, i, j)

    n_zero = 0
    if (approx <= _ZERO_BAND).any():
        n_zero = int((exact_in(0.0, _ZERO_BAND) == 0).sum())
    count = 2 * (approx.size - n_zero)  # ordered pairs: each unordered distance stands twice
    if count == 0:
        raise ConfigError("--threshold auto: every pairwise distance is zero (all embeddings identical)")
    pos = q * (count - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, count - 1)
    ranks = sorted({lo // 2 + n_zero, hi // 2 + n_zero})  # ranks among the unordered distances, zeros first
    picked = np.partition(approx, ranks)
    low, high = float(picked[ranks[0]]) - _BAND, float(picked[ranks[-1]]) + _BAND
    below = int((approx < low).sum())
    band = np.sort(exact_in(low, high))
    if below > ranks[0] or ranks[-1] - below >= band.size:
        raise ConfigError("--threshold auto: float32 pre-pass out of its error band; report this input")
    v_lo, v_hi = band[lo // 2 + n_zero - below], band[hi // 2 + n_zero - below]
    return float(torch_lerp(v_lo, v_hi, pos - lo))


def exact_distances(x: NDArray[Any], i: NDArray[np.int64], j: NDArray[np.int64]) -> NDArray[np.float32]:
    """Row-pair distances `|x[i] - x[j]|` computed in float64 like `pair_distances`, rounded to float32."""
    a = np.asarray(x[i], dtype=np.float64)
    b = np.asarray(x[j], dtype=np.float64)
    d2 = (a * a).sum(1) + (b * b).sum(1) - 2 * (a * b).sum(1)
    return np.sqrt(np.maximum(d2, 0)).astype(np.float32)


_PAIR_BLOCK = 1 << 13  # pairs whose rows are gathered in float64 at once: 2 x 8192 x d x 8 bytes (50 MB at d=384)


def sampled_quantile_distance(emb: NDArray[np.floating[Any]], q: float, n_pairs: int, seed: int) -> tuple[float, float]:
    """Estimate the threshold from random off-diagonal pairs; return (estimate, error half-width at 95%)."""
    n = len(emb)
    rng = np.random.default_rng(seed)
    values = []
    remaining = n_pairs
    while remaining > 0:
        m = min(remaining, 1 << 18)
        i = rng.integers(0, n, m)
        j = rng.integers(0, n - 1, m)
        j += j >= i  # off-diagonal
        order = np.argsort(i, kind="stable")
        i, j = i[order], j[order]
        for at in range(0, m, _PAIR_BLOCK):  # float64 rows of a few thousand pairs at a time, not of all m
            d = exact_distances(emb, i[at : at + _PAIR_BLOCK], j[at : at + _PAIR_BLOCK])
            values.append(d[d > 0])
        remaining -= m
    sample = np.concatenate(values)
    estimate = float(torch_quantile(sample, q))
    spread = 1.96 * math.sqrt(q * (1 - q) / sample.size)
    lo = float(torch_quantile(sample, max(q - spread, 0.0)))
    hi = float(torch_quantile(sample, min(q + spread, 1.0)))
    return estimate, max(estimate - lo, hi - estimate)


def resolve_threshold(
    emb: NDArray[np.floating[Any]],
    threshold: str | float,
    *,
    distance: float | None = None,
    quantile: float = OrderConfig.quantile,
    sample_pairs: int = OrderConfig.sample_pairs,
    seed: int = OrderConfig.seed,
) -> Threshold:
    """Turn the user's choice into a `Threshold` (computing the data quantile for 'auto')."""
    if distance is not None:
        return from_distance(distance)
    if threshold == "none":
        return NO_THRESHOLD
    if isinstance(threshold, float):
        return from_cosine(threshold)
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"--quantile: must be in (0, 1), got {quantile}")
    if len(emb) < 2:
        raise ConfigError("--threshold auto: needs at least 2 samples")
    if len(emb) <= EXACT_MAX_N:
        return from_distance(exact_quantile_distance(emb, quantile), mode="auto-exact", quantile=quantile)
    estimate, error = sampled_quantile_distance(emb, quantile, sample_pairs, seed)
    return from_distance(estimate, mode="auto-sampled", quantile=quantile, estimate_error=error)
