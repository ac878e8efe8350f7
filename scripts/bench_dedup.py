"""Benchmark `--dedup` (tfpack.filters.dedup) against a float64 brute force and SemHash, given the same vectors.

For each data set, model and S: seconds and peak traced memory of tfpack's rule (kNN graph k=64 + pairs + greedy
keep) and of SemHash (`pip install 'tfpack[bench]'`; its default usearch index) on the same vectors, both warmed up
once first and both timed with tracemalloc on; samples removed, recall/precision of tfpack's pairs >= S against
every pair's float64 cosine, the removals of the old rule (connected components) whose kept sample is below S
(chains), the new rule's (must be 0), and the Jaccard of tfpack's and SemHash's removed sets. On GSM8K and
GPTeacher also static vs full model: removed by the static model's own cosine, and by tfpack's scheme (rows whose
nearest static neighbour is >= S - margin are candidates, the full model decides among them), each against the
full model alone (Jaccard); the share of the full model's pairs whose rows are both candidates and the number of
candidates per margin; the fewest candidates any static cutoff could have without missing a pair (known only in
hindsight); and the full model's measured samples/s with the seconds it needs for the candidates and for every
sample (what SemHash given the full model embeds).

    python scripts/bench_dedup.py --gsm8k ../shared/data/gsm8k_train.jsonl \
        --gpteacher ../shared/data/gpteacher_codegen.json --synthetic 20000 --cache /tmp/dd
    python scripts/bench_dedup.py --scale 100000      # what --dedup adds to pack on a static run (projected)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tfpack.config import EmbedConfig
from tfpack.embedding.encoders import encode_texts, load_encoder
from tfpack.filters.dedup import (
    CANDIDATE_MARGIN,
    Duplicates,
    close_pairs,
    compared_texts,
    keep_greedy,
    proposed_duplicates,
)
from tfpack.ordering.knn import build_knn
from tfpack.workdir import SAMPLES_FILE

K = 64
MODELS = {"static": "static", "minilm": "all-MiniLM-L6-v2"}


def judge_pairs(x: np.ndarray, min_cos: float) -> np.ndarray:
    """Every pair (a < b) with float64 cosine >= min_cos, as sorted keys a * n + b, block by block."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n, block = len(x), max(1, 2**25 // len(x))  # 256 MiB of float64 similarities per block
    keys = []
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T
        rows, cols = np.nonzero(sims >= min_cos)
        rows = rows + start
        keep = rows < cols
        keys.append(rows[keep].astype(np.int64) * n + cols[keep])
    return np.sort(np.concatenate(keys))


