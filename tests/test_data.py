"""The training side of the contract: Dataset/collator, and a tiny Llama that must see packed samples as if alone."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import tiny_llama as conftest_llama
from tfpack.data import PackedCollator, PackedDataset, block_causal_mask
from tfpack.workdir import IGNORE_INDEX, shard_paths


def tiny_llama(attn: str) -> torch.nn.Module:
    return conftest_llama(attn).eval()


def multi_segment_packs(ds: PackedDataset, count: int) -> list[dict[str, torch.Tensor]]:
    packs = [ds[i] for i in range(len(ds)) if len(ds[i]["seq_lengths"]) >= 2]
    assert len(packs) >= count
    return packs[:count]


def alone_logits(model: torch.nn.Module, pack: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for seg in torch.split(pack["input_ids"], pack["seq_lengths"].tolist()):
        with torch.no_grad():
            out.append(model(input_ids=seg[None]).logits[0])
    return out


def test_dataset_reads_every_pack(packed: Path) -> None:
    ds = PackedDataset(packed)
    rows = pq.read_table(shard_paths(packed)).to_pylist()
    assert len(ds) == len(rows)
    for i in (0, len(ds) // 2, -1):
        item = ds[i]
        assert item["input_ids"].tolist() == rows[i]["input_ids"]
        assert item["position_ids"].tolist() == rows[i]["position_ids"]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataset_is_lazy_and_bounded(packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards rewritten with 2 packs per row group: construction decodes no data (footers only), a pass in order
    decodes each row group once, random access holds at most `cached_row_groups` of them, also in a pickled copy
    (a DataLoader worker), and the items equal an eager read."""
    import pickle

    (tmp_path / "data").mkdir()
    for path in shard_paths(packed):
        pq.write_table(pq.read_table(path), tmp_path / "data" / path.name, row_group_size=2)
    rows = pq.read_table(shard_paths(tmp_path)).to_pylist()
    decoded: list[int] = []
    read_row_group = pq.ParquetFile.read_row_group

    def counted(self: pq.ParquetFile, i: int, *args: object, **kwargs: object) -> object:
        decoded.append(i)
        return read_row_group(self, i, *args, **kwargs)

    def whole(*args: object, **kwargs: object) -> None:
        raise AssertionError("a whole shard was decoded")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    monkeypatch.setattr(pq.ParquetFile, "read", whole)
    monkeypatch.setattr(pq, "read_table", whole)
    ds = PackedDataset(tmp_path, cached_row_groups=2)
    assert len(ds) == len(rows) and len(ds.groups) > 4 and not decoded and not ds._cache
    for i in range(len(ds)):
        assert ds[i]["labels"].tolist() == rows[i]["labels"]
        assert len(ds._cache) <= 2
    assert len(decoded) == len(ds.groups)
    ds._cache.clear()
    decoded.clear()
    for i in (0, len(ds) - 1, 1, 0, len(ds) - 1):  # two row groups (rows 0 and 1 share one), alternating: kept
        assert ds[i]["input_ids"].tolist() == rows[i]["input_ids"]
    assert len(decoded) == 2
    for i in (2, 0):  # a third row group evicts the least recently used (row 0's), which is decoded again
        assert ds[i]["input_ids"].tolist() == rows[i]["input_ids"]
    assert len(decoded) == 4 and len(ds._cache) == 2
    copy = pickle.loads(pickle.dumps(ds))
    assert not copy._cache and copy[-1]["input_ids"].tolist() == rows[-1]["input_ids"]


def test_block_causal_mask_shape_and_blocks() -> None:
    mask = block_causal_mask(torch.tensor([2, 3]), 6, torch.float32) == 0
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],  # padding sees only itself
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padded_pack_equals_samples_alone(packed: Path, attn: str) -> None:
    """A batch of packs with the block-diagonal 4D mask and the row's position_ids: per-segment logits match."""
    model = tiny_llama(attn)
    packs = multi_segment_packs(PackedDataset(packed), 2)
    batch = PackedCollator("padded")(packs)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    for b, pack in enumerate(packs):
        got = torch.split(logits[b, : len(pack["input_ids"])], pack["seq_lengths"].tolist())
        for seg_got, seg_alone in zip(got, alone_logits(model, pack), strict=True):
            torch.testing.assert_close(seg_got, seg_alone, atol=2e-5, rtol=1e-4)


def test_packed_without_mask_would_differ(packed: Path) -> None:
    """Control: the same pack with a plain causal mask leaks across samples, so the test above can fail."""
    model = tiny_llama("eager")
    pack = multi_segment_packs(PackedDataset(packed), 1)[0]
    with torch.no_grad():
        logits = model(input_ids=pack["input_ids"][None]).logits[0]
    later = torch.split(logits, pack["seq_lengths"].tolist())[1]
    assert not torch.allclose(later, alone_logits(model, pack)[1], atol=1e-3)


def test_flat_batch_equals_samples_alone(packed: Path) -> None:
    """Padding-free: packs flattened into one row. A varlen kernel (flash-attention) attends within the
    `cu_seq_lens` ranges at the row's `position_ids`; on CPU the same is a block mask built from `cu_seq_lens`."""
    model = tiny_llama("eager")
    packs = multi_segment_packs(PackedDataset(packed), 2)
    batch = PackedCollator("flat")(packs)
    lengths = torch.cat([p["seq_lengths"] for p in packs])
    cu = batch["cu_seq_lens_q"]
    assert cu.dtype == torch.int32 and cu.tolist() == [0, *lengths.cumsum(0).tolist()]
    assert torch.equal(batch["cu_seq_lens_k"], cu) and batch["max_length_q"] == int(lengths.max())
    total = batch["input_ids"].shape[1]
    assert cu[-1] == total and batch["position_ids"].shape == batch["labels"].shape == (1, total)
    mask = block_causal_mask(torch.diff(cu).long(), total, torch.float32)[None, None]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).logits[0]
    expected = [seg for p in packs for seg in alone_logits(model, p)]
    for seg_got, seg_alone in zip(torch.split(logits, lengths.tolist()), expected, strict=True):
        torch.testing.assert_close(seg_got, seg_alone, atol=2e-5, rtol=1e-4)


def test_padded_labels_and_ids(packed: Path) -> None:
    packs = multi_segment_packs(PackedDataset(packed), 2)
    batch = PackedCollator("padded", pad_token_id=7)(packs)
    short = min(range(2), key=lambda i: len(packs[i]["input_ids"]))
    n = len(packs[short]["input_ids"])
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all() and (batch["input_ids"][short, n:] == 7).all()
    assert batch["attention_mask"].shape == (2, 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
