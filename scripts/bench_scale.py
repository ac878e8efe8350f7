"""End-to-end scale: wall time and peak RSS of embed → pack → stats --verify on synthetic SFT data.

    python scripts/bench_scale.py 100000 1000000            # one command: pack INPUT --model static (issue 23)
    python scripts/bench_scale.py --stages 100000           # embed --model static, then pack RUN, --threshold auto
    python scripts/bench_scale.py --precomputed 1000000      # embed --embeddings (clustered vectors), threshold 0.6
    python scripts/bench_scale.py --filters 100000           # + what --dedup / --decontaminate add to pack

Per N, in a temporary directory: N question/answer records (JSONL) written from templates over 50 topics, each
topic with its own vocabulary and question forms, lengths varied, and 5% near-duplicates (an earlier question
with one word changed), so clusters and near-duplicates exist. By default the one command a user runs is timed:
`tfpack pack data.jsonl --model static` (embed, order, tokenize, pack, write; the static model already cached, so
run once before timing on a fresh machine), then `tfpack stats --verify` checks its output (not timed). Each stage
is the real command line in its own process, so the peak RSS reported is that stage's own (from wait4). With
--stages or --precomputed: `tfpack embed` (ingest, the static
model, storage as float16; with --precomputed, float16 vectors clustered by topic instead of a model),
`tfpack pack` (ordering with the auto threshold, or 0.6 with --precomputed; tokenization, packing, shards) and
`tfpack stats --verify`.

With --filters, `pack` is then run three more times on the same run directory (its kNN graph and threshold cached
by the first pack, so all three pay the same): plain, `--dedup 0.98`, and `--dedup 0.98 --decontaminate BENCH`
where BENCH is 1,000 held-out records from the same generator (another seed) plus 50 exact copies of training
records. Printed: each pack's wall time against the plain one (which moves with how many samples are removed:
fewer to walk, tokenize and write) and the seconds pack spent finding near-duplicates and contamination, as a
share of the plain pack's wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "function",
    "value",
    "return",
    "number",
    "matrix",
    "vector",
    "train",
    "model",
    "data",
    "sample",
    "compute",
    "integer",
    "string",
    "list",
    "dict",
    "loop",
    "error",
    "python",
    "rust",
    "graph",
    "tree",
    "path",
    "node",
    "edge",
    "weight",
    "cost",
    "sum",
    "mean",
]


FORMS = [
    "How do I {v} the {a} {b} when the {c} is {d}?",
    "Explain why a {a} {b} needs {c} before you {v} it.",
    "Write a short guide to {v} {a} {b} with {c} and {d}.",
    "What is the difference between a {a} {b} and a {c} {d}?",
    "Given a {a} of {b}, {v} every {c} and report the {d}.",
]
VERBS = ["compute", "sort", "train", "merge", "index", "compress", "validate", "plot", "cache", "reduce"]


def write_data(path: Path, n: int, topics: int = 50, seed: int = 0) -> np.ndarray:
    """`n` records from per-topic templates, 5% of them near-duplicates of an earlier one; returns each topic."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, topics, n)
    vocab = [
        [f"{w}{t}" if rng.random() < 0.5 else w for w in rng.choice(WORDS, 12, replace=False)] for t in range(topics)
    ]
    forms = [rng.choice(len(FORMS), 2, replace=False) for _ in range(topics)]
    lengths = rng.integers(4, 120, n)
    words = np.asarray(WORDS)
    questions: list[str] = []
    with open(path, "wb") as f:
        for start in range(0, n, 50_000):
            lines = []
            for i in range(start, min(n, start + 50_000)):
                t = topic[i]
                if questions and rng.random() < 0.05:  # a near-duplicate: an earlier question, one word changed
                    parts = questions[int(rng.integers(0, len(questions)))].split()
                    parts[int(rng.integers(0, len(parts)))] = str(rng.choice(words))
                    q = " ".join(parts)
                else:
                    fill = rng.choice(vocab[t], 4)
                    q = FORMS[forms[t][int(rng.integers(0, 2))]].format(
                        v=rng.choice(VERBS), a=fill[0], b=fill[1], c=fill[2], d=fill[3]
                    )
                questions.append(q)
                a = " ".join(rng.choice(vocab[t] + list(words), lengths[i]))
                lines.append(orjson.dumps({"question": q, "answer": a}))
            f.write(b"\n".join(lines) + b"\n")
    return topic


