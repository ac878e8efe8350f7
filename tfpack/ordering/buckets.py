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

from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import gather_float32
from tfpack.ordering.knn import assign, build_knn, train_centroids
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.ordering.walk import WalkResult, walk


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


def walk_bucket(
    sub: NDArray[np.float32], members: NDArray[np.int64], start: int, reject_d2: float, k: int, window: int,
    exact: bool, n_random: int, seed: int, hops: int, knn: str = "auto", nprobe: int = 16,
) -> tuple[NDArray[np.int64], int, int]:
    """One bucket's TFP path (global ids) from its member `start`, given the bucket's rows `sub`; returns (path,
    fallbacks, forced steps). Pure and self-contained, so it runs as a Ray task as well as in-process."""
    if len(members) == 1:
        return members, 0, 0
    sub = np.ascontiguousarray(sub, dtype=np.float32)
    ids, sims, _ = build_knn(sub, min(k, len(members) - 1), "exact" if exact else knn, nprobe, seed)
    local_start = int(np.flatnonzero(members == start)[0])
    result: WalkResult = walk(sub, ids, sims, reject_d2, window, local_start, exact, n_random, seed, hops)
    return members[result.path], result.fallbacks, result.forced


def bucketed_walk(
    vectors: NDArray[Any], buckets: int, start: int, reject_d2: float, k: int, window: int, exact: bool,
    n_random: int, seed: int, hops: int, knn: str = "auto", nprobe: int = 16, progress: Progress = NULL_PROGRESS,
    engine: str = "local",
) -> tuple[NDArray[np.int64], int, int, dict[str, Any]]:
    """The stitched path over all samples; returns (path, fallbacks, forced steps, bucket sizes summary)."""
    n_buckets = max(1, min(buckets, len(vectors) // 2))
    centroids = train_centroids(vectors, n_buckets, seed)
    labels = assign(vectors, centroids, 1, progress)[:, 0]
    members = [np.flatnonzero(labels == b) for b in range(n_buckets)]
    tour = [int(b) for b in centroid_tour(centroids, int(labels[start])) if len(members[b])]
    args = (reject_d2, k, window, exact, n_random, seed, hops, knn, nprobe)
    remote = None
    if engine == "ray":
        from tfpack.ray_engine import ensure_ray

        ray = ensure_ray()
        remote = ray.remote(walk_bucket)
    results, futures = [], []
    with progress.task("walking buckets", total=len(tour)) as task:
        for i, b in enumerate(tour):
            sub = gather_float32(vectors, members[b])  # from the memory map when `vectors` is one
            first = int(members[b][np.argmax(sub @ centroids[tour[i - 1]])]) if i else start
            if remote is not None:
                futures.append(remote.remote(sub, members[b], first, *args))
            else:
                results.append(walk_bucket(sub, members[b], first, *args))
                task.advance()
        for future in futures:
            results.append(ray.get(future))
            task.advance()
    parts = [path for path, _, _ in results]
    fallbacks = sum(f for _, f, _ in results)
    forced = sum(x for _, _, x in results)
    sizes = np.asarray([len(members[b]) for b in tour])
    summary = {"buckets": len(tour), "bucket_size_min": int(sizes.min()), "bucket_size_max": int(sizes.max())}
    return np.concatenate(parts), fallbacks, forced, summary
