"""End-to-end scale: wall time and peak RSS of embed → pack → stats --verify on synthetic SFT data.

    python scripts/bench_scale.py 100000 1000000

Per N, in a temporary directory: N question/answer records over 50 topics with varied lengths (JSONL), and
precomputed float16 embeddings clustered by topic (a model would take hours on 2 CPU cores; embedding speed is
scripts/bench_embed.py's job). Each stage is the real command line in its own process, so the peak RSS reported
is that stage's own (from wait4). Stages: `tfpack embed --embeddings` (ingest + checks + storage), `tfpack pack`
(ordering with a fixed threshold, tokenization, packing, shards) and `tfpack stats --verify`.
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


def write_data(path: Path, n: int, topics: int = 50, seed: int = 0) -> np.ndarray:
    """`n` records; returns each record's topic."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, topics, n)
    lengths = rng.integers(8, 160, size=(n, 2))
    words = np.asarray(WORDS)
    with open(path, "wb") as f:
        for start in range(0, n, 50_000):
            lines = []
            for i in range(start, min(n, start + 50_000)):
                q = " ".join(words[rng.integers(0, len(words), lengths[i, 0])])
                a = " ".join(words[rng.integers(0, len(words), lengths[i, 1])])
                lines.append(orjson.dumps({"question": f"Topic {topic[i]}: {q}?", "answer": a}))
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


def point(n: int, max_len: int, threshold: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        topic = write_data(root / "data.jsonl", n)
        write_embeddings(root / "emb.npy", topic)
        print(
            f"N={n:,}: synthetic data written in {time.perf_counter() - started:.0f} s "
            f"({(root / 'data.jsonl').stat().st_size / 2**20:.0f} MiB JSONL)",
            flush=True,
        )
        stages = [
            (
                "embed (precomputed)",
                [
                    "embed",
                    str(root / "data.jsonl"),
                    "-o",
                    str(root / "run"),
                    "--embeddings",
                    str(root / "emb.npy"),
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
                    str(threshold),
                    "--quiet",
                ],
            ),
            ("stats --verify", ["stats", str(root / "out"), "--verify", "--quiet"]),
        ]
        for name, args in stages:
            summary, seconds, rss = run_stage(*args)
            extra = ""
            if name == "pack":
                extra = (
                    f"  packs {summary['packs']:,}  fill {summary['fill_rate']:.4f}  "
                    f"samples {summary['samples']:,}  dropped {summary['dropped']}"
                )
            if name.startswith("stats"):
                extra = (
                    f"  verify ok={summary['verify']['ok']}  pack sim {summary['mean_pack_similarity']:.4f} "
                    f"vs random {summary['random_pack_similarity']:.4f}"
                )
            print(f"  {name:<22}{seconds:>8.1f} s  peak RSS {rss:>6.2f} GiB{extra}", flush=True)
        emb_gib = n * 384 * 2 / 2**30
        graph_gib = n * 64 * 8 / 2**30
        print(f"  on disk: embeddings {emb_gib:.2f} GiB (float16), kNN graph {graph_gib:.2f} GiB (k=64)")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    for n in sizes:
        point(n, max_len=2048, threshold=0.6)


if __name__ == "__main__":
    main()
