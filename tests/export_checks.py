"""What the trainer tests share: a tiny random Llama saved with tfpack's offline tokenizer, a forward pre-hook that
records every batch the trainer feeds the model, and the check that those batches hold the packs unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.conftest import tiny_llama
from tfpack.workdir import IGNORE_INDEX, shard_paths


def save_tiny_model(folder: Path) -> Path:
    """A random 2-layer Llama over packaged-minilm's vocabulary, saved with that tokenizer (what packed the shards)."""
    from transformers import AutoTokenizer

    from tfpack.packing.tokenizer import PACKAGED_TOKENIZER, tokenizer_path

    tiny_llama(attn="eager").save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_path(PACKAGED_TOKENIZER)).save_pretrained(folder)
    return folder


class BatchRecorder:
    """Keeps the keyword arguments of every forward call (`model.register_forward_pre_hook(rec, with_kwargs=True)`)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.batches.append({k: v.detach().clone() for k, v in kwargs.items() if hasattr(v, "detach")})


def shard_rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(shard_paths(out)).to_pylist()


def split_row(input_ids: list[int], labels: list[int], packs: list[dict[str, Any]], pad_id: int) -> list[int]:
    """The packs a batch row holds, in order (one, or several where the trainer packs rows together), then only
    padding (token `pad_id`, label -100)."""
    found, at = [], 0
    while at < len(input_ids) and not (
        all(t == pad_id for t in input_ids[at:]) and all(t == IGNORE_INDEX for t in labels[at:])
    ):
        for i, pack in enumerate(packs):
            n = len(pack["input_ids"])
            if input_ids[at : at + n] == pack["input_ids"] and labels[at : at + n] == pack["labels"]:
                found.append(i)
                at += n
                break
        else:
            raise AssertionError(f"tokens {at}.. of a batch row match no pack (tokens or labels changed)")
    return found


def block_causal(seq_lengths: list[int], total: int) -> list[list[bool]]:
    """allowed[q][k]: causal within each segment, nothing across segments (rows past the segments are padding)."""
    segment = [s for s, n in enumerate(seq_lengths) for _ in range(n)] + [-1] * (total - sum(seq_lengths))
    return [[segment[q] == segment[k] and k <= q for k in range(total)] for q in range(sum(seq_lengths))]


def check_batches(batches: list[dict[str, Any]], packs: list[dict[str, Any]], pad_id: int) -> None:
    """Every pack reaches the model exactly once over the epoch with its tokens and labels unchanged (so every trained
    token of the shards is trained, and nothing else), and with the shards' attention: the mask or the positions the
    model gets let a token attend exactly to the earlier tokens of its own attention segment (`seq_lengths`: each
    sample under `--attention segment`, the whole pack under `pack`)."""
    seen = []
    for batch in batches:
        for r in range(batch["input_ids"].shape[0]):
            held = split_row(batch["input_ids"][r].tolist(), batch["labels"][r].tolist(), packs, pad_id)
            seen += held
            seq_lengths = [n for i in held for n in packs[i]["seq_lengths"]]
            positions = [p for i in held for p in packs[i]["position_ids"]]
            n = sum(seq_lengths)
            mask = batch.get("attention_mask")
            if mask is not None and mask.dim() == 4:  # the additive (or boolean) block mask the model applies
                allowed = (mask[r, 0] == 0) if mask.is_floating_point() else mask[r, 0].bool()
                assert allowed[:n].tolist() == block_causal(seq_lengths, mask.shape[-1])
            elif mask is not None:  # 2D padding mask: the model adds a causal mask over the whole row
                assert mask[r, :n].tolist() == [1] * n and not any(mask[r, n:].tolist())
                assert len(seq_lengths) == 1, "a 2D mask gives one causal context: it cannot isolate segments"
            else:  # no mask: transformers derives the segments from where position_ids restart
                assert "position_ids" in batch and sum(p == 0 for p in positions) == len(seq_lengths)
            if "position_ids" in batch:
                assert batch["position_ids"][r, :n].tolist() == positions
    assert sorted(seen) == list(range(len(packs))), f"each pack trained exactly once per epoch, got {sorted(seen)}"
