from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tests.conftest import write_jsonl
from tfpack.errors import InputError
from tfpack.ingest.readers import BadRecord, Location, expand_inputs, file_kind, read_records


def test_jsonl_lines_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n{"text": "b"}\n')
    records = list(read_records(str(path)))
    assert [(loc.index, rec) for loc, rec in records] == [(1, {"text": "a"}), (3, {"text": "b"})]
    assert str(records[1][0]) == f"{path}:3"


def test_malformed_line_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": \n')
    (_, first), (loc, second) = read_records(str(path))
    assert first == {"text": "a"}
    assert isinstance(second, BadRecord) and "invalid JSON" in second.reason
    assert loc == Location(str(path), "line", 2)


def test_invalid_utf8_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "\xff\xfe"}\n')
    [(_, record)] = read_records(str(path))
    assert isinstance(record, BadRecord) and "UTF-8" in record.reason


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl(tmp_path: Path, suffix: str) -> None:
    data = b'{"text": "x"}\n{"text": "y"}\n'
    path = tmp_path / f"a{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(data))
    assert [r for _, r in read_records(str(path))] == [{"text": "x"}, {"text": "y"}]


def test_json_array_and_truncated_array(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(orjson.dumps([{"text": "x"}, {"text": "y"}]))
    assert [str(loc) for loc, _ in read_records(str(path))] == [f"{path}:item 1", f"{path}:item 2"]
    path.write_bytes(orjson.dumps([{"text": "x"}, {"text": "y"}])[:-5])
    with pytest.raises(InputError, match=r"a\.json: invalid JSON \(truncated or malformed file\)"):
        list(read_records(str(path)))


def test_json_must_hold_an_array_or_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b'"text"')
    with pytest.raises(InputError, match="must hold one array of records, found str"):
        list(read_records(str(path)))
    path.write_bytes(b'{"text": "x"}')
    assert [(str(loc), r) for loc, r in read_records(str(path))] == [(f"{path}:1", {"text": "x"})]
    path.write_bytes(b'{"text": "x"}\n\n{"text": "y"}\n{"text": \n')
    records = list(read_records(str(path)))
    assert [str(loc) for loc, _ in records] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert records[1][1] == {"text": "y"} and "invalid JSON" in records[2][1].reason


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    for name, body in (
        ("a.jsonl", b'{"text": "x"}\n{"text": "y"}\n'),
        ("b.json", b'[{"text": "x"}, {"text": "y"}]'),
        ("c.json", b'{"text": "x"}\n{"text": "y"}\n'),
    ):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + body)
        assert [r for _, r in read_records(str(path))] == [{"text": "x"}, {"text": "y"}], name


def test_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"prompt": ["p0", "p1"], "completion": ["c0", "c1"]}), path)
    records = list(read_records(str(path)))
    assert [str(loc) for loc, _ in records] == [f"{path}:row 0", f"{path}:row 1"]
    assert records[1][1] == {"prompt": "p1", "completion": "c1"}


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read Parquet"):
        list(read_records(str(path)))


def test_expand_inputs_globs_keep_order(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.json"):
        write_jsonl(tmp_path / name, [])
    got = expand_inputs([str(tmp_path / "c.json"), str(tmp_path / "*.jsonl"), "-"])
    assert got == [str(tmp_path / n) for n in ("c.json", "a.jsonl", "b.jsonl")] + ["-"]


def test_expand_inputs_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jsonl")])
    with pytest.raises(InputError, match="stdin can be read only once"):
        expand_inputs(["-", "-"])


def test_file_kind() -> None:
    assert file_kind("-") == "jsonl"
    assert file_kind("x.JSONL.GZ") == "jsonl"
    assert file_kind("x.parquet") == "parquet"
    assert file_kind("x.csv.gz") == file_kind("x.TSV") == "csv"
    with pytest.raises(InputError, match="unknown file type"):
        file_kind("x.xlsx")
