"""The hurried user: every mistake people make at a shell prompt (issue 26, issue 21's table) as one row of a table:
the invocation, its exit code, a fragment of its one-line message, and the files that must stay byte for byte as
they were. A new command or option inherits these rows' rules (workdir.classify, config.check_types, cli.say)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import qa_rows, write_jsonl
from tfpack.cli import app

TOK = ("--tokenizer", "packaged-minilm")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """g.jsonl (24 samples), emb.npy (its embeddings), run/ (embed run of both), out/ (a pack output of run/), ep/
    (a `--epochs 2` output), exp/ (an axolotl export of out/), long.jsonl + lrun/ (samples of 13+ words, for n-gram
    decontamination)."""
    base = tmp_path_factory.mktemp("world")
    g = write_jsonl(base / "g.jsonl", qa_rows(24))
    rng = np.random.default_rng(0)
    np.save(base / "emb.npy", rng.normal(size=(24, 8)).astype(np.float32))
    long_rows = [
        {"question": f"Please explain in plain words why the number {i} is written the way it is today", "answer": "ok"}
        for i in range(6)
    ]
    write_jsonl(base / "long.jsonl", long_rows)
    np.save(base / "lemb.npy", rng.normal(size=(6, 8)).astype(np.float32))
    for args in (
        ["embed", str(g), "-o", str(base / "run"), "--embeddings", str(base / "emb.npy")],
        ["pack", str(base / "run"), "-o", str(base / "out"), *TOK, "--max-len", "128", "--shard-packs", "2"],
        ["pack", str(base / "run"), "-o", str(base / "ep"), *TOK, "--max-len", "128", "--epochs", "2"],
        ["export", str(base / "out"), "--to", "axolotl", "-o", str(base / "exp")],
        ["embed", str(base / "long.jsonl"), "-o", str(base / "lrun"), "--embeddings", str(base / "lemb.npy")],
    ):
        result = CliRunner().invoke(app, [*args, "--quiet"])
        assert result.exit_code == 0, result.stderr
    return base


@pytest.fixture
def world(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of `base` (manifests pointing at the copy), as the current directory."""
    world = tmp_path / "w"
    shutil.copytree(base, world)
    for manifest in world.rglob("manifest.json"):
        manifest.write_bytes(manifest.read_bytes().replace(str(base).encode(), str(world).encode()))
    (world / "README.md").write_text("the user's own readme\n")
    (world / "mydata.jsonl").write_text('{"mine": 1}\n')
    (world / "foreign").mkdir()
    (world / "foreign" / "README.md").write_text("mine\n")
    (world / "foreign" / "sub").mkdir()
    (world / "foreign" / "sub" / "notes.txt").write_text("mine\n")
    (world / "foreign" / "2024_metadata.jsonl").write_text("[]\n")
    monkeypatch.chdir(world)
    return world


@dataclass
class Case:
    """One mistake: `args` (`{w}` = the world folder, `{shard}` = a shard of out/, `{shard_name}` its name), the exit
    code, a fragment of stderr (`{w}` likewise), the paths that must stay exactly as they were, and paths that must not
    exist afterwards."""

    args: list[str]
    code: int
    message: str
    untouched: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None


def corrupt(relative: str) -> Callable[[Path], None]:
    def damage(world: Path) -> None:
        path = sorted(world.glob(relative))[0]
        path.write_bytes(path.read_bytes()[:100])

    return damage


def write(relative: str, text: str) -> Callable[[Path], None]:
    def make(world: Path) -> None:
        (world / relative).write_text(text)

    return make


def killed_export(world: Path) -> None:
    """What an export killed before its rename leaves: a hidden sibling holding part of the rows, no exp2/."""
    (world / ".exp2.999-dead.tmp" / "data").mkdir(parents=True)
    (world / ".exp2.999-dead.tmp" / "data" / "train-00000-of-00002.parquet").write_bytes(b"half")


def interrupted(world: Path) -> None:
    """An embed run stopped after its first chunk: 1100 samples whose precomputed row 1050 is NaN."""
    write_jsonl(world / "big.jsonl", qa_rows(1100))
    emb = np.random.default_rng(1).normal(size=(1100, 8)).astype(np.float32)
    emb[1050] = np.nan
    np.save(world / "nan.npy", emb)
    result = CliRunner().invoke(app, ["embed", "big.jsonl", "-o", "big", "--embeddings", "nan.npy"])
    assert result.exit_code == 1 and "--embeddings nan.npy: row 1050 is not finite (NaN/inf)" in result.stderr


