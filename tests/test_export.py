"""`tfpack export`: the rows each trainer loads hold the shards' tokens, labels and attention layout unchanged, the
export folder is written whole or not at all, and nothing tfpack did not write is touched. Training on them through
each trainer's own entry point is tests/test_export_llamafactory.py and tests/test_export_axolotl.py."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tfpack.cli import app
from tfpack.workdir import IGNORE_INDEX, shard_paths


def shard_rows(out: Path) -> list[dict]:
    return pq.read_table(shard_paths(out)).to_pylist()


def run_export(out: Path, to: str, dest: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["export", str(out), "--to", to, "-o", str(dest), *extra])
    return result.exit_code, result.stdout, result.stderr


def segment_ids(seq_lengths: list[int]) -> list[int]:
    return [s + 1 for s, n in enumerate(seq_lengths) for _ in range(n)]


def export_rows(dest: Path, to: str) -> list[dict]:
    if to == "llamafactory":
        datasets = pytest.importorskip("datasets")
        return datasets.load_from_disk(str(dest)).to_list()
    return pq.read_table(sorted((dest / "data").glob("*.parquet"))).to_pylist()


@pytest.mark.parametrize("to", ["llamafactory", "axolotl"])
@pytest.mark.parametrize("mode", ["segment", "pack"])
def test_export_holds_the_packs_unchanged(
    to: str, mode: str, packed: Path, packed_default: Path, tmp_path: Path
) -> None:
    out = packed if mode == "segment" else packed_default
    dest = tmp_path / "export"
    code, stdout, _ = run_export(out, to, dest)
    assert code == 0
    assert stdout == (dest / "recipe.yaml").read_text()
    recipe = yaml.safe_load(stdout)
    manifest = orjson.loads((dest / "manifest.json").read_bytes())
    assert manifest["source"]["out_dir"] == str(out.resolve()) and manifest["attention"] == mode
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == manifest["files"]
    assert not list(tmp_path.glob(".export*")), "the temporary folder is gone"
    source, rows = shard_rows(out), export_rows(dest, to)
    assert len(rows) == len(source) == manifest["rows"]
    for row, pack in zip(rows, source, strict=True):
        n = len(pack["input_ids"])
        if to == "llamafactory":
            assert recipe["tokenized_path"] == str(dest.resolve()) and recipe["neat_packing"] is (mode == "segment")
            if mode == "segment":
                assert set(row) == {"input_ids", "labels", "attention_mask", "position_ids"}
                width = recipe["cutoff_len"]  # every row as long: max_len rounded up to a multiple of 8
                assert len(row["input_ids"]) == width and width % 8 == 0 and width - 8 < manifest["source"]["max_len"]
                pad = len(row["input_ids"]) - n
                assert row["attention_mask"] == segment_ids(pack["seq_lengths"]) + [0] * pad
                assert row["position_ids"] == pack["position_ids"] + [0] * pad
                assert row["labels"][n:] == [IGNORE_INDEX] * pad
            else:
                assert set(row) == {"input_ids", "labels", "attention_mask"}
                assert row["attention_mask"] == [1] * n
        else:
            assert recipe["datasets"][0]["path"] == str((dest / "data").resolve()) and recipe["skip_prepare_dataset"]
            assert recipe["sample_packing"] is (mode == "segment")
            assert row["length"] == n
            if mode == "segment":
                assert set(row) == {"input_ids", "labels", "position_ids", "length"}
                assert row["position_ids"] == pack["position_ids"]
            else:
                assert set(row) == {"input_ids", "labels", "position_ids", "length", "attention_mask"}
                assert row["position_ids"] == list(range(n)) and row["attention_mask"] == [1] * n
        assert row["input_ids"][:n] == pack["input_ids"] and row["labels"][:n] == pack["labels"]


def test_segment_ids_stay_int32(packed: Path, tmp_path: Path) -> None:
    """Segment ids past 127 would overflow an int8 mask; the export stores every column as int32."""
    datasets = pytest.importorskip("datasets")
    assert run_export(packed, "llamafactory", tmp_path / "lf")[0] == 0
    features = datasets.load_from_disk(str(tmp_path / "lf")).features
    assert {name: f.feature.dtype for name, f in features.items()} == dict.fromkeys(features, "int32")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_refuses_a_folder_it_did_not_write(packed: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    code, _, stderr = run_export(packed, "axolotl", dest, "--overwrite")
    assert (
        code == 2
        and f"-o {dest}: is a folder tfpack did not write (no tfpack manifest.json; holds notes.txt)" in stderr
    )
    assert snapshot(dest) == {"notes.txt": b"keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_rerun_needs_overwrite_and_replaces_only_its_files(packed: Path, tmp_path: Path) -> None:
    dest = tmp_path / "export"
    assert run_export(packed, "axolotl", dest)[0] == 0
    first = snapshot(dest)
    code, _, stderr = run_export(packed, "llamafactory", dest)
    assert code == 2 and "pass --overwrite" in stderr and snapshot(dest) == first
    assert run_export(packed, "llamafactory", dest, "--overwrite")[0] == 0
    manifest = orjson.loads((dest / "manifest.json").read_bytes())
    assert manifest["trainer"] == "llamafactory" and not (dest / "data").exists()
    assert sorted(snapshot(dest)) == manifest["files"]


def test_overwrite_keeps_the_users_files_in_an_export(packed: Path, tmp_path: Path) -> None:
    """The rule of every tfpack output: --overwrite replaces only the files the export's manifest lists; a file the
    user added stays (and is named in a note), one under a name the export writes is refused with nothing changed."""
    dest = tmp_path / "export"
    assert run_export(packed, "axolotl", dest)[0] == 0
    (dest / "train.yaml").write_text("mine")
    (dest / "data" / "extra.parquet").write_bytes(b"mine")
    code, _, stderr = run_export(packed, "llamafactory", dest, "--overwrite")
    assert code == 0, stderr
    assert f"note: -o {dest}: kept what tfpack did not write there (train.yaml, data/extra.parquet)" in stderr
    manifest = orjson.loads((dest / "manifest.json").read_bytes())
    assert manifest["trainer"] == "llamafactory" and "data/" not in manifest["written"]
    assert sorted(snapshot(dest)) == sorted([*manifest["files"], "train.yaml", "data/extra.parquet"])
    assert (dest / "train.yaml").read_text() == "mine" and (dest / "data" / "extra.parquet").read_bytes() == b"mine"
    assert run_export(packed, "axolotl", dest, "--overwrite")[0] == 0  # back into data/, beside extra.parquet
    assert sorted(snapshot(dest)) == sorted(
        [*orjson.loads((dest / "manifest.json").read_bytes())["files"], "train.yaml", "data/extra.parquet"]
    )
    (dest / "state.json").write_text("mine")
    before = snapshot(dest)
    code, _, stderr = run_export(packed, "llamafactory", dest, "--overwrite")
    assert code == 2 and f"-o {dest}: holds state.json, not listed as tfpack's" in stderr
    assert snapshot(dest) == before and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("where", ["inside", "same"])
def test_refuses_an_export_inside_the_pack_output(packed: Path, where: str) -> None:
    before = snapshot(packed)
    dest = packed / "export" if where == "inside" else packed
    code, _, stderr = run_export(packed, "axolotl", dest)
    relation = "is inside" if where == "inside" else "is"
    assert code == 2 and f"-o {dest}: {relation} the input {packed}; write the output somewhere else" in stderr
    assert snapshot(packed) == before


def test_not_a_pack_output(tmp_path: Path) -> None:
    code, _, stderr = run_export(tmp_path / "nothing", "axolotl", tmp_path / "export")
    assert code == 1 and "does not exist" in stderr and not (tmp_path / "export").exists()


def test_unknown_trainer(packed: Path, tmp_path: Path) -> None:
    code, _, stderr = run_export(packed, "megatron", tmp_path / "export")
    assert code == 2 and "--to: expected one of llamafactory, axolotl" in stderr
    assert not (tmp_path / "export").exists()
