"""Tokenized samples on disk: flat int32 `input_ids` and `labels` files plus per-sample offsets.

`tfpack pack` tokenizes in sample order but writes packs in path order, so it needs random access to every
sample's tokens; keeping them in two memory-mapped files (instead of one small array pair per sample in memory)
keeps the resident set to the offsets (8 bytes per sample) plus whatever pages the shard writer touches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

FLUSH_TOKENS = 1 << 20  # tokens buffered between writes (8 MiB of ids and labels)


class TokenStore:
    """Append samples in row order (`add`, or `skip` for a dropped one), then `close` and read them back."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = (directory / "input_ids.i32", directory / "labels.i32")
        self.files: list[Any] | None = [open(p, "wb") for p in self.paths]  # noqa: SIM115 - closed in close()
        self.pending: tuple[list[NDArray[np.int32]], list[NDArray[np.int32]]] = ([], [])  # added, not yet written
        self.pending_size = 0
        self.ends: list[int] = []
        self.kept_rows: list[bool] = []
        self.size = 0
        self.arrays: tuple[NDArray[np.int32], NDArray[np.int32]] | None = None

    def add(self, ids: NDArray[np.int32], labels: NDArray[np.int32]) -> None:
        self.pending[0].append(ids)
        self.pending[1].append(labels)
        self.pending_size += len(ids)
        self.size += len(ids)
        self.ends.append(self.size)
        self.kept_rows.append(True)
        if self.pending_size >= FLUSH_TOKENS:
            self.flush()

    def flush(self) -> None:
        """Write the samples added since the last flush, one write per file."""
        assert self.files is not None
        for f, arrays in zip(self.files, self.pending, strict=True):
            if arrays:
                f.write(np.concatenate(arrays, dtype=np.int32).tobytes())
            arrays.clear()
        self.pending_size = 0

    def skip(self) -> None:
        self.ends.append(self.size)
        self.kept_rows.append(False)

    def close(self) -> None:
        """Finish writing; from here on rows are read through memory maps."""
        self.flush()
        assert self.files is not None
        for f in self.files:
            f.close()
        self.files = None
        self.offsets = np.concatenate([[0], np.asarray(self.ends, dtype=np.int64)])
        self.kept = np.asarray(self.kept_rows, dtype=bool)
        self.lengths = np.diff(self.offsets)
        del self.ends, self.kept_rows
        ids: NDArray[np.int32]
        labels: NDArray[np.int32]
        if self.size:
            ids, labels = (np.memmap(p, dtype=np.int32, mode="r", shape=(self.size,)) for p in self.paths)
        else:
            ids = labels = np.zeros(0, dtype=np.int32)
        self.arrays = (ids, labels)

    def __len__(self) -> int:
        return len(self.kept)

    def get(self, row: int) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """(input_ids, labels) of sample row `row` (empty for a dropped row)."""
        assert self.arrays is not None
        lo, hi = self.offsets[row], self.offsets[row + 1]
        return self.arrays[0][lo:hi], self.arrays[1][lo:hi]
