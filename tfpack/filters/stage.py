"""The filter step: decontamination, then near-duplicate removal, over the samples tokenizing kept.

`filter_samples` is the one place a filter removes samples: each removal marks its rows in `skip` and adds their
dropped.jsonl entries (the benchmark item or the kept duplicate they match, with the cosine). `pack`, `sweep` and
the API call it; the `stats --dedup` preview calls the same `dedup_run`.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from tfpack.config import EmbedConfig, OrderConfig, PackConfig
from tfpack.embedding.models import static_source
from tfpack.embedding.stage import embed_texts
from tfpack.filters.contamination import (
    DEFAULT_THRESHOLD,
    NGRAM,
    BenchmarkItems,
    Nearest,
    embedding_nearest,
    find_contamination,
    proposed_nearest,
    sample_texts,
    summarize,
)
from tfpack.filters.contamination import reason as contamination_reason
from tfpack.filters.dedup import CANDIDATE_MARGIN, DedupResult, Duplicates, deciding_model, dedup_run
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import SAMPLES_FILE

NEAR_DUPLICATE = "near-duplicate of"


class Decontamination(NamedTuple):
    rows: NDArray[np.int64]  # the contaminated samples kept by tokenization, as rows of samples.parquet
    entries: list[dict[str, Any]]  # per row: its dropped.jsonl / contamination.jsonl entry
    summary: dict[str, Any]  # the manifest's `decontamination` section


def decontaminate(
    benchmarks: BenchmarkItems,
    run_dir: Path,
    embed_manifest: dict[str, Any],
    emb: NDArray[Any],
    pack_cfg: PackConfig,
    sample_ids: NDArray[np.int64],
    kept: NDArray[np.bool_],
    progress: Progress = NULL_PROGRESS,
) -> Decontamination:
    """The samples `kept` by tokenization that copy or paraphrase a benchmark item (see filters/contamination.py).
    The items are compared on the run's `embed_on` side by its full model; on a static run the static model
    proposes and its source model decides (`proposed_nearest`), so the threshold means the same for every model. A
    run of precomputed embeddings has no model, so only n-grams are checked there (the summary says so)."""
    with_model = embed_manifest["backend"] != "precomputed"
    threshold = pack_cfg.decontaminate_threshold
    if threshold is None:
        threshold = DEFAULT_THRESHOLD
    nearest: Nearest | None = None
    decided: dict[str, Any] = {}
    if with_model:
        side = embed_manifest["embed_on"]
        bench_texts = benchmarks.texts_for(side)
        bench_emb = embed_texts(bench_texts, embed_manifest)
        embed_cfg = EmbedConfig(**embed_manifest["config"]["embed"])
        decider = deciding_model(embed_cfg, progress)
        if static_source(embed_cfg.model) is None:
            nearest = embedding_nearest(benchmarks, emb, bench_emb)
            decided = {"model": embed_manifest["model"]}
        else:
            texts = [text for _, batch in sample_texts(run_dir / SAMPLES_FILE, side) for text in batch]
            nearest, candidates = proposed_nearest(
                benchmarks,
                emb,
                bench_emb,
                threshold,
                lambda rows: decider.encode([texts[r] for r in rows], "decontamination candidates"),
                decider.encode(bench_texts, "benchmark items"),
            )
            decided = {
                "model": decider.name,
                "proposed_by": embed_cfg.model,
                "proposal_cutoff": round(threshold - CANDIDATE_MARGIN, 6),
                "candidates": candidates,
            }
    hits = find_contamination(sample_texts(run_dir / SAMPLES_FILE, "full"), benchmarks, nearest, min_cos=threshold)
    rows = np.searchsorted(sample_ids, [hit.sample_id for hit in hits]).astype(np.int64)
    hits = [hit for hit, row in zip(hits, rows, strict=True) if kept[row]]
    rows = rows[kept[rows]]
    entries = [
        {
            "sample_id": int(hit.sample_id),
            "reason": contamination_reason(hit),
            "benchmark": hit.location.source,
            hit.location.unit: hit.location.index,
            "kind": hit.kind,
            **({"cos": round(hit.cos, 6)} if hit.cos is not None else {"shared": hit.shared}),
        }
        for hit in hits
    ]
    summary = {
        "threshold": threshold if with_model else None,
        **decided,
        "ngram": NGRAM,
        "report_only": pack_cfg.decontaminate_report,
        "files": summarize(benchmarks, hits),
    }
    return Decontamination(rows, entries, summary)


def duplicate_entries(duplicates: Duplicates, sample_ids: NDArray[np.int64]) -> list[dict[str, Any]]:
    """dropped.jsonl entries of the removed near-duplicates, each naming the kept sample it duplicates."""
    return [
        {
            "sample_id": int(sample_ids[row]),
            "reason": f"{NEAR_DUPLICATE} {int(sample_ids[kept])} (cos {cos:.4f})",
            "duplicate_of": int(sample_ids[kept]),
            "cos": round(float(cos), 6),
        }
        for row, kept, cos in zip(
            duplicates.removed,
            duplicates.kept_as[duplicates.removed],
            duplicates.cosine[duplicates.removed],
            strict=True,
        )
    ]


def dedup_summary(dedup: DedupResult, dropped: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's `dedup` section: S, which sample stays, what was compared by which model, how many were
    removed, and group sizes (a kept sample and those removed in its name)."""
    kept_for = Counter(d["duplicate_of"] for d in dropped if "duplicate_of" in d)
    sizes = Counter(n + 1 for n in kept_for.values())
    return {
        **dedup.summary,
        "removed": sum(kept_for.values()),
        "groups": len(kept_for),
        "group_sizes": {str(size): count for size, count in sorted(sizes.items())},
    }


