"""float16 embeddings in numba kernels, which have no float16 type on CPU: rows are read as their uint16 bits.

`value(x)` turns an entry (a float, or uint16 bits, decoded through a 64K-entry table: within ~15% of reading
float32) into float64 inside a kernel; `as_kernel_array` gives the array a kernel reads without copying it;
`gather_float32` copies chosen rows out as float32, in parallel.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.extending import overload
from numpy.typing import NDArray

HALF_TABLE = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # bits -> value (256 KiB)


def value(x: Any) -> float:
    """An embedding entry as float64: floats as they are, uint16 as the bits of an IEEE float16."""
    return float(x)


@overload(value)
def _value_impl(x: Any) -> Any:
    if isinstance(x, numba.types.Integer):

        def from_bits(x: Any) -> float:
            return np.float64(HALF_TABLE[x])

        return from_bits

    def as_float(x: Any) -> float:
        return np.float64(x)

    return as_float


def as_kernel_array(emb: NDArray[Any]) -> NDArray[Any]:
    """float32 rows as they are (contiguous), float16 rows as a uint16 view of the same memory."""
    return np.ascontiguousarray(emb) if emb.dtype == np.float32 else emb.view(np.uint16)


@numba.njit(cache=True, parallel=True)
def _gather_halves(bits: Any, ids: Any, table: Any) -> Any:
    out = np.empty((len(ids), bits.shape[1]), np.float32)
    for i in numba.prange(len(ids)):
        row = ids[i]
        for t in range(bits.shape[1]):
            out[i, t] = table[bits[row, t]]
    return out


def gather_float32(emb: NDArray[Any], ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """`emb[ids]` as float32 ([len(ids), d]); float16 is decoded through a 64K-entry table."""
    if emb.dtype == np.float32:
        return np.ascontiguousarray(emb[ids])
    return _gather_halves(emb.view(np.uint16), np.asarray(ids, dtype=np.int64), HALF_TABLE)
