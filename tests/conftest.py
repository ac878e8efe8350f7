"""Shared fixtures: tiny datasets written into tmp_path, and paths to ../shared when present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tfpack.cli import app
from tfpack.progress import Progress, Task

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"
DEMO_TOKENIZER = ("--tokenizer", "packaged-minilm")  # the offline WordPiece, named as `tfpack pack` requires
GOLDEN = SHARED / "golden"


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def shared_file(path: Path) -> Path:
    """Return `path`, or skip the test when ../shared is not there."""
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


TOPICS = [
    ("What is {a} plus {b}?", "{a} + {b} = {c}."),
    ("Translate 'good morning number {a}' into French.", "Bonjour numéro {a}."),
    ("Write a Python function that returns {a} times x.", "def f(x):\n    return {a} * x"),
    ("Name a capital city, example {a}.", "Paris is the capital of France ({b})."),
]


def qa_rows(n: int) -> list[dict[str, str]]:
    """`n` question/answer records over a few topics."""
    rows = []
    for i in range(n):
        q, a = TOPICS[i % len(TOPICS)]
        rows.append({"question": q.format(a=i, b=i + 1), "answer": a.format(a=i, b=i + 1, c=2 * i + 1)})
    return rows


@pytest.fixture
def qa_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", qa_rows(24))


def chat_rows(n: int) -> list[dict]:
    """`n` two-turn chats in OpenAI messages form over three topics, of varied lengths."""
    topics = ["math: add {i} and {j}", "python: write a function returning {i}", "geography: capital number {i}"]
    rows = []
    for i in range(n):
        prompt = topics[i % 3].format(i=i, j=i + 2) + " please explain step by step" * (i % 4)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"The answer is {i}. " * (1 + i % 5)},
                ]
            }
        )
    return rows


@pytest.fixture(scope="session")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tfpack pack` output directory of 60 chats at max-len 128, several shards, one attention segment per sample
    (the isolation mode, whose per-sample invariants most tests check)."""
    tmp = tmp_path_factory.mktemp("pack")
    data = write_jsonl(tmp / "chat.jsonl", chat_rows(60))
    args = [
        "pack",
        str(data),
        "-o",
        str(tmp / "out"),
        "--tokenizer",
        "packaged-minilm",
        "--attention",
        "segment",
        "--max-len",
        "128",
        "--threshold",
        "0.9",
        "--shard-packs",
        "4",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return tmp / "out"


@pytest.fixture(scope="session")
def packed_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tfpack pack` output directory with the defaults (`--attention pack`): 40 chats at max-len 256."""
    tmp = tmp_path_factory.mktemp("pack-default")
    data = write_jsonl(tmp / "chat.jsonl", chat_rows(40))
    args = [
        "pack",
        str(data),
        "-o",
        str(tmp / "packed"),
        "--tokenizer",
        "packaged-minilm",
        "--max-len",
        "256",
        "--shard-packs",
        "3",
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return tmp / "packed"


def tiny_llama(attn: str = "sdpa", vocab_size: int = 30522) -> Any:
    """A random 2-layer Llama from a transformers config (no download), vocabulary covering packaged-minilm's ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config)


class Counted(Progress):
    """A shown progress that records each task's total and counts what it advanced."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.totals: dict[str, float | None] = {}

    def task(self, description: str, total: float | None = None) -> Task:
        done = self.done
        done[description] = 0
        self.totals[description] = total

        class Counter(Task):
            def advance(self, amount: float = 1) -> None:
                done[description] += amount

        return Counter()
