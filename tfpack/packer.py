"""Cut the TFP path into packs of at most `max_len` tokens, never splitting a sample.

Walking the path, samples join the open pack while they fit. When the next one does not, up to `lookahead`
further unused samples along the path are tried, first fit first, to fill the gap; then the pack closes. With
`lookahead=0` this is sequential next-fit (the paper's pipeline). Inside a pack, samples keep path order.

Example: lengths along the path [5, 4, 3, 2], max_len 8, lookahead 2 → packs [[0, 2], [1, 3]] (positions on the
path): sample 1 does not fit after 0, the lookahead finds 2 (length 3) for the gap of 3; next-fit
(lookahead 0) gives [[0], [1, 2], [3]].
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.errors import ConfigError


@numba.njit(cache=True)
def _pack_kernel(lengths: Any, max_len: int, lookahead: int) -> tuple[Any, int]:
    n = lengths.shape[0]
    pack_of = np.full(n, -1, np.int64)
    pack = 0
    fill = 0
    i = 0
    while i < n:
        if pack_of[i] >= 0:
            i += 1
            continue
        if fill + lengths[i] <= max_len:
            pack_of[i] = pack
            fill += lengths[i]
            i += 1
            continue
        gap = max_len - fill
        j = i + 1
        tried = 0
        while j < n and tried < lookahead and gap > 0:
            if pack_of[j] < 0:
                tried += 1
                if lengths[j] <= gap:
                    pack_of[j] = pack
                    gap -= lengths[j]
            j += 1
        pack += 1
        fill = 0
    return pack_of, pack + (1 if fill > 0 else 0)


def pack_path(lengths: NDArray[np.integer[Any]], max_len: int, lookahead: int) -> list[NDArray[np.int64]]:
    """Packs as arrays of path positions (ascending). `lengths` are token counts in path order, each <= max_len."""
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if max_len < 1 or lookahead < 0:
        raise ConfigError(f"--max-len must be >= 1 and --lookahead >= 0, got {max_len} and {lookahead}")
    if lengths.size and (lengths.max() > max_len or lengths.min() < 1):
        raise ConfigError("pack_path: every sample length must be in [1, max_len]")
    if lengths.size == 0:
        return []
    pack_of, n_packs = _pack_kernel(lengths, max_len, lookahead)
    order = np.argsort(pack_of, kind="stable")
    bounds = np.searchsorted(pack_of[order], np.arange(1, n_packs))
    return np.split(order, bounds)
