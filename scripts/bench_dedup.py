"""Benchmark `--dedup` (tfpack.filters.dedup) against a float64 brute force and SemHash, given the same vectors.

For each data set, model and S: seconds and peak traced memory of tfpack's rule (kNN graph k=64 + pairs + greedy
keep), samples removed, recall/precision of its pairs >= S against every pair's float64 cosine, the removals of the
old rule (connected components) whose kept sample is below S (chains), the new rule's (must be 0), and SemHash
(`pip install 'tfpack[bench]'`; its default usearch index) on the same vectors: seconds, removed, Jaccard of the
removed sets. On GSM8K also static vs full model: removed by the static model's own cosine, and by tfpack's scheme
(rows whose nearest static neighbour is >= S - margin are candidates, the full model decides among them), each
against the full model alone (Jaccard), with the share of the full model's pairs whose rows are both candidates and
the number of candidates per margin.

    python scripts/bench_dedup.py --gsm8k ../shared/data/gsm8k_train.jsonl --synthetic 20000 --cache /tmp/dd
"""

from __future__ import annotations

import argparse
import json
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
from tfpack.filters.dedup import Duplicates, close_pairs, keep_greedy, proposed_duplicates
from tfpack.ordering.knn import build_knn

K = 64
MODELS = {"static": "static", "minilm": "all-MiniLM-L6-v2"}


def judge_pairs(x: np.ndarray, min_cos: float, block: int = 2048) -> set[tuple[int, int]]:
    """Every pair (a < b) with float64 cosine >= min_cos, block by block."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        rows, cols = np.nonzero(sims >= min_cos)
        rows = rows + start
        keep = rows < cols
        pairs |= set(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    return pairs


def cosine64(x: np.ndarray, a: int, b: int) -> float:
    xa, xb = x[a].astype(np.float64), x[b].astype(np.float64)
    return float(xa @ xb / (np.linalg.norm(xa) * np.linalg.norm(xb)))


def components_removed(n: int, pairs: set[tuple[int, int]], x: np.ndarray, min_cos: float) -> tuple[int, int, float]:
    """The old rule (one kept per connected component, the first): removed, removed below S to their keeper, and
    the lowest such cosine."""
    if not pairs:
        return 0, 0, 1.0
    a, b = np.array(sorted(pairs)).T
    _, label = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    sizes = np.bincount(label)
    first = np.full(len(sizes), n)
    np.minimum.at(first, label, np.arange(n))
    removed = [r for r in range(n) if sizes[label[r]] > 1 and first[label[r]] != r]
    cos = [cosine64(x, r, int(first[label[r]])) for r in removed]
    below = [c for c in cos if c < min_cos]
    return len(removed), len(below), round(min(below), 4) if below else 1.0


def check_rule(found: Duplicates, x: np.ndarray, min_cos: float, pairs: set[tuple[int, int]]) -> dict[str, int]:
    """Removed samples whose kept sample is below S, and kept pairs >= S (both must be 0)."""
    below = sum(cosine64(x, int(r), int(found.kept_as[r])) < min_cos for r in found.removed)
    kept = found.kept_as < 0
    return {"removed_below_S": int(below), "kept_pairs_at_S": int(sum(kept[a] and kept[b] for a, b in pairs))}


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, seconds, and peak traced memory (MiB: numpy/python allocations, not faiss's)."""
    tracemalloc.start()
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, round(seconds, 3), round(peak, 1)


def tfpack_rule(x: np.ndarray, min_cos: float) -> tuple[Duplicates, set[tuple[int, int]]]:
    ids, sims, _ = build_knn(x, min(K, len(x) - 1), "exact")
    skip = np.zeros(len(x), dtype=np.bool_)
    a, b, cos = close_pairs(x, ids, sims, min_cos, skip)  # what near_duplicates does, pairs kept for the recall
    found = keep_greedy(len(x), a, b, cos, np.arange(len(x)))
    return found, set(zip(a.tolist(), b.tolist(), strict=True))


def semhash_removed(x: np.ndarray, min_cos: float) -> tuple[set[int], float] | None:
    """SemHash's removed rows on vectors `x` (its encoder returns them), or None when it is not installed."""
    try:
        from semhash import SemHash
    except ImportError:
        return None

    class Given:
        def encode(self, inputs: Any, **_: Any) -> np.ndarray:
            return x[[int(t) for t in inputs]]

    records = [str(i) for i in range(len(x))]
    started = time.perf_counter()
    result = SemHash.from_records(records, model=Given()).self_deduplicate(threshold=min_cos)
    seconds = time.perf_counter() - started
    removed = {int(item.record) for item in result.filtered}
    return removed, round(seconds, 3)


