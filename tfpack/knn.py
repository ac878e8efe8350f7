"""kNN graph with faiss: each sample's `k` most similar other samples, by inner product (cosine on unit rows).

`method='auto'` is exact (`IndexFlatIP`) up to `EXACT_MAX_N` samples and IVF beyond (`IndexIVFFlat` with
`4·√N` lists, trained on a sample, `nprobe` lists searched). Queries run in chunks read from the (memory-mapped)
embeddings, so memory holds the index plus one chunk. With a CUDA faiss build and a visible GPU the index moves
to the GPU. Output: `nbr_ids` int32 `[N, k]` (−1 where fewer than k were found) and `nbr_sims` float32 `[N, k]`,
each row sorted by decreasing similarity, the sample itself excluded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack.errors import ConfigError, DependencyError
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import atomic_path, write_json

EXACT_MAX_N = 200_000
METHODS = ("auto", "exact", "ivf")
_CHUNK = 16_384
_TRAIN_PER_LIST = 64


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


def drop_self(ids: NDArray[np.int64], sims: NDArray[np.float32], first: int, k: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Remove each query's own id from its `k+1` results (or the last result when absent)."""
    own = np.arange(first, first + len(ids))[:, None]
    order = np.argsort(ids == own, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)


def build_index(emb: NDArray[Any], method: str, nprobe: int, seed: int, progress: Progress) -> tuple[Any, str]:
    """A faiss inner-product index over `emb` (added in chunks); returns (index, method used)."""
    faiss = import_faiss()
    n, dim = emb.shape
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_N else "ivf"
    if method == "exact":
        index = faiss.IndexFlatIP(dim)
    else:
        n_lists = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train_ids = np.sort(rng.choice(n, size=min(n, n_lists * _TRAIN_PER_LIST), replace=False))
        index.train(as_float32(emb[train_ids]))
        index.nprobe = min(nprobe, n_lists)
    if gpu_count(faiss) > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    with progress.task("indexing", total=n) as task:
        for start in range(0, n, _CHUNK):
            rows = as_float32(emb[start : start + _CHUNK])
            index.add(rows)
            task.advance(len(rows))
    return index, method


def build_knn(
    emb: NDArray[Any], k: int, method: str = "auto", nprobe: int = 32, seed: int = 0, progress: Progress = NULL_PROGRESS
) -> tuple[NDArray[np.int32], NDArray[np.float32], str]:
    """The kNN graph of `emb` ([N, d]); returns (nbr_ids, nbr_sims, method used)."""
    if method not in METHODS:
        raise ConfigError(f"--knn: expected one of {', '.join(METHODS)}, got '{method}'")
    n = len(emb)
    if not 1 <= k < n:
        raise ConfigError(f"--k: must be in [1, N-1] = [1, {n - 1}], got {k}")
    index, used = build_index(emb, method, nprobe, seed, progress)
    nbr_ids = np.empty((n, k), dtype=np.int32)
    nbr_sims = np.empty((n, k), dtype=np.float32)
    with progress.task("searching neighbours", total=n) as task:
        for start in range(0, n, _CHUNK):
            rows = as_float32(emb[start : start + _CHUNK])
            sims, ids = index.search(rows, k + 1)
            ids, sims = drop_self(ids, sims, start, k)
            nbr_ids[start : start + len(rows)] = ids
            nbr_sims[start : start + len(rows)] = sims
            task.advance(len(rows))
    return nbr_ids, nbr_sims, used


def cached_knn(
    cache_dir: Path, fingerprint: str, emb: NDArray[Any], k: int, method: str, nprobe: int, seed: int,
    progress: Progress = NULL_PROGRESS,
) -> tuple[NDArray[np.int32], NDArray[np.float32], str, bool]:
    """`build_knn`, cached in `cache_dir` keyed by embeddings fingerprint, k, method and nprobe; last = cache hit."""
    key = {"fingerprint": fingerprint, "k": k, "method": method, "nprobe": nprobe, "seed": seed}
    marker = cache_dir / "knn.json"
    if marker.is_file():
        saved = orjson.loads(marker.read_bytes())
        if saved.get("key") == key:
            ids = np.load(cache_dir / "nbr_ids.npy", mmap_mode="r")
            sims = np.load(cache_dir / "nbr_sims.npy", mmap_mode="r")
            return ids, sims, saved["method_used"], True
    nbr_ids, nbr_sims, used = build_knn(emb, k, method, nprobe, seed, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for name, array in (("nbr_ids.npy", nbr_ids), ("nbr_sims.npy", nbr_sims)):
        with atomic_path(cache_dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
    write_json(marker, {"key": key, "method_used": used, "shape": [len(nbr_ids), k]})
    return nbr_ids, nbr_sims, used, False