class Filtered(NamedTuple):
    skip: NDArray[np.bool_]  # rows left out: by tokenizing (not `kept`) or by a filter
    dropped: list[dict[str, Any]]  # the filters' dropped.jsonl entries, in removal order
    contamination: Decontamination | None  # None without --decontaminate
    dedup: DedupResult | None  # None without --dedup
    decontaminate_seconds: float


def filter_samples(
    run_dir: Path,
    embed_manifest: dict[str, Any],
    emb: NDArray[Any],
    fingerprint: str,
    sample_ids: NDArray[np.int64],
    kept: NDArray[np.bool_],
    benchmarks: BenchmarkItems | None,
    pack_cfg: PackConfig,
    order_cfg: OrderConfig,
    progress: Progress = NULL_PROGRESS,
) -> Filtered:
    """Remove the contaminated samples (unless `--decontaminate-report`), then the near-duplicates among the rest.

    Example: `kept` = [T, T, F, T]; sample 3 copies a benchmark item → skip = [F, F, T, T], one entry naming the
    item. When every sample is gone after decontamination, dedup does not run (`skip.all()` tells the caller).
    """
    skip = ~kept
    dropped: list[dict[str, Any]] = []

    def remove(rows: NDArray[np.int64], entries: list[dict[str, Any]]) -> None:
        skip[rows] = True
        dropped.extend(entries)

    contamination = None
    started = time.perf_counter()
    if benchmarks is not None:
        with progress.task("decontaminating", total=None):
            contamination = decontaminate(
                benchmarks, run_dir, embed_manifest, emb, pack_cfg, sample_ids, kept, progress
            )
        if not pack_cfg.decontaminate_report:
            remove(contamination.rows, contamination.entries)
    decontaminate_seconds = time.perf_counter() - started
    dedup = None
    if pack_cfg.dedup is not None and not skip.all():
        dedup = dedup_run(
            run_dir,
            embed_manifest,
            emb,
            fingerprint,
            pack_cfg.dedup,
            pack_cfg.dedup_keep,
            pack_cfg.dedup_on,
            order_cfg,
            skip,
            progress,
        )
        remove(dedup.duplicates.removed, duplicate_entries(dedup.duplicates, sample_ids))
    return Filtered(skip, dropped, contamination, dedup, decontaminate_seconds)
