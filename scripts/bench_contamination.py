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

    python scripts/bench_contamination.py ngrams --n 100000 --bench 1319 --double
    python scripts/bench_contamination.py cosines --model all-MiniLM-L6-v2 --n 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

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


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


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
    args = parser.parse_args()
    print(f"tfpack {tfpack.__version__}, python {platform.python_version()}, numpy {np.__version__}")
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores")
    if args.command == "ngrams":
        ngrams(args)
    else:
        cosines(args)


if __name__ == "__main__":
    main()
