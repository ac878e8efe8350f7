from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA, qa_rows, shared_file, write_jsonl
from tfpack.cli import app

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_embed_end_to_end_json(tmp_path: Path, qa_file: Path) -> None:
    """The default model on CPU for question/answer records: the static one, and the summary says why."""
    code, out, err = invoke("embed", str(qa_file), "-o", str(tmp_path / "run"), "--device", "cpu", "--json")
    assert code == 0, err
    summary = orjson.loads(out)
    assert (summary["n"], summary["errors"], summary["model"]) == (24, 0, "static")
    assert summary["model_choice"] == "auto: static (CPU, single-turn samples)"
    emb = np.load(tmp_path / "run" / "embeddings.npy", mmap_mode="r")
    assert emb.shape == (24, summary["dim"]) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert manifest["stage"] == "embed" and manifest["n"] == 24
    assert (manifest["model_asked"], manifest["model"], manifest["model_choice"]) == (
        "auto",
        "static",
        summary["model_choice"],
    )
    assert manifest["inputs"][0]["field_map"] == {
        "format": "prompt-completion",
        "prompt": "question",
        "response": "answer",
        "text": None,
    }
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_embed_chat_formats_float16(tmp_path: Path) -> None:
    messages = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}?"},
                    {"role": "assistant", "content": f"Answer {i}."},
                ]
            }
            for i in range(5)
        ],
    )
    sharegpt = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"conversations": [{"from": "human", "value": f"Hi {i}"}, {"from": "gpt", "value": f"Hello {i}"}]}
            for i in range(4)
        ],
    )
    code, _, err = invoke(
        "embed",
        str(messages),
        str(sharegpt),
        "-o",
        str(tmp_path / "run"),
        "--dtype",
        "float16",
        "--model",
        "all-MiniLM-L6-v2",
        "--backend",
        "torch",
        "-q",
    )
    assert code == 0, err
    emb = np.load(tmp_path / "run" / "embeddings.npy")
    assert emb.shape == (9, 384) and emb.dtype == np.float16
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert [i["field_map"]["format"] for i in manifest["inputs"]] == ["messages", "sharegpt"]


def test_malformed_line_fails_with_location_and_no_manifest(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "q" "answer": "a"}\n')
    code, _, err = invoke("embed", str(path), "-o", str(tmp_path / "run"))
    assert code == 1
    assert err.startswith(f"error: {path}:2: invalid JSON")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_skip_writes_errors_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n[1]\n{"question": "r", "answer": "b"}\n')
    code, out, err = invoke("embed", str(path), "-o", str(tmp_path / "run"), "--on-error", "skip", "--json")
    assert code == 0, err
    assert orjson.loads(out)["errors"] == 1
    [entry] = [orjson.loads(line) for line in (tmp_path / "run" / "errors.jsonl").read_bytes().splitlines()]
    assert entry == {
        "file": str(path),
        "line": 2,
        "sample_id": 1,
        "reason": "record is a JSON list, expected an object",
    }


def test_refuses_non_empty_out_dir(tmp_path: Path, qa_file: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    code, _, err = invoke("embed", str(qa_file), "-o", str(tmp_path / "run"))
    assert code == 2 and "is a folder tfpack did not write" in err and "pick an empty or new folder" in err
    (tmp_path / "run" / "x").unlink()
    assert invoke("embed", str(qa_file), "-o", str(tmp_path / "run"), "--quiet")[0] == 0
    code, _, err = invoke("embed", str(qa_file), "-o", str(tmp_path / "run"))
    assert code == 2 and "holds a finished run; pass --overwrite" in err


def test_bad_flag_value_is_a_usage_error(tmp_path: Path, qa_file: Path) -> None:
    code, _, err = invoke("embed", str(qa_file), "-o", str(tmp_path / "run"), "--embed-on", "everything")
    assert code == 2 and "--embed-on: expected one of prompt, full, got 'everything'" in err


def test_config_file_unknown_key(tmp_path: Path, qa_file: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("embed:\n  modle: x\n")
    code, _, err = invoke("embed", str(qa_file), "-o", str(tmp_path / "run"), "--config", str(config))
    assert code == 2 and "unknown key(s) modle" in err


@pytest.mark.slow  # a fresh interpreter importing the whole stack
def test_stdin_subprocess(tmp_path: Path) -> None:
    data = b"".join(orjson.dumps(r) + b"\n" for r in qa_rows(6))
    proc = subprocess.run(
        [sys.executable, "-m", "tfpack", "embed", "-", "-o", str(tmp_path / "run"), "--json"],
        input=data,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert orjson.loads(proc.stdout)["n"] == 6
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert manifest["inputs"][0]["path"] == "-"
    assert manifest["inputs"][0]["fingerprint"].startswith("blake2b-128:")


@pytest.mark.parametrize("command", sorted(typer.main.get_command(app).commands))  # type: ignore[attr-defined]
def test_every_command_has_help_and_is_documented(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0 and "Usage" in out
    assert f"tfpack {command}" in README.read_text()


@pytest.mark.slow  # the full model over the shared GSM8K and GPTeacher sets
@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "n", "fmt"), [("gsm8k_train.jsonl", 7473, "prompt-completion"), ("gpteacher_codegen.json", 4535, "alpaca")]
)
def test_embed_shared_data(tmp_path: Path, name: str, n: int, fmt: str) -> None:
    path = shared_file(SHARED_DATA / name)
    code, out, err = invoke("embed", str(path), "-o", str(tmp_path / "run"), "--model", "all-MiniLM-L6-v2", "--json")
    assert code == 0, err
    emb = np.load(tmp_path / "run" / "embeddings.npy", mmap_mode="r")
    assert emb.shape == (n, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert manifest["inputs"][0]["field_map"]["format"] == fmt