def write_embeddings(path: Path, topic: np.ndarray, d: int = 384, seed: int = 0) -> None:
    """Unit float16 rows: the record's topic centre plus noise, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(topic.max()) + 1, d)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(topic), d))
    for start in range(0, len(topic), 100_000):
        t = topic[start : start + 100_000]
        x = centres[t] + 1.2 * rng.normal(size=(len(t), d)).astype(np.float32)
        out[start : start + len(t)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()


def run_stage(*args: str) -> tuple[dict, float, float]:
    """(summary, wall seconds, peak RSS GiB) of one stage in a fresh process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "tfpack", *args, "--json"], stdout=subprocess.PIPE, stderr=err)
        stdout = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            err.seek(0)
            raise SystemExit(f"tfpack {' '.join(args)} failed: {err.read().decode().strip()}")
    return json.loads(stdout), time.perf_counter() - started, usage.ru_maxrss / 2**20


DEDUP_S = 0.98  # the static model puts this synthetic data's templated questions close: 0.9 would remove nearly all


def filter_overheads(root: Path, max_len: int, precomputed: bool) -> None:
    """`pack` wall time with --dedup and --decontaminate against a plain pack of the same (cached) run."""
    write_data(root / "bench.jsonl", 1000, seed=1)
    lines = (root / "data.jsonl").read_bytes().splitlines()
    copies = lines[:: max(1, len(lines) // 50)]
    with open(root / "bench.jsonl", "ab") as f:
        f.write(b"\n".join(copies[:50]) + b"\n")
    base = ["pack", str(root / "run"), "--tokenizer", "packaged-minilm", "--max-len", str(max_len), "--overwrite"]
    base += ["--threshold", "0.6" if precomputed else "auto", "--quiet"]
    runs = [
        ("pack (plain, cached kNN)", []),
        (f"pack --dedup {DEDUP_S}", ["--dedup", str(DEDUP_S)]),
        ("+ --decontaminate", ["--dedup", str(DEDUP_S), "--decontaminate", str(root / "bench.jsonl")]),
    ]
    plain = None
    for name, extra in runs:
        summary, seconds, rss = run_stage(*base, "-o", str(root / "filtered"), *extra)
        plain = plain or seconds
        work = summary["dedup_seconds"] + summary["decontaminate_seconds"]
        print(
            f"  {name:<26}{seconds:>8.1f} s  peak RSS {rss:>6.2f} GiB  wall {100 * (seconds / plain - 1):+5.1f}%  "
            f"dedup {summary['dedup_seconds']:.1f} s + decontaminate {summary['decontaminate_seconds']:.1f} s = "
            f"{100 * work / plain:.1f}% of the plain pack  near-duplicates {summary['near_duplicates']:,}  "
            f"contaminated {summary['contaminated']:,}",
            flush=True,
        )


def one_command(n: int, max_len: int) -> None:
    """`tfpack pack data.jsonl --model static`: wall time and peak RSS of the one process, then its output verified."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_data(root / "data.jsonl", n)
        print(
            f"N={n:,}: synthetic data written in {time.perf_counter() - started:.0f} s "
            f"({(root / 'data.jsonl').stat().st_size / 2**20:.0f} MiB JSONL)",
            flush=True,
        )
        args = ["pack", str(root / "data.jsonl"), "--model", "static", "-o", str(root / "out")]
        args += ["--tokenizer", "packaged-minilm", "--max-len", str(max_len), "--quiet"]
        summary, seconds, rss = run_stage(*args)
        print(
            f"  {'pack INPUT --model static':<28}{seconds:>8.1f} s  peak RSS {rss:>6.2f} GiB"
            f"  packs {summary['packs']:,}"
            f"  fill {summary['fill_rate']:.4f}  samples {summary['samples']:,}  threshold {summary['threshold']:.4f}",
            flush=True,
        )
        steps = summary.get("step_seconds", {})
        print(f"  steps (s): {', '.join(f'{k} {v:.1f}' for k, v in steps.items())}", flush=True)
        manifest = orjson.loads((root / "out" / "manifest.json").read_bytes())
        order = manifest.get("order", {})
        print(f"  order: {', '.join(f'{k} {v}' for k, v in order.items())}", flush=True)
        summary, seconds, _ = run_stage("stats", str(root / "out"), "--verify", "--quiet")
        print(
            f"  stats --verify (not timed above): ok={summary['verify']['ok']}  pack sim "
            f"{summary['mean_pack_similarity']:.4f} vs random {summary['random_pack_similarity']:.4f}",
            flush=True,
        )


def point(n: int, max_len: int, precomputed: bool, filters: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        topic = write_data(root / "data.jsonl", n)
        if precomputed:
            write_embeddings(root / "emb.npy", topic)
        source = ["--embeddings", str(root / "emb.npy")] if precomputed else ["--model", "static"]
        print(
            f"N={n:,}: synthetic data written in {time.perf_counter() - started:.0f} s "
            f"({(root / 'data.jsonl').stat().st_size / 2**20:.0f} MiB JSONL)",
            flush=True,
        )
        stages = [
            (
                "embed (precomputed)" if precomputed else "embed (static)",
                [
                    "embed",
                    str(root / "data.jsonl"),
                    "-o",
                    str(root / "run"),
                    *source,
                    "--dtype",
                    "float16",
                    "--quiet",
                ],
            ),
            (
                "pack",
                [
                    "pack",
                    str(root / "run"),
                    "-o",
                    str(root / "out"),
                    "--tokenizer",
                    "packaged-minilm",
                    "--max-len",
                    str(max_len),
                    "--threshold",
                    "0.6" if precomputed else "auto",
                    "--quiet",
                ],
            ),
            ("stats --verify", ["stats", str(root / "out"), "--verify", "--quiet"]),
        ]
        total, peak, dim = 0.0, 0.0, 384
        for name, args in stages:
            summary, seconds, rss = run_stage(*args)
            total, peak = total + seconds, max(peak, rss)
            dim = int(summary.get("dim", dim))
            extra = ""
            if name == "pack":
                extra = (
                    f"  packs {summary['packs']:,}  fill {summary['fill_rate']:.4f}  "
                    f"samples {summary['samples']:,}  dropped {summary['dropped']}  "
                    f"threshold {summary['threshold']:.4f}"
                )
            if name.startswith("stats"):
                extra = (
                    f"  verify ok={summary['verify']['ok']}  pack sim {summary['mean_pack_similarity']:.4f} "
                    f"vs random {summary['random_pack_similarity']:.4f}"
                )
            print(f"  {name:<22}{seconds:>8.1f} s  peak RSS {rss:>6.2f} GiB{extra}", flush=True)
        print(f"  {'all stages':<22}{total:>8.1f} s  peak RSS {peak:>6.2f} GiB (the largest stage's)", flush=True)
        emb_gib = n * dim * 2 / 2**30
        graph_gib = n * 64 * 8 / 2**30
        print(f"  on disk: embeddings {emb_gib:.2f} GiB (float16), kNN graph {graph_gib:.2f} GiB (k=64)")
        if filters:
            filter_overheads(root, max_len, precomputed)


def main() -> None:
    flags = {"--precomputed", "--filters", "--stages"}
    sizes = [int(a) for a in sys.argv[1:] if a not in flags] or [100_000, 1_000_000]
    staged = flags & set(sys.argv[1:])
    for n in sizes:
        if staged:
            point(n, max_len=2048, precomputed="--precomputed" in sys.argv, filters="--filters" in sys.argv)
        else:
            one_command(n, max_len=2048)


if __name__ == "__main__":
    main()
