from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfpack.errors import ConfigError
from tfpack.packing.packer import pack_path, separate_near_duplicates


def test_docstring_example() -> None:
    assert [p.tolist() for p in pack_path(np.array([5, 4, 2, 3]), 8, 2)] == [[0, 3], [1, 2]]
    assert [p.tolist() for p in pack_path(np.array([5, 4, 2, 3]), 8, 0)] == [[0], [1, 2], [3]]


def reference_packs(lengths: list[int], max_len: int, lookahead: int) -> list[list[int]]:
    """The rule as the module docstring states it, written plainly: fill along the path; when the next sample does
    not fit, repeatedly take the longest (nearest among equals) of the next `lookahead` unused samples that fits."""
    unused = list(range(len(lengths)))
    packs: list[list[int]] = []
    while unused:
        pack, room = [], max_len
        while unused and lengths[unused[0]] <= room:
            room -= lengths[unused[0]]
            pack.append(unused.pop(0))
        while True:
            fitting = [i for i in unused[1 : lookahead + 1] if lengths[i] <= room]
            if not fitting:
                break
            best = max(fitting, key=lambda i: (lengths[i], -i))
            room -= lengths[best]
            pack.append(best)
            unused.remove(best)
        packs.append(sorted(pack))
    return packs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=120), st.integers(50, 120), st.integers(0, 12))
def test_packs_follow_the_stated_rule(lengths: list[int], max_len: int, lookahead: int) -> None:
    packs = [p.tolist() for p in pack_path(np.asarray(lengths), max_len, lookahead)]
    assert packs == reference_packs(lengths, max_len, lookahead)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=200), st.integers(50, 120), st.integers(0, 16))
def test_packs_partition_the_path_within_max_len(lengths: list[int], max_len: int, lookahead: int) -> None:
    arr = np.asarray(lengths)
    packs = pack_path(arr, max_len, lookahead)
    flat = np.concatenate(packs)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every sample exactly once
    assert all(arr[p].sum() <= max_len for p in packs)
    assert all((np.diff(p) > 0).all() for p in packs)  # path order inside a pack
    assert len(packs) <= len(pack_path(arr, max_len, 0))  # lookahead never needs more packs than next-fit


def test_empty_path_has_no_packs() -> None:
    assert pack_path(np.zeros(0, dtype=np.int64), 8, 2) == []


def test_rejects_over_long_samples() -> None:
    with pytest.raises(ConfigError, match="in \\[1, max_len\\]"):
        pack_path(np.array([3, 9]), 8, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=80), st.integers(40, 120), st.integers(0, 2**31 - 1))
def test_separated_packs_hold_no_near_duplicates(lengths: list[int], max_len: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(lengths)
    unit = rng.normal(size=(6, 8))[rng.integers(0, 6, n)] + 0.05 * rng.normal(size=(n, 8))
    unit = (unit / np.linalg.norm(unit, axis=1, keepdims=True)).astype(np.float32)
    path = rng.permutation(n)
    lens = np.asarray(lengths)[path]
    packs = separate_near_duplicates(pack_path(lens, max_len, 8), path, lens, max_len, lambda rows: unit[rows], 0.9)
    assert sorted(np.concatenate(packs).tolist()) == list(range(n)), "every path position exactly once"
    for p in packs:
        assert lens[p].sum() <= max_len and (np.diff(p) > 0).all()
        sims = unit[path[p]] @ unit[path[p]].T
        assert not (sims[np.triu_indices(len(p), 1)] > 0.9).any()
