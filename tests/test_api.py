"""The Python API: docstring examples run, options are checked against the configs, and the API writes what the CLI
writes, byte for byte."""

from __future__ import annotations

import doctest
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import tfpack
import tfpack.api
import tfpack.arrays
import tfpack.parallel
import tfpack.workdir
from tests.conftest import chat_rows, write_jsonl
from tfpack.cli import app
from tfpack.config import EmbedConfig
from tfpack.errors import ConfigError
from tfpack.packing.tokenizer import PACKAGED_TOKENIZER
from tfpack.workdir import EMBED_RUN, MANIFEST, WORK_DIR, shard_paths

DOCUMENTED = [tfpack.api, tfpack.arrays, tfpack.parallel, tfpack.workdir]


@pytest.mark.parametrize("module", DOCUMENTED, ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_help_shows_a_worked_example() -> None:
    assert ">>> packed = tfpack.pack_dataset(" in (tfpack.pack_dataset.__doc__ or "")
    assert set(tfpack.__all__) >= {"embed", "order", "pack", "stats", "verify", "pack_dataset"}


def test_api_writes_what_the_cli_writes(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows(80))
    flags = {"max_len": 192, "threshold": 0.8, "attention": "segment", "shard_packs": 5, "pack_seed": 3}
    result = tfpack.pack(str(data), str(tmp_path / "api"), tokenizer=PACKAGED_TOKENIZER, template="chatml", **flags)
    cli = CliRunner().invoke(
        app,
        [
            "pack", str(data), "-o", str(tmp_path / "cli"), "--tokenizer", PACKAGED_TOKENIZER, "--template", "chatml",
            "--max-len", "192", "--threshold", "0.8", "--attention", "segment", "--shard-packs", "5",
            "--pack-seed", "3", "--quiet",
        ],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    api_shards, cli_shards = shard_paths(result.out_dir), shard_paths(tmp_path / "cli")
    assert len(api_shards) > 1 and [p.name for p in api_shards] == [p.name for p in cli_shards]
    assert all(a.read_bytes() == c.read_bytes() for a, c in zip(api_shards, cli_shards, strict=True))
    assert result.samples == 80 and result.packs == result.summary["packs"]
    assert tfpack.verify(tmp_path / "api").ok


def test_options_are_the_config_fields(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows(10))
    unknown = r"^pack\(\): unknown option max_length; did you mean max_seq_length or max_len\?$"
    with pytest.raises(ConfigError, match=unknown):
        tfpack.pack(data, tmp_path / "out", tokenizer=PACKAGED_TOKENIZER, max_length=128)
    with pytest.raises(ConfigError, match="^window: must be >= 1, got 0$"):  # named as the keyword given
        tfpack.order(data, window=0)
    with pytest.raises(ConfigError, match="^pack_seed: must be >= 0, got -1$"):
        tfpack.pack(data, tmp_path / "out", tokenizer=PACKAGED_TOKENIZER, pack_seed=-1)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="unknown option.*tokenizer"):
        tfpack.embed(data, tmp_path / "run", tokenizer=PACKAGED_TOKENIZER)


def test_pack_takes_the_embedding_keywords(tmp_path: Path) -> None:
    """`pack` given input files takes embed's keywords (as `tfpack pack INPUT` takes its flags), or `embed_config`;
    not both, and not with a run directory, which is embedded already: refused before anything is written."""
    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows(30))
    result = tfpack.pack(data, tmp_path / "out", tokenizer=PACKAGED_TOKENIZER, model="static", batch_size=7)
    embed_run = orjson.loads((tmp_path / "out" / WORK_DIR / EMBED_RUN / MANIFEST).read_bytes())
    assert result.samples == 30 and embed_run["model"] == "static"
    assert embed_run["config"]["embed"]["batch_size"] == 7
    with pytest.raises(ConfigError, match="^pack\\(\\): model: give embed_config or embedding keywords, not both$"):
        tfpack.pack(data, tmp_path / "o2", tokenizer=PACKAGED_TOKENIZER, model="static", embed_config=EmbedConfig())
    with pytest.raises(ConfigError, match="^dtype: applies when pack reads and embeds input files; "):
        tfpack.pack(tmp_path / "out", tmp_path / "o2", tokenizer=PACKAGED_TOKENIZER, dtype="float16")
    assert not (tmp_path / "o2").exists()


def test_pack_dataset_takes_a_dataset_and_a_loaded_tokenizer(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from tfpack.packing.tokenizer import load_tokenizer

    train = datasets.Dataset.from_list(chat_rows(50))
    hf = load_tokenizer(PACKAGED_TOKENIZER, "chatml").hf
    packed = tfpack.pack_dataset(train, tokenizer=hf, template="chatml", max_len=256, work_dir=tmp_path / "kept")
    assert isinstance(packed, datasets.Dataset)
    written = pq.ParquetDataset([str(p) for p in shard_paths(tmp_path / "kept")]).read()
    assert packed.num_rows == written.num_rows and packed.column_names == written.column_names
    assert packed["input_ids"] == written.column("input_ids").to_pylist()
    assert sorted(i for ids in packed["sample_ids"] for i in ids) == list(range(50))


QUIET_SCRIPT = """
import sys, tfpack
from tfpack.api import write_records
rows = [{"messages": [{"role": "user", "content": f"Spell {i}."},
                      {"role": "assistant", "content": f"{i} is spelled with digits."}]} for i in range(40)]
out, progress = sys.argv[1], sys.argv[2] == "1"
inputs = write_records(rows, out + "/rows.jsonl")
run = tfpack.embed(inputs, out + "/run", progress=progress)
tfpack.order(out + "/run", out=out + "/path.npy", k=8, progress=progress)
tfpack.pack(out + "/run", out + "/packed", tokenizer="packaged-minilm", template="chatml", max_len=256,
            progress=progress)
tfpack.stats(out + "/packed")
tfpack.verify(out + "/packed")
tfpack.pack_dataset(rows, tokenizer="packaged-minilm", template="chatml", max_len=256, progress=progress)
"""


@pytest.mark.parametrize("progress", [False, True])
def test_the_api_prints_nothing_unless_asked(tmp_path: Path, progress: bool) -> None:
    """A fresh interpreter (nothing silenced by an earlier test) runs every API verb on a real small job: by default
    stdout and stderr stay empty (no model-loading bar, no warning, no log line); `progress=True` draws bars."""
    import os
    import subprocess
    import sys

    # the switches silence_third_party sets in this process (CLI tests) must not reach the fresh interpreter
    switches = {
        "TQDM_DISABLE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_VERBOSITY",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    }
    result = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, str(tmp_path), str(int(progress))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        env={k: v for k, v in os.environ.items() if k not in switches},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    if progress:
        assert "it/s" in result.stderr or "%|" in result.stderr, result.stderr
    else:
        assert result.stderr == ""
