"""Read packed shards for training: a torch `Dataset` over `data/train-*.parquet` and a collator for Hugging Face
models.

`PackedDataset(OUT_DIR)` yields one pack per item (read lazily, row group by row group) as int64 tensors
(`input_ids`, `labels`, `position_ids`, `seq_lengths`). `PackedCollator` turns a list of packs into model inputs:

- `mode="flat"` (padding-free, for flash-attention kernels): all packs of the batch concatenated into one row
  `[1, T]` with `position_ids` restarting per attention segment and `cu_seq_lens_q/k` + `max_length_q/k`, the
  keyword arguments Hugging Face's flash-attention path takes (as `DataCollatorWithFlattening` produces). Eager and
  SDPA ignore them (transformers 4.57 on CPU: the flattened row is one causal context), so use `padded` there.
- `mode="padded"`: packs right-padded to the longest in the batch `[B, T]`, with a float additive block-diagonal
  causal `attention_mask` `[B, 1, T, T]` (0 = attend, dtype minimum = masked) for eager or SDPA attention, which use
  a 4D mask as given. Pad tokens get label -100.

Labels are unshifted (the model shifts them) and already -100 on untrained tokens and segment starts.
`to_torchtune` gives a pack in torchtune's packed layout (`tokens`, `labels`, `input_pos`, `seq_lens`, padded to
`max_len`), for its `padded_collate_packed`; `TorchtuneDataset` serves a whole output directory that way.

A `pack --epochs E` output holds one complete output per epoch; `epoch_dirs(OUT_DIR)` lists them in turn (and is
`[OUT_DIR]` for a single packing), so a training loop reads epoch e's packs with
`PackedDataset(epoch_dirs(OUT_DIR)[e % len(dirs)])`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from tfpack.workdir import DATA_DIR, IGNORE_INDEX, SHARD_GLOB, epoch_dirs, shard_paths

__all__ = [
    "PackedCollator",
    "PackedDataset",
    "TorchtuneDataset",
    "block_causal_mask",
    "epoch_dirs",
    "shard_files",
    "to_torchtune",
]

COLUMNS = ("input_ids", "labels", "position_ids", "seq_lengths")


def shard_files(out_dir: Path) -> list[Path]:
    """The shards of a `tfpack pack` output directory, in name order."""
    files = shard_paths(Path(out_dir))
    if not files:
        raise FileNotFoundError(
            f"{out_dir}: no {DATA_DIR}/{SHARD_GLOB} shards (is this a `tfpack pack` output directory?)"
        )
    return files


class PackedDataset(Dataset):  # type: ignore[type-arg]
    """Map-style dataset over the packs of `out_dir`, read lazily: construction reads only the shards' footers; an item
    decodes the row group that holds it (Parquet shards are compressed, so "memory-mapped" cannot mean zero-copy) and
    keeps the last `cached_row_groups` decoded, so memory stays bounded whatever the dataset's size, in every
    DataLoader worker.

    Example: with `--shard-packs 5000` and 500 packs per row group, `ds[12_345]` decodes row group 4 of the third
    shard and returns its row 345 as int64 tensors.
    """

    def __init__(self, out_dir: Path | str, columns: tuple[str, ...] = COLUMNS, cached_row_groups: int = 2) -> None:
        self.columns = columns
        self.files = shard_files(Path(out_dir))
        self.groups: list[tuple[int, int]] = []  # (file, row group) in reading order
        sizes = []
        for f, path in enumerate(self.files):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                self.groups.append((f, g))
                sizes.append(meta.row_group(g).num_rows)
        self.offsets = np.cumsum([0, *sizes])
        self.cached_row_groups = max(1, cached_row_groups)
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers start with an empty cache
        return {**self.__dict__, "_cache": OrderedDict()}

    def row_group(self, index: int) -> Any:
        """Decoded row group `index` (LRU-cached)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        f, g = self.groups[index]
        table = pq.ParquetFile(self.files[f]).read_row_group(g, columns=list(self.columns))
        self._cache[index] = table
        while len(self._cache) > self.cached_row_groups:
            self._cache.popitem(last=False)
        return table

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        group = int(np.searchsorted(self.offsets, index, side="right")) - 1
        table = self.row_group(group)
        row = index - int(self.offsets[group])
        return {
            name: torch.from_numpy(table.column(name)[row].values.to_numpy().astype(np.int64)) for name in self.columns
        }


