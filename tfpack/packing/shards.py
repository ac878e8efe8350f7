"""Write packs as Parquet shards: one row per pack, no padding stored (the output contract in the README).

Per pack, with attention segments = samples (`segment`) or the whole pack (`pack`):
`labels` is −100 on untrained tokens and on each segment's first token; `loss_mask[j] = 1` iff `labels[j+1]` is
trained within the same segment; `position_ids` restart at 0 per segment; `seq_lengths`/`seq_start_id` describe
the segments; `sample_ids`/`sample_lengths`/`path_sim` describe the samples in path order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.errors import ConfigError
from tfpack.workdir import IGNORE_INDEX, atomic_path

INT32_MAX = 2**31 - 1

SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("loss_mask", pa.list_(pa.int8())),
        ("position_ids", pa.list_(pa.int32())),
        ("seq_lengths", pa.list_(pa.int32())),
        ("seq_start_id", pa.list_(pa.int32())),
        ("sample_ids", pa.list_(pa.int64())),
        ("sample_lengths", pa.list_(pa.int32())),
        ("path_sim", pa.list_(pa.float32())),
        ("num_tokens", pa.int32()),
        ("num_loss_tokens", pa.int32()),
    ]
)


def pack_row(
    ids: list[NDArray[np.int32]],
    labels: list[NDArray[np.int32]],
    sample_ids: list[int],
    sims: list[float],
    attention: str,
) -> dict[str, Any]:
    """One pack's columns from its samples' tokens and labels (in path order)."""
    sample_lengths = np.asarray([len(x) for x in ids], dtype=np.int32)
    input_ids = np.concatenate(ids).astype(np.int32)
    label_arr = np.concatenate(labels).astype(np.int32)
    seq_lengths = sample_lengths if attention == "segment" else np.asarray([len(input_ids)], dtype=np.int32)
    seq_start = np.concatenate([[0], np.cumsum(seq_lengths)[:-1]]).astype(np.int32)
    label_arr[seq_start] = IGNORE_INDEX
    segment_of = np.repeat(np.arange(len(seq_lengths)), seq_lengths)
    position_ids = (np.arange(len(input_ids)) - seq_start[segment_of]).astype(np.int32)
    loss_mask = np.zeros(len(input_ids), dtype=np.int8)
    same_segment = segment_of[1:] == segment_of[:-1]
    loss_mask[:-1] = ((label_arr[1:] != IGNORE_INDEX) & same_segment).astype(np.int8)
    return {
        "input_ids": input_ids,
        "labels": label_arr,
        "loss_mask": loss_mask,
        "position_ids": position_ids,
        "seq_lengths": seq_lengths,
        "seq_start_id": seq_start,
        "sample_ids": np.asarray(sample_ids, dtype=np.int64),
        "sample_lengths": sample_lengths,
        "path_sim": np.asarray(sims, dtype=np.float32),
        "num_tokens": int(len(input_ids)),
        "num_loss_tokens": int(loss_mask.sum()),
    }


def _column(rows: list[dict[str, Any]], name: str) -> pa.Array:
    field = SCHEMA.field(name)
    if not pa.types.is_list(field.type):
        return pa.array([r[name] for r in rows], type=field.type)
    values = [r[name] for r in rows]
    ends = np.cumsum([len(v) for v in values], dtype=np.int64)
    if len(ends) and ends[-1] > INT32_MAX:  # PackConfig bounds shard_packs × max_len; this guards the format itself
        raise ConfigError(
            f"a shard would hold {int(ends[-1])} values in column {name}, over the {INT32_MAX} that Parquet list "
            "offsets (int32) allow; lower --shard-packs"
        )
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    flat = np.concatenate(values) if values else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=field.type.value_type))


def write_shard(path: Path, rows: list[dict[str, Any]], row_group_packs: int) -> None:
    """Write one shard atomically, zstd-compressed, `row_group_packs` packs per row group."""
    table = pa.Table.from_arrays([_column(rows, name) for name in SCHEMA.names], schema=SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_packs)
