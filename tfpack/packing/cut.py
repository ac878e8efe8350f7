"""Fit a tokenized sample into `max_len` tokens: keep it, cut it to an exact prefix, or drop it with the reason.

A cut sample's `input_ids` and `labels` are always the first tokens of the same sample uncut: no token is appended
or relabelled, so every trained token of a cut sample is trained, at the same position and after the same context,
in the full one. `--long` chooses where the cut falls:

- `truncate`: right at `max_len` (what TRL's `truncate_dataset` does). The last assistant turn may end mid-way; it
  is trained up to the cut and, having no end-of-turn token, teaches no early stop.
- `turns`: after the last complete trained run (an assistant turn with its end-of-turn marker) that fits, so the
  sample ends on a whole answer and never inside a user turn. A sample whose first trained run does not fit is
  dropped.
- `drop`: every sample over `max_len` is dropped.

A cut that would leave no trained token is a drop too (the sample would only add context and padding).

Example: labels `[-100, -100, 5, 6, -100, -100, 9, 9]` (two assistant turns), max_len 7: `truncate` keeps 7 tokens
(one trained token of the second turn), `turns` keeps 4 (the first turn whole), `drop` drops it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tfpack.workdir import IGNORE_INDEX


class Cut(NamedTuple):
    """A sample as it goes into a pack, and how many of its trained tokens the cut removed (0 when it fits)."""

    ids: NDArray[np.int32]
    labels: NDArray[np.int32]
    removed_trained: int


def trained_run_ends(labels: NDArray[np.int32]) -> NDArray[np.int64]:
    """Token positions just after each run of trained labels: `[-100, 5, 6, -100, 9]` → `[3, 5]`."""
    trained = np.concatenate([labels != IGNORE_INDEX, [False]])
    return np.flatnonzero(trained[:-1] & ~trained[1:]) + 1


def fit_to_max_len(ids: NDArray[np.int32], labels: NDArray[np.int32], max_len: int, long: str) -> Cut | str:
    """The sample when it fits; else an exact prefix of it (`long` = truncate / turns) or the reason it is dropped."""
    if len(ids) <= max_len:
        return Cut(ids, labels, 0)
    if long == "drop":
        return f"longer than max_len ({len(ids)} > {max_len} tokens; --long drop)"
    trained = labels != IGNORE_INDEX
    if long == "turns":
        ends = trained_run_ends(labels)
        fitting = ends[ends <= max_len]
        if len(fitting) == 0:
            first_end = int(ends[0]) if len(ends) else len(ids)
            return (
                f"no whole assistant turn within max_len ({len(ids)} > {max_len} tokens; the first ends at token "
                f"{first_end}; --long turns)"
            )
        cut = int(fitting[-1])
    else:
        cut = max_len
    if not trained[:cut].any():
        first = int(np.argmax(trained)) if trained.any() else len(ids)
        return (
            f"no trained token within max_len ({len(ids)} > {max_len} tokens; the first trained token is at "
            f"{first}; --long {long})"
        )
    return Cut(ids[:cut], labels[:cut], int(trained[cut:].sum()))