def split(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return keys // n, keys % n


def cosine64(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    xa, xb = x[a].astype(np.float64), x[b].astype(np.float64)
    return np.einsum("ij,ij->i", xa, xb) / (np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1))


def components_removed(n: int, pairs: np.ndarray, x: np.ndarray, min_cos: float) -> tuple[int, int, float]:
    """The old rule (one kept per connected component, the first): removed, removed below S to their keeper, and
    the lowest such cosine."""
    if not len(pairs):
        return 0, 0, 1.0
    a, b = split(pairs, n)
    _, label = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    sizes = np.bincount(label)
    first = np.full(len(sizes), n)
    np.minimum.at(first, label, np.arange(n))
    removed = np.flatnonzero((sizes[label] > 1) & (first[label] != np.arange(n)))
    cos = cosine64(x, removed, first[label[removed]])
    below = cos[cos < min_cos]
    return len(removed), len(below), round(float(below.min()), 4) if len(below) else 1.0


def check_rule(found: Duplicates, x: np.ndarray, min_cos: float, pairs: np.ndarray) -> dict[str, int]:
    """Removed samples whose kept sample is below S, and kept pairs >= S (both must be 0)."""
    removed = found.removed
    below = int((cosine64(x, removed, found.kept_as[removed]) < min_cos).sum())
    kept = found.kept_as < 0
    a, b = split(pairs, len(x))
    return {"removed_below_S": below, "kept_pairs_at_S": int((kept[a] & kept[b]).sum())}


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, seconds, and peak traced memory (MiB: numpy/python allocations, not faiss's)."""
    tracemalloc.start()
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, round(seconds, 3), round(peak, 1)


def tfpack_rule(x: np.ndarray, min_cos: float) -> tuple[Duplicates, np.ndarray]:
    ids, sims, _ = build_knn(x, min(K, len(x) - 1), "exact")
    skip = np.zeros(len(x), dtype=np.bool_)
    a, b, cos = close_pairs(x, ids, sims, min_cos, skip)  # what near_duplicates does, pairs kept for the recall
    found = keep_greedy(len(x), a, b, cos, np.arange(len(x)))
    return found, np.sort(a * len(x) + b)


def semhash_removed(x: np.ndarray, min_cos: float) -> tuple[set[int], float, float] | None:
    """SemHash's removed rows on vectors `x` (its encoder returns them), its seconds and peak traced memory (timed
    as tfpack's rule is), or None when it is not installed."""
    try:
        from semhash import SemHash
    except ImportError:
        return None

    class Given:
        def encode(self, inputs: Any, **_: Any) -> np.ndarray:
            return x[[int(t) for t in inputs]]

    records = [str(i) for i in range(len(x))]
    result, seconds, peak = timed(
        lambda: SemHash.from_records(records, model=Given()).self_deduplicate(threshold=min_cos)
    )
    return {int(item.record) for item in result.filtered}, seconds, peak


def warm_up() -> None:
    """Both tools once on a small set, so no row pays a process's first-call costs (numba's and faiss's loading,
    usearch's) that a `pack` run has paid before its filters."""
    x = synthetic(2048)
    tfpack_rule(x, 0.9)
    semhash_removed(x, 0.9)


def jaccard(a: set[int], b: set[int]) -> float:
    return round(len(a & b) / len(a | b), 4) if a | b else 1.0


def bench(name: str, x: np.ndarray, min_cos: float) -> dict[str, Any]:
    (found, pairs), seconds, peak = timed(lambda: tfpack_rule(x, min_cos))
    truth = judge_pairs(x, min_cos)
    removed = set(found.removed.tolist())
    old, old_below, old_lowest = components_removed(len(x), truth, x, min_cos)
    common = len(np.intersect1d(pairs, truth, assume_unique=True))
    row: dict[str, Any] = {
        "data": name,
        "n": len(x),
        "S": min_cos,
        "seconds": seconds,
        "peak_mib": peak,
        "removed": len(removed),
        "pairs_at_S": len(truth),
        "pair_recall": round(common / max(len(truth), 1), 6),
        "pair_precision": round(common / max(len(pairs), 1), 6),
        **check_rule(found, x, min_cos, truth),
        "components_removed": old,
        "components_removed_below_S": old_below,
        "components_lowest_cos": old_lowest,
    }
    semhash = semhash_removed(x, min_cos)
    if semhash is not None:
        row |= {
            "semhash_seconds": semhash[1],
            "semhash_peak_mib": semhash[2],
            "semhash_removed": len(semhash[0]),
            "jaccard": jaccard(removed, semhash[0]),
        }
    return row


def texts_of(path: Path, on: str) -> list[str]:
    """GSM8K (question / answer JSONL) or GPTeacher (instruction / input / response JSON array) samples: the
    whole sample (`on` full) or the prompt."""
    if path.suffix == ".jsonl":
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        return [r["question"] + "\n" + r["answer"] if on == "full" else r["question"] for r in rows]
    prompts = [
        r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "") for r in orjson.loads(path.read_bytes())
    ]
    answers = [r["response"] for r in orjson.loads(path.read_bytes())]
    return [p + "\n" + a if on == "full" else p for p, a in zip(prompts, answers, strict=True)]


def data_vectors(path: Path, cache: Path, on: str) -> dict[str, np.ndarray]:
    """The samples of `path` (see `texts_of`) embedded by each model, cached in `cache`."""
    texts = texts_of(path, on)
    out = {}
    for name, model in MODELS.items():
        file = cache / f"{path.stem.split('_')[0][:3]}_{name}_{on}.npy"
        if not file.is_file():
            encoder, resolved = load_encoder(EmbedConfig(model=model, device="cpu"))
            np.save(file, encode_texts(encoder, texts, resolved["batch_size"]))
        out[name] = np.load(file)
    return out


def full_model_rate(texts: list[str], n: int = 256) -> float:
    """Samples per second of the full model (its default CPU route) on `n` of `texts`, after a warm-up batch."""
    encoder, resolved = load_encoder(EmbedConfig(model=MODELS["minilm"], device="cpu"))
    encode_texts(encoder, texts[:16], resolved["batch_size"])
    chosen = texts[:: max(1, len(texts) // n)][:n]
    started = time.perf_counter()
    encode_texts(encoder, chosen, resolved["batch_size"])
    return len(chosen) / (time.perf_counter() - started)


def static_vs_full(static: np.ndarray, full: np.ndarray, min_cos: float, rate: float) -> dict[str, Any]:
    """What the static model removes by its own cosine and by tfpack's scheme, each against the full model's; how
    many rows the scheme embeds with the full model (and at `rate` samples/s, for how long), against the fewest any
    static cutoff could embed without missing a pair (the cutoff at the lowest static cosine of a full-model pair
    >= S, known only in hindsight)."""
    n = len(full)
    rank = np.arange(n)
    skip = np.zeros(n, dtype=np.bool_)
    reference = set(tfpack_rule(full, min_cos)[0].removed.tolist())
    own = set(tfpack_rule(static, min_cos)[0].removed.tolist())
    ids, sims, _ = build_knn(static, K, "exact")
    (scheme, counts), seconds, _ = timed(
        lambda: proposed_duplicates(static, ids, sims, min_cos, rank, lambda rows: full[rows], skip)
    )
    a, b = split(judge_pairs(full, min_cos), n)
    recall = {}
    for margin in (0.0, 0.05, 0.1):
        candidate = sims[:, 0] >= min_cos - margin - 1e-3
        recall[str(margin)] = {
            "pair_recall": round(float((candidate[a] & candidate[b]).mean()), 4) if len(a) else 1.0,
            "candidates": int(candidate.sum()),
        }
    lowest = float(cosine64(static, a, b).min()) if len(a) else 1.0
    removed = set(scheme.removed.tolist())
    return {
        "S": min_cos,
        "full_removed": len(reference),
        "static_own_removed": len(own),
        "static_own_jaccard": jaccard(own, reference),
        "scheme_removed": len(removed),
        "scheme_jaccard": jaccard(removed, reference),
        "scheme_seconds_given_full_vectors": seconds,
        **counts,
        "full_model_seconds_for_candidates": round(counts["candidates"] / rate, 1),
        "full_model_seconds_for_all": round(n / rate, 1),
        "hindsight_static_cutoff": round(lowest, 4),
        "hindsight_candidates": int((sims[:, 0] >= lowest - 1e-3).sum()),
        "candidate_recall_by_margin": recall,
    }


def synthetic(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Unit rows: a third in groups of 2-300 near-copies (many larger than k = 64) at spreads that put pairs on
    both sides of 0.85-0.95, the rest unrelated."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(size=(n - n // 3, dim))]
    left = n // 3
    while left > 0:
        size = min(left, int(rng.choice([2, 5, 20, 100, 300])))
        centre = rng.normal(size=dim)
        spread = rng.choice([0.2, 0.3, 0.4]) * np.linalg.norm(centre) / np.sqrt(dim)
        rows.append(centre + spread * rng.normal(size=(size, dim)))
        left -= size
    x = np.concatenate(rows)[rng.permutation(n)]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def scale_overhead(n: int, min_cos: float) -> dict[str, Any]:
    """What `--dedup S` adds to `pack` on a `--model static` run of `n` samples of scripts/bench_scale.py's data:
    the plain pack's wall time (its own process), the rows dedup embeds with the full model (whole samples whose
    nearest static neighbour is >= S - margin, as `dedup_run` picks them) and, at the full model's samples/s
    measured on 256 of them, the seconds those take, as a share of the plain pack (a projection: embedding them
    all would take hours on a shared 2-core machine)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import run_stage, write_data

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_data(root / "data.jsonl", n)
        run = str(root / "run")
        run_stage("embed", str(root / "data.jsonl"), "-o", run, "--model", "static", "--dtype", "float16", "--quiet")
        pack = ["pack", run, "-o", str(root / "out"), "--tokenizer", "packaged-minilm", "--max-len", "2048"]
        _, pack_seconds, _ = run_stage(*pack, "--threshold", "auto", "--quiet")
        texts, _ = compared_texts(root / "run" / SAMPLES_FILE, "full")
    encoder, resolved = load_encoder(EmbedConfig(model="static", device="cpu"))
    started = time.perf_counter()
    static = encode_texts(encoder, texts, resolved["batch_size"])
    _, sims, _ = build_knn(static, K, "auto")
    static_seconds = time.perf_counter() - started
    candidates = np.flatnonzero(sims[:, 0] >= min_cos - CANDIDATE_MARGIN - 1e-3)
    rate = full_model_rate([texts[i] for i in candidates])
    return {
        "data": f"bench_scale {n:,}",
        "S": min_cos,
        "plain_pack_seconds": round(pack_seconds, 1),
        "static_proposal_seconds": round(static_seconds, 1),
        "candidates": len(candidates),
        "full_model_samples_per_s": round(rate, 1),
        "full_model_seconds_for_candidates": round(len(candidates) / rate, 1),
        "overhead_share_of_plain_pack": round((static_seconds + len(candidates) / rate) / pack_seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm8k", type=Path)
    parser.add_argument("--gpteacher", type=Path, help="GPTeacher codegen JSON (instruction / input / response)")
    parser.add_argument("--synthetic", type=int, default=0, help="rows of the synthetic set (0: none)")
    parser.add_argument("--synthetic-s", type=float, nargs="+", default=[0.95, 0.9], help="S on the synthetic set")
    parser.add_argument("--scale", type=int, default=0, help="samples of bench_scale's data: --dedup's cost (0: none)")
    parser.add_argument("--scale-s", type=float, default=0.98, help="S for --scale (bench_scale --filters uses 0.98)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_dedup"), help="embeddings cached here")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    warm_up()
    for path, static_at in ((args.gsm8k, {"prompt": (0.9, 0.85), "full": (0.95, 0.9)}), (args.gpteacher, {})):
        if path is None:
            continue
        name = path.stem.split("_")[0]
        rate = full_model_rate(texts_of(path, "full"))
        print(json.dumps({"data": name, "full_model_samples_per_s": round(rate, 1)}), flush=True)
        for on in ("prompt", "full"):
            vectors = data_vectors(path, args.cache, on)
            at = static_at.get(on, (0.95, 0.9))  # GSM8K whole samples: 4M static pairs at 0.85
            for model, min_cos in [("static", s) for s in at] + [("minilm", 0.9), ("minilm", 0.85)]:
                rows.append(bench(f"{name} {on} {model}", vectors[model], min_cos))
                print(json.dumps(rows[-1]), flush=True)
            for min_cos in (0.95, 0.9, 0.85):
                compared = static_vs_full(vectors["static"], vectors["minilm"], min_cos, rate)
                rows.append({"data": f"{name} {on} static vs minilm", **compared})
                print(json.dumps(rows[-1]), flush=True)
    if args.synthetic:
        x = synthetic(args.synthetic)
        for min_cos in args.synthetic_s:
            rows.append(bench("synthetic d=64", x, min_cos))
            print(json.dumps(rows[-1]), flush=True)
    if args.scale:
        rows.append(scale_overhead(args.scale, args.scale_s))
        print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
