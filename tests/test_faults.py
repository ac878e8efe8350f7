"""Bad input and interrupted runs: one clear line naming file/line/field, the right exit code, nothing half-done.

Mistakes at the prompt (wrong paths, a run where a file was expected, bad option values from any source) are the
table of tests/test_safety.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, qa_rows, write_jsonl
from tfpack.cli import app
from tfpack.workdir import shard_paths

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stderr


def test_wrong_types_name_the_line_and_field(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": "not a list"},
        ],
    )
    code, err = invoke("embed", str(data), "-o", str(tmp_path / "run"))
    assert code == 1 and f"{data}:2" in err and "messages" in err
    assert not (tmp_path / "run" / "manifest.json").exists()
    data = write_jsonl(
        tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}]
    )
    code, err = invoke("embed", str(data), "-o", str(tmp_path / "run2"))
    assert code == 1 and f"{data}:1" in err and "content" in err


def test_empty_response(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "e.jsonl", [{"question": "q?", "answer": ""}])
    code, err = invoke("embed", str(data), "-o", str(tmp_path / "run"))
    assert code == 1 and f"{data}:1" in err and "answer" in err and "empty" in err


def test_parquet_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"foo": ["a", "b"], "bar": [1, 2]}), path)
    code, err = invoke("embed", str(path), "-o", str(tmp_path / "run"))
    assert code == 1 and f"{path}:row 0: cannot detect the format (keys seen: bar, foo)" in err
    assert "--text-field" in err
    code, err = invoke(
        "embed", str(path), "-o", str(tmp_path / "run2"), "--prompt-field", "foo", "--response-field", "baz"
    )
    assert code == 1 and f"{path}:row 0" in err and "baz" in err


def test_duplicate_explicit_ids(tmp_path: Path) -> None:
    rows = [{**r, "id": f"r{i % 3}"} for i, r in enumerate(qa_rows(5))]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    code, err = invoke("embed", str(data), "-o", str(tmp_path / "run"), "--id-field", "id")
    assert code == 1 and f"{data}:4: field 'id': duplicate id 'r0' (first at {data}:1)" in err
    ok = write_jsonl(tmp_path / "u.jsonl", [{**r, "id": i} for i, r in enumerate(qa_rows(5))])
    code, err = invoke("embed", str(ok), "-o", str(tmp_path / "run2"), "--id-field", "id", "--quiet")
    assert code == 0, err
    assert pq.read_table(tmp_path / "run2" / "samples.parquet").column("source_id").to_pylist() == list("01234")


def test_unknown_tokenizer_and_small_max_len(tmp_path: Path, qa_file: Path) -> None:
    code, err = invoke("pack", str(qa_file), "-o", str(tmp_path / "o1"), "--tokenizer", str(tmp_path / "nope"))
    assert code == 2 and "--tokenizer" in err
    code, err = invoke("pack", str(qa_file), "-o", str(tmp_path / "o2"), "--max-len", "10", *DEMO_TOKENIZER)
    assert code == 2 and "--max-len 10 is not above the template overhead" in err
    assert not (tmp_path / "o2").exists()


def test_stale_run_dir(tmp_path: Path, qa_file: Path) -> None:
    run = tmp_path / "run"
    assert invoke("embed", str(qa_file), "-o", str(run), "--quiet")[0] == 0
    emb = np.load(run / "embeddings.npy")
    np.save(run / "embeddings.npy", emb[:-1])
    code, err = invoke("pack", str(run), "-o", str(tmp_path / "out"), "--tokenizer", "packaged-minilm")
    assert code == 1 and "stale" in err and f"tfpack embed {qa_file} -o {run} --overwrite" in err
    np.save(run / "embeddings.npy", emb)
    write_jsonl(qa_file, qa_rows(25))
    code, err = invoke("order", str(run), "-o", str(tmp_path / "o.npy"))
    assert code == 1 and f"input {qa_file} changed since it was embedded" in err


def test_unwritable_output_and_full_disk(tmp_path: Path, qa_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = invoke("embed", str(qa_file), "-o", str(blocker / "run"))
    assert code in (1, 2) and str(blocker) in err and "Traceback" not in err
    run = tmp_path / "run"
    assert invoke("embed", str(qa_file), "-o", str(run), "--quiet")[0] == 0

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device", "part-00000.parquet.tmp")

    monkeypatch.setattr(pq, "write_table", full)
    code, err = invoke("pack", str(run), "-o", str(tmp_path / "out"), "--tokenizer", "packaged-minilm")
    assert code == 1 and "No space left on device" in err
    assert not (tmp_path / "out" / "manifest.json").exists() and not shard_paths(tmp_path / "out")


def tfpack(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tfpack", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


FULL_ONNX = ("--model", "all-MiniLM-L6-v2", "--backend", "onnx")  # the full model: slow enough to kill mid-run


@pytest.mark.slow  # a real process embedding, killed and resumed
def test_killed_embed_resumes_to_the_same_result(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "big.jsonl", qa_rows(3000))
    run, ref = tmp_path / "run", tmp_path / "ref"
    progress = run / "embed.progress.json"
    proc = tfpack("embed", str(data), "-o", str(run), "--quiet", *FULL_ONNX)
    wait_for(lambda: progress.is_file() and orjson.loads(progress.read_bytes())["rows_done"] > 0)
    kill(proc)
    done = orjson.loads(progress.read_bytes())["rows_done"]
    assert 0 < done < 3000 and not (run / "manifest.json").exists() and not (run / "embeddings.npy").exists()
    code, err = invoke("embed", str(data), "-o", str(run), *FULL_ONNX)
    assert code == 2 and "incomplete run" in err and "--resume" in err
    code, err = invoke("embed", str(data), "-o", str(run), "--resume", "--quiet", *FULL_ONNX)
    assert code == 0, err
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    assert manifest["resumed"] is True and not progress.exists()
    assert invoke("embed", str(data), "-o", str(ref), "--quiet", *FULL_ONNX)[0] == 0
    np.testing.assert_array_equal(np.load(run / "embeddings.npy"), np.load(ref / "embeddings.npy"))


def test_resume_refuses_other_inputs(tmp_path: Path, qa_file: Path) -> None:
    run = tmp_path / "run"
    assert invoke("embed", str(qa_file), "-o", str(run), "--quiet")[0] == 0
    code, err = invoke("embed", str(qa_file), "-o", str(run), "--resume")
    assert code == 2 and "already complete" in err


@pytest.mark.slow  # a real process killed mid-pack
def test_killed_pack_leaves_no_manifest_and_rerun_says_incomplete(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "big.jsonl", qa_rows(1500))
    run, out = tmp_path / "run", tmp_path / "out"
    assert invoke("embed", str(data), "-o", str(run), "--quiet")[0] == 0
    proc = tfpack("pack", str(run), "-o", str(out), *DEMO_TOKENIZER, "--max-len", "64", "--shard-packs", "1", "--quiet")
    wait_for(lambda: len(shard_paths(out)) >= 3)
    kill(proc)
    assert not (out / "manifest.json").exists()
    code, err = invoke("pack", str(run), "-o", str(out), "--tokenizer", "packaged-minilm")
    assert code == 2 and "incomplete run (no manifest.json)" in err
    code, err = invoke("stats", str(out))
    assert code == 1 and "no manifest.json" in err
    code, err = invoke("pack", str(run), "-o", str(out), *DEMO_TOKENIZER, "--max-len", "64", "--overwrite", "--quiet")
    assert code == 0, err
    assert invoke("stats", str(out), "--verify", "--json")[0] == 0


@pytest.mark.parametrize("damage", ["truncated", "not an object", "missing key", "wrong type", "no stage"])
def test_damaged_manifests_give_one_line(packed: Path, tmp_path: Path, damage: str) -> None:
    """A corrupt, partial, key-missing or mistyped manifest.json: every command that reads it says so in one line,
    exit 1."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(packed, out, symlinks=True)
    run = tmp_path / "run"
    shutil.copytree(packed / ".tfpack" / "embed", run)
    for target in (out, run):
        path = target / "manifest.json"
        manifest = orjson.loads(path.read_bytes())
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[:40])
        elif damage == "not an object":
            path.write_bytes(b"[1, 2]")
        else:
            if damage == "missing key":
                manifest.pop("max_len" if target == out else "dim")
            elif damage == "wrong type":
                manifest.update({"shards": None} if target == out else {"n": "24"})
            else:
                manifest.pop("stage")
            path.write_bytes(orjson.dumps(manifest))
    expected = {
        "truncated": "corrupt or partial manifest",
        "not an object": "not a manifest",
        "missing key": "manifest lacks",
        "wrong type": ", expected a",
        "no stage": "manifest lacks stage",
    }[damage]
    for args in (
        ["stats", str(out)],
        ["stats", str(out), "--verify"],
        ["inspect", str(out), "--pack", "0"],
        ["stats", str(run)],
        ["order", str(run), "-o", str(tmp_path / "order.npy")],
        ["pack", str(run), "-o", str(tmp_path / "again"), "--tokenizer", "packaged-minilm"],
        ["sweep", str(run), "--thresholds", "0.9", "--tokenizer", "packaged-minilm"],
    ):
        code, err = invoke(*args)
        assert code == 1, (args, err)
        assert expected in err and "manifest.json" in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) <= 2, err


