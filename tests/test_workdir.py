from __future__ import annotations

from pathlib import Path

import pytest

from tfpack.errors import ConfigError, StaleArtifactError
from tfpack.workdir import (
    atomic_path,
    fingerprint_bytes,
    fingerprint_file,
    prepare_out_dir,
    read_manifest,
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
    write_manifest(tmp_path, {"stage": "embed", "n": 3, "dim": 4, "model": "m", "backend": "onnx", "dtype": "float32",
                              "inputs": []})
    assert read_manifest(tmp_path, "embed", "tfpack embed")["n"] == 3
    with pytest.raises(StaleArtifactError, match="is a 'embed' output, expected 'pack'"):
        read_manifest(tmp_path, "pack", "tfpack pack")


def test_missing_manifest_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(StaleArtifactError, match=r"is incomplete \(no manifest.json.*run `tfpack embed x -o y`"):
        read_manifest(tmp_path, "embed", "tfpack embed x -o y")
    with pytest.raises(StaleArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nope", "embed", "tfpack embed")


def test_prepare_out_dir_refuses_non_empty(tmp_path: Path) -> None:
    prepare_out_dir(tmp_path / "new", overwrite=False)
    (tmp_path / "new" / "f").write_bytes(b"")
    with pytest.raises(ConfigError, match="incomplete run.*pass --overwrite"):
        prepare_out_dir(tmp_path / "new", overwrite=False)
    write_manifest(tmp_path / "new", {"stage": "embed"})
    with pytest.raises(ConfigError, match="holds a finished run"):
        prepare_out_dir(tmp_path / "new", overwrite=False)
    prepare_out_dir(tmp_path / "new", overwrite=True)
    assert not (tmp_path / "new" / "manifest.json").exists()
