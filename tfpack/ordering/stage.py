"""Order stage: embeddings → threshold → kNN graph → TFP walk → an int64 permutation, with quality metrics.

Input is a run directory from `tfpack embed` (its kNN graph is cached in `RUN_DIR/knn/`, keyed by the embeddings'
fingerprint, k, method and nprobe) or any `.npy` of `[N, d]` float16/float32 embeddings (memory-mapped).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack.arrays import first_bad_row
from tfpack.config import OrderConfig, parse_threshold
from tfpack.errors import ConfigError, InputError, StaleArtifactError
from tfpack.ordering.buckets import bucketed_walk
from tfpack.ordering.knn import build_knn, cached_knn
from tfpack.ordering.plan import WALK_ALL, WalkPlan
from tfpack.ordering.threshold import EXACT_MAX_N, Threshold, gram_matrix, resolve_threshold
from tfpack.ordering.walk import lag_distances, squared_norms
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import (
    EMBEDDINGS_FILE,
    SAMPLES_FILE,
    THRESHOLD_FILE,
    Kind,
    atomic_path,
    check_out_file,
    classify,
    fingerprint_file,
    knn_cache_dir,
    mismatch,
    parquet_rows,
    read_manifest,
    rerun_embed,
    write_json,
)

NPY_MAGIC = b"\x93NUMPY"

# |norm - 1| allowed for a unit row: float16 storage moves a unit row's norm by at most 2^-11 (4.9e-4); beyond this
# the cosine threshold would be misreported by more than float16 rounding does.
UNIT_TOLERANCE = 2e-3
_CHUNK = 65_536


@dataclass(frozen=True)
class WalkedPath:
    """The walked path, the vectors it was walked on and what is reported about it (the API returns the public
    `tfpack.OrderResult`)."""

    path: NDArray[np.int64]  # every row once, except those the plan skips
    vectors: NDArray[Any]  # the embeddings the walk used: the input itself when its rows are unit, else a unit copy
    threshold: Threshold
    summary: dict[str, Any]


class Embeddings(NamedTuple):
    array: NDArray[Any]  # memory-mapped [N, d] float32 or float16
    file: Path
    run_dir: Path | None  # None for a bare .npy


def load_embeddings(source: Path) -> Embeddings:
    """Memory-map embeddings from a run directory or `.npy`; anything else is named for what it is."""
    run_dir = source if source.is_dir() else None
    manifest = None
    if run_dir is not None:
        manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
        source = run_dir / EMBEDDINGS_FILE
    if not source.is_file():
        raise InputError(f"{source}: no such embeddings file")
    if run_dir is None and not source.name.endswith(".npy"):  # a .npy file that is no array: numpy says why below
        with open(source, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise InputError(mismatch(classify(source), ("embed",), "", also="an [N, d] .npy array"))
    try:
        emb = np.load(source, mmap_mode="r")
    except (ValueError, EOFError) as e:  # EOFError: an empty file
        raise InputError(f"{source}: not a .npy array: {e or 'empty file'}") from None
    if emb.ndim != 2 or emb.dtype not in (np.float16, np.float32) or len(emb) < 1:
        raise InputError(f"{source}: expected float16/float32 [N >= 1, d] embeddings, got {emb.dtype} {emb.shape}")
    if run_dir is not None and manifest is not None:
        check_run_dir(run_dir, manifest, emb)
    return Embeddings(emb, source, run_dir)


def check_run_dir(run_dir: Path, manifest: dict[str, Any], emb: NDArray[Any]) -> None:
    """A run directory is stale when its embeddings, samples and manifest disagree, or an input file changed."""
    inputs = [i["path"] for i in manifest.get("inputs", [])]
    rerun = rerun_embed(run_dir, inputs)
    samples = run_dir / SAMPLES_FILE
    rows = parquet_rows(samples, rerun) if samples.is_file() else None
    if not len(emb) == manifest.get("n") == rows:
        raise StaleArtifactError(
            f"{run_dir}: embeddings.npy has {len(emb)} rows, samples.parquet {rows}, the manifest "
            f"says {manifest.get('n')}; the run directory is stale, run `{rerun}`"
        )
    for item in manifest.get("inputs", []):
        path = Path(item["path"])
        if item["path"] != "-" and path.is_file() and fingerprint_file(path) != item["fingerprint"]:
            raise StaleArtifactError(
                f"{run_dir}: input {path} changed since it was embedded (fingerprint differs); run `{rerun}`"
            )


def check_block(block: NDArray[Any], start: int) -> NDArray[np.float64]:
    """Reject NaN/inf and zero rows of one chunk of embeddings (`start`: the chunk's first row); returns the norms."""
    norms = row_norms(block)
    bad = first_bad_row(norms)
    if bad is not None:
        raise InputError(f"embeddings row {start + bad[0]} {bad[1]}; re-embed the inputs (`tfpack embed`)")
    return norms


def first_off_unit_row(emb: NDArray[Any], progress: Progress = NULL_PROGRESS) -> tuple[int, float] | None:
    """Reject NaN/inf and zero rows, reading `emb` chunk by chunk (nothing kept); the first row whose L2 norm is off
    1 (beyond float16 rounding) and that norm, or None when every row is a unit row."""
    with progress.task("checking embeddings", total=len(emb)) as task:
        for start in range(0, len(emb), _CHUNK):
            norms = check_block(emb[start : start + _CHUNK], start)
            off = np.flatnonzero(np.abs(norms - 1) > UNIT_TOLERANCE)
            if off.size:
                return start + int(off[0]), float(norms[off[0]])
            task.advance(len(norms))
    return None


def normalise_in_place(vectors: NDArray[np.float32]) -> None:
    """L2-normalise the rows of an in-memory float32 array, each divided by its float32 norm as `tfpack embed
    --embeddings` stores them, so ordering a `.npy` gives the path of ordering its embed run."""
    for start in range(0, len(vectors), _CHUNK):
        block = vectors[start : start + _CHUNK]
        block /= np.linalg.norm(block, axis=1, keepdims=True)  # zero rows were refused by `to_float32`


def row_norms(rows: NDArray[Any]) -> NDArray[np.float64]:
    """L2 norm of each row, accumulated in float64 one chunk at a time."""
    return np.sqrt(squared_norms(rows))


def to_float32(emb: NDArray[Any], progress: Progress = NULL_PROGRESS) -> NDArray[np.float32]:
    """A float32 in-memory copy, converted chunk by chunk in one pass; rejects NaN/inf and zero rows."""
    out = np.empty(emb.shape, dtype=np.float32)
    with progress.task("loading embeddings", total=len(emb)) as task:
        for start in range(0, len(emb), _CHUNK):
            block = np.asarray(emb[start : start + _CHUNK], dtype=np.float32)
            check_block(block, start)
            out[start : start + len(block)] = block
            task.advance(len(block))
    return out


def window_metrics(
    emb: NDArray[Any], path: NDArray[np.int64], window: int, reject_d2: float, seed: int
) -> dict[str, Any]:
    """Mean cosine of adjacent path samples vs a random order, and the steps that break the window rule (judged by
    the walk's own float64 distances), reading rows in place."""
    n = len(path)
    norms2 = squared_norms(emb)
    norms = np.sqrt(norms2)

    def adjacent_mean(order: NDArray[np.int64]) -> float:
        if n < 2:
            return 0.0
        a, b = order[1:], order[:-1]
        return float(
            ((norms2[a] + norms2[b] - lag_distances(emb, norms2, order, 1)) / (2 * norms[a] * norms[b])).mean()
        )

    violations = np.zeros(n, dtype=bool)
    for lag in range(1, window + 1):
        violations[lag:] |= lag_distances(emb, norms2, path, lag) < reject_d2
    rng = np.random.default_rng(seed)
    return {
        "mean_adjacent_similarity": round(adjacent_mean(path), 6),
        "random_adjacent_similarity": round(adjacent_mean(rng.permutation(path)), 6),
        "threshold_violations": int(violations.sum()),
    }


def load_dense_kernels(like: NDArray[Any]) -> None:
    """Load the exact threshold's and the dense walk's numba kernels (from numba's cache) on a 2-row problem of the
    dtype and writability of `like` (a read-only memory map is another kernel type). A process's first numba call
    costs ~0.3 s on 2 cores (numba's registries, scipy's BLAS import), more than the kernels' work at N = 4096; run
    beside the BLAS matrix product (GIL released) it is partly hidden."""
    x = np.eye(2, 4, dtype=like.dtype)
    x.flags.writeable = like.flags.writeable
    gram = gram_matrix(x)
    threshold = resolve_threshold(x, "auto", gram=gram)
    empty = np.zeros((2, 0))
    walked = WALK_ALL.walk(
        x, empty.astype(np.int32), empty.astype(np.float32), threshold.reject_d2, OrderConfig(exact=True), 0, gram
    )
    window_metrics(x, walked.path, OrderConfig.window, threshold.reject_d2, OrderConfig.seed)


def cached_threshold(
    cache_dir: Path | None,
    fingerprint: str | None,
    vectors: NDArray[Any],
    cfg: OrderConfig,
    gram: NDArray[np.float32] | None = None,
) -> tuple[Threshold, bool]:
    """`resolve_threshold` for `cfg` (`gram`: the vectors' inner products when computed already); an 'auto' estimate
    is cached beside the kNN graph (`RUN_DIR/knn/`) keyed by the embeddings' fingerprint, N, the quantile, the
    sampled pairs and the seed; second = cache hit."""

    def resolve() -> Threshold:
        return resolve_threshold(
            vectors,
            parse_threshold(str(cfg.threshold)),
            distance=cfg.distance_threshold,
            quantile=cfg.quantile,
            sample_pairs=cfg.sample_pairs,
            seed=cfg.seed,
            gram=gram,
        )

    if cache_dir is None or fingerprint is None or cfg.threshold != "auto" or cfg.distance_threshold is not None:
        return resolve(), False
    key = {
        "fingerprint": fingerprint,
        "n": len(vectors),
        "quantile": cfg.quantile,
        "sample_pairs": cfg.sample_pairs,
        "seed": cfg.seed,
    }
    path = cache_dir / THRESHOLD_FILE
    try:
        cached = orjson.loads(path.read_bytes())
        if cached["key"] == key:
            return Threshold(**cached["threshold"]), True
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: computed again
        pass
    threshold = resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, "threshold": threshold.to_dict()})
    return threshold, False