@pytest.mark.parametrize("case", ["too long, --long drop", "prompt too long", "all refused"])
def test_pack_with_every_sample_left_out_fails_cleanly(qa_file: Path, tmp_path: Path, case: str) -> None:
    """Nothing to pack: exit 1, one line with how many, the main reasons, where they are listed and the change that
    helps for those reasons; the lists are written, no manifest, and stats/verify/inspect then say incomplete."""
    out = tmp_path / "out"
    if case == "too long, --long drop":
        args, listed, count = [str(qa_file), "--max-len", "34", "--long", "drop"], "dropped.jsonl", 24
        expected = (
            "all 24 samples were left out (24 longer than max_len; listed in {}); raise --max-len or pass "
            "--long truncate"
        )
    elif case == "prompt too long":
        data = write_jsonl(tmp_path / "long.jsonl", [{"question": f"why {i} " * 40, "answer": "ok"} for i in range(3)])
        args, listed, count = [str(data), "--max-len", "40"], "dropped.jsonl", 3
        expected = "all 3 samples were left out (3 no trained token within max_len; listed in {}); raise --max-len\n"
    else:
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"call {i}"},
                    {"role": "tool", "content": f"result {i}"},
                    {"role": "assistant", "content": f"done {i}"},
                ]
            }
            for i in range(5)
        ]
        args = [str(write_jsonl(tmp_path / "tool.jsonl", rows)), "--template", "plain", "--on-error", "skip"]
        listed, count = "errors.jsonl", 5
        expected = (
            "all 5 samples were left out (5 the chat template refused the sample; listed in {}); fix the "
            "samples the chat template refuses (or pass another --template)\n"
        )
    code, err = invoke("pack", *args, "-o", str(out), *DEMO_TOKENIZER)
    assert code == 1 and f"{out}: nothing to pack, " + expected.format(out / listed) in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert len((out / listed).read_bytes().splitlines()) == count
    assert not (out / "manifest.json").exists()
    for command in (["stats", str(out)], ["stats", str(out), "--verify"], ["inspect", str(out)]):
        code, err = invoke(*command)
        assert code == 1 and "is incomplete (no manifest.json" in err and "Traceback" not in err, err


