"""Mixtures of sources (`pack --weights`): per-source counts, repeats, no sample twice in a pack, conservation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, chat_rows, write_jsonl
from tfpack.cli import app
from tfpack.config import PackConfig
from tfpack.errors import ConfigError
from tfpack.packing.mixture import draw_copies, separate_copies, source_weights
from tfpack.packing.packer import pack_path
from tfpack.workdir import shard_paths

runner = CliRunner()
N_CHAT, N_CODE = 40, 30


def code_rows(n: int) -> list[dict]:
    """`n` prompt/response records unlike `chat_rows`."""
    return [
        {"prompt": f"Write a loop that prints {i} stars" + " in a row" * (i % 3), "response": "for _ in range(1): pass"}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mixture")
    chat = write_jsonl(tmp / "chat.jsonl", chat_rows(N_CHAT))
    code = write_jsonl(tmp / "code.jsonl", code_rows(N_CODE))
    embed = runner.invoke(app, ["embed", str(chat), str(code), "-o", str(tmp / "run"), "--model", "static", "--quiet"])
    assert embed.exit_code == 0, embed.stderr
    args = ["pack", str(tmp / "run"), "-o", str(tmp / "out"), *DEMO_TOKENIZER, "--max-len", "128"]
    result = runner.invoke(app, [*args, "--weights", "chat=2.0,code=0.5", "--json"])
    assert result.exit_code == 0, result.stderr
    return tmp / "out"


def packed_ids(out: Path) -> list[list[int]]:
    return pq.read_table(shard_paths(out), columns=["sample_ids"]).column(0).to_pylist()


def test_counts_repeats_and_conservation(mixed: Path) -> None:
    manifest = orjson.loads((mixed / "manifest.json").read_bytes())
    sources = manifest["sources"]
    assert manifest["weights"] == {"chat": 2.0, "code": 0.5}
    assert sources["chat"]["samples_in"] == N_CHAT and sources["code"]["samples_in"] == N_CODE
    assert sources["chat"]["copies_packed"] == 2 * N_CHAT and sources["chat"]["repeats"] == N_CHAT
    assert 0 < sources["code"]["samples_packed"] < N_CODE and sources["code"]["repeats"] == 0
    packs = packed_ids(mixed)
    entries = Counter(i for ids in packs for i in ids)
    assert all(len(set(ids)) == len(ids) for ids in packs), "no pack holds one sample twice"
    dropped = [orjson.loads(line) for line in (mixed / "dropped.jsonl").read_bytes().splitlines()]
    not_drawn = {d["sample_id"] for d in dropped if d["reason"] == "weight 0.5 of source code: not drawn"}
    assert len(not_drawn) == N_CODE - sources["code"]["samples_packed"] == len(dropped)
    assert set(entries) | not_drawn == set(range(N_CHAT + N_CODE)) and not set(entries) & not_drawn
    assert {i: entries[i] for i in range(N_CHAT)} == dict.fromkeys(range(N_CHAT), 2)
    repeats = [orjson.loads(line) for line in (mixed / "repeats.jsonl").read_bytes().splitlines()]
    assert {r["sample_id"]: r["copies"] for r in repeats} == dict.fromkeys(range(N_CHAT), 2)
    assert manifest["counts"]["samples"] == sum(entries.values())


def test_stats_shares_and_verify(mixed: Path) -> None:
    result = runner.invoke(app, ["stats", str(mixed), "--verify", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    chat, code = summary["sources"]["chat"], summary["sources"]["code"]
    assert (chat["weight"], code["weight"]) == (2.0, 0.5)
    assert chat["copies_packed"] + code["copies_packed"] == summary["samples"] == summary["verify"]["samples"]
    assert chat["tokens"] + code["tokens"] == summary["tokens"]
    assert chat["token_share"] == round(chat["tokens"] / summary["tokens"], 6)
    assert chat["sample_share"] + code["sample_share"] == pytest.approx(1.0)
    human = runner.invoke(app, ["stats", str(mixed)])
    assert human.exit_code == 0 and "source chat" in human.stdout and "token_share" in human.stdout


def test_verify_counts_copies_strictly(mixed: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(mixed, copy)
    lines = (copy / "repeats.jsonl").read_bytes().splitlines()
    (copy / "repeats.jsonl").write_bytes(b"\n".join(lines[1:]) + b"\n")  # sample 0 now listed once: packed twice
    result = runner.invoke(app, ["stats", str(copy), "--verify"])
    assert result.exit_code == 1 and "sample_id 0 appears more than once" in result.stderr


@pytest.mark.parametrize(
    "weights,message",
    [
        ("chat=2,nope=1", "--weights: no source named 'nope'; the sources are chat, code"),
        ("chat=-1", "--weights: chat: a weight must be a finite number >= 0, got -1"),
        ("a=b=c", "--weights: expected NAME=WEIGHT (e.g. gsm8k=2.0), got 'a=b=c'"),
        ("chat", "--weights: expected NAME=WEIGHT (e.g. gsm8k=2.0), got 'chat'"),
        ("chat=1,chat=2", "--weights: chat: given twice"),
    ],
)
def test_weight_errors_are_one_line(mixed: Path, tmp_path: Path, weights: str, message: str) -> None:
    run = mixed.parent / "run"
    result = runner.invoke(
        app, ["pack", str(run), "-o", str(tmp_path / "o"), *DEMO_TOKENIZER, "--weights", weights, "--quiet"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "o").exists()


def test_unknown_source_of_input_files_refused_before_anything_is_written(tmp_path: Path) -> None:
    chat = write_jsonl(tmp_path / "chat.jsonl", chat_rows(3))
    result = runner.invoke(
        app, ["pack", str(chat), "-o", str(tmp_path / "o"), *DEMO_TOKENIZER, "--weights", "code=2", "--quiet"]
    )
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: --weights: no source named 'code'; the sources are chat"
    )
    assert not (tmp_path / "o").exists()


def test_weights_from_yaml_and_api_forms() -> None:
    assert PackConfig(weights={"a": 2, "b": 0.5}).weights == ("a=2", "b=0.5")  # type: ignore[arg-type]
    assert PackConfig(weights=["a=1.5"]).weights == ("a=1.5",)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--weights: cannot be combined with --epochs"):
        PackConfig(weights=("a=2",), epochs=2)
    assert source_weights(("b=3",), ["a", "b"]).tolist() == [1.0, 3.0]


def test_fractional_weights_draw_about_their_share() -> None:
    copies = draw_copies(np.full(10_000, 2.5), seed=3)
    assert set(copies.tolist()) == {2, 3} and abs(copies.mean() - 2.5) < 0.03
    assert (draw_copies(np.full(100, 2.5), 3) == draw_copies(np.full(100, 2.5), 3)).all(), "seeded"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 32), min_size=1, max_size=40),
    st.lists(st.integers(1, 4), min_size=40, max_size=40),
    st.integers(32, 64),
    st.integers(0, 8),
)
def test_no_pack_holds_a_sample_twice(lengths: list[int], copies: list[int], max_len: int, lookahead: int) -> None:
    """Layered paths of random copies (as `run_pack` builds them), cut and separated: every entry in exactly one
    pack, no pack over max_len, no sample twice in one pack."""
    n = len(lengths)
    rng = np.random.default_rng(n)
    n_copies = np.asarray(copies[:n])
    path = np.concatenate([rng.permutation(np.flatnonzero(n_copies > k)) for k in range(int(n_copies.max()))])
    seq = np.asarray(lengths)[path]
    packs = separate_copies(pack_path(seq, max_len, lookahead), path, seq, max_len)
    positions = np.sort(np.concatenate(packs))
    assert positions.tolist() == list(range(len(path)))
    assert all(int(seq[p].sum()) <= max_len for p in packs)
    assert all(len(set(path[p].tolist())) == len(p) for p in packs)
