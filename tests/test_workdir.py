from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from tfpack.errors import ConfigError, Note, StaleArtifactError
from tfpack.workdir import (
    Kind,
    atomic_path,
    classify,
    fingerprint_bytes,
    fingerprint_file,
    prepare_out_dir,
    read_manifest,
    remove_owned,
    write_manifest,
)


def test_atomic_path_renames_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert not target.exists() and not list(tmp_path.iterdir())
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_fingerprints_agree(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert fingerprint_file(path) == fingerprint_bytes(b"abc" * 1000)
    assert fingerprint_file(path) != fingerprint_bytes(b"abd")


def test_manifest_round_trip_and_stage_check(tmp_path: Path) -> None:
    write_manifest(
        tmp_path,
        {"stage": "embed", "n": 3, "dim": 4, "model": "m", "backend": "onnx", "dtype": "float32", "inputs": []},
    )
    assert read_manifest(tmp_path, "embed", "tfpack embed")["n"] == 3
    with pytest.raises(StaleArtifactError, match=r"is an embed run directory; expected a pack output: `tfpack pack "):
        read_manifest(tmp_path, "pack", "tfpack pack")


def test_missing_manifest_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(StaleArtifactError, match="is an empty folder; expected an embed run directory"):
        read_manifest(tmp_path, "embed", "tfpack embed x -o y")
    (tmp_path / "embed.progress.json").write_bytes(b"{}")
    with pytest.raises(StaleArtifactError, match=r"is incomplete \(no manifest.json.*run `tfpack embed x -o y`"):
        read_manifest(tmp_path, "embed", "tfpack embed x -o y")
    with pytest.raises(StaleArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nope", "embed", "tfpack embed")


def test_prepare_out_dir_refuses_non_empty(tmp_path: Path) -> None:
    new = tmp_path / "new"
    prepare_out_dir(new, "embed", overwrite=False)
    (new / "f").write_bytes(b"mine")
    for overwrite in (False, True):  # a folder tfpack did not write: refused either way, nothing removed
        with pytest.raises(
            ConfigError, match="is a folder tfpack did not write .*holds f.*pick an empty or new folder"
        ):
            prepare_out_dir(new, "embed", overwrite=overwrite)
    (new / "embed.progress.json").write_bytes(b"{}")
    with pytest.raises(ConfigError, match="incomplete run.*pass --overwrite"):
        prepare_out_dir(new, "embed", overwrite=False)
    (new / "samples.parquet").write_bytes(b"")
    write_manifest(new, {"stage": "embed"})
    assert orjson.loads((new / "manifest.json").read_bytes())["written"] == ["embed.progress.json", "samples.parquet"]
    with pytest.raises(ConfigError, match="holds a finished run"):
        prepare_out_dir(new, "embed", overwrite=False)
    with pytest.raises(ConfigError, match="is an embed run directory, not a pack output"):
        prepare_out_dir(new, "pack", overwrite=True)
    with pytest.warns(Note, match=r"new: kept what tfpack did not write there \(f\)"):
        prepare_out_dir(new, "embed", overwrite=True)
    assert sorted(p.name for p in new.iterdir()) == ["f"] and (new / "f").read_bytes() == b"mine"


def test_remove_owned_keeps_what_the_manifest_does_not_list(tmp_path: Path) -> None:
    """--overwrite of a pack output: the listed files go; a file the user added there, a file under data/ that is no
    shard, and a README.md of an unfinished run stay."""
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"x")
    (out / "README.md").write_text("card")
    write_manifest(out, {"stage": "pack"})
    (out / "notes.txt").write_text("mine")
    (out / "data" / "mine.csv").write_text("mine")
    (out / "notes.tmp").write_text("mine")  # a .tmp name, but not one tfpack writes on the way
    (out / "dropped.jsonl.tmp").write_text("half")  # what a killed `atomic_path` leaves: tfpack's, though not listed
    with pytest.warns(Note, match=r"kept what tfpack did not write there \(notes.tmp, notes.txt, data/mine.csv\)"):
        removed = remove_owned(classify(out))
    assert sorted(removed) == ["README.md", "dropped.jsonl.tmp", "manifest.json"]  # data/ keeps mine.csv
    assert sorted(p.name for p in out.rglob("*")) == ["data", "mine.csv", "notes.tmp", "notes.txt"]
    (out / ".tfpack").mkdir()
    (out / "README.md").write_text("yours")
    assert classify(out).kind is Kind.INCOMPLETE
    with pytest.warns(Note, match="README.md"):
        assert remove_owned(classify(out)) == [".tfpack"]
    assert (out / "README.md").read_text() == "yours"


def test_overwrite_refuses_a_users_file_under_a_name_tfpack_writes(tmp_path: Path) -> None:
    """A pack output without contamination.jsonl, where the user then saved one: --overwrite would write over it
    (with --decontaminate), so the folder is refused and nothing changes."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("card")
    write_manifest(out, {"stage": "pack"})
    (out / "contamination.jsonl").write_text("mine")
    (out / "stats.png").write_bytes(b"mine")
    with pytest.raises(ConfigError, match=r"-o .*out: holds contamination.jsonl, not listed as tfpack.s"):
        prepare_out_dir(out, "pack", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "contamination.jsonl", "manifest.json", "stats.png"]


def test_an_export_is_a_tfpack_output(tmp_path: Path) -> None:
    """An export folder is classified by its manifest, so every command names it and points at its source."""
    export = tmp_path / "lf"
    export.mkdir()
    (export / "state.json").write_text("{}")
    write_manifest(export, {"stage": "export", "trainer": "llamafactory", "source": {"out_dir": "/w/out"}})
    info = classify(export)
    assert info.kind is Kind.EXPORT and info.owned() == ["manifest.json", "state.json"]
    with pytest.raises(StaleArtifactError, match="is a tfpack export .*; expected a pack output: pass .*, /w/out"):
        read_manifest(export, "pack", "tfpack pack")
    with pytest.raises(ConfigError, match="lf: is a tfpack export .*, not a pack output; --overwrite replaces only"):
        prepare_out_dir(export, "pack", overwrite=True)


def test_overwrite_removes_the_knn_cache_added_to_an_embed_run(tmp_path: Path) -> None:
    """knn/ is written into a finished run by order/pack/sweep, after its manifest: tfpack's, though not listed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.parquet").write_bytes(b"")
    write_manifest(run, {"stage": "embed"})
    (run / "knn").mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.warns(Note, match=r"\(notes.txt\)"):
        assert sorted(remove_owned(classify(run))) == ["knn", "manifest.json", "samples.parquet"]


def pack_manifest() -> dict[str, Any]:
    return {
        "stage": "pack",
        "counts": dict.fromkeys(("packs", "samples", "tokens", "loss_tokens", "dropped", "truncated"), 1),
        "shards": [{"file": "data/train-00000-of-00001.parquet", "packs": 1}],
        "max_len": 64,
        "attention": "pack",
        "tokenizer": "t",
        "threshold": None,
        "window": 4,
        "k": 16,
        "run_dir": "r",
        "embedding_model": "m",
    }


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: m.pop("stage"), "manifest lacks stage"),
        (lambda m: m.update(max_len="64"), "manifest max_len is a string, expected an integer"),
        (lambda m: m.update(window=True), "manifest window is a boolean, expected an integer"),
        (lambda m: m.update(threshold=[0.9]), "threshold is a list, expected an integer or a number or null"),
        (lambda m: m["counts"].pop("packs"), "manifest lacks counts.packs"),
        (lambda m: m["counts"].update(tokens=None), "counts.tokens is null, expected an integer"),
        (lambda m: m.update(shards=[3]), "shards[0] is an integer, expected an object"),
        (lambda m: m["shards"][0].pop("file"), "lacks shards[0].file"),
        (lambda m: m.update(counts=[]), "manifest counts is a list, expected an object"),
        (
            lambda m: [m.pop(key) for key in ("k", "window", "max_len", "attention")],
            "lacks max_len; lacks attention; lacks window (and 1 more)",
        ),
    ],
)
def test_manifest_keys_and_types_are_checked(tmp_path: Path, damage: Any, message: str) -> None:
    """Whatever a reader indexes is there with its JSON type, or one error names the field and the command to rerun."""
    write_manifest(tmp_path, pack_manifest())
    assert read_manifest(tmp_path, "pack", "tfpack pack")["k"] == 16
    manifest = pack_manifest()
    damage(manifest)
    write_manifest(tmp_path, manifest)
    with pytest.raises(StaleArtifactError, match=re.escape(message) + r".*run `tfpack pack X`"):
        read_manifest(tmp_path, "pack", "tfpack pack X")


def test_embed_manifest_inputs_are_checked(tmp_path: Path) -> None:
    manifest = {
        "stage": "embed",
        "n": 3,
        "dim": 4,
        "model": "m",
        "backend": "onnx",
        "dtype": "float16",
        "inputs": [{"path": "a.jsonl", "fingerprint": "blake2b-128:00"}, {"path": "b.jsonl"}],
    }
    write_manifest(tmp_path, manifest)
    with pytest.raises(StaleArtifactError, match=r"manifest.json: manifest lacks inputs\[1\].fingerprint"):
        read_manifest(tmp_path, "embed", "tfpack embed")