@pytest.mark.parametrize("n", [1, 30])
def test_identical_samples_and_a_single_sample_pack(tmp_path: Path, n: int) -> None:
    """All embeddings equal (the auto threshold's quantile has no non-zero pair) or one sample (no pair, no
    neighbour): a valid packing, every sample packed, and stats, sweep and --verify run on it."""
    data = write_jsonl(tmp_path / "same.jsonl", [{"question": "What is 2+2?", "answer": "4"}] * n)
    run, out = tmp_path / "run", tmp_path / "out"
    assert invoke("embed", str(data), "-o", str(run), "--model", "static", "--quiet") == (0, "")
    code, err = invoke("pack", str(run), "-o", str(out), *DEMO_TOKENIZER, "--max-len", "64", "--quiet")
    assert code == 0, err
    summary = orjson.loads(runner.invoke(app, ["stats", str(out), "--verify", "--json"]).stdout)
    assert summary["samples"] == n and summary["dropped"] == 0
    for command in (["stats", str(run), "--json"], ["sweep", str(run), *DEMO_TOKENIZER, "--json"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr


def test_template_that_fails_the_end_of_turn_probe_is_one_line(qa_file: Path, tmp_path: Path) -> None:
    """A template that cannot render a plain user/assistant exchange stops the run before any work (guessing its
    end-of-turn marker would change labels)."""
    template = tmp_path / "strict.jinja"
    template.write_text(
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message is required') }}{% endif %}"
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    out = tmp_path / "out"
    code, err = invoke("pack", str(qa_file), "-o", str(out), *DEMO_TOKENIZER, "--template", str(template))
    assert code == 2 and "cannot render a one-turn user/assistant exchange" in err, err
    assert "a system message is required" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow  # fresh interpreters, full model
def test_quiet_prints_nothing_not_even_other_libraries(qa_file: Path, tmp_path: Path) -> None:
    """--quiet: a real embed and pack leave stderr empty; the switches also hold for a library's own tqdm bar and
    warning log line (what transformers 5 prints while loading weights) and for a logger a library configures itself
    with its own handler and level (as ray.data does on import)."""
    # without the switches an earlier in-process test left in os.environ: the command must set them itself
    switches = (
        "TQDM_DISABLE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_VERBOSITY",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    )
    env = {k: v for k, v in os.environ.items() if k not in switches}

    def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tfpack", *args], capture_output=True, text=True, timeout=600, env=env
        )

    embed = run_cli("embed", str(qa_file), "-o", str(tmp_path / "run"), "--quiet")
    assert embed.returncode == 0 and embed.stderr == "" and embed.stdout == ""
    pack = run_cli(
        "pack", str(tmp_path / "run"), "-o", str(tmp_path / "out"), "--tokenizer", "packaged-minilm", "--quiet"
    )
    assert pack.returncode == 0 and pack.stderr == "" and pack.stdout == ""
    probe = (
        "from tfpack.progress import silence_third_party; silence_third_party(quiet=True)\n"
        "import logging, tqdm; [None for _ in tqdm.tqdm(range(3), desc='Loading weights')]\n"
        "logging.basicConfig(); logging.getLogger('transformers.modeling_utils').warning('Loading weights')\n"
        "own = logging.getLogger('ray.data'); own.setLevel(logging.DEBUG); own.propagate = False\n"
        "own.addHandler(logging.StreamHandler()); own.info('Starting execution of Dataset')"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0 and run.stderr == ""
    loud = subprocess.run(
        [sys.executable, "-c", probe.split("\n", 1)[1]], capture_output=True, text=True, timeout=60, env=env
    )
    # the control: without the switches the bar, the warning and the self-configured logger's line all print
    assert "Loading weights:" in loud.stderr and "WARNING:transformers" in loud.stderr
    assert "Starting execution of Dataset" in loud.stderr


@pytest.mark.slow  # fresh interpreters, IVF training
def test_quiet_and_json_keep_faiss_training_warnings_off_stderr(tmp_path: Path) -> None:
    """faiss's k-means warns on stderr from C++ when it has under 39 training rows per centroid (IVF with a small k,
    the 16-centroid PQ of ivfpq below 624 rows): neither --quiet nor --json output may carry it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 16))[rng.integers(0, 6, 300)] + 0.5 * rng.normal(size=(300, 16))
    np.save(tmp_path / "e.npy", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))

    def order(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tfpack",
                "order",
                str(tmp_path / "e.npy"),
                "-o",
                str(tmp_path / "o.npy"),
                "--overwrite",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )

    ivf = order("--knn", "ivf", "--k", "4", "--quiet")
    assert ivf.returncode == 0 and ivf.stderr == "" and ivf.stdout == ""
    ivfpq = order("--knn", "ivfpq", "--json")
    assert ivfpq.returncode == 0 and ivfpq.stderr == "", ivfpq.stderr
    assert orjson.loads(ivfpq.stdout)["knn"] == "ivfpq" and len(ivfpq.stdout.splitlines()) == 1


def test_json_silences_other_libraries_like_quiet() -> None:
    """--json keeps progress bars on a terminal but, like --quiet, no other library's log lines: stdout is the JSON."""
    probe = (
        "import logging; from tfpack.cli import _progress; logging.basicConfig()\n"
        "with _progress(quiet=False, as_json=True):\n"
        "    logging.getLogger('transformers.modeling_utils').warning('Loading weights')"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == ""
    loud = subprocess.run(
        [sys.executable, "-c", probe.replace("as_json=True", "as_json=False")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Loading weights" in loud.stderr  # the control: a plain run lets it through


def test_damaged_pack_output_gives_one_line(packed: Path, tmp_path: Path) -> None:
    """A shard the manifest lists gone, or the embed run the pack was made from gone: stats and inspect name what is
    missing in one line (verify keeps its own message), exit 1."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(packed, out, symlinks=True)
    gone = sorted((out / "data").glob("train-*.parquet"))[0]
    gone.unlink()
    for args in (["stats", str(out)], ["inspect", str(out), "--pack", "0"]):
        code, err = invoke(*args)
        assert code == 1 and f"{gone}: listed in {out / 'manifest.json'} but missing (1 of" in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    moved = tmp_path / "moved"
    shutil.copytree(packed, moved, symlinks=True)
    manifest = orjson.loads((moved / "manifest.json").read_bytes())
    manifest["run_dir"] = str(tmp_path / "no-such-run")
    (moved / "manifest.json").write_bytes(orjson.dumps(manifest))
    for args in (["stats", str(moved)], ["stats", str(moved), "--verify"]):
        code, err = invoke(*args)
        assert code == 1 and f"{tmp_path / 'no-such-run'}: the embed run {moved} was packed from is gone" in err, err


def test_silencing_reaches_libraries_imported_before() -> None:
    """tfpack used as a library: transformers is often imported before the first command, after it has read the
    environment switches; --quiet must still turn its progress bars ("Loading weights") off."""
    import transformers
    from huggingface_hub import utils as hub_utils

    from tfpack.progress import silence_third_party

    logging_utils = transformers.utils.logging
    transformers_on, hub_on = logging_utils.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    logging_utils.enable_progress_bar()
    hub_utils.enable_progress_bars()
    try:
        silence_third_party(quiet=False)
        assert not logging_utils.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
    finally:
        if transformers_on:
            logging_utils.enable_progress_bar()
        else:
            logging_utils.disable_progress_bar()
        if hub_on:
            hub_utils.enable_progress_bars()
