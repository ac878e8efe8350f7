"""`tfpack sweep RUN_DIR --thresholds 0.5,0.6,...`: what each threshold would give, without writing shards.

The paper leaves the threshold open. For each candidate this walks the path (the kNN graph is built once and
cached in the run directory), packs it with the pack settings, and reports fill rate, relatedness inside packs
(against random packs of the same sizes), the near-duplicate rate the filter is meant to lower, and how often the
walk had to fall back. Samples are tokenized once for all thresholds.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tfpack.arrays import unit_rows
from tfpack.config import OrderConfig, PackConfig
from tfpack.errors import ConfigError
from tfpack.ordering.plan import WalkPlan
from tfpack.ordering.stage import load_embeddings, order_embeddings
from tfpack.packing.packer import pack_path
from tfpack.packing.stage import tokenize_samples
from tfpack.packing.tokenizer import load_tokenizer
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.report.stats import mean_pairwise_similarity, near_duplicate_rate, random_packs
from tfpack.workdir import SAMPLES_FILE, fingerprint_file, knn_cache_dir, read_manifest, rerun_embed


def parse_thresholds(spec: str) -> list[str]:
    """'0.5,0.6,none,auto' → ['0.5', '0.6', 'none', 'auto'] (each validated as a --threshold value)."""
    from tfpack.config import parse_threshold

    values = [v.strip() for v in spec.split(",") if v.strip()]
    if not values:
        raise ConfigError("--thresholds: give a comma-separated list, e.g. 0.5,0.6,0.7")
    for v in values:
        parse_threshold(v)
    return values


def sweep(
    run_dir: Path,
    thresholds: list[str],
    order_cfg: OrderConfig,
    pack_cfg: PackConfig,
    progress: Progress = NULL_PROGRESS,
) -> list[dict[str, Any]]:
    """One summary per threshold, in the order given."""
    manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
    emb, emb_file, _ = load_embeddings(run_dir)
    fingerprint = fingerprint_file(emb_file)
    tokenizer = load_tokenizer(pack_cfg.tokenizer, pack_cfg.template)
    with tempfile.TemporaryDirectory() as tmp:
        tokenized = tokenize_samples(
            run_dir / SAMPLES_FILE,
            tokenizer,
            pack_cfg,
            Path(tmp),
            progress=progress,
            on_error="skip",
            inputs=manifest.get("inputs"),
        )
        kept, lengths = tokenized.store.kept, tokenized.store.lengths
        dropped, refused = tokenized.dropped, tokenized.refused
        del tokenized
    rng_seed = order_cfg.seed
    cache_dir = knn_cache_dir(run_dir)
    results = []
    for value in thresholds:
        ordered = order_embeddings(
            emb, replace(order_cfg, threshold=value), cache_dir, fingerprint, progress, WalkPlan(skip=~kept)
        )
        unit = unit_rows(ordered.vectors)
        path = ordered.path
        groups = [path[g] for g in pack_path(lengths[path], pack_cfg.max_len, pack_cfg.lookahead)]
        sizes = np.asarray([len(g) for g in groups])
        random_groups = random_packs(path, sizes, rng_seed)
        s = ordered.summary
        results.append(
            {
                "threshold": value,
                "threshold_cosine": s["threshold"],
                "packs": len(groups),
                "fill_rate": round(float(lengths[path].sum() / (len(groups) * pack_cfg.max_len)), 6),
                "mean_pack_similarity": round(mean_pairwise_similarity(unit, groups), 6),
                "random_pack_similarity": round(mean_pairwise_similarity(unit, random_groups), 6),
                "near_duplicate_rate": round(near_duplicate_rate(unit, groups, s["threshold"]), 6),
                "mean_adjacent_similarity": s["mean_adjacent_similarity"],
                "fallbacks": s["fallbacks"],
                "forced_steps": s["forced_steps"],
                "threshold_violations": s["threshold_violations"],
                "dropped": len(dropped),
                "refused": len(refused),
            }
        )
    return results
