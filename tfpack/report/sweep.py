"""`tfpack sweep RUN_DIR --thresholds 0.5,0.6,...`: what each threshold would give, without writing shards.

The paper leaves the threshold open. For each candidate this walks the path (the kNN graph is built once and
cached in the run directory), packs it with the pack settings, and reports fill rate, relatedness inside packs
(against random packs of the same sizes), the near-duplicate rate the filter is meant to lower, and how often the
walk had to fall back. `tfpack.pipeline.run_sweep` runs the steps: tokenize and filter once, then order and pack
per threshold; `threshold_row` scores each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import unit_rows
from tfpack.config import parse_threshold
from tfpack.errors import ConfigError
from tfpack.ordering.stage import WalkedPath
from tfpack.report.stats import mean_pairwise_similarity, near_duplicate_rate, random_packs


def parse_thresholds(spec: str) -> list[str]:
    """'0.5,0.6,none,auto' → ['0.5', '0.6', 'none', 'auto'] (each validated as a --threshold value)."""
    values = [v.strip() for v in spec.split(",") if v.strip()]
    if not values:
        raise ConfigError("--thresholds: give a comma-separated list, e.g. 0.5,0.6,0.7")
    for v in values:
        parse_threshold(v)
    return values


def threshold_row(
    value: str,
    walked: WalkedPath,
    packs: list[NDArray[np.int64]],
    lengths: NDArray[np.int64],
    max_len: int,
    seed: int,
) -> dict[str, Any]:
    """What threshold `value` gives: its cosine, packs, fill rate, relatedness inside packs (against random packs of
    the same sizes, drawn with `seed`), the near-duplicate rate and the walk's fallbacks. `packs` are positions on
    `walked.path`; `lengths` are token counts per row."""
    unit = unit_rows(walked.vectors)
    path = walked.path
    groups = [path[g] for g in packs]
    sizes = np.asarray([len(g) for g in groups])
    random_groups = random_packs(path, sizes, seed)
    s = walked.summary
    return {
        "threshold": value,
        "threshold_cosine": s["threshold"],
        "packs": len(groups),
        "fill_rate": round(float(lengths[path].sum() / (len(groups) * max_len)), 6),
        "mean_pack_similarity": round(mean_pairwise_similarity(unit, groups), 6),
        "random_pack_similarity": round(mean_pairwise_similarity(unit, random_groups), 6),
        "near_duplicate_rate": round(near_duplicate_rate(unit, groups, s["threshold"]), 6),
        "mean_adjacent_similarity": s["mean_adjacent_similarity"],
        "fallbacks": s["fallbacks"],
        "forced_steps": s["forced_steps"],
        "threshold_violations": s["threshold_violations"],
    }
