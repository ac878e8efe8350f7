"""Export a pack output for a trainer that packs by itself: LLaMA-Factory or axolotl, each reading the packs as
already-packed rows (reads the shards only, like `tfpack.data`).

Per trainer and attention mode (`tfpack pack --attention`):

- LLaMA-Factory (`tokenized_path`, a `datasets` `save_to_disk` folder): `input_ids`, `labels`, `attention_mask`.
  `pack`: the mask is all ones (one causal context per row, `neat_packing: false`). `segment`: the mask holds int32
  segment ids 1, 2, ... per sample (0 on padding) and `position_ids` restart per sample (`neat_packing: true`);
  every row is padded to `max_len` rounded up to a multiple of 8 (token 0, label -100, segment 0, position 0):
  LLaMA-Factory's collator pads each batch to a multiple of 8 but leaves `position_ids` as they are, so rows of
  one length are the only ones it can batch.
- axolotl (Parquet under `data/`, `skip_prepare_dataset: true`): `input_ids`, `labels`, `position_ids`, `length`.
  `segment`: positions restart per sample and `sample_packing: true` (transformers masks across the restarts).
  `pack`: positions run on over the row, plus an all-ones `attention_mask`, and `sample_packing: false` (one causal
  context per row).

Labels stay as in the shards (unshifted, -100 where not trained and on each segment's first token). The export is
written to a temporary sibling folder and renamed into place last; its `manifest.json` names the source output and
lists every file, `recipe.yaml` holds the YAML to paste into the trainer's config. The export folder is checked and
replaced by the rules of every tfpack output (`workdir.check_out_dir`, `workdir.remove_owned`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.errors import ConfigError, DependencyError
from tfpack.version import __version__
from tfpack.workdir import (
    DATA_DIR,
    IGNORE_INDEX,
    MANIFEST,
    RECIPE_FILE,
    TFPACK_KINDS,
    check_out_dir,
    fingerprint_file,
    listed_shards,
    read_manifest,
    remove_owned,
    rerun_pack,
    write_manifest,
)

TRAINERS = ("llamafactory", "axolotl")
STAGE = "export"
PAD_MULTIPLE = 8  # LLaMA-Factory's collator pads to a multiple of 8 (`pad_to_multiple_of=8`), position_ids excepted
INT32_LIST = pa.list_(pa.int32())


def export(out_dir: Path, to: str, export_dir: Path, overwrite: bool = False) -> dict[str, Any]:
    """Export the `tfpack pack` output `out_dir` for trainer `to` into `export_dir`; returns the summary (with the
    recipe as `recipe`). `export_dir` is checked before anything is written (`workdir.check_out_dir`): new, empty,
    or an earlier export with `overwrite`, whose listed files alone are then replaced."""
    if to not in TRAINERS:
        raise ConfigError(f"--to: expected one of {', '.join(TRAINERS)}, got {to!r}")
    out_dir, export_dir = Path(out_dir), Path(export_dir)
    manifest = read_manifest(out_dir, "pack", rerun_pack(out_dir))
    shards = listed_shards(out_dir, manifest)
    earlier = check_out_dir(export_dir, STAGE, overwrite, [out_dir])
    attention = manifest["attention"]
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = export_dir.with_name(f".{export_dir.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        if to == "llamafactory":
            files, rows, tokens = _write_llamafactory(shards, attention, _round_up(manifest["max_len"]), tmp)
        else:
            files, rows, tokens = _write_axolotl(shards, attention, tmp)
        recipe = RECIPES[to][attention].format(
            path=export_dir.resolve() if to == "llamafactory" else export_dir.resolve() / DATA_DIR,
            model=manifest["tokenizer"],
            cutoff=_round_up(manifest["max_len"]),
            max_len=manifest["max_len"],
        )
        (tmp / RECIPE_FILE).write_text(recipe)
        summary = {
            "stage": STAGE,
            "trainer": to,
            "attention": attention,
            "export_dir": str(export_dir),
            "source": {
                "out_dir": str(out_dir.resolve()),
                "manifest_fingerprint": fingerprint_file(out_dir / MANIFEST),
                "tokenizer": manifest["tokenizer"],
                "max_len": manifest["max_len"],
            },
            "rows": rows,
            "tokens": tokens,
            "files": sorted([*files, RECIPE_FILE, MANIFEST]),
            "version": __version__,
        }
        write_manifest(tmp, {k: v for k, v in summary.items() if k != "export_dir"})
        if earlier.kind in TFPACK_KINDS:
            remove_owned(earlier)
        _move_into(tmp, export_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {**summary, "recipe": recipe}


def _move_into(tmp: Path, export_dir: Path) -> None:
    """Put the finished export `tmp` in place: renamed onto an absent or empty `export_dir`; into one that keeps the
    user's files (beside tfpack's, or under data/), entry by entry with the manifest last."""
    if not export_dir.is_dir() or not any(export_dir.iterdir()):
        os.replace(tmp, export_dir)
        return
    for entry in sorted(tmp.iterdir(), key=lambda path: path.name == MANIFEST):
        target = export_dir / entry.name
        if entry.is_dir() and target.is_dir():
            for child in entry.iterdir():
                os.replace(child, target / child.name)
        else:
            os.replace(entry, target)


def _round_up(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def _packs(shards: list[Path]) -> Iterator[list[dict[str, NDArray[np.int32]]]]:
    """Each shard's packs as int32 arrays (`input_ids`, `labels`, `position_ids`, `seq_lengths`)."""
    names = ["input_ids", "labels", "position_ids", "seq_lengths"]
    for shard in shards:
        table = pq.read_table(shard, columns=names)
        columns = {name: table.column(name).combine_chunks() for name in names}
        yield [
            {name: columns[name][i].values.to_numpy(zero_copy_only=False).astype(np.int32) for name in names}
            for i in range(len(table))
        ]


