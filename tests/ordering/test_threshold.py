from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tfpack.config import parse_threshold
from tfpack.errors import ConfigError
from tfpack.ordering.threshold import (
    exact_quantile_distance,
    from_cosine,
    from_distance,
    pair_distances,
    resolve_threshold,
    sampled_quantile_distance,
)


def rows(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("value", ["1.5", "-1.01", "nan"])
def test_threshold_outside_range(value: str) -> None:
    with pytest.raises(ConfigError, match="outside \\[-1, 1\\]"):
        parse_threshold(value)


def test_threshold_parse() -> None:
    assert parse_threshold("0.6") == 0.6 and parse_threshold("auto") == "auto"
    with pytest.raises(ConfigError, match="expected a cosine similarity"):
        parse_threshold("high")


def test_cosine_and_l2_are_the_same_rule_on_unit_vectors() -> None:
    t = from_cosine(0.6)
    assert math.isclose(t.distance**2, 2 - 2 * 0.6) and math.isclose(t.reject_d2, 0.8)
    back = from_distance(t.distance)
    assert math.isclose(back.cosine, 0.6, abs_tol=1e-6)


def test_float32_boundary_pair_is_allowed() -> None:
    """The golden 4096 case: float64 0.90113064744 rounds to the float32 threshold itself, so it is not closer."""
    t = from_distance(0.9011306762695312)
    assert t.reject_d2 <= 0.90113064744**2  # equal in float32: allowed, as in the reference
    assert t.reject_d2 > 0.9011306**2  # one float32 step below: rejected


def test_exact_quantile_matches_torch_over_ordered_pairs() -> None:
    x = rows(300)
    d = torch.tensor(pair_distances(x, x))
    d.fill_diagonal_(0)
    expected = torch.quantile(d[d > 0], 0.02).item()
    assert exact_quantile_distance(x, 0.02) == pytest.approx(expected, abs=0)


def test_sampled_quantile_is_within_its_error() -> None:
    x = rows(3000, 8)
    exact = exact_quantile_distance(x, 0.02)
    estimate, error = sampled_quantile_distance(x, 0.02, 200_000, seed=1)
    assert 0 < error < 0.02
    assert abs(estimate - exact) <= 2 * error


def test_resolve_modes() -> None:
    x = rows(50)
    assert resolve_threshold(x, "none").reject_d2 < 0
    assert resolve_threshold(x, "auto").mode == "auto-exact"
    assert resolve_threshold(x, 0.5).mode == "cosine"
    assert resolve_threshold(x, "auto", distance=1.0).mode == "distance"
    with pytest.raises(ConfigError, match="--quantile"):
        resolve_threshold(x, "auto", quantile=1.5)


@pytest.mark.parametrize(("n", "d"), [(3, 4), (12, 3), (30, 16), (200, 2)])
def test_exact_quantile_small_and_sparse(n: int, d: int) -> None:
    """Few pairs: neighbouring order statistics lie far apart, beyond the pre-pass band."""
    x = rows(n, d, seed=n)
    dist = torch.tensor(pair_distances(x, x))
    dist.fill_diagonal_(0)
    for q in (0.02, 0.5, 0.97):
        expected = np.float32(torch.quantile(dist[dist > 0], q).item())
        assert abs(exact_quantile_distance(x, q) - expected) <= np.spacing(expected)  # torch rounds its weight


def test_cosine_one_rejects_no_duplicate_and_counts_none_as_too_similar() -> None:
    """At S = 1.0 nothing is more similar than allowed: identical rows have squared distance 0 (not below the bound)
    and, in `stats`, a float32 dot just above 1 is not a near-duplicate."""
    from tfpack.report.stats import near_duplicate_rate

    assert from_cosine(1.0).reject_d2 == 0.0
    row = np.zeros((1, 8), dtype=np.float32)
    row[0, 0] = np.nextafter(np.float32(1), np.float32(2))  # unit within float32 rounding; its dot with itself > 1
    twins = np.repeat(row, 2, axis=0)
    assert float((twins @ twins.T)[0, 1]) > 1.0
    assert pair_distances(twins, twins).max() == 0.0
    assert near_duplicate_rate(twins, [np.array([0, 1])], 1.0) == 0.0
    assert near_duplicate_rate(twins, [np.array([0, 1])], 0.999) == 1.0


def test_sampled_estimate_is_unchanged_by_the_memory_bound() -> None:
    """The sampled 'auto' threshold gathers rows a block of pairs at a time; the pairs and the arithmetic are those
    of one gather per 2^18 draws, so the estimate and its error are bit for bit the same."""
    from tfpack.ordering.threshold import sampled_quantile_distance, torch_quantile

    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 16)).astype(np.float16)
    n_pairs, q, seed = 600_000, 0.02, 7
    draw, values, remaining = np.random.default_rng(seed), [], n_pairs
    while remaining > 0:
        m = min(remaining, 1 << 18)
        i, j = draw.integers(0, len(x), m), draw.integers(0, len(x) - 1, m)
        j += j >= i
        order = np.argsort(i, kind="stable")
        a, b = np.asarray(x[i[order]], dtype=np.float64), np.asarray(x[j[order]], dtype=np.float64)
        d = np.sqrt(np.maximum((a * a).sum(1) + (b * b).sum(1) - 2 * (a * b).sum(1), 0)).astype(np.float32)
        values.append(d[d > 0])
        remaining -= m
    whole = float(torch_quantile(np.concatenate(values), q))
    assert sampled_quantile_distance(x, q, n_pairs, seed)[0] == whole


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("d", [3, 16, 200, 384, pytest.param(1031, marks=pytest.mark.slow)])
def test_sampled_distances_equal_numpy_float64_of_the_same_pairs(dtype: type, d: int) -> None:
    """The kernel reads rows where they lie (float16 as bits) and sums in numpy's pairwise order: its distances are
    bit for bit those of a plain numpy float64 computation of the same sampled pairs, zero distances included."""
    from tfpack.ordering.threshold import sampled_distances, sampled_pairs

    x = np.random.default_rng(d).normal(size=(500, d)).astype(dtype)
    x[1] = x[0]  # a duplicate row: distance exactly 0
    n_pairs = 300_000  # more than one round of draws
    i, j = (np.concatenate(part) for part in zip(*sampled_pairs(len(x), n_pairs, 5), strict=True))
    assert len(i) == n_pairs and not (i == j).any()
    a, b = x[i].astype(np.float64), x[j].astype(np.float64)
    expected = np.sqrt(np.maximum((a * a).sum(1) + (b * b).sum(1) - 2 * (a * b).sum(1), 0)).astype(np.float32)
    got = sampled_distances(x, n_pairs, 5)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert (got == 0).any()
