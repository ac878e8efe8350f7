"""Tabular rows (adult-census-income shape) as SFT samples: CSV reading with bad rows located by line, the
`--format tabular` prompt, and a census CSV packed end to end with the trained tokens decoded back to the labels."""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import tfpack
from tests.census import census_rows, write_census_csv
from tests.conftest import DEMO_TOKENIZER, write_jsonl
from tfpack.cli import app
from tfpack.errors import ConfigError, InputError
from tfpack.ingest.formats import FormatOptions, resolve_field_map, to_conversation
from tfpack.ingest.readers import CSV_INFER_BYTES, BadRecord, CsvRow, read_records
from tfpack.ingest.samples import ingest, read_labels
from tfpack.packing.tokenizer import load_tokenizer
from tfpack.report.stats import label_stats
from tfpack.workdir import IGNORE_INDEX, shard_paths

TABULAR = FormatOptions(label_field="income")


def conversation(record: Any, options: FormatOptions = TABULAR, where: str = "t.csv:2") -> tuple[str, str]:
    """(user prompt, assistant answer) of one row."""
    user, assistant = to_conversation(record, resolve_field_map(record, options, where), where).turns
    assert (user.role, assistant.role) == ("user", "assistant")
    return user.content or "", assistant.content or ""


# --- CSV reading -----------------------------------------------------------------------------------------------


def write_csv_rows(path: Path, rows: list[list[str]], blank_after: set[int]) -> list[int]:
    """Write `rows` with Python's csv module (quotes where needed), a blank line after the rows in `blank_after`;
    returns the line each row starts on, as the csv module counts them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for i, row in enumerate(rows):
        writer.writerow(row)
        if i in blank_after:
            buffer.write("\n")
    path.write_text(buffer.getvalue())
    starts, reader = [], csv.reader(io.StringIO(buffer.getvalue()))
    line = 0
    for record in reader:
        if record:
            starts.append(line + 1)
        line = reader.line_num
    return starts


@pytest.mark.parametrize("seed", range(6))
def test_rows_are_located_by_their_first_line(tmp_path: Path, seed: int) -> None:
    """Against Python's csv module: quoted cells with commas, quotes and line breaks, blank lines, and rows of the
    wrong width (reported by pyarrow) keep every row on the line it starts on."""
    rng = random.Random(seed)
    pieces = ["a", "b c", "x,y", 'say "hi"', "two\nlines", "\nlead", "5'2\"", "", "3"]
    rows = [["name", "note", "n"]]
    for i in range(300):
        width = 3 if rng.random() > 0.1 else rng.choice([2, 4])
        rows.append([rng.choice(pieces) + str(i) for _ in range(width)])
    blank_after = {i for i in range(len(rows)) if rng.random() < 0.05}
    starts = write_csv_rows(tmp_path / "t.csv", rows, blank_after)
    records = list(read_records(str(tmp_path / "t.csv")))
    assert [loc.index for loc, _ in records] == starts[1:]
    for (loc, record), row in zip(records, rows[1:], strict=True):
        if len(row) == 3:
            assert dict(record) == dict(zip(rows[0], row, strict=True)), loc
        else:
            assert record == BadRecord(f"expected 3 cells, found {len(row)}"), loc


def census_with_bad_rows(path: Path, n: int) -> dict[int, str]:
    """A census CSV of `n` rows with a short row, a long row and a non-numeric age past the inference window;
    returns the bad rows' lines and reasons."""
    write_census_csv(path, n)
    lines = path.read_text().splitlines(keepends=True)
    assert sum(map(len, lines[:900])) > CSV_INFER_BYTES  # line 900 lies past what pyarrow infers types from
    lines[9] = "39,Private\n"
    lines[499] = lines[499].rstrip("\n") + ",extra\n"
    lines[899] = "abc" + lines[899][lines[899].index(",") :]
    path.write_text("".join(lines))
    return {
        10: "expected 15 cells, found 2",
        500: "expected 15 cells, found 16",
        900: "column 'age': 'abc' is not a number (the column holds ints)",
    }


