from __future__ import annotations

from typing import Any

import orjson
import pytest

from tfpack.errors import ConfigError, InputError
from tfpack.ingest.formats import (
    Conversation,
    FieldMap,
    FormatOptions,
    Turn,
    full_text,
    prompt_text,
    resolve_field_map,
    to_conversation,
)

AUTO = FormatOptions()


def convert(record: dict[str, Any], options: FormatOptions = AUTO) -> Conversation:
    return to_conversation(record, resolve_field_map(record, options, "f.jsonl:1"), "f.jsonl:1")


def normalise(record: dict[str, Any], options: FormatOptions = AUTO) -> tuple[tuple[str, str | None], ...]:
    """(role, content) of each turn, for turns without extra fields."""
    turns = convert(record, options).turns
    assert all(t.extra is None for t in turns)
    return tuple((t.role, t.content) for t in turns)


def test_messages() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
        ]
    }
    assert normalise(record) == (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))


def test_sharegpt_multi_turn() -> None:
    record = {
        "conversations": [
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "b"},
            {"from": "human", "value": "c"},
            {"from": "gpt", "value": "d"},
        ]
    }
    assert normalise(record) == (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    turns = convert(record).turns
    assert prompt_text(turns) == "a\nc"
    assert full_text(turns) == "a\nb\nc\nd"


@pytest.mark.parametrize("response", ["output", "response"])
def test_alpaca(response: str) -> None:
    record = {"instruction": "Sum", "input": "1 2", response: "3", "system": "You add."}
    assert normalise(record) == (("system", "You add."), ("user", "Sum\n\n1 2"), ("assistant", "3"))
    assert normalise({"instruction": "Sum", "input": "", response: "3"}) == (("user", "Sum"), ("assistant", "3"))


@pytest.mark.parametrize(("p", "r"), [("prompt", "completion"), ("question", "answer"), ("query", "response")])
def test_pairs(p: str, r: str) -> None:
    assert normalise({p: "x", r: "y", "id": 3}) == (("user", "x"), ("assistant", "y"))


def test_text_and_explicit_fields() -> None:
    assert normalise({"text": "hello"}) == (("text", "hello"),)
    assert normalise({"body": "hello"}, FormatOptions(text_field="body")) == (("text", "hello"),)
    options = FormatOptions(prompt_field="ask", response_field="reply")
    assert normalise({"ask": "a", "reply": "b"}, options) == (("user", "a"), ("assistant", "b"))


def test_priority_alpaca_over_text() -> None:
    fmap = resolve_field_map({"instruction": "i", "output": "o", "text": "t"}, AUTO, "w")
    assert fmap == FieldMap("alpaca", prompt="instruction", response="output")


def test_detection_failure_names_keys_and_flags() -> None:
    with pytest.raises(InputError) as e:
        resolve_field_map({"foo": 1, "bar": 2}, AUTO, "f.jsonl:1")
    assert str(e.value) == (
        "f.jsonl:1: cannot detect the format (keys seen: bar, foo); pass --format "
        "(messages|sharegpt|alpaca|prompt-completion|text), or --prompt-field/--response-field, or --text-field, "
        "or --label-field for table rows"
    )


def test_ambiguous() -> None:
    with pytest.raises(InputError, match="ambiguous format, record matches messages and sharegpt"):
        resolve_field_map({"messages": [], "conversations": []}, AUTO, "w")
    assert resolve_field_map({"messages": [], "conversations": []}, FormatOptions("sharegpt"), "w").format == "sharegpt"


def test_explicit_format_must_fit() -> None:
    with pytest.raises(InputError, match="record does not fit --format alpaca"):
        resolve_field_map({"text": "x"}, FormatOptions("alpaca"), "w")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"messages": "hi"}, "field 'messages' must be a list of turns, got str"),
        ({"messages": [{"role": "user", "content": 3}]}, "field 'messages[0].content' must be a string, got int"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "field 'messages[0].role' has unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "field 'messages' has no assistant turn"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "field 'messages' has no user turn"),
        (
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]},
            "field 'messages[0].content' is empty",
        ),
        ({"question": "", "answer": "y"}, "field 'question' is empty"),
        ({"question": "x", "answer": None}, "field 'answer' must be a string, got null"),
    ],
)
def test_bad_records(record: dict[str, Any], message: str) -> None:
    fmap = resolve_field_map(record, AUTO, "f.jsonl:7")
    with pytest.raises(InputError) as e:
        to_conversation(record, fmap, "f.jsonl:7")
    assert str(e.value).startswith(f"f.jsonl:7: {message}")


def test_missing_field_lists_keys() -> None:
    fmap = FieldMap("prompt-completion", prompt="question", response="answer")
    with pytest.raises(InputError, match=r"f:2: field 'answer' missing \(keys seen: question\)"):
        to_conversation({"question": "q"}, fmap, "f:2")


def test_option_checks() -> None:
    with pytest.raises(ConfigError, match="--format: unknown format 'csv'"):
        FormatOptions("csv")
    with pytest.raises(ConfigError, match="must be given together"):
        FormatOptions(prompt_field="a")


def test_openai_tool_calls_and_tools_are_kept() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    record = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "assistant", "content": "It is 18C."},
        ],
        "tools": tools,
    }
    conversation = convert(record)
    assert [t.role for t in conversation.turns] == ["user", "assistant", "tool", "assistant"]
    assert conversation.turns[1] == Turn("assistant", None, orjson.dumps({"tool_calls": [call]}).decode())
    assert conversation.turns[2].extra == '{"tool_call_id":"c1"}'
    assert orjson.loads(conversation.tools or "") == tools
    as_string = convert({**record, "tools": orjson.dumps(tools).decode()})
    assert as_string.tools == conversation.tools
    with pytest.raises(InputError, match=r"field 'messages\[1\].content' must be a string, got null"):
        convert({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]})
    with pytest.raises(InputError, match="field 'tools' must be a list of tool schemas"):
        convert({**record, "tools": {"name": "x"}})


def test_dolly_context_is_kept() -> None:
    record = {
        "instruction": "Who wrote it?",
        "context": "Hamlet was written by Shakespeare.",
        "response": "Shakespeare.",
        "category": "closed_qa",
    }
    assert normalise(record) == (
        ("user", "Who wrote it?\n\nHamlet was written by Shakespeare."),
        ("assistant", "Shakespeare."),
    )


def test_sharegpt_roles_any_case() -> None:
    record = {
        "conversations": [
            {"from": "System", "value": "Be kind."},
            {"from": "Human", "value": "hi"},
            {"from": "GPT", "value": "hello"},
            {"from": "USER", "value": "bye"},
            {"from": "Assistant", "value": "ciao"},
        ]
    }
    assert normalise(record) == (
        ("system", "Be kind."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "bye"),
        ("assistant", "ciao"),
    )


def test_trl_conversational_prompt_completion() -> None:
    record = {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "completion": [{"role": "assistant", "content": "A"}],
    }
    assert normalise(record) == (("system", "S"), ("user", "Q"), ("assistant", "A"))
    with pytest.raises(InputError, match="has no assistant turn"):
        normalise({"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "user", "content": "A"}]})


def test_empty_system_message_is_no_system_message() -> None:
    record = {
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert normalise(record) == (("user", "Q"), ("assistant", "A"))
    sharegpt = {
        "conversations": [
            {"from": "system", "value": "  "},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ]
    }
    assert normalise(sharegpt) == (("user", "Q"), ("assistant", "A"))
