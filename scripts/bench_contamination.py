"""Measure decontamination: n-gram matching speed at training-set scale, and the cosines behind the threshold.

`ngrams` times `tfpack.filters.contamination.ngram_matches`. Training texts: GSM8K train from ../shared/data
(`question` + `answer`), repeated to --n texts, each text doubled with --double (~190 words instead of ~97, "a few
hundred words"); benchmarks: the first --bench GSM8K rows themselves, so every copy of them is a hit. Without the
data file, synthetic texts of random words stand in. Prints the time of a first (numba compile, unless cached) and of
a second call.

`cosines` embeds, with --model (as `tfpack embed --model`), the hand-written paraphrases of the tests
(tests/ordering/test_contamination.py) and their benchmark items, the same-topic items there, and the first --n GSM8K
train questions: cosines of paraphrases to their items, of same-topic items to their nearest item, and the
distribution of each GSM8K question's nearest other question (distinct items of one benchmark-like set).

`decide` measures the static-run scheme (`proposed_nearest`): the first --items samples of a data set are the
benchmark items, the rest the training samples, both embedded (on --embed-on) by the static model and by
all-MiniLM-L6-v2 (cached as scripts/bench_dedup.py caches them); per threshold, the training samples whose nearest
item by MiniLM is >= it (a float64 brute force, the truth), the candidates (nearest item by the static model >=
threshold - 0.1), the scheme's recall and precision against the truth, and what the static model alone flags.

    python scripts/bench_contamination.py ngrams --n 100000 --bench 1319 --double
    python scripts/bench_contamination.py cosines --model all-MiniLM-L6-v2 --n 2000
    python scripts/bench_contamination.py decide --data ../shared/data/gsm8k_train.jsonl --items 1000 --cache /tmp/dd
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import orjson
from benchenv import cpu_line

import tfpack
from tfpack.filters.contamination import NGRAM, ngram_matches

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"


def gsm8k_texts() -> list[str]:
    rows = [orjson.loads(line) for line in GSM8K.read_bytes().splitlines() if line.strip()]
    return [f"{r['question']}\n{r['answer']}" for r in rows]


def synthetic_texts(n: int, words: int = 120, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    return [" ".join(vocab[rng.integers(0, len(vocab), words)]) for _ in range(n)]


def ngrams(args: argparse.Namespace) -> None:
    base = gsm8k_texts() if GSM8K.is_file() else synthetic_texts(7473)
    source = "gsm8k_train" if GSM8K.is_file() else "synthetic"
    train = [base[i % len(base)] for i in range(args.n)]
    if args.double:
        train = [f"{t}\n{t}" for t in train]
    bench = base[: args.bench]
    n_words = sum(len(t.split()) for t in train)
    print(f"training: {len(train)} {source} texts, ~{n_words / len(train):.0f} whitespace words each")
    print(f"benchmarks: {len(bench)} items; n = {NGRAM}")
    for run in ("first", "second"):
        started = time.perf_counter()
        found = ngram_matches(train, bench)
        seconds = time.perf_counter() - started
        hits = int((found.item >= 0).sum())
        print(f"{run} call: {seconds:.2f} s, {len(train) / seconds:,.0f} texts/s, {hits} contaminated")


def cosines(args: argparse.Namespace) -> None:
    from tfpack.config import EmbedConfig
    from tfpack.embedding.encoders import encode_texts, load_encoder

    sys.path.insert(0, str(ROOT))
    from tests.ordering.test_contamination import CHAT, CODE, MATH, PARAPHRASES, SAME_TOPIC

    model, resolved = load_encoder(EmbedConfig(model=args.model, device="cpu"))
    print(f"model {args.model}: backend {resolved['backend']}, precision {resolved['precision']}")
    items = [q for q, _ in MATH] + [c["prompt"] for c in CODE] + ["\n".join(c["turns"]) for c in CHAT]
    item_emb = encode_texts(model, items, 16)
    para_emb = encode_texts(model, ["\n".join(p) for p in PARAPHRASES], 16)
    same_emb = encode_texts(model, SAME_TOPIC, 16)
    print("paraphrase -> its item:", " ".join(f"{c:.3f}" for c in (item_emb * para_emb).sum(1)))
    print("same-topic -> nearest item:", " ".join(f"{c:.3f}" for c in (same_emb @ item_emb.T).max(1)))
    if not GSM8K.is_file():
        return
    rows = [orjson.loads(line) for line in GSM8K.read_bytes().splitlines()[: args.n]]
    emb = encode_texts(model, [r["question"] for r in rows], 16)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -1.0)
    nearest = sims.max(1)
    quantiles = np.quantile(nearest, [0.5, 0.9, 0.99, 0.999])
    print(
        f"GSM8K, {len(rows)} questions, nearest other question: median {quantiles[0]:.3f}, p90 {quantiles[1]:.3f}, "
        f"p99 {quantiles[2]:.3f}, p99.9 {quantiles[3]:.3f}, max {nearest.max():.3f}"
    )
    for threshold in (0.8, 0.85, 0.9, 0.95):
        print(f"  share with another question at cos >= {threshold}: {(nearest >= threshold).mean():.2%}")


def decide(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_dedup import data_vectors

    from tfpack.filters.contamination import BenchmarkItems, proposed_nearest
    from tfpack.ingest.readers import Location

    args.cache.mkdir(parents=True, exist_ok=True)
    vectors = data_vectors(args.data, args.cache, args.embed_on)
    static, full = vectors["static"], vectors["minilm"]
    m = args.items
    items = BenchmarkItems([Location(str(args.data), "row", i) for i in range(m)], [""] * m, [""] * m)
    exact = full[m:].astype(np.float64) @ full[:m].astype(np.float64).T
    exact /= np.linalg.norm(full[m:].astype(np.float64), axis=1)[:, None]
    exact /= np.linalg.norm(full[:m].astype(np.float64), axis=1)[None, :]
    own = (static[m:] @ static[:m].T).max(1)
    for threshold in args.thresholds:
        truth = exact.max(1) >= threshold
        found, candidates = proposed_nearest(
            items, static[m:], static[:m], threshold, lambda rows: full[m:][rows], full[:m]
        )
        flagged = found.cos >= threshold
        both = int((flagged & truth).sum())
        print(
            f"{args.data.name} {args.embed_on}, {m} items, {len(static) - m} training samples, threshold {threshold}: "
            f"MiniLM flags {int(truth.sum())}; candidates {candidates}; scheme flags {int(flagged.sum())} "
            f"(recall {both / max(int(truth.sum()), 1):.4f}, precision {both / max(int(flagged.sum()), 1):.4f}); "
            f"static alone flags {int((own >= threshold).sum())}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("ngrams", help="time n-gram matching")
    timing.add_argument("--n", type=int, default=100_000, help="training texts")
    timing.add_argument("--bench", type=int, default=1319, help="benchmark items (GSM8K test has 1319)")
    timing.add_argument("--double", action="store_true", help="each training text twice over (longer texts)")
    measure = commands.add_parser("cosines", help="cosines of paraphrases and distinct items")
    measure.add_argument("--model", default="all-MiniLM-L6-v2", help="as `tfpack embed --model` (e.g. static)")
    measure.add_argument("--n", type=int, default=2000, help="GSM8K questions")
    scheme = commands.add_parser("decide", help="static proposes, MiniLM decides: recall against MiniLM alone")
    scheme.add_argument("--data", type=Path, default=GSM8K, help="GSM8K-style JSONL or GPTeacher JSON")
    scheme.add_argument("--items", type=int, default=1000, help="the first samples, taken as benchmark items")
    scheme.add_argument("--embed-on", choices=("prompt", "full"), default="prompt")
    scheme.add_argument("--thresholds", type=float, nargs="+", default=[0.85, 0.9])
    scheme.add_argument("--cache", type=Path, default=Path("/tmp/bench_dedup"), help="embeddings cached here")
    args = parser.parse_args()
    print(f"tfpack {tfpack.__version__}, python {platform.python_version()}, numpy {np.__version__}")
    print(f"CPU: {cpu_line()}")
    if args.command == "ngrams":
        ngrams(args)
    elif args.command == "cosines":
        cosines(args)
    else:
        decide(args)


if __name__ == "__main__":
    main()