def block_causal_mask(seq_lengths: torch.Tensor, total: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive `[total, total]` mask: causal within each segment, masked across segments and on padding."""
    segment = torch.repeat_interleave(torch.arange(len(seq_lengths)), seq_lengths)
    segment = torch.cat([segment, torch.full((total - len(segment),), -1)])
    index = torch.arange(total)
    allowed = (segment[:, None] == segment[None, :]) & (index[:, None] >= index[None, :]) & (segment[:, None] >= 0)
    mask = torch.full((total, total), torch.finfo(dtype).min, dtype=dtype)
    mask[allowed] = 0
    # a padded query row attends to nothing; give it its own position so softmax stays finite
    pad = segment < 0
    mask[pad, pad] = 0
    return mask


class PackedCollator:
    """Batch packs as `flat` (padding-free, flash-attention kwargs) or `padded` (4D block-diagonal mask)."""

    def __init__(self, mode: str = "flat", pad_token_id: int = 0, mask_dtype: torch.dtype = torch.float32) -> None:
        if mode not in ("flat", "padded"):
            raise ValueError(f"mode: expected 'flat' or 'padded', got {mode!r}")
        self.mode, self.pad_token_id, self.mask_dtype = mode, pad_token_id, mask_dtype

    def __call__(self, packs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        return self.flat(packs) if self.mode == "flat" else self.padded(packs)

    def flat(self, packs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        lengths = torch.cat([p["seq_lengths"] for p in packs])
        cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(torch.int32)
        longest = int(lengths.max())
        return {
            "input_ids": torch.cat([p["input_ids"] for p in packs])[None],
            "labels": torch.cat([p["labels"] for p in packs])[None],
            "position_ids": torch.cat([p["position_ids"] for p in packs])[None],
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": longest,
            "max_length_k": longest,
        }

    def padded(self, packs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        total = max(len(p["input_ids"]) for p in packs)

        def pad(name: str, value: int) -> torch.Tensor:
            rows = [torch.nn.functional.pad(p[name], (0, total - len(p[name])), value=value) for p in packs]
            return torch.stack(rows)

        return {
            "input_ids": pad("input_ids", self.pad_token_id),
            "labels": pad("labels", IGNORE_INDEX),
            "position_ids": pad("position_ids", 0),
            "attention_mask": torch.stack([block_causal_mask(p["seq_lengths"], total, self.mask_dtype) for p in packs])[
                :, None
            ],
        }


def to_torchtune(pack: dict[str, torch.Tensor], max_len: int, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """A pack in torchtune's `PackedDataset` layout: padded to `max_len`, the padding its own last `seq_lens` entry,
    `input_pos` continuing past the last sample and clamped to `max_len - 1` (as torchtune pads)."""
    n = len(pack["input_ids"])
    if n > max_len:
        raise ValueError(f"pack of {n} tokens does not fit max_len {max_len}")
    pad = max_len - n
    last = int(pack["position_ids"][-1])
    tail = torch.clamp(torch.arange(last + 1, last + 1 + pad), max=max_len - 1)
    seq_lens = pack["seq_lengths"] if pad == 0 else torch.cat([pack["seq_lengths"], torch.tensor([pad])])
    return {
        "tokens": torch.nn.functional.pad(pack["input_ids"], (0, pad), value=pad_token_id),
        "labels": torch.nn.functional.pad(pack["labels"], (0, pad), value=IGNORE_INDEX),
        "input_pos": torch.cat([pack["position_ids"], tail]),
        "seq_lens": seq_lens,
    }


class TorchtuneDataset(Dataset):  # type: ignore[type-arg]
    """An output directory as torchtune packs; `packed = True` makes torchtune's recipes use
    `padded_collate_packed` (block-causal mask from `seq_lens`)."""

    packed = True

    def __init__(self, out_dir: Path | str, max_seq_len: int, pad_token_id: int = 0) -> None:
        self.packs = PackedDataset(out_dir)
        self.max_seq_len, self.pad_token_id = max_seq_len, pad_token_id

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return to_torchtune(self.packs[index], self.max_seq_len, self.pad_token_id)