def test_bad_rows_named_by_line(tmp_path: Path) -> None:
    bad = census_with_bad_rows(tmp_path / "adult.csv", 1000)
    records = list(read_records(str(tmp_path / "adult.csv")))
    assert len(records) == 1000
    assert [loc.index for loc, _ in records] == list(range(2, 1002))
    assert {loc.index: r.reason for loc, r in records if isinstance(r, BadRecord)} == bad
    _, first = records[0]
    assert isinstance(first, CsvRow) and first.numeric["age"] == "int" and "income" not in first.numeric


def test_bad_rows_fail_or_go_to_the_error_list(tmp_path: Path) -> None:
    path = tmp_path / "adult.csv"
    bad = census_with_bad_rows(path, 1000)
    with pytest.raises(InputError, match=rf"^{path}:10: expected 15 cells, found 2$"):
        ingest([str(path)], TABULAR, tmp_path / "fail.parquet")
    result = ingest([str(path)], TABULAR, tmp_path / "samples.parquet", on_error="skip")
    assert (result.n_records, result.n_samples) == (1000, 997)
    assert [(e["file"], e["line"], e["reason"]) for e in result.errors] == [(str(path), k, v) for k, v in bad.items()]
    table = pq.read_table(tmp_path / "samples.parquet", columns=["record_index", "label"])
    assert table.column("record_index").to_pylist() == [i for i in range(2, 1002) if i not in bad]


def test_cli_names_a_bad_row_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "adult.csv"
    census_with_bad_rows(path, 1000)
    args = ["embed", str(path), "-o", str(tmp_path / "run"), "--label-field", "income"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {path}:10: expected 15 cells, found 2"


def test_headerless_tsv_gz_with_csv_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv.gz"
    path.write_bytes(gzip.compress(b"39\tState-gov\t<=50K\n50\t\t>50K\n"))
    options = FormatOptions(label_field="income", csv_columns="age,workclass,income")
    records = list(read_records(str(path), csv_columns=options.csv_columns))
    assert [(str(loc), dict(r)) for loc, r in records] == [
        (f"{path}:1", {"age": "39", "workclass": "State-gov", "income": "<=50K"}),
        (f"{path}:2", {"age": "50", "workclass": None, "income": ">50K"}),
    ]
    assert conversation(records[1][1], options) == ("age: 50\nworkclass: (missing)", ">50K")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("age,,income", "column 2 of the header has no name; name it, or pass --csv-columns"),
        ("age,age,income", "column 'age' appears twice in the header; rename one"),
    ],
)
def test_header_must_name_every_column_once(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(f"{header}\n1,2,3\n")
    with pytest.raises(InputError, match=f"^{path}:1: {message}$"):
        list(read_records(str(path)))


# --- the tabular prompt ------------------------------------------------------------------------------------------


def test_prompt_lists_columns_as_written_and_names_missing_cells(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("age,workclass,ratio,hours,income\n39.0,,007, 40 ,<=50K\n41,Private,1e3,NA,>50K\n")
    (_, first), (_, second) = read_records(str(path))
    assert conversation(first) == ("age: 39.0\nworkclass: (missing)\nratio: 007\nhours: 40", "<=50K")
    assert conversation(second) == ("age: 41\nworkclass: Private\nratio: 1e3\nhours: (missing)", ">50K")


def test_parquet_and_json_rows() -> None:
    row = {"age": 39, "gain": 2.5, "ok": True, "tags": ["a"], "none": None, "nan": float("nan"), "income": 1}
    assert conversation(row) == ('age: 39\ngain: 2.5\nok: true\ntags: ["a"]\nnone: (missing)\nnan: (missing)', "1")


def test_columns_choose_and_order_the_prompt() -> None:
    options = FormatOptions(label_field="income", columns=["hours", "age"])
    assert conversation({"age": 39, "hours": 40, "sex": "F", "income": "x"}, options) == ("hours: 40\nage: 39", "x")


def test_template_sees_typed_cells_in_a_sandbox(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("age,workclass,income\n39,,<=50K\n")
    [(_, row)] = read_records(str(path))
    template = "Age next year: {{ age + 1 }}; work: {{ workclass or 'unknown' }}"
    options = FormatOptions(label_field="income", prompt_template=template)
    assert conversation(row, options) == ("Age next year: 40; work: unknown", "<=50K")
    escape = FormatOptions(label_field="income", prompt_template="{{ age.__class__.__mro__ }}")
    with pytest.raises(InputError, match=r"^t\.csv:2: --prompt-template '\{\{ age\.__class__\.__mro__ \}\}': "):
        conversation(row, escape)


def test_template_errors_name_the_template_and_row() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^--prompt-template '\{\{ age \+ \}\}': unexpected 'end of print statement' \(template line 1\)$",
    ):
        FormatOptions(label_field="income", prompt_template="{{ age + }}")
    options = FormatOptions(label_field="income", prompt_template="{{ agee }}\n{{ income }}")
    with pytest.raises(InputError) as e:
        conversation({"age": 1, "income": "x"}, options, "adult.csv:7")
    assert (
        str(e.value)
        == "adult.csv:7: --prompt-template '{{ agee }}\\n{{ income }}': UndefinedError: 'agee' is undefined"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (FormatOptions(label_field="incom"), "--label-field 'incom' is not a column"),
        (FormatOptions(label_field="income", columns="age,hourz"), "--columns 'hourz' is not a column"),
    ],
)
def test_unknown_column_names_the_file_and_field(options: FormatOptions, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_field_map({"age": 39, "hours": 40, "income": "x"}, options, "adult.csv:2")
    assert str(e.value) == (
        f"adult.csv:2: {message} (columns: age, hours, income); a CSV file without a header row needs --csv-columns"
    )


def test_missing_label_is_a_row_error() -> None:
    with pytest.raises(InputError, match=r"^t\.jsonl:3: field 'income' \(the label\) is empty$"):
        conversation({"age": 1, "income": " "}, where="t.jsonl:3")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "tabular"}, "--format tabular needs --label-field COLUMN"),
        ({"format": "messages", "label_field": "y"}, "go with --format tabular, not messages"),
        ({"label_field": "y", "columns": "a,y"}, "--columns: 'y' is the label"),
        ({"label_field": "y", "columns": "a,a"}, "--columns: column\\(s\\) a named twice"),
        ({"label_field": "y", "text_field": "t"}, "cannot be combined"),
        ({"csv_columns": "a,,b"}, "--csv-columns: expected comma-separated column names"),
    ],
)
def test_option_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FormatOptions(**kwargs)


