"""Property-based fuzzing: readers never lose or crash on random records; verify accepts whatever pack_row writes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfpack.errors import InputError
from tfpack.ingest.formats import FormatOptions
from tfpack.ingest.samples import ingest
from tfpack.packing.shards import pack_row, write_shard
from tfpack.report.verify import Shard, check_shard
from tfpack.workdir import IGNORE_INDEX

KEYS = [
    "messages",
    "conversations",
    "instruction",
    "input",
    "output",
    "response",
    "question",
    "answer",
    "prompt",
    "completion",
    "text",
    "role",
    "content",
    "from",
    "value",
    "system",
    "x",
]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
good = st.builds(
    lambda q, a: {"question": q, "answer": a},
    st.text(min_size=1, max_size=20).filter(str.strip),
    st.text(min_size=1, max_size=20).filter(str.strip),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.one_of(good, records), min_size=1, max_size=12),
    st.booleans(),
    st.sampled_from(["auto", "prompt-completion", "messages", "alpaca"]),
)
def test_ingest_accounts_for_every_record(rows: list[dict], garbage_line: bool, fmt: str) -> None:
    """With --on-error skip every record is a sample or an error; nothing else escapes but InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in.jsonl"
        lines = [orjson.dumps(r) for r in rows] + ([b'{"broken": '] if garbage_line else [])
        data.write_bytes(b"\n".join(lines) + b"\n")
        try:
            result = ingest([str(data)], FormatOptions(format=fmt), Path(tmp) / "s.parquet", "skip")
        except InputError as e:
            assert "no samples to process" in str(e)
            return
        assert result.n_samples + len(result.errors) == result.n_records == len(lines)
        assert all(e["file"] == str(data) and e["line"] >= 1 and e["reason"] for e in result.errors)


@st.composite
def packs(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    n = draw(st.integers(1, 6))
    ids, labels = [], []
    for _ in range(n):
        length = draw(st.integers(1, 20))
        tok = np.asarray(draw(st.lists(st.integers(0, 999), min_size=length, max_size=length)), dtype=np.int32)
        trained = np.asarray(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
        ids.append(tok)
        labels.append(np.where(trained, tok, IGNORE_INDEX).astype(np.int32))
    return ids, labels, draw(st.sampled_from(["segment", "pack"]))


@settings(max_examples=80, deadline=None)
@given(st.lists(packs(), min_size=1, max_size=5))
def test_verify_accepts_what_pack_rows_write(rows_spec: list[tuple[list[np.ndarray], list[np.ndarray], str]]) -> None:
    attention = rows_spec[0][2]
    rows, sample_id = [], 0
    for ids, labels, _ in rows_spec:
        rows.append(pack_row(ids, labels, list(range(sample_id, sample_id + len(ids))), [0.5] * len(ids), attention))
        sample_id += len(ids)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part-00000.parquet"
        write_shard(path, rows, 2)
        seen = check_shard(Shard(path), max_len=max(r["num_tokens"] for r in rows), attention=attention)
    assert seen.tolist() == list(range(sample_id))
