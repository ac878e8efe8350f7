"""Benchmark packing: fill rate and relatedness of tfpack against next-fit, best-fit-decreasing and random packing,
and the throughput of tfpack's tokenize + pack + write path against the raw batched tokenizer.

    python scripts/bench_pack.py                       # ../shared/data GSM8K and GPTeacher codegen, max-len 2048 4096
    python scripts/bench_pack.py --max-len 2048 FILE.jsonl

Per dataset, in one run: embed (cached in --cache/<name>), order (default engine), tokenize every sample once, then
for each max-len cut four packings of the same samples:
  tfpack      next-fit along the TFP path, gaps filled best fit from the next --lookahead (256) unused samples
  next-fit    sequential next-fit along the same path (what the paper's pipeline does: cut the path in order)
  bfd         best-fit-decreasing on shuffled samples (TRL's `bfd`; the fill-rate ceiling, no locality)
  random      next-fit over a random order (plain random packing)
Fill = tokens / (packs × max_len); similarity = mean pairwise cosine similarity inside packs (embedding space).
Throughput: raw = the fast tokenizer alone, batched, on the rendered texts; tfpack = render + tokenize + labels +
truncate/drop + pack + write shards, timed end to end on the same samples (best of --repeat).
"""

from __future__ import annotations

import argparse
import bisect
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import tfpack
from tfpack.config import OrderConfig, PackConfig
from tfpack.ingest.samples import iter_sample_batches
from tfpack.ordering.stage import load_embeddings, order_embeddings, to_float32
from tfpack.packing.packer import pack_path
from tfpack.packing.stage import path_similarities, tokenize_samples, write_packs
from tfpack.packing.tokenizer import Rendered, load_tokenizer, render
from tfpack.report.stats import mean_pairwise_similarity
from tfpack.workdir import SAMPLES_FILE

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def best_fit_decreasing(lengths: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Bins of sample indices: each sample, longest first, into the fullest bin it still fits (else a new bin)."""
    free: list[tuple[int, int]] = []  # (remaining capacity, bin), sorted
    bins: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable"):
        at = bisect.bisect_left(free, (int(lengths[i]), -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = max_len, len(bins)
            bins.append([])
        bins[b].append(int(i))
        bisect.insort(free, (room - int(lengths[i]), b))
    return [np.asarray(x) for x in bins]


def fill(groups: list[np.ndarray], lengths: np.ndarray, max_len: int) -> float:
    return float(lengths.sum() / (len(groups) * max_len))


def run_dir_for(data: Path, cache: Path) -> Path:
    run = cache / data.stem
    if not (run / "manifest.json").is_file():
        tfpack.embed(data, run, overwrite=True)
    return run


def rendered_texts(samples: Path, cfg: PackConfig) -> list[str]:
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.template)
    rendered = [render(c, tokenizer, cfg.train_on) for _, convs in iter_sample_batches(samples, 1024) for c in convs]
    return [r.text for r in rendered if isinstance(r, Rendered)]


def raw_tokenizer_seconds(texts: list[str], cfg: PackConfig, batch: int) -> float:
    hf = load_tokenizer(cfg.tokenizer, cfg.template).hf
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        hf(texts[i : i + batch], add_special_tokens=False)
    return time.perf_counter() - started


def tfpack_path_seconds(run: Path, path: np.ndarray, sims: np.ndarray, cfg: PackConfig) -> float:
    """Tokenize + pack + write, end to end, as `tfpack pack` runs it after ordering."""
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.template)
    sample_ids = pq.read_table(run / SAMPLES_FILE, columns=["sample_id"]).column(0).to_numpy()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        tokens = tokenize_samples(run / SAMPLES_FILE, tokenizer, cfg, Path(out) / "tokens").store
        kept = path[tokens.kept[path]]
        packs = pack_path(tokens.lengths[kept], cfg.max_len, cfg.lookahead)
        order = np.random.default_rng(cfg.seed).permutation(len(packs))
        write_packs(Path(out), packs, order, kept, tokens, sample_ids, sims[tokens.kept[path]], cfg)
        return time.perf_counter() - started


def bench(data: Path, max_lens: list[int], cache: Path, repeat: int) -> None:
    run = run_dir_for(data, cache)
    emb, _, _ = load_embeddings(run)
    ordered = order_embeddings(emb, OrderConfig(threshold="auto"), run / "knn")
    unit = to_float32(emb)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    sims = path_similarities(ordered.vectors, ordered.path)
    model = json.loads((run / "manifest.json").read_text())["model"]
    print(f"\n{data.name}: {len(emb)} samples embedded by {model}, threshold cos {ordered.summary['threshold']:.4f}")
    for max_len in max_lens:
        cfg = PackConfig(max_len=max_len, tokenizer="packaged-minilm")
        tokenizer = load_tokenizer(cfg.tokenizer, cfg.template)
        with tempfile.TemporaryDirectory() as tmp:
            tokenized = tokenize_samples(run / SAMPLES_FILE, tokenizer, cfg, Path(tmp))
            tokens, dropped, truncated = tokenized.store, tokenized.dropped, tokenized.truncated
        path = ordered.path[tokens.kept[ordered.path]]
        lengths_row = tokens.lengths
        rng = np.random.default_rng(0)
        shuffled = rng.permutation(path)
        packings = {
            "tfpack": [path[g] for g in pack_path(lengths_row[path], max_len, cfg.lookahead)],
            "next-fit": [path[g] for g in pack_path(lengths_row[path], max_len, 0)],
            "bfd": [shuffled[g] for g in best_fit_decreasing(lengths_row[shuffled], max_len)],
            "random": [shuffled[g] for g in pack_path(lengths_row[shuffled], max_len, 0)],
        }
        print(f"  max-len {max_len}: {len(path)} samples packed, {len(dropped)} dropped, {truncated} truncated")
        print(f"    {'packing':<10}{'packs':>7}{'fill':>8}{'pack sim':>10}{'random sim':>12}{'samples/pack':>14}")
        for name, groups in packings.items():
            sizes = np.asarray([len(g) for g in groups])
            shuffled_groups = np.split(rng.permutation(np.concatenate(groups)), np.cumsum(sizes)[:-1])
            print(
                f"    {name:<10}{len(groups):>7}{fill(groups, lengths_row[path], max_len):>8.4f}"
                f"{mean_pairwise_similarity(unit, groups):>10.4f}"
                f"{mean_pairwise_similarity(unit, shuffled_groups):>12.4f}"
                f"{sizes.mean():>14.2f}"
            )
    cfg = PackConfig(max_len=max_lens[0], tokenizer="packaged-minilm")
    texts = rendered_texts(run / SAMPLES_FILE, cfg)
    raw = min(raw_tokenizer_seconds(texts, cfg, cfg.batch_size) for _ in range(repeat))
    ours = min(tfpack_path_seconds(run, ordered.path, sims, cfg) for _ in range(repeat))
    n = len(texts)
    print(
        f"  throughput (max-len {cfg.max_len}, best of {repeat}): raw tokenizer {n / raw:,.0f} samples/s, "
        f"tfpack tokenize+pack+write {n / ours:,.0f} samples/s = {raw / ours:.2f} of raw"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, help="datasets (default: ../shared/data GSM8K, GPTeacher)")
    parser.add_argument("--max-len", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tfpack-bench")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    inputs = args.inputs or [SHARED / "gsm8k_train.jsonl", SHARED / "gpteacher_codegen.json"]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise SystemExit(f"missing inputs: {', '.join(missing)}")
    for data in inputs:
        bench(data, args.max_len, args.cache, args.repeat)


if __name__ == "__main__":
    main()
