"""Rendering is Hugging Face's and the trained tokens are exactly the assistant turns, per template family.

A byte-level BPE tokenizer is trained here with `tokenizers` (no download) and saved once per template family from
tests/templates.py; tfpack loads it from disk as a user's tokenizer. For every family × conversation × `--train-on`:
the text equals `apply_chat_template(..., tokenize=False)`, the token ids equal the tokenizer's own encoding of it,
and the trained tokens decode to the family's expected assistant text, or the sample is refused with a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.packing.templates import (
    CONVERSATIONS,
    FAMILIES,
    PHI3_TRIM,
    REASONING,
    TOOL_CALLS,
    TOOLS,
    Messages,
    Refuses,
    build_bpe,
    family_tokenizer,
)
from tfpack.ingest.formats import FormatOptions, resolve_field_map, to_conversation
from tfpack.packing.tokenizer import Refusal, Rendered, Tokenizer, load_tokenizer, render, tokenize_batch
from tfpack.workdir import IGNORE_INDEX

TRAIN_ON = ("assistant", "completion", "all")


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained on the gallery's texts, saved as a fast tokenizer without a chat template."""
    return build_bpe(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def family_dirs(bpe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tokenizer directory per family: the same BPE with the family's chat template, EOS and BOS."""
    return {
        family: family_tokenizer(bpe_dir, family, tmp_path_factory.mktemp(f"family{i}"))
        for i, family in enumerate(FAMILIES)
    }


def as_record(messages: Messages, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"messages": messages, **({"tools": tools} if tools else {})}


def hf_messages(messages: Messages) -> Messages:
    """What a user passes to apply_chat_template: the messages, without keys set to None."""
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def trained_runs(tokenizer: Tokenizer, ids: np.ndarray, labels: np.ndarray) -> list[str]:
    """The trained tokens, decoded run by run (a run is a stretch of consecutive trained tokens)."""
    trained = labels != IGNORE_INDEX
    assert (labels[trained] == ids[trained]).all()
    runs, start = [], None
    for j, flag in enumerate([*trained.tolist(), False]):
        if flag and start is None:
            start = j
        if not flag and start is not None:
            runs.append(tokenizer.hf.decode(ids[start:j].tolist()))
            start = None
    return runs


def check(
    tokenizer: Tokenizer, family: str, messages: Messages, train_on: str, tools: list[dict[str, Any]] | None = None
) -> None:
    record = as_record(messages, tools)
    conversation = to_conversation(record, resolve_field_map(record, FormatOptions(), "t.jsonl:1"), "t.jsonl:1")
    expected_fn = FAMILIES[family][3]
    [result] = tokenize_batch([conversation], tokenizer, train_on)
    try:
        expected = expected_fn(messages)
    except Refuses:
        assert isinstance(result, Refusal), f"{family}: expected the template to refuse, got labels"
        assert "the chat template refused the sample" in result.reason
        return
    assert not isinstance(result, Refusal), f"{family} / {train_on}: refused: {result.reason}"
    text = tokenizer.hf.apply_chat_template(hf_messages(messages), tools=tools, tokenize=False)
    rendered = render(conversation, tokenizer, train_on)
    assert isinstance(rendered, Rendered) and rendered.text == text
    ids, labels, _ = result
    own = tokenizer.hf(text, add_special_tokens=False)["input_ids"]
    assert ids[: len(own)].tolist() == own
    runs = trained_runs(tokenizer, ids, labels)
    if train_on == "all":
        assert "".join(runs) == tokenizer.hf.decode(ids.tolist())
        assert tokenizer.hf.decode(own) == text
        return
    wanted = expected[-1:] if train_on == "completion" else expected
    assert [r.strip() for r in runs] == [w.strip() for w in wanted], f"{family} / {train_on}"
    assert len(ids) == len(own), "the text already ends with the end-of-turn marker: no EOS appended"


@pytest.mark.parametrize("train_on", TRAIN_ON)
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_gallery(family_dirs: dict[str, Path], family: str, conversation: str, train_on: str) -> None:
    tokenizer = load_tokenizer(str(family_dirs[family]), None)
    check(tokenizer, family, CONVERSATIONS[conversation], train_on)


@pytest.mark.parametrize("train_on", TRAIN_ON)
@pytest.mark.parametrize("family", [f for f in FAMILIES if f.startswith(("qwen3", "deepseek"))])
def test_reasoning_templates(family_dirs: dict[str, Path], family: str, train_on: str) -> None:
    """Earlier reasoning stripped (qwen3) or all of it (deepseek-r1): the trained text is what the template keeps."""
    check(load_tokenizer(str(family_dirs[family]), None), family, REASONING, train_on)


@pytest.mark.parametrize("train_on", TRAIN_ON)
def test_tool_calls(family_dirs: dict[str, Path], train_on: str) -> None:
    """A tool-call turn with null content trains its rendered <tool_call> block; the tools reach the template."""
    family = next(f for f in FAMILIES if f.startswith("qwen2.5"))
    tokenizer = load_tokenizer(str(family_dirs[family]), None)
    check(tokenizer, family, TOOL_CALLS, train_on, TOOLS)
    record = as_record(TOOL_CALLS, TOOLS)
    conversation = to_conversation(record, resolve_field_map(record, FormatOptions(), "t:1"), "t:1")
    rendered = render(conversation, tokenizer, "assistant")
    assert isinstance(rendered, Rendered) and '"name": "get_weather"' in rendered.text and "# Tools" in rendered.text


def test_non_alternating_roles_are_refused_cleanly(family_dirs: dict[str, Path]) -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    for family in ("mistral-v0.3 (system in last user turn)", "gemma (no system role)"):
        tokenizer = load_tokenizer(str(family_dirs[family]), None)
        record = as_record(messages)
        conversation = to_conversation(record, resolve_field_map(record, FormatOptions(), "t:1"), "t:1")
        [result] = tokenize_batch([conversation], tokenizer, "assistant")
        assert isinstance(result, Refusal) and "roles must alternate" in result.reason


def test_hugging_face_jinja_settings_are_used(family_dirs: dict[str, Path]) -> None:
    """The phi-3-style template relies on trim_blocks/lstrip_blocks; a plain Jinja environment renders it otherwise."""
    import jinja2

    family = next(f for f in FAMILIES if f.startswith("phi-3"))
    tokenizer = load_tokenizer(str(family_dirs[family]), None)
    record = as_record(CONVERSATIONS["single-turn"])
    conversation = to_conversation(record, resolve_field_map(record, FormatOptions(), "t:1"), "t:1")
    rendered = render(conversation, tokenizer, "assistant")
    assert isinstance(rendered, Rendered)
    assert rendered.text == "<|user|>\nWhat is 7 times 6?<|end|>\n<|assistant|>\n7 times 6 is 42.<|end|>\n"
    plain = jinja2.Environment().from_string(PHI3_TRIM).render(messages=CONVERSATIONS["single-turn"])
    assert plain != rendered.text


def test_end_of_turn_markers(family_dirs: dict[str, Path]) -> None:
    markers = {f: load_tokenizer(str(d), None).eot for f, d in family_dirs.items()}
    assert markers == {
        "qwen2.5 (ChatML, default system prompt, tools)": "<|im_end|>",
        "qwen3 (earlier reasoning stripped)": "<|im_end|>",
        "deepseek-r1 (generation prompt opens <think>)": "<｜end▁of▁sentence｜>",
        "llama-3 (headers, date line)": "<|eot_id|>",
        "mistral-v0.3 (system in last user turn)": "</s>",
        "gemma (no system role)": "<end_of_turn>",
        "phi-3 (trim_blocks/lstrip_blocks)": "<|end|>",
        "chatml with {% generation %}": "<|im_end|>",
    }


def test_eos_appended_only_when_the_text_is_not_closed(bpe_dir: Path) -> None:
    """The built-in plain template writes no end-of-turn marker: EOS closes the sample and is trained."""
    tokenizer = load_tokenizer(str(bpe_dir), "plain")
    record = as_record(CONVERSATIONS["single-turn"])
    conversation = to_conversation(record, resolve_field_map(record, FormatOptions(), "t:1"), "t:1")
    [(ids, labels, _)] = tokenize_batch([conversation], tokenizer, "assistant")  # type: ignore[misc]
    assert tokenizer.eot is None and ids[-1] == tokenizer.eos_id and labels[-1] == tokenizer.eos_id
    assert [r.strip() for r in trained_runs(tokenizer, ids, labels)][0].startswith("7 times 6 is 42.")


def test_generation_blocks_must_match_the_assistant_turns(bpe_dir: Path, tmp_path: Path) -> None:
    """A {% generation %} template that marks only some assistant turns is refused, not half-trained."""
    template = tmp_path / "last_only.jinja"
    template.write_text(
        "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' }}"
        "{%- if m.role == 'assistant' and loop.last %}"
        "{% generation %}{{- m.content + '<|im_end|>' }}{% endgeneration %}"
        "{%- else %}{{- m.content + '<|im_end|>' }}{%- endif %}{{- '\\n' }}{%- endfor %}"
    )
    tokenizer = load_tokenizer(str(bpe_dir), str(template))
    record = as_record(CONVERSATIONS["multi-turn"])
    conversation = to_conversation(record, resolve_field_map(record, FormatOptions(), "t:1"), "t:1")
    [result] = tokenize_batch([conversation], tokenizer, "assistant")
    assert isinstance(result, Refusal) and "generation" in result.reason


def test_pack_refuses_a_sample_by_name_or_lists_it(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    """`tfpack pack` with a Gemma-style template and one sample with a system turn: `--on-error fail` names the sample
    and its line, no traceback; `skip` lists it in errors.jsonl, counts it, and the output verifies."""
    import orjson
    from typer.testing import CliRunner

    from tests.conftest import write_jsonl
    from tfpack.cli import app

    rows = [
        as_record(
            [
                {"role": "user", "content": f"Question {i} about primes?"},
                {"role": "assistant", "content": f"Answer {i}: seven is prime."},
            ]
        )
        for i in range(6)
    ]
    rows[2] = as_record(CONVERSATIONS["system"])
    data = write_jsonl(tmp_path / "chats.jsonl", rows)
    tokenizer = str(family_dirs["gemma (no system role)"])
    runner = CliRunner()
    common = ["--tokenizer", tokenizer, "--max-len", "256", "--threshold", "0.9"]
    failed = runner.invoke(app, ["pack", str(data), "-o", str(tmp_path / "fail"), *common])
    assert failed.exit_code == 1
    assert f"{data}:3: sample_id 2: the chat template refused the sample" in failed.stderr
    assert "System role not supported" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "fail" / "manifest.json").exists()

    out = tmp_path / "skip"
    done = runner.invoke(app, ["pack", str(data), "-o", str(out), *common, "--on-error", "skip", "--json"])
    assert done.exit_code == 0, done.stderr
    [entry] = [orjson.loads(line) for line in (out / "errors.jsonl").read_bytes().splitlines()]
    assert entry["sample_id"] == 2 and entry["line"] == 3 and entry["stage"] == "pack"
    assert "System role not supported" in entry["reason"]
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["counts"]["refused"] == 1 and manifest["counts"]["samples"] == 5
    stats = runner.invoke(app, ["stats", str(out), "--verify", "--json"])
    assert stats.exit_code == 0, stats.stderr
    assert orjson.loads(stats.stdout)["refused"] == 1