SEED = "--seed: must be >= 0, got -1"
CASES = {
    # issue 26, loses the user's data
    "1 order -o an existing file": Case(
        ["order", "run", "-o", "mydata.jsonl"], 2, "-o mydata.jsonl: exists; pass --overwrite", ["mydata.jsonl"]
    ),
    "1 order -o an existing non-.npy with --overwrite": Case(
        ["order", "run", "-o", "mydata.jsonl", "--overwrite"], 2, "is not the kind of file", ["mydata.jsonl"]
    ),
    "2 order -o RUN/embeddings.npy": Case(
        ["order", "run", "-o", "run/embeddings.npy", "--overwrite"], 2, "is inside the input run", ["run"]
    ),
    "2 order -o a file inside another run": Case(
        ["order", "{w}/emb.npy", "-o", "run/order.npy"],
        2,
        "is inside the tfpack output {w}/run",
        ["run"],
        ["run/order.npy"],
    ),
    "3 order a pack output": Case(
        ["order", "out", "-o", "o.npy"], 1, "pass the run it was packed from, {w}/run", ["out"], ["o.npy"]
    ),
    "3 sweep a pack output": Case(["sweep", "out", *TOK], 1, "out: is a pack output (packed from {w}/run)", ["out"]),
    "3 pack a --epochs output": Case(
        ["pack", "ep", "-o", "x", *TOK], 1, "pass the run it was packed from, {w}/run", ["ep"], ["x"]
    ),
    "3 embed -o a pack output --overwrite": Case(
        ["embed", "g.jsonl", "-o", "out", "--overwrite"], 2, "out: is a pack output", ["out", "g.jsonl"]
    ),
    "4 pack -o '' --overwrite": Case(
        ["pack", "run", "-o", "", "--overwrite", *TOK], 2, "-o: empty path", ["README.md"]
    ),
    "4 embed -o ''": Case(["embed", "g.jsonl", "-o", ""], 2, "-o: empty path", ["README.md", "run"]),
    "4 export -o ''": Case(["export", "out", "--to", "axolotl", "-o", ""], 2, "-o: empty path", ["README.md", "out"]),
    # silently wrong output
    "7 config max_len 512.7": Case(
        ["pack", "run", "-o", "x", *TOK, "--config", "c.yaml"],
        2,
        "pack.max_len in c.yaml: expected an integer, got 512.7",
        absent=["x"],
        setup=write("c.yaml", "pack:\n  max_len: 512.7\n"),
    ),
    # tracebacks
    "8 --decontaminate removes every sample": Case(
        ["pack", "lrun", "-o", "x", *TOK, "--decontaminate", "long.jsonl"],
        1,
        "x: nothing to pack, all 6 samples were left out",
        ["lrun"],
        ["x/manifest.json"],
    ),
    "9 order --seed -1": Case(["order", "run", "-o", "o.npy", "--seed", "-1"], 2, SEED, absent=["o.npy"]),
    "9 pack --seed -1": Case(["pack", "run", "-o", "x", *TOK, "--seed", "-1"], 2, SEED, absent=["x"]),
    "9 pack --pack-seed -1": Case(
        ["pack", "run", "-o", "x", *TOK, "--pack-seed", "-1"], 2, "--pack-seed: must be >= 0, got -1", absent=["x"]
    ),
    "9 stats --seed -1": Case(["stats", "out", "--seed", "-1"], 2, SEED),
    "9 sweep --seed -1": Case(["sweep", "run", *TOK, "--seed", "-1"], 2, SEED),
    "10 --max-len 1e22": Case(
        ["pack", "run", "-o", "x", *TOK, "--max-len", "10000000000000000000000"],
        2,
        "--max-len: 10000000000000000000000 is beyond tfpack's limit of 2,147,483,647",
        absent=["x"],
    ),
    "10 config window 2.5": Case(
        ["order", "run", "-o", "o.npy", "--config", "c.yaml"],
        2,
        "order.window in c.yaml: expected an integer, got 2.5",
        setup=write("c.yaml", "order:\n  window: 2.5\n"),
    ),
    "10 config epochs 1.5": Case(
        ["pack", "run", "-o", "x", *TOK, "--config", "c.yaml"],
        2,
        "pack.epochs in c.yaml: expected an integer, got 1.5",
        absent=["x"],
        setup=write("c.yaml", "pack:\n  epochs: 1.5\n"),
    ),
    "11 corrupt shard, stats": Case(
        ["stats", "out"], 1, "train-00000-of-", setup=corrupt("out/data/train-00000-*.parquet")
    ),
    "11 corrupt shard, inspect": Case(
        ["inspect", "out"], 1, ": not a readable Parquet file", setup=corrupt("out/data/train-00000-*.parquet")
    ),
    "11 corrupt samples.parquet, stats": Case(
        ["stats", "run"], 1, "run/samples.parquet: not a readable Parquet file", setup=corrupt("run/samples.parquet")
    ),
    # messages that mislead
    "12 markup in a path": Case(["stats", "x[bold]y[/bold]"], 1, "x[bold]y[/bold]: does not exist"),
    "13 stats an input file": Case(["stats", "g.jsonl"], 1, "g.jsonl: is a file; expected a pack output or an embed"),
    "13 stats a CSV input": Case(
        ["stats", "t.csv"], 1, "embed it first (`tfpack embed t.csv -o RUN`)", setup=write("t.csv", "a,b\n1,2\n")
    ),
    "13 embed a folder": Case(
        ["embed", "foreign", "-o", "x"], 1, "foreign: is a folder tfpack did not write", absent=["x"]
    ),
    "13 inspect a shard": Case(
        ["inspect", "{shard}"], 1, "is a file inside the tfpack output {w}/out; expected a pack"
    ),
    "13 a run mixed with input files": Case(
        ["pack", "run", "g.jsonl", "-o", "x", *TOK], 1, "takes an embed run directory alone", absent=["x"]
    ),
    "13 pack -o a foreign folder --overwrite (issue 21)": Case(
        ["pack", "run", "-o", "foreign", "--overwrite", *TOK],
        2,
        "foreign: is a folder tfpack did not write (no tfpack manifest.json; holds 2024_metadata.jsonl, README.md, sub)"
        "; tfpack writes only into an empty or new folder",
        ["foreign"],
    ),
    "13 pack -o a foreign folder (issue 21)": Case(
        ["pack", "run", "-o", "foreign", *TOK], 2, "pick an empty or new folder", ["foreign"]
    ),
    "14 inspect an embed run": Case(["inspect", "run"], 1, "run: is an embed run directory; expected a pack output"),
    "14 stats --verify an embed run": Case(["stats", "run", "--verify"], 1, "`tfpack pack run -o OUT` packs it"),
    "14 inspect a --epochs output": Case(["inspect", "ep"], 1, "read one epoch, e.g. ep/epoch-0"),
    "15 a failed check creates nothing": Case(
        ["pack", "run", "-o", "x", *TOK, "--decontaminate", "nope.jsonl"], 1, "nope.jsonl", absent=["x"]
    ),
    "16 lumped internal names": Case(
        ["order", "run", "-o", "o.npy", "--config", "c.yaml"],
        2,
        "order.nprobe in c.yaml: must be >= 1, got 0",
        setup=write("c.yaml", "order:\n  nprobe: 0\n"),
    ),
    "16 --resume with other settings": Case(
        ["embed", "big.jsonl", "-o", "big", "--embeddings", "nan.npy", "--resume", "--embed-on", "full"],
        2,
        "--resume: big was started with other settings (--embed-on: 'prompt' -> 'full')",
        ["big"],
        setup=interrupted,
    ),
    "16 corrupt embed.progress.json on --resume (issue 21)": Case(
        ["embed", "big.jsonl", "-o", "big", "--embeddings", "nan.npy", "--resume"],
        1,
        "big/embed.progress.json: corrupt or partial progress record",
        setup=lambda w: (interrupted(w), (w / "big" / "embed.progress.json").write_text('{"rows_')),
    ),
    "19 --show without --dedup": Case(["stats", "run", "--show", "3"], 2, "--show: lists the groups --dedup S finds"),
    "19 --device/--backend with the static model": Case(
        ["embed", "none.jsonl", "-o", "x", "--model", "static", "--device", "cpu", "--backend", "onnx"],
        1,
        "note: --device cpu, --backend onnx: ignored with the static model",
        absent=["x"],
    ),
    "19 order an input file": Case(
        ["order", "g.jsonl", "-o", "o.npy"],
        1,
        "g.jsonl: is a file; expected an embed run directory or an [N, d] .npy array: embed it first",
        ["g.jsonl"],
        ["o.npy"],
    ),
    # issue 21's table and items 2-4
    "21 pack -o RUN --overwrite": Case(
        ["pack", "run", "-o", "run", "--overwrite", *TOK], 2, "-o run: is the input run", ["run"]
    ),
    "21 pack -o inside RUN": Case(["pack", "run", "-o", "run/packed", *TOK], 2, "is inside the input run", ["run"]),
    "21 --on-error skp on a run directory": Case(
        ["pack", "run", "-o", "x", *TOK, "--on-error", "skp"],
        2,
        "--on-error: expected one of fail, skip, got 'skp'",
        absent=["x"],
    ),
    "21 --on-error skp on input files": Case(
        ["embed", "g.jsonl", "-o", "x", "--on-error", "skp"], 2, "--on-error: expected one of fail, skip", absent=["x"]
    ),
    "21 corrupt manifest": Case(
        ["order", "run", "-o", "o.npy"], 1, "corrupt or partial manifest", setup=corrupt("run/manifest.json")
    ),
    # export: the same output-folder rules as pack and embed (workdir.check_out_dir)
    "export -o a foreign folder --overwrite": Case(
        ["export", "out", "--to", "axolotl", "-o", "foreign", "--overwrite"],
        2,
        "-o foreign: is a folder tfpack did not write (no tfpack manifest.json; holds 2024_metadata.jsonl, README.md, "
        "sub); tfpack writes only into an empty or new folder",
        ["foreign", "out"],
    ),
    "export -o the pack output": Case(
        ["export", "out", "--to", "axolotl", "-o", "out", "--overwrite"], 2, "-o out: is the input out", ["out"]
    ),
    "export -o inside the pack output": Case(
        ["export", "out", "--to", "axolotl", "-o", "out/exp"],
        2,
        "-o out/exp: is inside the input out; write the output somewhere else (nothing was changed)",
        ["out"],
        ["out/exp"],
    ),
    "export -o inside an earlier export": Case(
        ["export", "out", "--to", "axolotl", "-o", "exp/data/new", "--overwrite"],
        2,
        "-o exp/data/new: is inside the tfpack output {w}/exp (tfpack manages its files)",
        ["exp"],
        ["exp/data/new"],
    ),
    "embed -o inside a pack output": Case(
        ["embed", "g.jsonl", "-o", "out/data/run", "--embeddings", "emb.npy"],
        2,
        "-o out/data/run: is inside the tfpack output {w}/out",
        ["out"],
        ["out/data/run"],
    ),
    "export -o a folder holding its source": Case(
        ["export", "out", "--to", "axolotl", "-o", ".", "--overwrite"], 2, "-o .: contains the input out", ["out"]
    ),
    "export -o an embed run --overwrite": Case(
        ["export", "out", "--to", "axolotl", "-o", "run", "--overwrite"],
        2,
        "-o run: is an embed run directory, not a tfpack export; --overwrite replaces only an earlier `tfpack export`",
        ["run"],
    ),
    "export -o the user's file --overwrite": Case(
        ["export", "out", "--to", "axolotl", "-o", "mydata.jsonl", "--overwrite"],
        2,
        "-o mydata.jsonl: exists and is not a directory",
        ["mydata.jsonl"],
    ),
    "export re-run into the same folder": Case(
        ["export", "out", "--to", "llamafactory", "-o", "exp"],
        2,
        "-o exp: output directory is not empty and holds a finished run; pass --overwrite",
        ["exp"],
    ),
    "export --overwrite onto the user's state.json": Case(
        ["export", "out", "--to", "llamafactory", "-o", "exp", "--overwrite"],
        2,
        "-o exp: holds state.json, not listed as tfpack's but named as its outputs",
        ["exp"],
        setup=write("exp/state.json", "mine\n"),
    ),
    "export --overwrite of an export whose manifest is gone": Case(
        ["export", "out", "--to", "axolotl", "-o", "exp", "--overwrite"],
        2,
        "-o exp: is a folder tfpack did not write (no tfpack manifest.json; holds data, recipe.yaml)",
        ["exp"],
        setup=lambda w: (w / "exp" / "manifest.json").unlink(),
    ),
    "export after a killed export": Case(
        ["export", "out", "--to", "axolotl", "-o", "exp2"],
        0,
        "exported 12 packs",
        [".exp2.999-dead.tmp", "out"],
        setup=killed_export,
    ),
    "export an export": Case(
        ["export", "exp", "--to", "llamafactory", "-o", "lf"],
        1,
        "exp: is a tfpack export (for axolotl, of {w}/out); expected a pack output: pass the pack output it was "
        "exported from, {w}/out",
        ["exp"],
        ["lf"],
    ),
    "export a --epochs output": Case(
        ["export", "ep", "--to", "axolotl", "-o", "e"], 1, "read one epoch, e.g. ep/epoch-0", ["ep"], ["e"]
    ),
    "export --to typo": Case(
        ["export", "out", "--to", "axolotol", "-o", "e"],
        2,
        "--to: expected one of llamafactory, axolotl, got 'axolotol'",
        absent=["e"],
    ),
    "inspect a shard of an export": Case(
        ["inspect", "exp/data/{shard_name}"],
        1,
        "is a file inside the tfpack output {w}/exp; expected a pack output: pass {w}/out",
    ),
    "stats an export": Case(["stats", "exp"], 1, "exp: is a tfpack export (for axolotl, of {w}/out); expected a pack"),
    "pack -o an export --overwrite": Case(
        ["pack", "run", "-o", "exp", "--overwrite", *TOK],
        2,
        "-o exp: is a tfpack export (for axolotl, of {w}/out), not a pack output",
        ["exp"],
    ),
    "pack --overwrite of an unfinished output holding the user's README.md": Case(
        ["pack", "run", "-o", "foreign", "--overwrite", *TOK],
        2,
        "-o foreign: holds README.md, not listed as tfpack's but named as its outputs",
        ["foreign"],
        setup=lambda w: (w / "foreign" / ".tfpack").mkdir(),
    ),
    "embed --overwrite with a typo in --embeddings": Case(
        ["embed", "g.jsonl", "-o", "run", "--embeddings", "emb.nyp", "--overwrite"],
        1,
        "--embeddings emb.nyp: cannot read a .npy array",
        ["run"],
    ),
    "pack --overwrite onto the user's 256_metadata.jsonl": Case(
        ["pack", "run", "-o", "out", "--overwrite", *TOK, "--max-len", "256"],
        2,
        "-o out: holds 256_metadata.jsonl, not listed as tfpack's",
        ["out"],
        setup=write("out/256_metadata.jsonl", "mine\n"),
    ),
}


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or `path` itself) by relative name, with its bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_mistake(world: Path, name: str) -> None:
    case = CASES[name]
    if case.setup is not None:
        case.setup(world)
    before = {p: snapshot(world / p) for p in case.untouched}
    shard = str(sorted(world.glob("out/data/train-*.parquet"))[0])
    args = [
        a.replace("{w}", str(world)).replace("{shard}", shard).replace("{shard_name}", Path(shard).name)
        for a in case.args
    ]
    result = CliRunner().invoke(app, args)
    err = result.stderr
    assert result.exit_code == case.code, (name, err)
    assert case.message.replace("{w}", str(world)) in err, (name, err)
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error")]) <= 1
    for path, files in before.items():
        assert (world / path).exists() and snapshot(world / path) == files, (name, path)
    for path in case.absent:
        assert not (world / path).exists(), (name, path)


