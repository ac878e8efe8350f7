"""Each trainer mapping in the README, checked offline against what that trainer computes from the shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tfpack.data import PackedDataset, TorchtuneDataset, to_torchtune
from tfpack.workdir import IGNORE_INDEX, shard_paths


def rows(out: Path) -> list[dict]:
    return pq.read_table(shard_paths(out)).to_pylist()


def hf_targets(row: dict) -> set[tuple[int, int]]:
    """(position, target token) pairs a Hugging Face model trains on: labels shifted inside the loss."""
    labels = row["labels"]
    return {(j, labels[j + 1]) for j in range(len(labels) - 1) if labels[j + 1] != IGNORE_INDEX}


def test_trl_padding_free_collator_reproduces_the_packs(packed: Path) -> None:
    """TRL's own collator (padding_free, the dataset's `seq_lengths`) gives our positions and labels unchanged."""
    trl = pytest.importorskip("trl.trainer.sft_trainer")
    collator = trl.DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch_rows = rows(packed)[:3]
    examples = [{k: r[k] for k in ("input_ids", "labels", "seq_lengths")} for r in batch_rows]
    out = collator(examples)
    assert out["input_ids"][0].tolist() == [t for r in batch_rows for t in r["input_ids"]]
    assert out["position_ids"][0].tolist() == [p for r in batch_rows for p in r["position_ids"]]
    assert out["labels"][0].tolist() == [t for r in batch_rows for t in r["labels"]]


def test_torchtune_layout(packed: Path) -> None:
    """torchtune's packed layout: padded to max_seq_len, padding as its own sequence, continuing positions."""
    ds = TorchtuneDataset(packed, max_seq_len=128, pad_token_id=0)
    assert ds.packed and len(ds) == len(PackedDataset(packed))
    for i in range(len(ds)):
        item, pack = ds[i], ds.packs[i]
        n, pad = len(pack["input_ids"]), 128 - len(pack["input_ids"])
        assert all(len(item[k]) == 128 for k in ("tokens", "labels", "input_pos"))
        assert int(item["seq_lens"].sum()) == 128
        assert torch.equal(item["tokens"][:n], pack["input_ids"]) and torch.equal(item["labels"][:n], pack["labels"])
        assert (item["labels"][n:] == IGNORE_INDEX).all()
        seq_lens = item["seq_lens"].tolist()
        for start, length in zip(np.cumsum([0, *seq_lens[:-1]]), seq_lens, strict=True):
            if start < n:
                assert item["input_pos"][start : start + length].tolist() == list(range(length))
        if pad:
            last = int(pack["position_ids"][-1])
            assert item["input_pos"][n:].tolist() == [min(last + 1 + j, 127) for j in range(pad)]


def test_torchtune_rejects_a_pack_over_max_len(packed: Path) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        to_torchtune(PackedDataset(packed)[0], 4)


def test_megatron_bridge_packed_parquet_trains_the_same_tokens(packed: Path) -> None:
    """Megatron-Bridge's packed reader: boundaries = seq_start_id + [len]; per segment it feeds ids[s:e-1], targets
    ids[s+1:e], masked by loss_mask[s:e-1]. The trained (position, target) pairs must equal the HF labels path."""
    for row in rows(packed):
        ids, mask = row["input_ids"], row["loss_mask"]
        bounds = [*row["seq_start_id"], len(ids)]
        trained = set()
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            trained |= {(j, ids[j + 1]) for j in range(s, e - 1) if mask[j]}
        assert trained == hf_targets(row)
        assert sum(mask) == row["num_loss_tokens"]


