"""kNN graph with faiss: each sample's `k` most similar other samples, by inner product (cosine on unit rows).

`method='auto'` is exact up to `EXACT_MAX_N` samples and clustered (IVF-style) beyond:

- exact: `IndexFlatIP`, queries in chunks (BLAS matrix products; on the GPU with a CUDA faiss build).
- ivf: spherical k-means (faiss) into `√N` clusters trained on a sample; every sample joins its nearest centroid;
  then each cluster's members are searched exactly (`faiss.knn`, one BLAS product per cluster) against the members
  of the `nprobe` clusters whose centroids are nearest to theirs. Probing per cluster rather than per query turns
  the search into large matrix products, which on CPU is ~10-50x faster than scanning inverted lists query by
  query; `nprobe` trades time for recall (scripts/bench_order.py `recall` measures it).

Embeddings are read from the (memory-mapped) array in chunks or one cluster at a time, never copied whole. Output:
`nbr_ids` int32 `[N, k]` (-1 where fewer than k were found) and `nbr_sims` float32 `[N, k]`, each row sorted by
decreasing similarity, the sample itself excluded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numba
import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack.arrays import gather_float32
from tfpack.config import OrderConfig
from tfpack.errors import ConfigError, DependencyError
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import atomic_path, write_json

EXACT_MAX_N = 200_000
METHODS = ("auto", "exact", "ivf", "ivfpq")
_CHUNK = 16_384
_TRAIN_PER_CLUSTER = 64
_KMEANS_ITERS = 12
_RERANK = 8  # ivfpq: candidates re-ranked per sample, in multiples of k+1
_PQ_TRAIN = 65_536  # ivfpq: at most this many rows train the product quantiser (plus 40 per inverted list)
# faiss's k-means prints "WARNING clustering N points to K centroids" on stderr (past --quiet) below this many
# training rows per centroid, and uses the setting for nothing else: tfpack sizes its samples itself.
_QUIET_MIN_POINTS = 1


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise DependencyError("the kNN graph needs faiss; run `pip install faiss-cpu` (or faiss-gpu-cu12)") from e
    return faiss


def gpu_count(faiss: Any) -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def as_float32(rows: NDArray[Any]) -> NDArray[np.float32]:
    return np.ascontiguousarray(rows, dtype=np.float32)


def drop_self(
    ids: NDArray[np.int64], sims: NDArray[np.float32], own: NDArray[np.int64], k: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Remove each query's own id (`own[i]`) from its `k+1` results (or the last result when absent)."""
    order = np.argsort(ids == own[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)


def add_rows(index: Any, emb: NDArray[Any], progress: Progress) -> None:
    """Add every row of `emb` to a faiss index, chunk by chunk as float32."""
    with progress.task("indexing", total=len(emb)) as task:
        for start in range(0, len(emb), _CHUNK):
            rows = as_float32(emb[start : start + _CHUNK])
            index.add(rows)
            task.advance(len(rows))


def exact_knn(emb: NDArray[Any], k: int, progress: Progress) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Exact inner-product kNN: a flat index (on the GPU when there is one) searched chunk by chunk."""
    faiss = import_faiss()
    n, dim = emb.shape
    index = faiss.IndexFlatIP(dim)
    if gpu_count(faiss) > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    add_rows(index, emb, progress)
    nbr_ids = np.empty((n, k), dtype=np.int32)
    nbr_sims = np.empty((n, k), dtype=np.float32)
    with progress.task("searching neighbours", total=n) as task:
        for start in range(0, n, _CHUNK):
            rows = as_float32(emb[start : start + _CHUNK])
            sims, ids = index.search(rows, k + 1)
            ids, sims = drop_self(ids, sims, np.arange(start, start + len(rows)), k)
            nbr_ids[start : start + len(rows)] = ids
            nbr_sims[start : start + len(rows)] = sims
            task.advance(len(rows))
    return nbr_ids, nbr_sims


def train_centroids(emb: NDArray[Any], n_clusters: int, seed: int) -> NDArray[np.float32]:
    """Spherical k-means centroids from a seeded sample of `_TRAIN_PER_CLUSTER` rows per cluster."""
    faiss = import_faiss()
    n, dim = emb.shape
    rng = np.random.default_rng(seed)
    train_ids = np.sort(rng.choice(n, size=min(n, n_clusters * _TRAIN_PER_CLUSTER), replace=False))
    kmeans = faiss.Kmeans(
        dim,
        n_clusters,
        niter=_KMEANS_ITERS,
        spherical=True,
        seed=seed,
        gpu=gpu_count(faiss) > 0,
        max_points_per_centroid=_TRAIN_PER_CLUSTER,
        min_points_per_centroid=_QUIET_MIN_POINTS,
    )
    kmeans.train(as_float32(emb[train_ids]))
    return np.asarray(kmeans.centroids, dtype=np.float32)


def assign(emb: NDArray[Any], centroids: NDArray[np.float32], m: int, progress: Progress) -> NDArray[np.int64]:
    """Each row's `m` nearest centroids by inner product, nearest first ([N, m])."""
    faiss = import_faiss()
    labels = np.empty((len(emb), m), dtype=np.int64)
    with progress.task("assigning clusters", total=len(emb)) as task:
        for start in range(0, len(emb), _CHUNK):
            rows = as_float32(emb[start : start + _CHUNK])
            labels[start : start + len(rows)] = faiss.knn(rows, centroids, m, faiss.METRIC_INNER_PRODUCT)[1]
            task.advance(len(rows))
    return labels


def inverted_lists(labels: NDArray[np.int64], n_clusters: int) -> list[NDArray[np.int64]]:
    """For each cluster, the (sorted) ids of the rows whose label row contains it."""
    rows = np.repeat(np.arange(len(labels)), labels.shape[1])
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n_clusters + 1))
    return [rows[order[bounds[c] : bounds[c + 1]]] for c in range(n_clusters)]


