from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.conftest import qa_rows, write_jsonl
from tfpack.errors import ConfigError, InputError
from tfpack.ingest.formats import Conversation, FormatOptions, Turn
from tfpack.ingest.samples import count_samples, ingest, iter_sample_batches


def test_ids_span_files_in_order(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", qa_rows(3))
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "t1"}, {"text": "t2"}])
    result = ingest([str(a), str(b)], FormatOptions(), tmp_path / "s.parquet")
    assert (result.n_records, result.n_samples) == (5, 5)
    assert [i["field_map"]["format"] for i in result.inputs] == ["prompt-completion", "text"]
    assert [i["records"] for i in result.inputs] == [3, 2]
    assert result.inputs[0]["fingerprint"].startswith("blake2b-128:")
    [(ids, conversations)] = list(iter_sample_batches(tmp_path / "s.parquet"))
    assert ids == [0, 1, 2, 3, 4]
    assert conversations[3] == Conversation((Turn("text", "t1"),))
    assert count_samples(tmp_path / "s.parquet") == 5


def test_fail_stops_at_first_bad_record_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "q", \n')
    with pytest.raises(InputError, match=rf"^{path}:2: invalid JSON"):
        ingest([str(path)], FormatOptions(), tmp_path / "s.parquet")
    assert not list(tmp_path.glob("s.parquet*"))


def test_skip_records_errors_and_keeps_ids_stable(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'{"question": "q0", "answer": "a"}\nnot json\n{"question": "", "answer": "a"}\n'
        b'{"question": "q3", "answer": "a"}\n'
    )
    result = ingest([str(path)], FormatOptions(), tmp_path / "s.parquet", on_error="skip")
    assert result.n_samples == 2
    assert [(e["line"], e["sample_id"]) for e in result.errors] == [(2, 1), (3, 2)]
    assert result.errors[1]["reason"] == "field 'question' is empty"
    [(ids, _)] = list(iter_sample_batches(tmp_path / "s.parquet"))
    assert ids == [0, 3]


def test_empty_input(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="no samples to process \\(the input is empty\\)"):
        ingest([str(path)], FormatOptions(), tmp_path / "s.parquet")


def test_unknown_on_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--on-error"):
        ingest(["x"], FormatOptions(), tmp_path / "s.parquet", on_error="ignore")


def test_tool_calls_and_tools_survive_the_samples_file(tmp_path: Path) -> None:
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}
    record = {
        "messages": [
            {"role": "user", "content": "find x"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "x=1", "tool_call_id": "c0"},
            {"role": "assistant", "content": "x is 1"},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    chats = write_jsonl(tmp_path / "a.jsonl", [record])
    pairs = write_jsonl(tmp_path / "b.jsonl", [{"question": "q", "answer": "a"}])
    ingest([str(chats), str(pairs)], FormatOptions(), tmp_path / "s.parquet")
    [(_, conversations)] = list(iter_sample_batches(tmp_path / "s.parquet"))
    first = conversations[0]
    assert first.turns[1] == Turn("assistant", None, '{"tool_calls":[' + orjson.dumps(call).decode() + "]}")
    assert first.turns[2].extra == '{"tool_call_id":"c0"}'
    assert orjson.loads(first.tools or "") == record["tools"]
    assert conversations[1] == Conversation((Turn("user", "q"), Turn("assistant", "a")))
