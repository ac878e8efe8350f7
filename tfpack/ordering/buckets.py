"""Bucketed ordering (`--buckets B`): partition, walk each part on its own, stitch the parts in centroid order.

For datasets whose global kNN graph or walk outgrows one machine: faiss spherical k-means splits the embeddings
into B buckets; each bucket gets its own kNN graph (`--knn` as for a global walk) and TFP walk, independent work
that `--engine ray` runs as Ray tasks; the bucket paths are concatenated along a greedy nearest-neighbour tour of
the centroids. Each bucket's walk starts at its member nearest to the previous bucket's centroid, so a start
depends on the tour only, not on another bucket's path. Memory is bounded by one bucket: its rows are read from
the (memory-mapped) embeddings when it is walked, the whole array is never converted. What is lost against the
global walk: the threshold window is not carried across a stitch, and a sample's best neighbour may sit in
another bucket (`scripts/bench_order.py buckets` measures the loss).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import gather_float32
from tfpack.config import OrderConfig
from tfpack.ordering.knn import assign, build_knn, train_centroids
from tfpack.ordering.plan import WALK_ALL, WalkPlan
from tfpack.ordering.walk import WalkResult
from tfpack.parallel import engine_for
from tfpack.progress import NULL_PROGRESS, Progress


def centroid_tour(centroids: NDArray[np.float32], first: int) -> NDArray[np.int64]:
    """Greedy nearest-neighbour tour over the centroids (by inner product), from `first`."""
    sims = centroids @ centroids.T
    tour = [first]
    seen = np.zeros(len(centroids), dtype=bool)
    seen[first] = True
    for _ in range(len(centroids) - 1):
        row = np.where(seen, -np.inf, sims[tour[-1]])
        tour.append(int(np.argmax(row)))
        seen[tour[-1]] = True
    return np.asarray(tour, dtype=np.int64)


class BucketedPath(NamedTuple):
    path: NDArray[np.int64]  # every sample once (but those the plan leaves out), bucket paths in centroid order
    fallbacks: int
    forced: int
    summary: dict[str, Any]  # buckets walked, smallest and largest bucket


def walk_bucket(
    sub: NDArray[np.float32],
    members: NDArray[np.int64],
    start: int,
    reject_d2: float,
    k: int,
    cfg: OrderConfig,
    plan: WalkPlan,
) -> WalkResult:
    """One bucket's TFP path (global ids) from its member `start`, given the bucket's rows `sub`, at most `k`
    neighbours and the bucket's `plan`. Pure and self-contained, so it runs as a Ray task as well as in-process."""
    if len(members) == 1:
        skipped = plan.skip is not None and bool(plan.skip[0])
        return WalkResult(members[:0] if skipped else members, 0, 0)
    sub = np.ascontiguousarray(sub, dtype=np.float32)
    method = "exact" if cfg.exact else cfg.knn
    ids, sims, _ = build_knn(sub, min(k, len(members) - 1), method, nprobe=cfg.nprobe, seed=cfg.seed)
    local_start = int(np.flatnonzero(members == start)[0])
    result = plan.walk(sub, ids, sims, reject_d2, cfg, local_start)
    return replace(result, path=members[result.path])


def bucketed_walk(
    vectors: NDArray[Any],
    reject_d2: float,
    k: int,
    cfg: OrderConfig,
    progress: Progress = NULL_PROGRESS,
    plan: WalkPlan = WALK_ALL,
) -> BucketedPath:
    """The stitched path over all samples in `cfg.buckets` buckets, from `cfg.start`."""
    buckets, start, seed = cfg.buckets, cfg.start, cfg.seed
    n_buckets = max(1, min(buckets, len(vectors) // 2))
    centroids = train_centroids(vectors, n_buckets, seed)
    labels = assign(vectors, centroids, 1, progress)[:, 0]
    members = [np.flatnonzero(labels == b) for b in range(n_buckets)]
    tour = [int(b) for b in centroid_tour(centroids, int(labels[start])) if len(members[b])]

    def calls() -> Iterator[tuple[Any, ...]]:
        for i, b in enumerate(tour):
            sub = gather_float32(vectors, members[b])  # from the memory map when `vectors` is one
            first = int(members[b][np.argmax(sub @ centroids[tour[i - 1]])]) if i else start
            yield sub, members[b], first, reject_d2, k, cfg, plan.rows(members[b])

    results = []
    with progress.task("walking buckets", total=len(tour)) as task:
        for result in engine_for(cfg.engine).imap(walk_bucket, calls()):
            results.append(result)
            task.advance()
    sizes = np.asarray([len(members[b]) for b in tour])
    summary = {"buckets": len(tour), "bucket_size_min": int(sizes.min()), "bucket_size_max": int(sizes.max())}
    return BucketedPath(
        np.concatenate([r.path for r in results]),
        sum(r.fallbacks for r in results),
        sum(r.forced for r in results),
        summary,
    )
