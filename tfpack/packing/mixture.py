"""Mixtures of sources (`--weights name=2.0,other=0.5`): each input file is a source; a weight up- or down-samples it
before the walk.

A weight w gives each sample of its source floor(w) copies plus one more with probability w - floor(w) (seeded), so
2.5 packs every sample twice and a random half of them a third time, and 0.5 packs a random half once. A sample drawn
zero times goes to dropped.jsonl. The copies walk in layers: layer k is a TFP path over the samples with more than k
copies, and the layers follow one another on the path, so two copies of a sample are a layer apart; where a pack still
takes two (at a layer boundary), `separate_copies` moves one to another pack. Each copy is its own entry in the shards,
with the sample's own id; `repeats.jsonl` lists the samples packed more than once with their number of copies.

Example: sources a (weight 2.0) and b (weight 0.5) of 4 samples each: a's 4 samples walk in layers 0 and 1, 2 of b's
(drawn at random) in layer 0 only, and the other 2 are dropped: 10 entries on the path.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.config import weight_map
from tfpack.errors import ConfigError
from tfpack.ingest.samples import read_source_index, source_names


def sample_sources(samples_path: Path, inputs: list[dict[str, Any]]) -> tuple[list[str], NDArray[np.int32]]:
    """(source names, each stored sample's index into them): from the inputs of the embed manifest; a run that lists
    no inputs (precomputed embeddings) is one source named after its directory."""
    if not inputs:
        return [samples_path.parent.name], np.zeros(len(read_source_index(samples_path)), dtype=np.int32)
    return source_names(inputs), read_source_index(samples_path)


def source_weights(entries: tuple[str, ...], names: list[str]) -> NDArray[np.float64]:
    """The weight of each source (1.0 unless `--weights` names it); a name that is no source is an error."""
    given = weight_map(entries)
    unknown = [name for name in given if name not in names]
    if unknown:
        raise ConfigError(f"--weights: no source named '{unknown[0]}'; the sources are {', '.join(names)}")
    return np.asarray([given.get(name, 1.0) for name in names], dtype=np.float64)


def draw_copies(weight_of_row: NDArray[np.float64], seed: int) -> NDArray[np.int64]:
    """Copies of each row: floor(weight), plus one with probability of the weight's fraction (seeded).

    >>> draw_copies(np.array([2.0, 1.0, 0.0]), 0).tolist()
    [2, 1, 0]
    """
    whole = np.floor(weight_of_row)
    extra = np.random.default_rng([seed, 24]).random(len(weight_of_row)) < weight_of_row - whole
    return (whole + extra).astype(np.int64)


def separate_copies(
    packs: list[NDArray[np.int64]], path: NDArray[np.int64], lengths: NDArray[np.integer[Any]], max_len: int
) -> list[NDArray[np.int64]]:
    """Move a second copy of a sample out of any pack that holds two, into the nearest later (then earlier) pack
    with room and no copy of it, else a new pack. Packs stay sorted by path position; every entry stays in exactly
    one pack. `lengths` are per path position."""
    members = [list(p) for p in packs]
    rows = [set(path[p].tolist()) for p in packs]
    fill = [int(lengths[p].sum()) for p in packs]
    homeless: list[tuple[int, int]] = []  # (path position, pack it left)
    for b, positions in enumerate(members):
        if len(rows[b]) == len(positions):
            continue
        seen: set[int] = set()
        kept = []
        for pos in positions:
            if int(path[pos]) in seen:
                homeless.append((pos, b))
                fill[b] -= int(lengths[pos])
            else:
                seen.add(int(path[pos]))
                kept.append(pos)
        members[b] = kept
    for pos, origin in homeless:
        row, size = int(path[pos]), int(lengths[pos])
        nearby = chain(range(origin + 1, len(members)), range(origin - 1, -1, -1))
        target = next((b for b in nearby if fill[b] + size <= max_len and row not in rows[b]), None)
        if target is None:
            members.append([])
            rows.append(set())
            fill.append(0)
            target = len(members) - 1
        members[target].append(pos)
        rows[target].add(row)
        fill[target] += size
    return [np.sort(np.asarray(m, dtype=np.int64)) for m in members if m]


def source_counts(
    names: list[str],
    source_of_row: NDArray[np.int32],
    weights: NDArray[np.float64],
    eligible: NDArray[np.bool_],
    path: NDArray[np.int64],
    lengths: NDArray[np.integer[Any]],
) -> dict[str, dict[str, Any]]:
    """The manifest's `sources`: per source its weight, the samples it brought (`samples_in`: all stored rows), those
    left to draw from after tokenizing, dedup and decontamination (`eligible`), those packed at least once
    (`samples_packed`), the entries packed (`copies_packed`), `repeats` (entries beyond one per sample) and tokens.
    `lengths` are per path position."""
    on_path = source_of_row[path]
    unique = np.unique(path)
    out = {}
    for i, name in enumerate(names):
        packed = int((on_path == i).sum())
        distinct = int((source_of_row[unique] == i).sum())
        out[name] = {
            "weight": float(weights[i]),
            "samples_in": int((source_of_row == i).sum()),
            "eligible": int((eligible & (source_of_row == i)).sum()),
            "samples_packed": distinct,
            "copies_packed": packed,
            "repeats": packed - distinct,
            "tokens": int(lengths[on_path == i].sum()),
        }
    return out
