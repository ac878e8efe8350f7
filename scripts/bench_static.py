"""The static-embedding path (`tfpack embed --model static`) against the full model, judged by what TFP needs.

For each dataset (the first --n samples of GSM8K train and GPTeacher codegen from ../shared/data), in one run:
- speed: plain sentence-transformers (the full all-MiniLM-L6-v2, fp32, on this CPU) vs the model2vec static model
  distilled from it, samples/s on the same prompt texts (model loading and distillation not timed; the one-off
  distillation time is printed);
- pack quality: TFP packs are built twice with `tfpack.pack` (same tokenizer, max_len, threshold rule), once from
  the full model's embeddings and once from the static ones, then both are scored with the *full* model's
  embeddings: mean pairwise cosine inside a pack, against random packs of the same sizes. The static path keeps
  `gain(static) / gain(full)` of TFP's gain over random packing.

Cold start (`--cold-start`): the whole process `tfpack pack INPUT --model static` on the first --n GSM8K samples
with an empty `TFPACK_CACHE`, so the static model is built first, for each checkout given (its `tfpack` imported
through PYTHONPATH), the checkouts alternating over --rounds, all in one run:

    python scripts/bench_static.py --n 2000
    python scripts/bench_static.py --cold-start . ../main --n 1500 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from benchenv import cpu_line

import tfpack
from tfpack.embedding.encoders import load_encoder, text_selector
from tfpack.embedding.models import resolve_model, static_model_dir
from tfpack.ingest.samples import iter_sample_batches
from tfpack.report.stats import mean_pairwise_similarity, random_packs
from tfpack.workdir import SAMPLES_FILE, shard_paths

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"gsm8k": SHARED / "gsm8k_train.jsonl", "gpteacher-codegen": SHARED / "gpteacher_codegen.json"}


def first_records(path: Path, n: int, out: Path) -> Path:
    """The first `n` records of a JSONL or JSON-array file, as JSONL."""
    if path.suffix == ".jsonl":
        lines = path.read_bytes().splitlines()[:n]
    else:
        lines = [orjson.dumps(r) for r in orjson.loads(path.read_bytes())[:n]]
    out.write_bytes(b"\n".join(lines) + b"\n")
    return out


def prompt_texts(run_dir: Path) -> list[str]:
    select = text_selector("prompt")
    return [select(c.turns) for _, convs in iter_sample_batches(run_dir / SAMPLES_FILE, 4096) for c in convs]


def timed_encode(model: object, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    """(unit float32 rows, samples/s) of one call, after a warm-up call on the first 64 texts."""
    from tfpack.embedding.encoders import encode_texts

    encode_texts(model, texts[:64], batch_size)  # type: ignore[arg-type]
    start = time.perf_counter()
    vectors = encode_texts(model, texts, batch_size)  # type: ignore[arg-type]
    return vectors, len(texts) / (time.perf_counter() - start)


def pack_groups(run_dir: Path, vectors: np.ndarray, out: Path, max_len: int) -> list[np.ndarray]:
    """Rows of samples.parquet per pack, for packs built by `tfpack.pack` from `vectors`."""
    npy = out.with_suffix(".npy")
    np.save(npy, vectors)
    src = tfpack.embed(run_dir / "input.jsonl", out.with_name(out.name + "-run"), embeddings=npy, overwrite=True)
    tfpack.pack(src.run_dir, out, tokenizer="packaged-minilm", max_len=max_len, overwrite=True)
    ids = pq.read_table(src.run_dir / SAMPLES_FILE, columns=["sample_id"]).column(0).to_numpy()
    row_of = np.empty(ids.max() + 1, dtype=np.int64)
    row_of[ids] = np.arange(len(ids))
    packs = pq.ParquetDataset([str(p) for p in shard_paths(out)]).read(columns=["sample_ids"]).column(0).to_pylist()
    return [row_of[np.asarray(p, dtype=np.int64)] for p in packs]


def gain(full_unit: np.ndarray, groups: list[np.ndarray], seed: int = 0) -> tuple[float, float]:
    """(mean pairwise cosine inside packs, same for random packs of the same sizes), by the full model."""
    sizes = np.asarray([len(g) for g in groups])
    shuffled = random_packs(np.concatenate(groups), sizes, seed)
    return mean_pairwise_similarity(full_unit, groups), mean_pairwise_similarity(full_unit, shuffled)


def cold_start(checkouts: list[str], n: int, rounds: int) -> None:
    """Seconds of a whole `tfpack pack INPUT --model static` process with an empty cache, per checkout and round: wall
    clock, and CPU time (user + system, every thread), which a machine shared with other jobs inflates less."""
    print(f"CPU: {cpu_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = first_records(DATASETS["gsm8k"], n, Path(tmp) / "input.jsonl")
        for round_ in range(rounds):
            for checkout in checkouts:
                cache, out = Path(tmp) / f"cache-{round_}-{len(checkout)}", Path(tmp) / "out"
                env = {**os.environ, "TFPACK_CACHE": str(cache), "PYTHONPATH": str(Path(checkout).resolve())}
                command = [sys.executable, "-m", "tfpack", "pack", str(data), "-o", str(out), "--overwrite"]
                command += ["--model", "static", "--tokenizer", "packaged-minilm", "--quiet"]
                start, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
                status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
                print(
                    f"round {round_ + 1}  {checkout:<30} {n:>6} samples  {seconds:7.1f}s whole process "
                    f"({cpu:6.1f}s CPU, user + system)  {status}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="samples per dataset (default 2000)")
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--cold-start", nargs="+", metavar="CHECKOUT", help="time the first run of these checkouts")
    parser.add_argument("--rounds", type=int, default=1, help="cold-start rounds, the checkouts alternating")
    args = parser.parse_args()
    if args.cold_start:
        cold_start(args.cold_start, args.n, args.rounds)
        return
    from sentence_transformers import SentenceTransformer

    from tfpack.config import EmbedConfig

    print(f"CPU: {cpu_line()}")
    start = time.perf_counter()
    static_model_dir(resolve_model("all-MiniLM-L6-v2"))
    print(f"static model: distilled or found in the cache in {time.perf_counter() - start:.1f}s")
    plain = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    static, resolved = load_encoder(EmbedConfig(model="static"))
    header = f"{'dataset':<18}{'n':>6}{'plain/s':>9}{'static/s':>10}{'speed-up':>9}"
    print(header + f"{'full: tfp':>11}{'random':>8}{'static: tfp':>12}{'random':>8}{'gain kept':>10}")
    for name, path in DATASETS.items():
        if not path.is_file():
            print(f"{name}: {path} absent, skipped")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            data = first_records(path, args.n, work / "input.jsonl")
            run = tfpack.embed(data, work / "texts", model="static").run_dir
            (run / "input.jsonl").write_bytes(data.read_bytes())
            texts = prompt_texts(run)
            full, plain_rate = timed_encode(plain, texts, 16)
            fast, static_rate = timed_encode(static, texts, resolved["batch_size"])
            full_groups = pack_groups(run, full, work / "full", args.max_len)
            static_groups = pack_groups(run, fast, work / "static", args.max_len)
            full_tfp, full_rnd = gain(full, full_groups)
            static_tfp, static_rnd = gain(full, static_groups)
            kept = (static_tfp - static_rnd) / (full_tfp - full_rnd)
            print(
                f"{name:<18}{len(texts):>6}{plain_rate:>9.1f}{static_rate:>10.0f}{static_rate / plain_rate:>8.0f}x"
                f"{full_tfp:>11.4f}{full_rnd:>8.4f}{static_tfp:>12.4f}{static_rnd:>8.4f}{kept:>10.1%}"
            )


if __name__ == "__main__":
    main()
