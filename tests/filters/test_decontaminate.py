"""`pack --decontaminate`: contaminated samples dropped (or only reported), named with the benchmark file and item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, write_jsonl
from tfpack.cli import app

runner = CliRunner()

TRAIN = [
    (
        "How do I reverse a list in Python?",
        "Use slicing: items[::-1] returns a reversed copy, or items.reverse() in place.",
    ),
    (
        "What causes the seasons on Earth?",
        "The tilt of Earth's axis changes how directly sunlight reaches each hemisphere.",
    ),
    ("Give me a recipe for pancakes.", "Whisk flour, milk, eggs, sugar and baking powder, then fry ladles of batter."),
    ("Translate 'thank you very much' into Spanish.", "Muchas gracias."),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight more than red ones."),
    (
        "Summarise the plot of Hamlet in one sentence.",
        "A Danish prince avenges his father's murder and nearly everyone dies.",
    ),
    ("What is the derivative of x squared?", "The derivative of x squared is two x."),
    (
        "A train leaves the station at nine in the morning travelling at sixty miles per hour; when does it reach the "
        "city two hundred and forty miles away?",
        "It needs four hours, so it arrives at one in the afternoon.",
    ),
    ("Name three primary colours.", "Red, yellow and blue."),
    ("How many legs does a spider have?", "Eight."),
    ("Explain what a hash table is.", "A structure mapping keys to slots through a hash function for fast look-ups."),
    (
        "Write a haiku about autumn.",
        "Crimson maple leaves drift slowly down the quiet river past the old mill where the miller sleeps at dusk",
    ),
]


def train_rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in TRAIN]


def jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def benchmark(tmp_path: Path) -> Path:
    """Line 1: an unrelated item; line 2: sample 7 copied; line 3: sample 11's answer inside another prompt (a shared
    13-gram only), HumanEval-style."""
    return write_jsonl(
        tmp_path / "bench.jsonl",
        [
            {"question": "Which planet has the largest moon in the solar system?", "answer": "Jupiter: Ganymede."},
            {"question": TRAIN[7][0], "answer": TRAIN[7][1]},
            {"prompt": "Continue the poem.", "canonical_solution": TRAIN[11][1]},
        ],
    )


def test_contaminated_samples_dropped_with_benchmark_and_item(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", train_rows())
    bench = benchmark(tmp_path)
    out = tmp_path / "out"
    args = ["pack", str(data), "-o", str(out), *DEMO_TOKENIZER, "--max-len", "256", "--decontaminate", str(bench)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    hits = {e["sample_id"]: e for e in jsonl(out / "contamination.jsonl")}
    assert set(hits) == {7, 11}, hits
    assert hits[7]["line"] == 2 and hits[7]["kind"] == "embedding" and hits[7]["cos"] > 0.99
    assert hits[11]["line"] == 3 and hits[11]["kind"] == "ngram"
    assert hits[7]["reason"] == f"contaminated: {bench} line 2 (cos {hits[7]['cos']:.3f})"
    dropped = {e["sample_id"]: e for e in jsonl(out / "dropped.jsonl")}
    assert {7, 11} <= set(dropped) and dropped[7]["reason"] == hits[7]["reason"]
    stats = runner.invoke(app, ["stats", str(out), "--verify", "--json"])
    assert stats.exit_code == 0, stats.stderr
    summary = orjson.loads(stats.stdout)
    assert summary["contaminated"] == 2
    (per_file,) = summary["decontamination"]["files"]
    assert per_file == {"file": str(bench), "items": 3, "contaminated": 2, "embedding": 1, "ngram": 1}

    report = tmp_path / "report"
    result = runner.invoke(app, [*args[:3], str(report), *args[4:], "--decontaminate-report", "--json"])
    assert result.exit_code == 0, result.stderr
    assert {e["sample_id"] for e in jsonl(report / "contamination.jsonl")} == {7, 11}
    assert not ({7, 11} & {e["sample_id"] for e in jsonl(report / "dropped.jsonl")}), "report-only drops nothing"
    assert orjson.loads(result.stdout)["samples"] == orjson.loads(stats.stdout)["samples"] + 2


def test_precomputed_embeddings_check_ngrams_only(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", train_rows())
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(TRAIN), 16)).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    run = tmp_path / "run"
    embedded = runner.invoke(app, ["embed", str(data), "-o", str(run), "--embeddings", str(tmp_path / "emb.npy")])
    assert embedded.exit_code == 0, embedded.stderr
    out = tmp_path / "out"
    bench = benchmark(tmp_path)
    args = ["pack", str(run), "-o", str(out), *DEMO_TOKENIZER, "--max-len", "256", "--decontaminate", str(bench)]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.stderr
    hits = jsonl(out / "contamination.jsonl")
    assert {h["sample_id"] for h in hits} == {7, 11} and {h["kind"] for h in hits} == {"ngram"}
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["decontamination"]["threshold"] is None, "no model: the embedding check is not claimed"


def test_bad_benchmark_file_is_named(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", train_rows())
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": "ok?", "answer": "yes"}, {"score": 3}])
    result = runner.invoke(
        app, ["pack", str(data), "-o", str(tmp_path / "o"), *DEMO_TOKENIZER, "--decontaminate", str(bench), "-q"]
    )
    assert result.exit_code != 0
    assert f"{bench}:2" in result.stderr and "no text" in result.stderr
