"""What `pack --dedup S` and `pack --epochs E` do to real data, measured on GSM8K train and GPTeacher codegen.

For each dataset (../shared/data; embedded once with the default full model into --work, reused when there):
- dedup: for S in --dedup (and without): samples removed, fill rate, mean pack similarity (TFP and random packs of
  the same sizes), the share of same-pack pairs at cosine >= 0.9 (near-duplicates sharing a pack) for TFP and random
  packs, and `pack` wall seconds;
- epochs: `--epochs E`: per epoch fill, mean pack similarity and the share of its packed pairs an earlier epoch
  packed too; and, as the control, the same E starts and walk seeds without the rule that avoids earlier pairs.

    python scripts/eval_filters.py --work /tmp/tfpack-eval
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from benchenv import cpu_line

import tfpack
from tfpack.ordering.plan import WalkPlan
from tfpack.ordering.stage import load_embeddings, order_embeddings, to_float32
from tfpack.packing.epochs import epoch_start, pack_ids, repeated_pairs
from tfpack.packing.packer import pack_path
from tfpack.report.stats import mean_pairwise_similarity, near_duplicate_rate, random_packs, row_of_sample
from tfpack.workdir import KNN_DIR, SAMPLES_FILE, epoch_dirs, fingerprint_file, shard_paths

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {"gsm8k": SHARED / "gsm8k_train.jsonl", "gpteacher-codegen": SHARED / "gpteacher_codegen.json"}
PAIR_COS = 0.9  # "near-duplicates sharing a pack": same-pack pairs at cosine >= this
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def embed_run(work: Path, name: str, source: Path) -> Path:
    run = work / f"run-{name}"
    if not (run / "manifest.json").is_file():
        tfpack.embed(source, run, model=MODEL, overwrite=True)
    return run


def groups_of(out: Path, row_of: np.ndarray) -> list[np.ndarray]:
    ids = pq.read_table(shard_paths(out), columns=["sample_ids"]).column(0).to_pylist()
    return [row_of[np.asarray(p, dtype=np.int64)] for p in ids]


def scores(unit: np.ndarray, groups: list[np.ndarray], seed: int = 0) -> dict[str, float]:
    """Mean pack similarity and the share of same-pack pairs at cosine >= PAIR_COS, TFP vs random packs."""
    sizes = np.asarray([len(g) for g in groups])
    rand = random_packs(np.concatenate(groups), sizes, seed)
    return {
        "sim": mean_pairwise_similarity(unit, groups),
        "sim_random": mean_pairwise_similarity(unit, rand),
        "dup_pairs": near_duplicate_rate(unit, groups, PAIR_COS),
        "dup_pairs_random": near_duplicate_rate(unit, rand, PAIR_COS),
    }


def dedup_rows(run: Path, work: Path, name: str, values: list[float | None], max_len: int) -> None:
    row_of = row_of_sample(run)
    unit = to_float32(load_embeddings(run).array)
    print(f"\n{name}: dedup (max_len {max_len}, same-pack pairs at cos >= {PAIR_COS} as near-duplicates)")
    print("  S       removed   fill     sim TFP / random    dup-pairs TFP / random   pack s")
    for s in values:
        out = work / f"{name}-dedup-{s}"
        start = time.perf_counter()
        result = tfpack.pack(run, out, tokenizer="packaged-minilm", max_len=max_len, dedup=s, overwrite=True)
        seconds = time.perf_counter() - start
        removed = result.summary["near_duplicates"]
        sc = scores(unit, groups_of(out, row_of))
        print(
            f"  {str(s):6}  {removed:7d}   {result.summary['fill_rate']:.4f}   {sc['sim']:.4f} / "
            f"{sc['sim_random']:.4f}     {sc['dup_pairs']:.5f} / {sc['dup_pairs_random']:.5f}       {seconds:6.1f}"
        )


def epoch_rows(run: Path, work: Path, name: str, epochs: int, max_len: int) -> None:
    out = work / f"{name}-epochs"
    tfpack.pack(run, out, tokenizer="packaged-minilm", max_len=max_len, epochs=epochs, overwrite=True)
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    sample_ids = pq.read_table(run / SAMPLES_FILE, columns=["sample_id"]).column(0).to_numpy()
    row_of = row_of_sample(run)
    emb = load_embeddings(run)
    unit = to_float32(emb.array)
    print(f"\n{name}: --epochs {epochs}")
    print("  epoch   fill     sim TFP / random   repeat rate   control repeat rate (no avoid rule)")
    lengths_of: dict[int, int] = {}
    table = pq.read_table(shard_paths(epoch_dirs(out)[0]), columns=["sample_ids", "sample_lengths"])
    for ids, lens in zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True):
        lengths_of.update(zip(ids, lens, strict=True))
    lengths = np.asarray([lengths_of.get(int(i), 0) for i in sample_ids])
    control = control_repeats(run, emb.array, emb.file, lengths, epochs, max_len)
    for entry, d, ctrl in zip(manifest["epochs"], epoch_dirs(out), control, strict=True):
        sc = scores(unit, groups_of(d, row_of))
        print(
            f"  {entry['dir']:7} {entry['fill_rate']:.4f}   {sc['sim']:.4f} / {sc['sim_random']:.4f}    "
            f"{entry['repeat_rate']:.5f}       {ctrl:.5f}"
        )


def control_repeats(
    run: Path, emb: np.ndarray, emb_file: Path, lengths: np.ndarray, epochs: int, max_len: int
) -> list[float]:
    """Repeat rates of the same epochs' starts and walk seeds, walked without the avoid rule (`lengths`: tokens
    per row as packed, 0 = not packed)."""
    cfg = tfpack.OrderConfig()
    earlier = np.full((0, len(lengths)), -1, dtype=np.int64)
    rates = []
    for epoch in range(epochs):
        start = epoch_start(np.flatnonzero(lengths > 0), epoch, cfg.start, cfg.seed)
        ordered = order_embeddings(
            emb,
            tfpack.OrderConfig(start=start),
            run / KNN_DIR,
            fingerprint_file(emb_file),
            plan=WalkPlan(skip=lengths == 0, epoch=epoch),
        )
        packs = pack_path(lengths[ordered.path], max_len, tfpack.PackConfig.lookahead)
        pack_of = pack_ids(packs, ordered.path, len(lengths))
        repeated, pairs = repeated_pairs(pack_of, earlier)
        rates.append(repeated / max(pairs, 1))
        earlier = np.vstack([earlier, pack_of[None]])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="Directory for embed runs and pack outputs.")
    parser.add_argument("--dedup", default="none,0.85,0.9,0.95", help="Comma-separated S values ('none': off).")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=2048)
    args = parser.parse_args()
    print(f"CPU: {cpu_line()}; tfpack {tfpack.__version__}; embeddings {MODEL}")
    values = [None if v == "none" else float(v) for v in args.dedup.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    for name, source in DATASETS.items():
        if not source.is_file():
            print(f"{name}: {source} absent, skipped")
            continue
        run = embed_run(args.work, name, source)
        dedup_rows(run, args.work, name, values, args.max_len)
        epoch_rows(run, args.work, name, args.epochs, args.max_len)


if __name__ == "__main__":
    main()