def test_hf_trainer_with_packed_collator(packed: Path, tmp_path: Path) -> None:
    """Hugging Face's Trainer takes two optimizer steps on PackedDataset + PackedCollator("padded") over isolated
    segments with eager attention (the README's block, run by test_docs, trains `--attention pack` shards on SDPA)."""
    from transformers import Trainer, TrainingArguments

    from tests.conftest import tiny_llama
    from tfpack.data import PackedCollator

    args = TrainingArguments(
        output_dir=str(tmp_path / "ckpt"),
        per_device_train_batch_size=2,
        max_steps=2,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    trainer = Trainer(
        model=tiny_llama("eager"),
        args=args,
        train_dataset=PackedDataset(packed),
        data_collator=PackedCollator("padded", pad_token_id=0),
    )
    result = trainer.train()
    assert trainer.state.global_step == 2 and np.isfinite(result.training_loss)


def test_load_dataset_reads_exactly_the_packs(packed_default: Path, tmp_path: Path) -> None:
    """Both ways `datasets` reads a directory give the packs and nothing else (not the card, the lists, .tfpack/).
    A fresh cache: `datasets` may otherwise return what an earlier session packed at the same temporary path."""
    datasets = pytest.importorskip("datasets")
    expected = rows(packed_default)
    assert (packed_default / ".tfpack" / "embed" / "samples.parquet").is_file()
    cache = str(tmp_path / "hf-cache")
    for ds in (
        datasets.load_dataset(str(packed_default), split="train", cache_dir=cache),
        datasets.load_dataset("parquet", data_dir=str(packed_default), split="train", cache_dir=cache),
    ):
        assert ds.num_rows == len(expected)
        assert ds["input_ids"] == [r["input_ids"] for r in expected]


def test_hub_upload_as_the_readme_says_sends_the_dataset_repository(packed_default: Path) -> None:
    """The README's `ignore_patterns` leaves exactly the Hub layout to upload (not the embed run under .tfpack/)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert 'ignore_patterns=[".tfpack/*"]' in readme
    files = [p.relative_to(packed_default).as_posix() for p in packed_default.rglob("*") if p.is_file()]
    assert any(f.startswith(".tfpack/embed/") for f in files)
    sent = set(filter_repo_objects(files, ignore_patterns=[".tfpack/*", *DEFAULT_IGNORE_PATTERNS]))
    assert sent == {
        "README.md",
        "manifest.json",
        "dropped.jsonl",
        "errors.jsonl",
        "256_metadata.jsonl",
        *(f"data/{p.name}" for p in shard_paths(packed_default)),
    }


def test_default_packs_are_one_causal_context(packed_default: Path) -> None:
    """`--attention pack` (the default): one segment per pack, positions run on across samples."""
    import orjson

    assert orjson.loads((packed_default / "manifest.json").read_bytes())["attention"] == "pack"
    multi = [r for r in rows(packed_default) if len(r["sample_lengths"]) > 1]
    assert multi
    for r in rows(packed_default):
        assert r["seq_lengths"] == [len(r["input_ids"])] and r["position_ids"] == list(range(len(r["input_ids"])))
        assert sum(r["sample_lengths"]) == len(r["input_ids"])


def test_megatron_bridge_metadata_matches_the_shards(packed_default: Path, packed: Path) -> None:
    """The metadata as Megatron-Bridge's packer writes it: one sequence per attention segment (split at seq_start_id),
    a segment of L tokens counted as its L - 1 inputs, as its packed collator feeds them."""
    import orjson

    for out in (packed_default, packed):
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        [meta] = orjson.loads((out / f"{manifest['max_len']}_metadata.jsonl").read_bytes())
        all_rows = rows(out)
        inputs = []  # per pack: what the collator feeds, segment by segment (ids[s:e-1])
        for r in all_rows:
            bounds = [*r["seq_start_id"], len(r["input_ids"])]
            inputs.append([e - s - 1 for s, e in zip(bounds[:-1], bounds[1:], strict=True)])
        assert meta == {
            "max_samples_per_bin": max(len(x) for x in inputs),
            "dataset_max_seqlen": max(max(x) for x in inputs),
            "packing_factor": round(sum(len(x) for x in inputs) / len(inputs), 2),
            "packing_efficiency": round(sum(map(sum, inputs)) / (len(inputs) * manifest["max_len"]) * 100, 2),
            "pack_size": manifest["max_len"],
            "min_packed_seqlen": min(map(sum, inputs)),
        }
    assert meta["max_samples_per_bin"] > 1, "segment mode: several samples per pack"


def test_dataset_card_declares_the_shards(packed_default: Path, packed: Path) -> None:
    """The card's front matter names the shards as the train split; its body leads with the attention mode, then the
    manifest's counts and settings."""
    import orjson
    import yaml

    for out in (packed_default, packed):
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        card = (out / "README.md").read_text()
        _, front, body = card.split("---\n", 2)
        [config] = yaml.safe_load(front)["configs"]
        assert config["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
        assert body.index(f"**Attention: `{manifest['attention']}`**") < body.index("## Counts")
        c = manifest["counts"]
        assert (
            f"| {c['packs']} | {c['samples']} | {c['tokens']} | {c['loss_tokens']} | {c['fill_rate']} | "
            f"{c['dropped']} | {c['refused']} | {c['input_errors']} |"
        ) in body
        assert f"| tokenizer | `{manifest['tokenizer']}` |" in body and f"| max_len | `{manifest['max_len']}` |" in body
        assert "| `labels` |" in body and f"`{manifest['max_len']}_metadata.jsonl`" in body
