"""A fresh related packing per epoch (`--epochs E`): E TFP paths, each avoiding the pairs earlier epochs packed.

Epoch 0 is the single packing (`--start`, `--seed`). Epoch e > 0 starts at a seeded random sample and walks with
seed + e; its walk also rejects a candidate that an earlier epoch packed with one of the last `reach` path samples
(`reach`: the most samples an earlier pack held), so a pack rarely holds a pair that was packed together before.
The repeat rate of epoch e is the share of its packed pairs that an earlier epoch also packed.

Example: epoch 0 packs {a, b, c} {d, e}; epoch 1 packs {a, d} {b, e, c}: its pairs are a-d, b-e, b-c, e-c, and
only b-c was packed before, a repeat rate of 1/4.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

MAX_REACH = 256  # the look-back of the repeat rule, at most (each candidate is checked against this many samples)


def pack_ids(packs: list[NDArray[np.int64]], path: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """Pack index of each of `n` rows (-1: in no pack), from packs as positions on `path`."""
    out = np.full(n, -1, dtype=np.int64)
    for p, positions in enumerate(packs):
        out[path[positions]] = p
    return out


def epoch_start(walked: NDArray[np.int64], epoch: int, start: int, seed: int) -> int:
    """Where epoch `epoch`'s path starts: `start` for epoch 0, else a seeded random walked row."""
    if epoch == 0:
        return start
    return int(np.random.default_rng([seed, epoch]).choice(walked))


def reach_of(earlier: NDArray[np.int64]) -> int:
    """The repeat rule's look-back: the most samples one earlier pack held (at most `MAX_REACH`)."""
    sizes = [np.bincount(row[row >= 0]).max(initial=0) for row in earlier]
    return int(min(MAX_REACH, max(sizes, default=0)))


@numba.njit(cache=True)
def _repeated_pairs(members: Any, bounds: Any, earlier: Any) -> tuple[int, int]:
    repeated = 0
    total = 0
    for p in range(len(bounds) - 1):
        for i in range(bounds[p], bounds[p + 1]):
            for j in range(i + 1, bounds[p + 1]):
                total += 1
                a, b = members[i], members[j]
                for e in range(earlier.shape[0]):
                    if earlier[e, a] >= 0 and earlier[e, a] == earlier[e, b]:
                        repeated += 1
                        break
    return repeated, total


def repeated_pairs(pack_of: NDArray[np.int64], earlier: NDArray[np.int64]) -> tuple[int, int]:
    """(pairs packed together by `pack_of` that a row of `earlier` also packed together, all pairs it packs).

    >>> repeated_pairs(np.array([1, 0, 1, 1, 0]), np.array([[0, 1, 0, 0, 1]]))
    (4, 4)
    """
    rows = np.flatnonzero(pack_of >= 0)
    members = rows[np.argsort(pack_of[rows], kind="stable")]
    bounds = np.searchsorted(pack_of[members], np.arange(int(pack_of.max(initial=-1)) + 2))
    repeated, total = _repeated_pairs(members, bounds, np.ascontiguousarray(earlier, dtype=np.int64))
    return int(repeated), int(total)