def jaccard(a: set[int], b: set[int]) -> float:
    return round(len(a & b) / len(a | b), 4) if a | b else 1.0


def bench(name: str, x: np.ndarray, min_cos: float) -> dict[str, Any]:
    (found, pairs), seconds, peak = timed(lambda: tfpack_rule(x, min_cos))
    truth = judge_pairs(x, min_cos)
    removed = set(found.removed.tolist())
    old, old_below, old_lowest = components_removed(len(x), truth, x, min_cos)
    row: dict[str, Any] = {
        "data": name,
        "n": len(x),
        "S": min_cos,
        "seconds": seconds,
        "peak_mib": peak,
        "removed": len(removed),
        "pairs_at_S": len(truth),
        "pair_recall": round(len(pairs & truth) / max(len(truth), 1), 6),
        "pair_precision": round(len(pairs & truth) / max(len(pairs), 1), 6),
        **check_rule(found, x, min_cos, truth),
        "components_removed": old,
        "components_removed_below_S": old_below,
        "components_lowest_cos": old_lowest,
    }
    semhash = semhash_removed(x, min_cos)
    if semhash is not None:
        row |= {
            "semhash_seconds": semhash[1],
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


def static_vs_full(static: np.ndarray, full: np.ndarray, min_cos: float) -> dict[str, Any]:
    """What the static model removes by its own cosine and by tfpack's scheme, each against the full model's."""
    rank = np.arange(len(full))
    skip = np.zeros(len(full), dtype=np.bool_)
    reference = set(tfpack_rule(full, min_cos)[0].removed.tolist())
    own = set(tfpack_rule(static, min_cos)[0].removed.tolist())
    ids, sims, _ = build_knn(static, K, "exact")
    (scheme, counts), seconds, _ = timed(
        lambda: proposed_duplicates(static, ids, sims, min_cos, rank, lambda rows: full[rows], skip)
    )
    truth = judge_pairs(full, min_cos)
    recall = {}
    for margin in (0.0, 0.05, 0.1):
        candidate = sims[:, 0] >= min_cos - margin - 1e-3
        covered = sum(candidate[a] and candidate[b] for a, b in truth)
        recall[str(margin)] = {
            "pair_recall": round(covered / max(len(truth), 1), 4),
            "candidates": int(candidate.sum()),
        }
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm8k", type=Path)
    parser.add_argument("--gpteacher", type=Path, help="GPTeacher codegen JSON: static vs full model only")
    parser.add_argument("--synthetic", type=int, default=0, help="rows of the synthetic set (0: none)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_dedup"), help="embeddings cached here")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if args.gsm8k is not None:
        for on in ("prompt", "full"):
            vectors = data_vectors(args.gsm8k, args.cache, on)
            static_at = (0.9, 0.85) if on == "prompt" else (0.95, 0.9)  # whole samples: 4M static pairs at 0.85
            for name, min_cos in [("static", s) for s in static_at] + [("minilm", 0.9), ("minilm", 0.85)]:
                rows.append(bench(f"gsm8k {on} {name}", vectors[name], min_cos))
                print(json.dumps(rows[-1]), flush=True)
            for min_cos in (0.95, 0.9, 0.85):
                compared = static_vs_full(vectors["static"], vectors["minilm"], min_cos)
                rows.append({"data": f"gsm8k {on} static vs minilm", **compared})
                print(json.dumps(rows[-1]), flush=True)
    if args.gpteacher is not None:
        for on in ("prompt", "full"):
            vectors = data_vectors(args.gpteacher, args.cache, on)
            for min_cos in (0.95, 0.9):
                compared = static_vs_full(vectors["static"], vectors["minilm"], min_cos)
                rows.append({"data": f"gpteacher {on} static vs minilm", **compared})
                print(json.dumps(rows[-1]), flush=True)
    if args.synthetic:
        x = synthetic(args.synthetic)
        for min_cos in (0.95, 0.9):
            rows.append(bench("synthetic d=64", x, min_cos))
            print(json.dumps(rows[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