# --- labels in samples.parquet and stats ---------------------------------------------------------------------------


def test_labels_stored_and_old_runs_without_them(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "rows.jsonl", [{"x": str(i), "y": "ab"[i % 2]} for i in range(4)])
    ingest([str(data)], FormatOptions(label_field="y"), tmp_path / "samples.parquet")
    assert read_labels(tmp_path / "samples.parquet") == {0: "a", 1: "b", 2: "a", 3: "b"}
    ingest([str(data)], FormatOptions(prompt_field="x", response_field="y"), tmp_path / "chat.parquet")
    assert read_labels(tmp_path / "chat.parquet") is None
    old = pq.read_table(tmp_path / "samples.parquet").drop_columns(["label"])
    pq.write_table(old, tmp_path / "old.parquet")
    assert read_labels(tmp_path / "old.parquet") is None


def test_label_stats_majority_share() -> None:
    labels = dict(enumerate("aaaabbbb"))
    together = label_stats([[0, 1, 2, 3], [4, 5, 6, 7]], labels)
    assert together["counts"] == {"a": 4, "b": 4}
    assert (together["majority_share"], together["single_label_packs"]) == (1.0, 1.0)
    mixed = label_stats([[0, 4, 1, 5], [2, 6, 3, 7]], labels)
    assert (mixed["majority_share"], mixed["single_label_packs"]) == (0.5, 0.0)
    assert 0.5 <= mixed["random_majority_share"] <= 1.0


# --- end to end ------------------------------------------------------------------------------------------------


