from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfpack.errors import ConfigError
from tfpack.packer import pack_path


def test_docstring_example() -> None:
    assert [p.tolist() for p in pack_path(np.array([5, 4, 3, 2]), 8, 2)] == [[0, 2], [1, 3]]
    assert [p.tolist() for p in pack_path(np.array([5, 4, 3, 2]), 8, 0)] == [[0], [1, 2], [3]]


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
