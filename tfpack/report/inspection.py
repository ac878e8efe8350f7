"""`tfpack inspect OUT_DIR --pack N`: one pack decoded with its tokenizer, sample by sample.

Each sample is split into runs of consecutive tokens that are trained (label ≠ −100) or masked, decoded run by
run, so the command line can colour them; attention segments, sample ids and path similarities come along.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tfpack.errors import ConfigError, StaleArtifactError
from tfpack.packing.tokenizer import load_tokenizer
from tfpack.workdir import IGNORE_INDEX, damaged_parquet, listed_shards, read_manifest, rerun_pack


def read_pack(out_dir: Path, manifest: dict[str, Any], index: int) -> tuple[dict[str, Any], str]:
    """Row `index` over the shards in manifest order, and its shard's name; only its row group is decoded."""
    total = manifest["counts"]["packs"]
    if not 0 <= index < total:
        raise ConfigError(f"--pack: {out_dir} has packs 0..{total - 1}, got {index}")
    for shard, path in zip(manifest["shards"], listed_shards(out_dir, manifest), strict=True):
        if index < shard["packs"]:
            try:
                parquet = pq.ParquetFile(path)
                for group in range(parquet.num_row_groups):
                    rows = parquet.metadata.row_group(group).num_rows
                    if index < rows:
                        return parquet.read_row_group(group).slice(index, 1).to_pylist()[0], shard["file"]
                    index -= rows
            except pa.ArrowException as e:
                raise damaged_parquet(path, e, rerun_pack(out_dir, manifest)) from None
            raise StaleArtifactError(
                f"{path}: holds fewer packs than manifest.json lists; run `tfpack stats {out_dir} --verify`"
            )
        index -= shard["packs"]
    raise ConfigError(f"--pack: manifest.json of {out_dir} lists fewer packs than counts.packs")


def runs(trained: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of equal values in a boolean array."""
    cuts = np.flatnonzero(np.diff(trained.astype(np.int8))) + 1
    bounds = [0, *cuts.tolist(), len(trained)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def inspect_pack(out_dir: Path, index: int) -> dict[str, Any]:
    """The pack's samples, each as decoded runs `{"text", "trained"}`, with ids, lengths and path similarity."""
    manifest = read_manifest(out_dir, "pack", f"tfpack pack RUN_DIR -o {out_dir} --overwrite")
    row, shard = read_pack(out_dir, manifest, index)
    name = manifest["tokenizer"]
    hf = load_tokenizer(name, None).hf
    ids = np.asarray(row["input_ids"])
    trained = np.asarray(row["labels"]) != IGNORE_INDEX
    starts = set(np.asarray(row["seq_start_id"]).tolist())
    samples = []
    offset = 0
    for sample_id, length, sim in zip(row["sample_ids"], row["sample_lengths"], row["path_sim"], strict=True):
        piece = slice(offset, offset + length)
        pieces = [
            {"text": hf.decode(ids[piece][a:b].tolist()), "trained": bool(trained[piece][a])}
            for a, b in runs(trained[piece])
        ]
        samples.append(
            {
                "sample_id": sample_id,
                "tokens": int(length),
                "trained_tokens": int(trained[piece].sum()),
                "path_sim": None if sim != sim else round(float(sim), 4),
                "new_segment": offset in starts,
                "pieces": pieces,
            }
        )
        offset += length
    return {
        "pack": index,
        "shard": shard,
        "tokens": row["num_tokens"],
        "loss_tokens": row["num_loss_tokens"],
        "max_len": manifest["max_len"],
        "attention": manifest["attention"],
        "segments": len(row["seq_lengths"]),
        "samples": samples,
    }