def test_user_text_never_goes_through_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Case 12: an install hint and a bracketed path print as written."""
    import typer

    from tfpack.cli import _run
    from tfpack.errors import DependencyError

    def fail() -> None:
        raise DependencyError("x[bold]y[/bold]: --engine ray needs ray; run `pip install 'tfpack[ray]'`")

    with pytest.raises(typer.Exit):
        _run(fail)
    assert "error: x[bold]y[/bold]: --engine ray needs ray; run `pip install 'tfpack[ray]'`" in capsys.readouterr().err


def test_bracketed_plot_path_is_written_literally(world: Path) -> None:
    result = CliRunner().invoke(app, ["stats", "out", "--plot", "p[ray].png", "--json"])
    assert result.exit_code == 0, result.stderr
    assert (world / "p[ray].png").read_bytes()[:4] == b"\x89PNG"
    again = CliRunner().invoke(app, ["stats", "out", "--plot", "p[ray].png"])
    assert again.exit_code == 2 and "--plot p[ray].png: exists; pass --overwrite" in again.stderr


def test_plot_beside_the_shards_it_draws(world: Path) -> None:
    """`stats OUT --verify --plot OUT/stats.png` (the quick start's form) writes a new PNG at the top of the pack
    output, which still verifies and is kept by a later --overwrite like any user file; tfpack's own files there and
    anything under data/ are never written."""
    before = {p: p.read_bytes() for p in (world / "out").rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["stats", "out", "--verify", "--plot", "out/stats.png", "--json"])
    assert result.exit_code == 0, result.stderr
    assert (world / "out" / "stats.png").read_bytes()[:4] == b"\x89PNG"
    assert all(p.read_bytes() == data for p, data in before.items())
    for target, message in (
        ("out/data/stats.png", "is inside the input out"),
        ("out/dropped.jsonl", "is not the kind of file this command writes"),
    ):
        result = CliRunner().invoke(app, ["stats", "out", "--plot", target, "--overwrite"])
        assert result.exit_code == 2 and message in result.stderr, (target, result.stderr)
    assert all(p.read_bytes() == data for p, data in before.items())


def test_literal_path_beats_glob_and_repeats_are_read_once(world: Path) -> None:
    """Cases 5 and 6: an existing `d[1].jsonl` is that file (not `d1.jsonl`); one file named three ways is read once
    with a note."""
    write_jsonl(world / "d[1].jsonl", qa_rows(3))
    write_jsonl(world / "d1.jsonl", qa_rows(5))
    np.save(world / "e3.npy", np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32))
    result = CliRunner().invoke(app, ["embed", "d[1].jsonl", "-o", "r1", "--json", "--embeddings", "e3.npy"])
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["n"] == 3
    result = CliRunner().invoke(
        app, ["embed", "g.jsonl", "./g.jsonl", "g*.jsonl", "-o", "r2", "--json", "--embeddings", "emb.npy"]
    )
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["n"] == 24
    assert result.stderr.count("given twice; read once") == 2


def test_overwrite_keeps_what_the_user_put_in_an_output(world: Path) -> None:
    """--overwrite of tfpack's own pack output removes only the files its manifest lists."""
    (world / "out" / "notes.txt").write_text("mine\n")
    result = CliRunner().invoke(app, ["pack", "run", "-o", "out", *TOK, "--max-len", "256", "--overwrite", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert (world / "out" / "notes.txt").read_text() == "mine\n"
    manifest = orjson.loads((world / "out" / "manifest.json").read_bytes())
    assert manifest["max_len"] == 256 and "notes.txt" not in manifest["written"] and "data/" in manifest["written"]


def test_sweep_piped_prints_whole_cells(world: Path) -> None:
    """Case 17: stdout is not a terminal under CliRunner, as under `| cat`: no cell is cut."""
    result = CliRunner().invoke(app, ["sweep", "run", *TOK, "--thresholds", "0.5,auto", "--max-len", "128"])
    assert result.exit_code == 0, result.stderr
    assert "random pack similarity" in result.stdout and "…" not in result.stdout


def test_workers_capped_with_a_note(world: Path) -> None:
    """Case 18: more workers than cores is capped at the cores, and said."""
    result = CliRunner().invoke(app, ["pack", "run", "-o", "x", *TOK, "--workers", "100000", "--quiet"])
    assert result.exit_code == 0, result.stderr
    cores = os.cpu_count()
    assert f"note: --workers 100000: this machine has {cores} cores; using {cores}" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_is_packable(world: Path) -> None:
    """Case 15: a run the user cannot write to is packed; its kNN cache goes under the output's .tfpack/."""
    shutil.rmtree(world / "run" / "knn", ignore_errors=True)
    for path in [world / "run", *(world / "run").rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = CliRunner().invoke(app, ["pack", "run", "-o", "x", *TOK, "--quiet"])
        assert result.exit_code == 0, result.stderr
        assert (world / "x" / ".tfpack" / "knn").is_dir() and not (world / "run" / "knn").exists()
    finally:
        for path in [world / "run", *(world / "run").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