def block_knn(
    queries: NDArray[np.float32], base: NDArray[np.float32], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact inner-product top-k of `queries` among `base` (faiss brute force: BLAS on CPU, cuBLAS on a GPU)."""
    faiss = import_faiss()
    if gpu_count(faiss) > 0:
        return faiss.knn_gpu(faiss.StandardGpuResources(), queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, base, k, faiss.METRIC_INNER_PRODUCT)


def ivf_knn(
    emb: NDArray[Any], k: int, nprobe: int, seed: int, progress: Progress
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Approximate kNN: k-means clusters, each searched exactly against its `nprobe` nearest clusters."""
    n = len(emb)
    n_clusters = max(1, min(int(math.sqrt(n)), n // (4 * (k + 1))))
    centroids = train_centroids(emb, n_clusters, seed)
    labels = assign(emb, centroids, min(2, n_clusters), progress)
    queries = inverted_lists(labels[:, :1], n_clusters)
    lists = inverted_lists(labels, n_clusters)
    probes = block_knn(centroids, centroids, min(nprobe, n_clusters))[1]
    nbr_ids = np.full((n, k), -1, dtype=np.int32)
    nbr_sims = np.full((n, k), -np.inf, dtype=np.float32)
    with progress.task("searching neighbours", total=n) as task:
        for c in range(n_clusters):
            own = queries[c]
            if len(own) == 0:
                continue
            cand = np.unique(np.concatenate([lists[p] for p in probes[c] if p >= 0]))
            kk = min(k + 1, len(cand))
            sims, local = block_knn(gather_float32(emb, own), gather_float32(emb, cand), kk)
            ids = np.where(local >= 0, cand[np.maximum(local, 0)], -1)
            ids, sims = drop_self(ids, sims, own, min(k, kk))
            nbr_ids[own, : ids.shape[1]] = ids
            nbr_sims[own, : ids.shape[1]] = sims
            task.advance(len(own))
    return nbr_ids, nbr_sims


def pq_spec(dim: int, n_lists: int, gpu: bool) -> str:
    """faiss factory string: IVF lists + PQ codes of ~d/8 bytes (4-bit fast-scan on CPU, 8-bit on GPU)."""
    if gpu:
        m = max(m for m in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96) if dim % m == 0 and m <= max(1, dim // 8))
        return f"IVF{n_lists},PQ{m}"
    m = max((m for m in range(2, dim + 1, 2) if dim % m == 0 and m <= max(2, dim // 4)), default=dim)
    return f"IVF{n_lists},PQ{m}x4fs"


@numba.njit(cache=True, parallel=True, fastmath=True)
def candidate_sims(queries: Any, rows: Any, local: Any) -> Any:
    """`queries[i] · rows[local[i, j]]` in float32 ([B, R]; -inf where `local` is -1)."""
    b, r = local.shape
    out = np.full((b, r), -np.inf, np.float32)
    for i in numba.prange(b):
        for j in range(r):
            c = local[i, j]
            if c >= 0:
                dot = np.float32(0.0)
                for t in range(queries.shape[1]):
                    dot += queries[i, t] * rows[c, t]
                out[i, j] = dot
    return out


def rerank(
    emb: NDArray[Any], own: NDArray[np.int64], queries: NDArray[np.float32], cand: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact top-`k` of each query `own[i]` (rows `queries`) among its candidate ids `cand[i]` (-1 = none),
    itself excluded."""
    uniq, local = np.unique(cand, return_inverse=True)
    local = local.reshape(cand.shape)
    start = int(uniq[0] < 0)  # -1 sorts first
    rows = gather_float32(emb, uniq[start:])
    local = np.where(cand >= 0, local - start, -1)
    sims = candidate_sims(queries, rows, local)
    sims[cand == own[:, None]] = -np.inf
    if k < sims.shape[1]:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        cand, sims = np.take_along_axis(cand, top, 1), np.take_along_axis(sims, top, 1)
    order = np.lexsort((cand, -sims), axis=1)  # by similarity, ties by lower id
    ids = np.take_along_axis(cand, order, 1)
    sims = np.take_along_axis(sims, order, 1)
    return np.where(np.isfinite(sims), ids, -1), sims


def ivfpq_knn(
    emb: NDArray[Any], k: int, nprobe: int, seed: int, progress: Progress
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Approximate kNN in bounded memory: IVF-PQ candidates, exact re-ranking from `emb` (memory-mapped)."""
    faiss = import_faiss()
    n, dim = emb.shape
    gpu = gpu_count(faiss) > 0
    n_lists = max(1, min(int(math.sqrt(n)), n // 40))
    index = faiss.index_factory(dim, pq_spec(dim, n_lists, gpu), faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train_ids = np.sort(rng.choice(n, size=min(n, max(_PQ_TRAIN, 40 * n_lists)), replace=False))
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.min_points_per_centroid = _QUIET_MIN_POINTS
    faiss.downcast_index(ivf).pq.cp.min_points_per_centroid = _QUIET_MIN_POINTS
    with progress.task("training IVF-PQ", total=None):
        index.train(as_float32(emb[train_ids]))
    ivf.nprobe = nprobe
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    if gpu:
        index = faiss.index_cpu_to_all_gpus(index)
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    add_rows(index, emb, progress)
    lists = inverted_lists(assign(emb, centroids, 1, progress), len(centroids))
    n_cand = min(n, _RERANK * (k + 1))
    nbr_ids = np.full((n, k), -1, dtype=np.int32)
    nbr_sims = np.full((n, k), -np.inf, dtype=np.float32)
    with progress.task("searching neighbours", total=n) as task:
        for members in lists:
            for start in range(0, len(members), 4096):
                own = members[start : start + 4096]
                queries = gather_float32(emb, own)
                ids, sims = rerank(emb, own, queries, index.search(queries, n_cand)[1], k)
                nbr_ids[own, : ids.shape[1]] = ids
                nbr_sims[own, : ids.shape[1]] = sims
                task.advance(len(own))
    return nbr_ids, nbr_sims


def build_knn(
    emb: NDArray[Any],
    k: int,
    method: str = OrderConfig.knn,
    *,
    nprobe: int = OrderConfig.nprobe,
    seed: int = OrderConfig.seed,
    progress: Progress = NULL_PROGRESS,
) -> tuple[NDArray[np.int32], NDArray[np.float32], str]:
    """The kNN graph of `emb` ([N, d]); returns (nbr_ids, nbr_sims, method used)."""
    if method not in METHODS:
        raise ConfigError(f"--knn: expected one of {', '.join(METHODS)}, got '{method}'")
    n = len(emb)
    if n == 1:  # a single sample has no neighbour: an empty graph, and the walk is that sample
        return np.zeros((1, 0), dtype=np.int32), np.zeros((1, 0), dtype=np.float32), method
    if not 1 <= k < n:
        raise ConfigError(f"--k: must be in [1, N-1] = [1, {n - 1}], got {k}")
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "ivf"
    if method == "exact":
        return (*exact_knn(emb, k, progress), method)
    if method == "ivfpq":
        return (*ivfpq_knn(emb, k, nprobe, seed, progress), method)
    return (*ivf_knn(emb, k, nprobe, seed, progress), method)


def load_cached_knn(
    cache_dir: Path, key: dict[str, Any], shape: tuple[int, int]
) -> tuple[NDArray[np.int32], NDArray[np.float32], str] | None:
    """The cached graph (memory-mapped) when its marker matches `key` and its arrays are whole; None when there is
    none or it is damaged (unreadable, truncated, another shape): a cache is rebuilt, never trusted or fatal."""
    try:
        saved = orjson.loads((cache_dir / "knn.json").read_bytes())
        if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("method_used"), str):
            return None
        ids = np.load(cache_dir / "nbr_ids.npy", mmap_mode="r")
        sims = np.load(cache_dir / "nbr_sims.npy", mmap_mode="r")
    except (OSError, ValueError, EOFError):  # orjson.JSONDecodeError is a ValueError
        return None
    if ids.shape != shape or sims.shape != shape or ids.dtype != np.int32 or sims.dtype != np.float32:
        return None
    return ids, sims, saved["method_used"]


def cached_knn(
    cache_dir: Path,
    fingerprint: str,
    emb: NDArray[Any],
    k: int,
    method: str,
    nprobe: int,
    seed: int,
    progress: Progress = NULL_PROGRESS,
) -> tuple[NDArray[np.int32], NDArray[np.float32], str, bool]:
    """`build_knn`, cached in `cache_dir` keyed by embeddings fingerprint, k, method and nprobe; last = cache hit."""
    key = {"fingerprint": fingerprint, "k": k, "method": method, "nprobe": nprobe, "seed": seed}
    marker = cache_dir / "knn.json"
    if (cached := load_cached_knn(cache_dir, key, (len(emb), k))) is not None:
        return (*cached, True)
    nbr_ids, nbr_sims, used = build_knn(emb, k, method, nprobe=nprobe, seed=seed, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for name, array in (("nbr_ids.npy", nbr_ids), ("nbr_sims.npy", nbr_sims)):
        with atomic_path(cache_dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
    write_json(marker, {"key": key, "method_used": used, "shape": [len(nbr_ids), k]})
    return nbr_ids, nbr_sims, used, False
