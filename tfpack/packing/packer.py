"""Cut the TFP path into packs of at most `max_len` tokens, never splitting a sample.

Walking the path, samples join the open pack while they fit. When the next one does not, the gap is filled best fit
first: among the next `lookahead` unused samples along the path, the longest that fits joins (the nearest on the
path among equals), again until none fits; then the pack closes. With `lookahead=0` this is sequential next-fit (the
paper's pipeline). Inside a pack, samples keep path order.

Example: lengths along the path [5, 4, 2, 3], max_len 8, lookahead 2 → packs [[0, 3], [1, 2]] (positions on the
path): sample 1 does not fit after 0, and of the next two unused samples 3 (length 3) fills the gap of 3 best; first
fit would take 2 and leave a gap of 1. Next-fit (lookahead 0) gives [[0], [1, 2], [3]]. Best fit within 64 samples
packs GSM8K and GPTeacher 0.4-0.6 point fuller than first fit, at the same pack relatedness (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.errors import ConfigError


@numba.njit(cache=True)
def _best_fit(lengths: Any, pack_of: Any, first: int, lookahead: int, gap: int) -> int:
    """The longest of the next `lookahead` unused samples from path position `first` that fits `gap` (the nearest
    among equals; it stops at an exact fit), or -1."""
    best = -1
    best_len = 0
    tried = 0
    j = first
    while j < lengths.shape[0] and tried < lookahead:
        if pack_of[j] < 0:
            tried += 1
            if best_len < lengths[j] <= gap:
                best = j
                best_len = lengths[j]
                if best_len == gap:
                    break
        j += 1
    return best


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
        while gap > 0:
            best = _best_fit(lengths, pack_of, i + 1, lookahead, gap)
            if best < 0:
                break
            pack_of[best] = pack
            gap -= lengths[best]
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


def separate_near_duplicates(
    packs: list[NDArray[np.int64]],
    path: NDArray[np.int64],
    lengths: NDArray[np.integer[Any]],
    max_len: int,
    unit_rows: Any,
    max_sim: float,
    reach: int = 64,
) -> list[NDArray[np.int64]]:
    """Move samples out of packs where they are near-duplicates (cosine > `max_sim`) of an earlier member.

    The walk's filter only keeps a sample apart from the last `window` path samples; a pack is longer than that, so
    near-duplicates further apart on the path can still share it. Each moved sample goes to the first of the next
    `reach` packs (then the previous ones) with room and no near-duplicate, else into new packs with the same rule.
    Packs stay sorted by path position; every sample stays in exactly one pack. `unit_rows(rows)` returns the
    L2-normalised embeddings of sample rows (the path's entries). `lengths` are per path position.
    """
    n_orig = len(packs)
    members = [list(p) for p in packs]
    vectors = [unit_rows(path[p]) for p in packs]
    fill = [int(lengths[p].sum()) for p in packs]
    homeless: list[tuple[int, int]] = []  # (path position, pack it left)
    for b, positions in enumerate(members):
        keep = np.ones(len(positions), dtype=bool)
        sims = vectors[b] @ vectors[b].T
        for i in range(1, len(positions)):
            if (sims[i, :i][keep[:i]] > max_sim).any():
                keep[i] = False
                homeless.append((positions[i], b))
        members[b] = [x for x, k in zip(positions, keep, strict=True) if k]
        vectors[b] = vectors[b][keep]
        fill[b] -= int(lengths[np.asarray(positions)[~keep]].sum())

    def fits(b: int, pos: int, v: NDArray[np.float32]) -> bool:
        return fill[b] + int(lengths[pos]) <= max_len and not (vectors[b] @ v > max_sim).any()

    for pos, origin in homeless:
        v = unit_rows(path[[pos]])[0]
        after = range(origin + 1, min(n_orig, origin + 1 + reach))
        nearby = [*after, *range(origin - 1, max(-1, origin - 1 - reach), -1)]
        target = next((b for b in nearby if fits(b, pos, v)), None)
        if target is None:
            target = next((b for b in range(n_orig, len(members)) if fits(b, pos, v)), None)
        if target is None:
            members.append([])
            vectors.append(np.zeros((0, len(v)), dtype=np.float32))
            fill.append(0)
            target = len(members) - 1
        members[target].append(pos)
        vectors[target] = np.vstack([vectors[target], v[None]])
        fill[target] += int(lengths[pos])
    return [np.sort(np.asarray(m, dtype=np.int64)) for m in members if m]
