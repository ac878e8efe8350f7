"""`--engine ray` parity: same embeddings (within float tolerance) and byte-identical shards as the local engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_TOKENIZER, SHARED_DATA, chat_rows, shared_file, write_jsonl
from tfpack.cli import app
from tfpack.workdir import shard_paths

ray = pytest.importorskip("ray")
runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, logging_level="ERROR")
    yield
    ray.shutdown()


def invoke(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr


def parity(data: Path, tmp: Path) -> None:
    for engine in ("local", "ray"):
        invoke("embed", str(data), "-o", str(tmp / f"run-{engine}"), "--engine", engine, "--quiet")
    local = np.load(tmp / "run-local" / "embeddings.npy")
    remote = np.load(tmp / "run-ray" / "embeddings.npy")
    assert local.shape == remote.shape
    np.testing.assert_allclose(remote, local, atol=1e-5)
    for engine in ("local", "ray"):
        invoke(
            "pack",
            str(tmp / "run-local"),
            "-o",
            str(tmp / f"out-{engine}"),
            *DEMO_TOKENIZER,
            "--engine",
            engine,
            "--max-len",
            "512",
            "--shard-packs",
            "20",
            "--quiet",
        )
    shards = [p.relative_to(tmp / "out-local") for p in shard_paths(tmp / "out-local")]
    assert shards == [p.relative_to(tmp / "out-ray") for p in shard_paths(tmp / "out-ray")] and shards
    for name in shards:
        assert (tmp / "out-local" / name).read_bytes() == (tmp / "out-ray" / name).read_bytes(), name


@pytest.mark.slow  # a local Ray cluster, both engines end to end
def test_ray_engine_parity_on_chats(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    parity(write_jsonl(tmp_path / "chat.jsonl", chat_rows(300)), tmp_path)


@pytest.mark.slow  # 2,000 GSM8K samples through both engines
def test_ray_engine_parity_on_gsm8k(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = shared_file(SHARED_DATA / "gsm8k_train.jsonl").read_bytes().splitlines()[:2000]
    data = tmp_path / "gsm8k_2000.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    parity(data, tmp_path)


def test_ray_ingest_reads_each_input_in_a_task_like_local(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from tfpack.ingest.formats import FormatOptions
    from tfpack.ingest.samples import ingest

    rows = chat_rows(90)
    for i, row in enumerate(rows):
        row["id"] = f"c{i % 70}"  # the third file repeats the first file's ids c0-c19
    files = [write_jsonl(tmp_path / f"part{i}.jsonl", rows[30 * i : 30 * (i + 1)]) for i in range(3)]
    with open(files[1], "ab") as f:
        f.write(b"{not json\n")
    inputs = [str(f) for f in files]
    options = FormatOptions(id_field="id")
    results = {}
    for engine in ("local", "ray"):
        (tmp_path / engine).mkdir()
        results[engine] = ingest(inputs, options, tmp_path / engine / "samples.parquet", "skip", engine=engine)
        assert not (tmp_path / engine / ".ingest").exists()
    local, remote = results["local"], results["ray"]
    assert (remote.n_records, remote.n_samples, remote.inputs) == (local.n_records, local.n_samples, local.inputs)
    assert remote.errors == local.errors and len(local.errors) == 21  # 20 repeated ids and the bad line
    assert local.errors[1]["reason"] == f"field 'id': duplicate id 'c0' (first at {inputs[0]}:1)"
    tables = [pq.read_table(tmp_path / e / "samples.parquet") for e in ("local", "ray")]
    assert tables[0].equals(tables[1]) and tables[0].num_rows == 70
    messages = []
    for engine in ("local", "ray"):
        try:
            ingest(inputs, options, tmp_path / engine / "again.parquet", "fail", engine=engine)
        except Exception as e:  # noqa: BLE001 - the message is what is compared
            messages.append(str(e))
    assert messages[0] == messages[1] and messages[0].startswith(f"{inputs[1]}:31: ")  # the first bad record


def test_ray_bucket_walks_equal_local(local_ray) -> None:  # type: ignore[no-untyped-def]
    from tfpack.config import OrderConfig
    from tfpack.ordering.stage import order_embeddings

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 32))[rng.integers(0, 6, 3000)] + 0.6 * rng.normal(size=(3000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    local = order_embeddings(x, OrderConfig(threshold="0.9", buckets=6))
    remote = order_embeddings(x, OrderConfig(threshold="0.9", buckets=6, engine="ray"))
    np.testing.assert_array_equal(local.path, remote.path)
    assert local.summary["fallbacks"] == remote.summary["fallbacks"]


def test_tokenize_worker_reports_refusals() -> None:
    """The Ray tokenizing task returns a refusal per sample the template rejects, next to the others' labels, in
    the columns `pack.ray_tokenized` reads back."""
    from tfpack.packing.stage import TokenizeWorker

    worker = TokenizeWorker("packaged-minilm", "plain", "assistant")
    turns = [
        [{"role": "user", "content": "add 1 and 2"}, {"role": "assistant", "content": "3", "extra": None}],
        [
            {"role": "user", "content": "look it up"},
            {"role": "tool", "content": "42", "extra": None},
            {"role": "assistant", "content": "42", "extra": None},
        ],
    ]
    out = worker(
        {
            "sample_id": np.array([7, 8]),
            "turns": np.array(turns, dtype=object),
            "tools": np.array([None, None], dtype=object),
        }
    )
    assert out["sample_id"].tolist() == [7, 8]
    assert out["refusal"][0] == "" and len(out["input_ids"][0]) == len(out["labels"][0]) > 0
    assert "the plain template has no tool role" in out["refusal"][1] and len(out["input_ids"][1]) == 0