def _segment_ids(seq_lengths: NDArray[np.int32]) -> NDArray[np.int32]:
    """1, 1, ..., 2, 2, ...: the 1-based attention segment of each token."""
    return np.repeat(np.arange(1, len(seq_lengths) + 1, dtype=np.int32), seq_lengths)


def _list_column(values: list[NDArray[np.int32]]) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    flat = np.concatenate(values) if values else np.zeros(0, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int32()))


def _llamafactory_columns(packs: list[dict[str, NDArray[np.int32]]], attention: str, width: int) -> pa.Table:
    if attention == "pack":
        return pa.table(
            {
                "input_ids": _list_column([p["input_ids"] for p in packs]),
                "labels": _list_column([p["labels"] for p in packs]),
                "attention_mask": _list_column([np.ones(len(p["input_ids"]), dtype=np.int32) for p in packs]),
            }
        )
    columns: dict[str, list[NDArray[np.int32]]] = {
        "input_ids": [],
        "labels": [],
        "attention_mask": [],
        "position_ids": [],
    }
    for p in packs:
        pad = width - len(p["input_ids"])
        columns["input_ids"].append(np.pad(p["input_ids"], (0, pad)))
        columns["labels"].append(np.pad(p["labels"], (0, pad), constant_values=IGNORE_INDEX))
        columns["attention_mask"].append(np.pad(_segment_ids(p["seq_lengths"]), (0, pad)))
        columns["position_ids"].append(np.pad(p["position_ids"], (0, pad)))
    return pa.table({name: _list_column(values) for name, values in columns.items()})


