"""The files that make a pack output directory self-describing: a dataset card and Megatron-Bridge's packing metadata.

`README.md` is a Hugging Face dataset card: its YAML front matter declares `data/train-*.parquet` as the train split,
so `datasets.load_dataset(OUT_DIR)` (and a push of OUT_DIR to the Hub) loads exactly the packs; the body states the
attention mode, the schema, the counts and the tfpack settings from the manifest.

`{max_len}_metadata.jsonl` is the packing metadata Megatron-Bridge's packed SFT dataset reads
(`pack_metadata_file_path`, the name its SFT builder gives it): despite the suffix, one JSON list with one entry per
dataset split (here the one train split). Its values are counted the way Megatron-Bridge's packer
(`create_packing_strategy`) and packed collator count them: one sequence per attention segment (the reader splits a
row at `seq_start_id`), and a segment of L tokens as L - 1 (the collator feeds `ids[s:e-1]` and predicts
`ids[s+1:e]`). So `max_samples_per_bin` is the most segments in one pack (it sizes padded `cu_seqlens`),
`dataset_max_seqlen` the longest segment minus 1 (the attention kernels' `max_seqlen`), `packing_factor` the mean
segments per pack, `min_packed_seqlen` the shortest pack's input length (its tokens minus its segments: with it the
collator bounds the padding segment), `packing_efficiency` the mean input length over `pack_size`, in percent, and
`pack_size` is `--max-len`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tfpack.workdir import CARD_FILE, DATA_DIR, SHARD_GLOB, atomic_path, megatron_metadata_name, shard_paths, write_json

ATTENTION_MEANING = {
    "pack": "one causal attention context per pack: each sample attends to the related samples before it, as the "
    "TFP paper trains (position ids continue across the pack; `sample_lengths` still marks the samples)",
    "segment": "one attention segment per sample: samples are isolated (position ids restart per sample; mask "
    "with `seq_lengths`, cu_seqlens or a block-diagonal mask)",
}

COLUMNS = (
    ("input_ids", "list<int32>", "concatenated tokens"),
    ("labels", "list<int32>", "unshifted; -100 on untrained tokens and on each attention segment's first token"),
    ("loss_mask", "list<int8>", "1 at j iff labels[j+1] is trained within the same segment"),
    ("position_ids", "list<int32>", "restart at 0 at each attention segment"),
    ("seq_lengths", "list<int32>", "attention segment lengths"),
    ("seq_start_id", "list<int32>", "segment starts"),
    ("sample_ids", "list<int64>", "source samples in path order"),
    ("sample_lengths", "list<int32>", "tokens per source sample"),
    ("path_sim", "list<float32>", "cosine similarity to the previous sample on the path"),
    ("num_tokens", "int32", "tokens in the pack"),
    ("num_loss_tokens", "int32", "trained tokens in the pack"),
)


def megatron_metadata(out_dir: Path, max_len: int) -> dict[str, Any]:
    """Megatron-Bridge's packing statistics of the shards in `out_dir`, for packs of `max_len` tokens, counted as
    Megatron-Bridge counts them (a segment of L tokens is L - 1 inputs; see the module docstring).

    Example: packs with segments [[5, 3], [6]] give max_samples_per_bin 2, dataset_max_seqlen 5, packing_factor 1.5,
    min_packed_seqlen min(8 - 2, 6 - 1) = 5.
    """
    table = pq.read_table(shard_paths(out_dir), columns=["seq_lengths", "num_tokens"])
    segments = table.column("seq_lengths").combine_chunks()
    per_pack = np.diff(segments.offsets.to_numpy())
    lengths = segments.values.to_numpy()
    inputs = table.column("num_tokens").to_numpy().astype(np.int64) - per_pack
    packs = len(inputs)
    return {
        "max_samples_per_bin": int(per_pack.max()) if packs else 0,
        "dataset_max_seqlen": int(lengths.max()) - 1 if packs else 0,
        "packing_factor": round(float(per_pack.mean()), 2) if packs else 0.0,
        "packing_efficiency": round(float(inputs.sum()) / (packs * max_len) * 100, 2) if packs else 0.0,
        "pack_size": max_len,
        "min_packed_seqlen": int(inputs.min()) if packs else 0,
    }


def write_megatron_metadata(out_dir: Path, max_len: int) -> None:
    """Write `{max_len}_metadata.jsonl` beside the manifest, from the shards already written."""
    write_json(out_dir / megatron_metadata_name(max_len), [megatron_metadata(out_dir, max_len)])


def card_text(manifest: dict[str, Any]) -> str:
    """The dataset card of a pack output directory, from its manifest."""
    counts = manifest["counts"]
    attention = manifest["attention"]
    settings = {
        "tokenizer": manifest["tokenizer"],
        "chat template": manifest["template_source"],
        "train on": manifest["config"]["pack"]["train_on"],
        "max_len": manifest["max_len"],
        "threshold (cosine)": manifest["threshold"],
        "window": manifest["window"],
        "k": manifest["k"],
        "embedding model": manifest["embedding_model"],
        "pack seed": manifest["seed"],
        "tfpack": manifest["tfpack_version"],
    }
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {DATA_DIR}/{SHARD_GLOB}",
        "tags:",
        "- tfpack",
        "- sft",
        "- packed",
        "---",
        "",
        "# Packed SFT data (tfpack)",
        "",
        "Tokenized, packed supervised fine-tuning data written by tfpack (Threshold Filtering Packing, Dong et al., "
        "NAACL 2025): each pack holds related but not near-duplicate samples, in nearest-neighbour path order. One "
        "row is one pack, no padding stored.",
        "",
        f"**Attention: `{attention}`**: {ATTENTION_MEANING[attention]}.",
        "",
        "## Counts",
        "",
        "| packs | samples | tokens | trained tokens | fill | dropped | refused | input errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {counts['packs']} | {counts['samples']} | {counts['tokens']} | {counts['loss_tokens']} | "
        f"{counts['fill_rate']} | {counts['dropped']} | {counts.get('refused', 0)} | {counts['input_errors']} |",
        "",
        "Left-out samples are listed with their reason in `dropped.jsonl` (over --max-len) and `errors.jsonl`"
        " (bad input records, and samples whose trained spans the chat template did not let tfpack verify).",
        "",
        "## Schema",
        "",
        "| column | type | meaning |",
        "| --- | --- | --- |",
        *[f"| `{name}` | {kind} | {meaning} |" for name, kind, meaning in COLUMNS],
        "",
        "## Settings",
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {key} | `{value}` |" for key, value in settings.items()],
        "",
        "The full record is `manifest.json`; Megatron-Bridge's packing metadata is "
        f"`{megatron_metadata_name(int(manifest['max_len']))}`.",
        "",
    ]
    return "\n".join(lines)


def write_card(out_dir: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(out_dir / CARD_FILE) as tmp:
        tmp.write_text(card_text(manifest))
