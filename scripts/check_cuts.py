"""Are cut samples exact prefixes of their uncut selves? Packs real multi-turn chats twice per chat template, at a
small `--max-len` (most samples cut) and at 8192 (none cut), one attention segment per sample, and compares every
sample that was cut with the same sample uncut, token by token.

The chats are GSM8K train problems (../shared/data/gsm8k_train.jsonl) joined three at a time into
user/assistant/user/assistant/user/assistant conversations; the templates are the test gallery's
(tests/packing/templates.py: Qwen2.5, Llama-3, Gemma, Mistral-v0.3, Phi-3, ...) on a byte-level BPE trained here.
Everything is offline. Run it from the repository root against any revision (`PYTHONPATH=other/checkout`):

    python scripts/check_cuts.py --n 500 --max-len 256 --long truncate turns

Per family and `--long` mode it prints: samples cut, cut samples whose ids or labels are not a prefix of the uncut
ones, cut samples that train a token the uncut sample does not train at that position, samples dropped, and the
trained tokens the cuts removed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from benchenv import load_gallery

ROOT = Path(__file__).resolve().parents[1]


GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"
DEFAULT_FAMILIES = ("qwen2.5", "llama-3", "gemma", "mistral", "phi-3")
IGNORE = -100


def chats(n: int) -> list[dict]:
    """`n` three-exchange conversations from consecutive GSM8K problems."""
    rows = [orjson.loads(line) for line in GSM8K.read_bytes().splitlines()[: 3 * n]]
    out = []
    for i in range(0, 3 * n, 3):
        messages = []
        for row in rows[i : i + 3]:
            messages += [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        out.append({"messages": messages})
    return out


def samples_of(out_dir: Path) -> dict[int, tuple[list[int], list[int]]]:
    """sample id → (input_ids, labels as the shard stores them) from a segment-attention output."""
    found = {}
    for shard in sorted((out_dir / "data").glob("*.parquet")):
        for row in pq.read_table(shard, columns=["input_ids", "labels", "sample_ids", "sample_lengths"]).to_pylist():
            at = 0
            for sid, length in zip(row["sample_ids"], row["sample_lengths"], strict=True):
                found[sid] = (row["input_ids"][at : at + length], row["labels"][at : at + length])
                at += length
    return found


def compare(cut: dict, full: dict) -> dict[str, int]:
    counts = {"cut": 0, "not_prefix": 0, "trains_more": 0, "removed_trained": 0}
    for sid, (ids, labels) in cut.items():
        full_ids, full_labels = full[sid]
        if len(ids) == len(full_ids):
            continue
        counts["cut"] += 1
        n = len(ids)
        counts["not_prefix"] += ids != full_ids[:n] or labels != full_labels[:n]
        counts["trains_more"] += any(a != IGNORE and a != b for a, b in zip(labels, full_labels[:n], strict=False))
        counts["removed_trained"] += sum(x != IGNORE for x in full_labels[n:])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="conversations (three GSM8K problems each)")
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--long", nargs="+", default=["truncate", "turns"])
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), help="gallery name prefixes")
    args = parser.parse_args()
    if not GSM8K.is_file():
        sys.exit(f"{GSM8K} not found")
    import tfpack

    gallery = load_gallery()
    print(f"tfpack from {Path(tfpack.__file__).parent}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "chats.jsonl"
        rows = chats(args.n)
        data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        corpus = [m["content"] for r in rows[:200] for m in r["messages"]]
        bpe = gallery.build_bpe(tmp / "bpe", corpus)
        run = tmp / "run"
        tfpack.embed([data], run, model="static")
        print(f"{args.n} conversations of 3 GSM8K exchanges; --max-len {args.max_len} vs 8192, --attention segment")
        header = f"{'family':<50}{'--long':<10}{'cut':>6}{'not prefix':>12}{'trains more':>13}{'dropped':>9}"
        print(f"{header}{'cut trained':>13}")
        for i, family in enumerate(f for f in gallery.FAMILIES if f.startswith(tuple(args.families))):
            tok = str(gallery.family_tokenizer(bpe, family, tmp / f"tok{i}"))
            common = {"tokenizer": tok, "attention": "segment", "on_error": "skip", "overwrite": True}
            full = samples_of(tfpack.pack(run, tmp / "full", max_len=8192, **common).out_dir)
            for long in args.long:
                try:
                    tfpack.pack(run, tmp / "cut", max_len=args.max_len, long=long, **common)
                    c = compare(samples_of(tmp / "cut"), full)
                except tfpack.TfpackError:  # every sample dropped: nothing cut, nothing packed
                    c = compare({}, full)
                dropped = len((tmp / "cut" / "dropped.jsonl").read_bytes().splitlines())
                print(
                    f"{family[:48]:<50}{long:<10}{c['cut']:>6}{c['not_prefix']:>12}{c['trains_more']:>13}{dropped:>9}"
                    f"{c['removed_trained']:>13}"
                )


if __name__ == "__main__":
    main()
