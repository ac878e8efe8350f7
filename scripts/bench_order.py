"""Benchmark the ordering engine against the paper's algorithm, and its scale curve.

    python scripts/bench_order.py anchor [REPEAT]   # N=1k/4096/8k: `tfpack order --exact` (CLI) vs the reference
    python scripts/bench_order.py scale 10000 100000 1000000   # kNN/walk seconds and peak RSS per N
    python scripts/bench_order.py scale 1000000 --buckets=100  # the same, bucketed (memory bounded by a bucket)
    python scripts/bench_order.py scale 1000000 --knn=ivfpq    # global walk, IVF-PQ graph, no float32 copy
    python scripts/bench_order.py recall 100000 4 8 16   # ivf kNN recall and seconds per nprobe (N or an .npy)
    python scripts/bench_order.py recall 100000 16 --knn=ivfpq   # the same for the IVF-PQ graph
    python scripts/bench_order.py buckets 100000 16 64   # bucketed ordering vs the global walk (N or an .npy)
    python scripts/bench_order.py threshold 100000 1000000   # `--threshold auto` estimate: seconds, extra memory

`anchor` uses ../shared/golden/emb_4096.npy (the largest N the authors' script can run), its first 1024 rows and
8192 synthetic rows; tfpack runs as its command line, the reference in its own process too, a fresh process per
run. The reference is re-implemented here from the paper's description (dense torch.cdist matrix, torch.quantile
threshold, argmin loop). Each scale point runs in a fresh subprocess on
synthetic clustered float16 embeddings (d=384) with a fixed threshold, so peak RSS is that run's own.
"""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchenv import cpu_line

from tfpack.config import OrderConfig
from tfpack.ordering.stage import order_embeddings
from tfpack.ordering.threshold import EXACT_MAX_N, from_cosine, resolve_threshold
from tfpack.ordering.walk import walk

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"
REFERENCE_4096 = 0.9011306762695312  # the L2 threshold the authors' script computed on emb_4096.npy


def reference_algorithm(x: np.ndarray) -> list[int]:
    """The authors' procedure: dense float32 cdist, 2% quantile of non-zero distances, window 4, start 0."""
    import torch

    emb = torch.tensor(x, dtype=torch.float32)
    n = emb.shape[0]
    dist = torch.cdist(emb, emb, p=2)
    threshold = torch.quantile(dist[dist > 0], 0.02).item()
    visited = torch.zeros(n, dtype=torch.bool)
    path = [0]
    visited[0] = True
    for _ in range(1, n):
        row = dist[path[-1]].clone()
        row[visited] = float("inf")
        nxt = int(torch.argmin(row))
        for _attempt in range(10_000):
            if all(dist[p, nxt] >= threshold for p in path[-4:]):
                break
            row[nxt] = float("inf")
            nxt = int(torch.argmin(row))
        path.append(nxt)
        visited[nxt] = True
    return path


def timed(fn, *args, repeat: int = 1, **kwargs):  # type: ignore[no-untyped-def]
    """(result, best wall seconds over `repeat` runs)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return out, best


def reference_process(source: Path, out: Path) -> dict:
    """The reference algorithm in a fresh process: its own seconds (torch imported first, not timed) and the
    whole process's wall time; its path is written to `out`."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "_reference", str(source), str(out)], capture_output=True, text=True, check=True
    )
    return {**json.loads(proc.stdout), "wall": time.perf_counter() - started}