def trained_per_sample(out_dir: Path) -> dict[int, list[int]]:
    """Each packed sample's trained token ids, read back from the shards."""
    trained: dict[int, list[int]] = {}
    for row in pq.read_table(shard_paths(out_dir)[0].parent).to_pylist():
        ids, labels = np.asarray(row["input_ids"]), np.asarray(row["labels"])
        bounds = np.cumsum([0, *row["sample_lengths"]])
        for sample_id, start, end in zip(row["sample_ids"], bounds[:-1], bounds[1:], strict=True):
            mask = labels[start:end] != IGNORE_INDEX
            trained[sample_id] = ids[start:end][mask].tolist()
    return trained


def test_census_csv_packed_end_to_end(tmp_path: Path) -> None:
    """`tfpack pack adult.csv --format tabular --label-field income`: every row packed, the trained tokens exactly
    the label and the template's end-of-turn, label counts in the stats."""
    path = write_census_csv(tmp_path / "adult.csv", 64)
    out = tmp_path / "out"
    args = ["pack", str(path), "-o", str(out), *DEMO_TOKENIZER, "--format", "tabular", "--label-field", "income"]
    result = CliRunner().invoke(app, [*args, "--max-len", "512", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = census_rows(64)
    trained = trained_per_sample(out)
    assert sorted(trained) == list(range(64))
    hf = load_tokenizer(DEMO_TOKENIZER[1], None).hf
    for sample_id, ids in trained.items():
        assert ids == hf(rows[sample_id]["income"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
    stats = orjson.loads(CliRunner().invoke(app, ["stats", str(out), "--json"]).stdout)
    assert stats["labels"]["counts"] == dict(Counter(r["income"] for r in rows).most_common())
    human = CliRunner().invoke(app, ["stats", str(out)]).stdout
    assert "majority_share" in human and "<=50K" in human
    embed_run = orjson.loads(CliRunner().invoke(app, ["stats", str(out / ".tfpack" / "embed"), "--json"]).stdout)
    assert embed_run["label_counts"] == stats["labels"]["counts"]
    epochs = ["pack", str(out / ".tfpack" / "embed"), "-o", str(tmp_path / "epochs"), *DEMO_TOKENIZER, "--epochs", "2"]
    assert CliRunner().invoke(app, [*epochs, "--max-len", "512", "--quiet"]).exit_code == 0
    per_epoch = orjson.loads(CliRunner().invoke(app, ["stats", str(tmp_path / "epochs"), "--json"]).stdout)["epochs"]
    assert all(0.5 <= e["majority_share"] <= 1 and 0.5 <= e["random_majority_share"] <= 1 for e in per_epoch)


@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained on census prompts, with a Qwen2.5-style chat template (tests/packing/templates.py)."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.packing.templates import QWEN25, SPECIAL_TOKENS

    rust = RustTokenizer(models.BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    corpus = [", ".join(f"{k}: {v}" for k, v in row.items()) for row in census_rows(200, seed=1)]
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SPECIAL_TOKENS
    )
    rust.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, eos_token="<|im_end|>")
    hf.chat_template = QWEN25
    path = tmp_path_factory.mktemp("qwen")
    hf.save_pretrained(path)
    return path


def test_pack_dataset_of_table_rows_with_a_chat_template(tmp_path: Path, qwen_tokenizer: Path) -> None:
    """The API on Parquet-like rows (ints, None): the trained tokens decode to exactly the label and `<|im_end|>`."""
    rows: list[dict[str, Any]] = [
        {k: (int(v) if v.isdigit() else v or None) for k, v in r.items()} for r in census_rows(40)
    ]
    packed = tfpack.pack_dataset(
        rows,
        tokenizer=str(qwen_tokenizer),
        max_len=1024,
        format="tabular",
        label_field="income",
        work_dir=tmp_path / "o",
    )
    assert sorted(i for ids in packed["sample_ids"] for i in ids) == list(range(40))
    hf = load_tokenizer(str(qwen_tokenizer), None).hf
    decoded = {i: hf.decode(ids) for i, ids in trained_per_sample(tmp_path / "o").items()}
    assert decoded == {i: r["income"] + "<|im_end|>" for i, r in enumerate(rows)}