def _write_llamafactory(shards: list[Path], attention: str, width: int, tmp: Path) -> tuple[list[str], int, int]:
    """Stream the packs into one Arrow file, then `save_to_disk` from its memory map (memory stays one shard)."""
    try:
        import datasets
    except ImportError as e:
        raise DependencyError("--to llamafactory writes a `datasets` folder; run `pip install datasets`") from e
    stream = tmp / "packs.arrow"
    rows = tokens = 0
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    try:
        for packs in _packs(shards):
            table = _llamafactory_columns(packs, attention, width)
            table = table.cast(pa.schema([(name, INT32_LIST) for name in table.column_names]))
            if writer is None:
                writer = pa.ipc.new_stream(stream, table.schema)
            writer.write_table(table)
            rows += len(packs)
            tokens += sum(len(p["input_ids"]) for p in packs)
    finally:
        if writer is not None:
            writer.close()
    dataset = datasets.Dataset.from_file(str(stream))
    dataset.save_to_disk(str(tmp / "dataset"))
    del dataset
    stream.unlink()
    for path in (tmp / "dataset").iterdir():  # the save_to_disk folder is the export folder itself
        path.rename(tmp / path.name)
    (tmp / "dataset").rmdir()
    return sorted(p.name for p in tmp.iterdir()), rows, tokens


def _write_axolotl(shards: list[Path], attention: str, tmp: Path) -> tuple[list[str], int, int]:
    """One Parquet file per source shard under `data/`."""
    (tmp / DATA_DIR).mkdir()
    files, rows, tokens = [], 0, 0
    for i, packs in enumerate(_packs(shards)):
        columns = {
            "input_ids": _list_column([p["input_ids"] for p in packs]),
            "labels": _list_column([p["labels"] for p in packs]),
            "position_ids": _list_column(
                [
                    p["position_ids"] if attention == "segment" else np.arange(len(p["input_ids"]), dtype=np.int32)
                    for p in packs
                ]
            ),
            "length": pa.array([len(p["input_ids"]) for p in packs], type=pa.int64()),
        }
        if attention == "pack":
            columns["attention_mask"] = _list_column([np.ones(len(p["input_ids"]), dtype=np.int32) for p in packs])
        name = f"{DATA_DIR}/train-{i:05d}-of-{len(shards):05d}.parquet"
        pq.write_table(pa.table(columns), tmp / name, compression="zstd")
        files.append(name)
        rows += len(packs)
        tokens += sum(len(p["input_ids"]) for p in packs)
    return files, rows, tokens


_LF_HEAD = """\
# LLaMA-Factory: train on a tfpack export ({mode}). Merge into your training YAML (llamafactory-cli train FILE);
# the rows are tokenized and packed already, so LLaMA-Factory skips both.
model_name_or_path: {{model}}  # the tokenizer the shards were packed with; use that model
stage: sft
do_train: true
finetuning_type: full
dataset: tfpack  # required by LLaMA-Factory's parser, not read: tokenized_path holds the data
tokenized_path: {{path}}
cutoff_len: {{cutoff}}  # packs hold at most {{max_len}} tokens (not checked on tokenized data)
"""
_AX_HEAD = """\
# axolotl: train on a tfpack export ({mode}). Merge into your config (axolotl train FILE);
# skip_prepare_dataset keeps the rows exactly as packed (no re-tokenizing, no position rewrite, no filtering).
base_model: {{model}}  # the tokenizer the shards were packed with; use that model
datasets:
  - path: {{path}}
    ds_type: parquet
skip_prepare_dataset: true
sequence_len: {{max_len}}
"""
RECIPES = {
    "llamafactory": {
        "pack": _LF_HEAD.format(mode="--attention pack: one causal context per pack, the TFP paper's mode")
        + "packing: false\nneat_packing: false  # the all-ones attention_mask: samples see their predecessors\n",
        "segment": _LF_HEAD.format(mode="--attention segment: samples isolated")
        + "neat_packing: true  # attention_mask holds segment ids: no sample attends to another\n",
    },
    "axolotl": {
        "pack": _AX_HEAD.format(mode="--attention pack: one causal context per pack, the TFP paper's mode")
        + "sample_packing: false  # each row is one causal context: samples see their predecessors\n",
        "segment": _AX_HEAD.format(mode="--attention segment: samples isolated")
        + "sample_packing: true  # position_ids restart per sample: no sample attends to another\n",
    },
}