def cli_process(source: Path, out: Path, *flags: str) -> dict:
    """`tfpack order SOURCE -o OUT --json FLAGS` in a fresh process: its JSON summary and the process's wall time."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tfpack", "order", str(source), "-o", str(out), "--overwrite", "--json", *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    return {**json.loads(proc.stdout), "wall": time.perf_counter() - started}


def anchor(repeat: int) -> None:
    """`tfpack order` as a user runs it (its command line, a fresh process per run) against the reference, side by
    side: N = 1024 (the golden rows' prefix), 4096 (golden) and 8192 (synthetic: the reference cannot run)."""
    print(f"CPU: {cpu_line()}")
    print(
        "tfpack order EMB.npy -o OUT --json [--exact]: threshold auto (2% quantile), window 4, start 0; a fresh "
        f"process per run, best of {repeat}, runs interleaved; reference = the authors' algorithm (torch, dense): its "
        "seconds exclude `import torch`, its process time includes it"
    )
    print(
        f"{'N':>5} {'what':<24}{'seconds':>9}{'process s':>10}{'thresh s':>9}{'kNN s':>7}{'walk s':>7}"
        f"{'fallbk':>7}{'×ref (s)':>9}{'×ref (process)':>15}"
    )
    modes = {"reference (torch)": None, "tfpack order --exact": ("--exact",), "tfpack order (default)": ()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "path.npy"
        sources = {1024: Path(tmp) / "emb_1024.npy", 4096: GOLDEN / "emb_4096.npy", 8192: Path(tmp) / "emb_8192.npy"}
        np.save(sources[1024], np.load(GOLDEN / "emb_4096.npy")[:1024])
        synthetic(sources[8192], 8192, dtype=np.float32)
        for n, source in sources.items():
            runs: dict[str, list[dict]] = {name: [] for name in modes if n <= 4096 or modes[name] is not None}
            for _ in range(repeat):  # interleaved: a load change on the shared machine hits every mode alike
                for name in runs:
                    flags = modes[name]
                    runs[name].append(
                        reference_process(source, out) if flags is None else cli_process(source, out, *flags)
                    )
            ref = runs.get("reference (torch)")
            for name, results in runs.items():
                best = min(results, key=lambda r: r["seconds"])
                wall = min(r["wall"] for r in results)
                line = f"{n:>5} {name:<24}{best['seconds']:>9.3f}{wall:>10.3f}"
                if "walk_seconds" in best:
                    line += (
                        f"{best['threshold_seconds']:>9.3f}{best['knn_seconds']:>7.3f}{best['walk_seconds']:>7.3f}"
                        f"{best['fallbacks']:>7}"
                    )
                    if ref:
                        ref_s = min(r["seconds"] for r in ref)
                        ref_wall = min(r["wall"] for r in ref)
                        line += f"{ref_s / best['seconds']:>8.1f}×{ref_wall / wall:>14.1f}×"
                print(line)
        cli_process(GOLDEN / "emb_4096.npy", out, "--exact", "--distance-threshold", str(REFERENCE_4096))
        same = np.array_equal(np.load(out), np.load(GOLDEN / "ref_path_4096.npy"))
        print(f"tfpack --exact at the reference's own threshold reproduces ref_path_4096.npy: {same}")


def synthetic(path: Path, n: int, d: int = 384, clusters: int = 2000, seed: int = 0, dtype: type = np.float16) -> None:
    """Clustered unit vectors (float16 unless `dtype`), written chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, d))
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, clusters, m)] + 0.9 * rng.normal(size=(m, d)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()


def scale_point(n: int, k: int, cosine: float, buckets: int = 0, knn: str = "auto") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.npy"
        synthetic(path, n)
        emb = np.load(path, mmap_mode="r")
        started = time.perf_counter()
        result = order_embeddings(emb, OrderConfig(threshold=str(cosine), k=k, buckets=buckets, knn=knn))
        total = time.perf_counter() - started
    s = result.summary
    return {
        "n": n,
        "k": k,
        "knn": s["knn"],
        "knn_seconds": s["knn_seconds"],
        "walk_seconds": s["walk_seconds"],
        "total_seconds": round(total, 1),
        "fallbacks": s["fallbacks"],
        "mean_adjacent_similarity": s["mean_adjacent_similarity"],
        "random_adjacent_similarity": s["random_adjacent_similarity"],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def walk_only(n: int, k: int) -> dict:
    """The walk kernel alone on a random kNN graph of 1M samples (its cost is independent of kNN quality)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.integers(0, n, size=(n, k), dtype=np.int64).astype(np.int32)
    sims = np.sort(rng.uniform(0.3, 0.9, size=(n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    walk(x[:1000], ids[:1000] % 1000, sims[:1000], from_cosine(0.6).reject_d2)
    _, seconds = timed(walk, x, ids, sims, from_cosine(0.6).reject_d2)
    return {"n": n, "k": k, "walk_kernel_seconds": round(seconds, 2)}


def load_source(source: str) -> np.ndarray:
    """float32 embeddings: synthetic clustered ones when `source` is a count N, else the `.npy` it names."""
    if not source.isdigit():
        return np.load(source).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic(Path(tmp) / "emb.npy", int(source))
        return np.load(Path(tmp) / "emb.npy").astype(np.float32)


def recall(source: str, probes: list[int], method: str = "ivf", k: int = 64, n_queries: int = 2000) -> None:
    """Recall of the ivf (or ivfpq) graph against exact search for a seeded sample of queries, and its seconds.

    `source` is N (synthetic clustered embeddings) or the path of an `.npy` of real embeddings.
    """
    import faiss

    from tfpack.ordering.knn import build_knn

    x = load_source(source)
    n = len(x)
    queries = np.random.default_rng(1).choice(n, n_queries, replace=False)
    truth = faiss.knn(x[queries], x, k + 1, faiss.METRIC_INNER_PRODUCT)[1][:, 1:]
    print(f"N={n} k={k}: {method} graph vs exact search, {n_queries} sampled queries")
    for nprobe in probes:
        (ids, _, _), seconds = timed(build_knn, x, k, method, nprobe)
        r10, rk = (
            np.mean([len(set(ids[q][:m]) & set(t[:m])) / m for q, t in zip(queries, truth, strict=True)])
            for m in (10, k)
        )
        print(f"  nprobe {nprobe:>3}: {seconds:7.1f} s  recall@10 {r10:.4f}  recall@{k} {rk:.4f}")


def buckets(source: str, counts: list[int], max_len: int = 2048, threshold: float = 0.6) -> None:
    """Quality and time of bucketed ordering against the global walk, on the same embeddings and lengths.

    Lengths are synthetic token counts (log-normal, median ~250, clipped to max_len) so fill and pack relatedness
    can be computed without tokenizing.
    """
    from tfpack.packing.packer import pack_path
    from tfpack.report.stats import mean_pairwise_similarity

    x = load_source(source)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    lengths = np.clip(np.random.default_rng(0).lognormal(5.5, 0.6, len(x)).astype(np.int64), 16, max_len)
    print(f"N={len(x)}: threshold cos {threshold}, window 4, k 64; packs at max-len {max_len} (lookahead 64)")
    print(f"{'ordering':<18}{'seconds':>9}{'adj sim':>9}{'fill':>8}{'pack sim':>10}{'random':>8}{'fallbacks':>11}")
    for b in [0, *counts]:
        result, seconds = timed(order_embeddings, x, OrderConfig(threshold=str(threshold), buckets=b))
        path = result.path
        groups = [path[g] for g in pack_path(lengths[path], max_len, 64)]
        sizes = np.asarray([len(g) for g in groups])
        rnd = np.split(np.random.default_rng(1).permutation(path), np.cumsum(sizes)[:-1])
        name = "global walk" if b == 0 else f"{b} buckets"
        s = result.summary
        print(
            f"{name:<18}{seconds:>9.1f}{s['mean_adjacent_similarity']:>9.4f}"
            f"{lengths.sum() / (len(groups) * max_len):>8.4f}{mean_pairwise_similarity(unit, groups):>10.4f}"
            f"{mean_pairwise_similarity(unit, rnd):>8.4f}{s['fallbacks']:>11}"
        )


def memory_kib(*fields: str) -> list[int]:
    """Fields of /proc/self/status, in KiB (VmRSS, VmHWM, RssFile, ...)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return [int(status[f].split()[0]) for f in fields]


def threshold_point(path: Path, kind: str) -> dict:
    """The sampled `--threshold auto` estimate on float16 embeddings at `path`, read as a float32 copy in memory
    (`kind` "float32", the global walk's input) or memory-mapped (`kind` "float16-mmap", bucketed / ivfpq runs).

    Peak extra RSS: freed heap memory is returned to the system (malloc_trim) and the peak-RSS mark reset
    (/proc/self/clear_refs) after the input is loaded, so the figure is the estimate's own peak above the resident
    input. Mapped file pages the estimate reads in count in RSS; they are page cache (shared, reclaimable) and are
    also reported apart. CPU seconds: all threads' (on a busy machine wall time exceeds CPU time / cores).
    """
    mapped = np.load(path, mmap_mode="r")
    warm = mapped[: EXACT_MAX_N + 1]  # the input's own array type (read-only memory map): no compile in the timing
    warm_input = warm if kind == "float16-mmap" else np.array(warm, dtype=np.float32)
    _, warm_seconds = timed(resolve_threshold, warm_input, "auto", sample_pairs=1000)  # numba compile / cache load
    del warm, warm_input
    if kind == "float32":
        emb = np.empty(mapped.shape, dtype=np.float32)
        for start in range(0, len(mapped), 10_000):
            emb[start : start + 10_000] = mapped[start : start + 10_000]
        del mapped
    else:
        emb = mapped
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    rss, file = memory_kib("VmRSS", "RssFile")
    cpu_start = time.process_time()
    result, seconds = timed(resolve_threshold, emb, "auto")
    cpu_seconds = time.process_time() - cpu_start
    peak, file_after = memory_kib("VmHWM", "RssFile")
    return {
        "n": len(emb),
        "input": kind,
        "mode": result.mode,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "warm_up_seconds": round(warm_seconds, 2),
        "extra_peak_gib": round((peak - rss) / 2**20, 3),
        "mapped_pages_gib": round((file_after - file) / 2**20, 3),
        "distance": result.distance,
        "estimate_error": result.estimate_error,
    }


def threshold(sizes: list[int]) -> None:
    """Time and memory of the sampled auto-threshold estimate at each N, each input kind in a fresh process."""
    print(f"CPU: {cpu_line()}")
    print(
        f"sampled --threshold auto ({OrderConfig.sample_pairs:,} pairs, quantile {OrderConfig.quantile}), "
        "synthetic clustered embeddings, d=384"
    )
    print(
        f"{'N':>9} {'input':<13} {'seconds':>8} {'CPU s':>6} {'warm-up s':>10} {'extra peak GiB':>15}"
        f" {'mapped GiB':>11} {'estimate':>11} {'error':>10}"
    )
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "emb.npy"
            synthetic(path, n)
            for kind in ("float32", "float16-mmap"):
                r = in_fresh_process(f"{n:>9} {kind:<13}", "_threshold", str(path), kind)
                if r is None:
                    continue
                print(
                    f"{r['n']:>9} {r['input']:<13} {r['seconds']:>8.2f} {r['cpu_seconds']:>6.2f}"
                    f" {r['warm_up_seconds']:>10.2f} {r['extra_peak_gib']:>15.3f} {r['mapped_pages_gib']:>11.3f}"
                    f" {r['distance']:>11.7f} {r['estimate_error']:>10.2e}"
                )


def in_fresh_process(label: str, *args: str) -> dict | None:
    """The JSON a mode of this script prints, run in a fresh process; None (after printing why) when it failed."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{label} failed: {proc.stderr.strip().splitlines()[-1]}")
        return None
    return json.loads(proc.stdout)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "anchor"
    if mode == "anchor":
        anchor(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    elif mode == "_reference":
        import torch  # noqa: F401 - imported before the timing: the algorithm's seconds, not torch's import

        path, seconds = timed(reference_algorithm, np.load(sys.argv[2]))
        np.save(sys.argv[3], np.asarray(path, dtype=np.int64))
        print(json.dumps({"seconds": seconds}))
    elif mode == "scale":
        sizes = [int(a) for a in sys.argv[2:] if a.isdigit()] or [10_000, 100_000, 1_000_000]
        buckets = next((a.split("=")[1] for a in sys.argv[2:] if a.startswith("--buckets=")), "0")
        knn = next((a.split("=")[1] for a in sys.argv[2:] if a.startswith("--knn=")), "auto")
        print(
            f"{'N':>9} {'knn':>6} {'kNN s':>8} {'walk s':>8} {'total s':>8} {'fallbacks':>10} "
            f"{'adj sim':>8} {'random':>8} {'peak RSS GiB':>13}"
        )
        for n in sizes:
            r = in_fresh_process(f"{n:>9}", "_point", str(n), buckets, knn)
            if r is None:
                continue
            print(
                f"{r['n']:>9} {r['knn']:>6} {r['knn_seconds']:>8.1f} {r['walk_seconds']:>8.2f}"
                f" {r['total_seconds']:>8.1f}"
                f" {r['fallbacks']:>10} {r['mean_adjacent_similarity']:>8.4f} {r['random_adjacent_similarity']:>8.4f}"
                f" {r['peak_rss_gib']:>13.2f}"
            )
    elif mode == "_point":
        print(json.dumps(scale_point(int(sys.argv[2]), k=64, cosine=0.6, buckets=int(sys.argv[3]), knn=sys.argv[4])))
    elif mode == "recall":
        method = next((a.split("=")[1] for a in sys.argv[3:] if a.startswith("--knn=")), "ivf")
        recall(sys.argv[2], [int(a) for a in sys.argv[3:] if a.isdigit()] or [4, 8, 16], method)
    elif mode == "buckets":
        buckets(sys.argv[2], [int(a) for a in sys.argv[3:]] or [16, 64])
    elif mode == "threshold":
        threshold([int(a) for a in sys.argv[2:]] or [100_000, 1_000_000])
    elif mode == "_threshold":
        print(json.dumps(threshold_point(Path(sys.argv[2]), sys.argv[3])))
    elif mode == "walk":
        print(json.dumps(walk_only(int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000, 64)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