def order_embeddings(
    emb: NDArray[Any],
    cfg: OrderConfig,
    cache_dir: Path | None = None,
    fingerprint: str | None = None,
    progress: Progress = NULL_PROGRESS,
    plan: WalkPlan = WALK_ALL,
) -> WalkedPath:
    """Threshold, kNN graph and walk over `emb`; the engine shared by `tfpack order` and `tfpack pack`."""
    started = time.perf_counter()
    if cfg.start >= len(emb):
        raise ConfigError(f"--start: must be in [0, {len(emb) - 1}], got {cfg.start}")
    method = "exact" if cfg.exact else cfg.knn
    off = first_off_unit_row(emb, progress)
    if off is None:  # unit rows: every engine reads them in place (memory-mapped, float16 or float32), no copy
        vectors, normalised = emb, False
    elif cfg.buckets > 1 or method == "ivfpq":  # memory-bounded: no room for a normalised copy
        raise InputError(
            f"embeddings row {off[0]} has L2 norm {off[1]:.4g}, not 1: the walk compares L2 distances of unit rows; "
            "L2-normalise the embeddings (`tfpack embed --embeddings FILE` does), or order without --buckets/--knn "
            "ivfpq, which normalise a float32 copy"
        )
    else:
        vectors, normalised = to_float32(emb, progress), True
        normalise_in_place(vectors)
    # --exact up to EXACT_MAX_N rows: one BLAS matrix of all inner products serves the exact threshold and the dense
    # walk, which needs no kNN graph (its time is reported as the kNN step's).
    dense = cfg.exact and cfg.buckets <= 1 and len(vectors) <= EXACT_MAX_N
    t0 = time.perf_counter()
    gram = None
    if dense:
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(
                load_dense_kernels, vectors
            )  # numba's start-up runs while BLAS (GIL released) computes
            gram = gram_matrix(vectors)
            loading.result()
    t_gram = time.perf_counter()
    threshold, threshold_hit = cached_threshold(cache_dir, fingerprint, vectors, cfg, gram)
    t1 = time.perf_counter()
    k = 0 if dense else min(cfg.k, len(vectors) - 1)
    bucket_summary: dict[str, Any] = {}
    if cfg.buckets > 1:
        t2 = time.perf_counter()
        path, fallbacks, forced, bucket_summary = bucketed_walk(vectors, threshold.reject_d2, k, cfg, progress, plan)
        used, hit = f"{method} per bucket", False
    else:
        if dense:
            nbr_ids, nbr_sims, used, hit = (
                np.zeros((len(vectors), 0), np.int32),
                np.zeros((len(vectors), 0), np.float32),
                "dense",
                False,
            )
        elif cache_dir is not None and fingerprint is not None:
            nbr_ids, nbr_sims, used, hit = cached_knn(
                cache_dir, fingerprint, vectors, k, method, cfg.nprobe, cfg.seed, progress
            )
        else:
            (nbr_ids, nbr_sims, used), hit = (
                build_knn(vectors, k, method, nprobe=cfg.nprobe, seed=cfg.seed, progress=progress),
                False,
            )
        t2 = time.perf_counter()
        with progress.task("walking", total=None):
            result = plan.walk(vectors, nbr_ids, nbr_sims, threshold.reject_d2, cfg, cfg.start, gram)
        path, fallbacks, forced = result.path, result.fallbacks, result.forced
    t3 = time.perf_counter()
    metrics = window_metrics(vectors, path, cfg.window, threshold.reject_d2, cfg.seed)
    summary = {
        "n": len(vectors),
        "walked": len(path),
        "dim": int(vectors.shape[1]),
        "normalised": normalised,
        "threshold": threshold.cosine,
        "distance_threshold": threshold.distance,
        "threshold_mode": threshold.mode,
        "threshold_estimate_error": threshold.estimate_error,
        "quantile": threshold.quantile,
        "window": cfg.window,
        "k": k,
        "knn": used,
        "knn_cached": hit,
        "threshold_cached": threshold_hit,
        "exact": cfg.exact,
        "start": cfg.start,
        "fallbacks": fallbacks,
        "forced_steps": forced,
        **bucket_summary,
        **metrics,
        "threshold_seconds": round(t1 - t_gram, 3),
        "knn_seconds": round(t2 - t1 + t_gram - t0, 3),
        "walk_seconds": round(t3 - t2, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return WalkedPath(path, vectors, threshold, summary)


def check_order_out(out: Path, source: Path, overwrite: bool = False) -> None:
    """Refuse an `-o` that cannot take the permutation, before any work: a folder, a file inside a tfpack output or
    run directory, the input, or an existing file (replaced only with `overwrite`, and only a `.npy`)."""
    check_out_file(out, overwrite, [source], magic=NPY_MAGIC)
    if classify(source).kind is Kind.MISSING:
        raise InputError(f"{source}: does not exist; expected an embed run directory or an [N, d] .npy array")


def order_source(source: Path, cfg: OrderConfig, progress: Progress = NULL_PROGRESS) -> WalkedPath:
    """The path over a run directory's embeddings (its kNN graph cached in `RUN_DIR/knn/`, or elsewhere when the run
    is read-only: `knn_cache_dir`) or over a `.npy`."""
    emb, emb_file, run_dir = load_embeddings(source)
    cache_dir = knn_cache_dir(run_dir) if run_dir is not None else None
    fingerprint = fingerprint_file(emb_file) if cache_dir is not None else None
    return order_embeddings(emb, cfg, cache_dir, fingerprint, progress)


def write_order(result: WalkedPath, out: Path, cfg: OrderConfig) -> dict[str, Any]:
    """Write the permutation to `out` (an int64 `.npy`, atomically; `check_order_out` it before the work); return the
    summary `tfpack order` prints."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, result.path.astype(np.int64))
    return {"order": str(out), **result.summary, "config": asdict(cfg)}


def run_order(
    source: Path, out: Path, cfg: OrderConfig, progress: Progress = NULL_PROGRESS, overwrite: bool = False
) -> dict[str, Any]:
    """`tfpack order`: write the permutation to `out` (atomically) and return the summary."""
    check_order_out(out, source, overwrite)
    return write_order(order_source(source, cfg, progress), out, cfg)
