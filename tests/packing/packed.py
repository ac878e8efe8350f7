"""Read a `tfpack pack` output back sample by sample, and pack records through the Python API without a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow.parquet as pq

from tfpack.workdir import IGNORE_INDEX, shard_paths


class Sample(NamedTuple):
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    pack: int  # which pack (row) holds it
    first_in_pack: bool


def packed_samples(out_dir: Path) -> dict[int, Sample]:
    """Every sample in the shards of `out_dir`, by sample id, cut out of its pack by `sample_lengths`."""
    out: dict[int, Sample] = {}
    rows = pq.read_table(shard_paths(out_dir)).to_pylist() if shard_paths(out_dir) else []
    for p, row in enumerate(rows):
        start = 0
        for i, (sample_id, n) in enumerate(zip(row["sample_ids"], row["sample_lengths"], strict=True)):
            span = slice(start, start + n)
            assert sample_id not in out, f"sample {sample_id} is in two packs"
            out[sample_id] = Sample(row["input_ids"][span], row["labels"][span], row["position_ids"][span], p, i == 0)
            start += n
        assert start == len(row["input_ids"])
    return out


def listed(out_dir: Path, name: str) -> list[dict[str, Any]]:
    """The entries of `dropped.jsonl` or `errors.jsonl` in `out_dir` (none when the file is absent)."""
    path = out_dir / name
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.is_file() else []


def embed_run(records: list[dict[str, Any]], tmp: Path, rows: int | None = None, seed: int = 0) -> Path:
    """An embed run of `records` with random unit vectors as precomputed embeddings: the order does not matter to
    what a sample's tokens and labels are, and no embedding model is loaded. `rows`: the valid records (one row
    each; the invalid ones are listed in errors.jsonl), all of them by default."""
    import tfpack
    from tfpack.api import write_records

    source = write_records(records, tmp / "records.jsonl")
    vectors = np.random.default_rng(seed).normal(size=(len(records) if rows is None else rows, 8)).astype(np.float32)
    np.save(tmp / "embeddings.npy", vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return tfpack.embed(source, tmp / "run", embeddings=tmp / "embeddings.npy", on_error="skip").run_dir


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each stretch of trained labels: `[-100, 5, 6, -100, 9]` → `[(1, 3), (4, 5)]`."""
    out, start = [], None
    for j, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = j
        if label == IGNORE_INDEX and start is not None:
            out.append((start, j))
            start = None
    return out
