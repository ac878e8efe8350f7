from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, chat_rows, write_jsonl
from tfpack.cli import app
from tfpack.config import PackConfig
from tfpack.ingest.formats import Conversation, Turn
from tfpack.packing.tokenizer import load_tokenizer, tokenize_batch
from tfpack.workdir import IGNORE_INDEX, shard_paths

runner = CliRunner()


def read_rows(out: Path) -> list[dict]:
    return pq.read_table(shard_paths(out)).to_pylist()


def test_every_sample_exactly_once(packed: Path) -> None:
    rows = read_rows(packed)
    ids = [i for r in rows for i in r["sample_ids"]]
    dropped = [orjson.loads(x)["sample_id"] for x in (packed / "dropped.jsonl").read_bytes().splitlines()]
    assert sorted(ids + dropped) == list(range(60)) and len(set(ids)) == len(ids)
    manifest = orjson.loads((packed / "manifest.json").read_bytes())
    assert manifest["counts"]["samples"] == len(ids) and manifest["counts"]["packs"] == len(rows)
    assert len(shard_paths(packed)) == len(manifest["shards"]) > 1


def test_output_contract_invariants(packed: Path) -> None:
    for r in read_rows(packed):
        n = len(r["input_ids"])
        assert n == r["num_tokens"] <= 128
        assert len(r["labels"]) == len(r["loss_mask"]) == len(r["position_ids"]) == n
        assert sum(r["seq_lengths"]) == sum(r["sample_lengths"]) == n
        assert r["seq_start_id"] == np.concatenate([[0], np.cumsum(r["seq_lengths"])[:-1]]).tolist()
        assert r["seq_lengths"] == r["sample_lengths"]  # segment attention: one segment per sample
        labels = np.asarray(r["labels"])
        starts = set(r["seq_start_id"])
        for s, length in zip(r["seq_start_id"], r["seq_lengths"], strict=True):
            assert r["position_ids"][s : s + length] == list(range(length))
            assert labels[s] == IGNORE_INDEX
            assert r["loss_mask"][s + length - 1] == 0
        for j in range(n - 1):
            expected = int(labels[j + 1] != IGNORE_INDEX and (j + 1) not in starts)
            assert r["loss_mask"][j] == expected
        assert r["num_loss_tokens"] == sum(r["loss_mask"])
        assert len(r["path_sim"]) == len(r["sample_ids"])


def test_every_sample_ends_with_its_trained_end_of_turn(packed: Path) -> None:
    """ChatML closes the assistant turn with <|im_end|>: that marker ends each sample, trained, and no EOS is added."""
    manifest = orjson.loads((packed / "manifest.json").read_bytes())
    assert manifest["end_of_turn"] == "<|im_end|>"
    eos = manifest["special_token_ids"]["eos_token_id_used"]
    decode = load_tokenizer("packaged-minilm", None).hf.decode
    for r in read_rows(packed):
        starts = np.concatenate([[0], np.cumsum(r["sample_lengths"])[:-1]])
        for s, length in zip(starts, r["sample_lengths"], strict=True):
            ids, labels = r["input_ids"][s : s + length], r["labels"][s : s + length]
            assert eos not in ids
            assert decode(ids).replace(" ", "").endswith("<|im_end|>")
            assert labels[-1] == ids[-1]


def test_deterministic_shards(packed: Path, tmp_path: Path) -> None:
    run_dir = Path(orjson.loads((packed / "manifest.json").read_bytes())["run_dir"])
    outs = []
    for name in ("a", "b"):
        result = runner.invoke(
            app,
            [
                "pack",
                str(run_dir),
                "-o",
                str(tmp_path / name),
                *DEMO_TOKENIZER,
                "--max-len",
                "128",
                "--threshold",
                "0.9",
                "--shard-packs",
                "4",
                "-q",
            ],
        )
        assert result.exit_code == 0, result.stderr
        outs.append([p.read_bytes() for p in shard_paths(tmp_path / name)])
    assert outs[0] == outs[1]


def test_pack_attention_mode_and_drop(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(30))
    result = runner.invoke(
        app,
        [
            "pack",
            str(data),
            "-o",
            str(tmp_path / "out"),
            *DEMO_TOKENIZER,
            "--max-len",
            "64",
            "--attention",
            "pack",
            "--long",
            "drop",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    dropped = [orjson.loads(x) for x in (tmp_path / "out" / "dropped.jsonl").read_bytes().splitlines()]
    assert summary["dropped"] == len(dropped) > 0
    assert summary["samples"] + summary["dropped"] == 30 and summary["packs"] > 0
    assert all(d["reason"].startswith("longer than max_len") for d in dropped)
    for r in read_rows(tmp_path / "out"):
        assert r["seq_lengths"] == [len(r["input_ids"])]
        assert r["position_ids"] == list(range(len(r["input_ids"])))


def test_refuses_non_empty_out_dir(packed: Path) -> None:
    data = packed.parent / "chat.jsonl"
    result = runner.invoke(app, ["pack", str(data), "-o", str(packed), "--tokenizer", "packaged-minilm"])
    assert result.exit_code == 2 and "holds a finished run; pass --overwrite" in result.stderr
    # its own embed run (OUT/.tfpack/embed) is an input inside OUT: --overwrite would remove it, so it is refused
    run_dir = orjson.loads((packed / "manifest.json").read_bytes())["run_dir"]
    result = runner.invoke(app, ["pack", run_dir, "-o", str(packed), "--overwrite", "--tokenizer", "packaged-minilm"])
    assert result.exit_code == 2 and f"-o {packed}: contains the input {run_dir}" in result.stderr


def test_overwrite_replaces_the_whole_output(packed: Path, tmp_path: Path) -> None:
    """`--overwrite` with another --max-len: the Hub layout of the new run only, no shard or metadata of the old."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(packed, out, symlinks=True)
    assert len(shard_paths(out)) > 1
    run_dir = orjson.loads((packed / "manifest.json").read_bytes())["run_dir"]
    result = runner.invoke(
        app,
        [
            "pack",
            run_dir,
            "-o",
            str(out),
            *DEMO_TOKENIZER,
            "--max-len",
            "96",
            "--overwrite",
            "--shard-packs",
            "1000",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in shard_paths(out)] == ["train-00000-of-00001.parquet"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".tfpack",
        "96_metadata.jsonl",
        "README.md",
        "data",
        "dropped.jsonl",
        "errors.jsonl",
        "manifest.json",
    ]


def test_stats_agree_with_shards(packed: Path) -> None:
    result = runner.invoke(app, ["stats", str(packed), "--json"])
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    rows = read_rows(packed)
    assert summary["packs"] == len(rows)
    assert summary["tokens"] == sum(len(r["input_ids"]) for r in rows)
    assert summary["fill_rate"] == pytest.approx(summary["tokens"] / (len(rows) * 128), abs=1e-6)
    assert summary["mean_pack_similarity"] > summary["random_pack_similarity"]


def test_train_on_and_truncation() -> None:
    tokenizer = load_tokenizer("packaged-minilm", None)
    turns = Conversation(
        (
            Turn("user", "question one"),
            Turn("assistant", "answer one"),
            Turn("user", "question two"),
            Turn("assistant", "answer two"),
        )
    )
    decode = tokenizer.hf.decode
    for train_on, expected in (("assistant", "answer one"), ("completion", "answer two"), ("all", "question one")):
        [(ids, labels, prompt_len)] = tokenize_batch([turns], tokenizer, train_on)
        trained = decode(labels[labels != IGNORE_INDEX].tolist())
        assert expected in trained
    [(ids, labels, _)] = tokenize_batch([turns], tokenizer, "completion")
    assert "answer one" not in decode(labels[labels != IGNORE_INDEX].tolist())


def test_pack_config_checks() -> None:
    from tfpack.errors import ConfigError

    with pytest.raises(ConfigError, match="--attention"):
        PackConfig(attention="full")
    with pytest.raises(ConfigError, match="truncate, turns, drop"):
        PackConfig(long="cut")
    with pytest.raises(ConfigError, match=r"over 2\^31 - 1 tokens a shard .*lower --shard-packs"):
        PackConfig(max_len=1_000_000)  # × the default 5000 packs a shard: int32 list offsets would overflow
    assert PackConfig(max_len=1_000_000, shard_packs=2000).max_len == 1_000_000


def test_pack_filter_keeps_near_duplicates_apart(tmp_path: Path) -> None:
    rows = chat_rows(30) + chat_rows(30)  # every chat twice: exact duplicates the window filter alone lets through
    data = write_jsonl(tmp_path / "dup.jsonl", rows)
    rates = {}
    for flag in ("--no-pack-filter", "--pack-filter"):
        out = tmp_path / flag
        extra = ["--pack-filter", "0.95"] if flag == "--pack-filter" else []
        result = runner.invoke(
            app,
            [
                "pack",
                str(data),
                "-o",
                str(out),
                *DEMO_TOKENIZER,
                "--max-len",
                "256",
                "--threshold",
                "0.95",
                *extra,
                "--quiet",
            ],
        )
        assert result.exit_code == 0, result.stderr
        stats = runner.invoke(app, ["stats", str(out), "--verify", "--json"])
        assert stats.exit_code == 0, stats.stderr
        summary = orjson.loads(stats.stdout)
        assert summary["samples"] + summary["dropped"] == 60
        rates[flag] = summary["near_duplicate_rate"]
    assert rates["--no-pack-filter"] > 0, "control: the window filter alone leaves duplicates in packs"
    assert rates["--pack-filter"] == 0
