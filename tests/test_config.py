"""One source of defaults: the config dataclasses. configs/default.yaml, function defaults and `pack --config` agree
with them."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

import tfpack
from tests.conftest import DEMO_TOKENIZER, qa_rows, write_jsonl
from tfpack.cli import app
from tfpack.config import SECTIONS
from tfpack.workdir import EMBED_RUN, MANIFEST, WORK_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_lists_every_default() -> None:
    written = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    expected = {
        name: {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(cls)}
        for name, cls in SECTIONS.items()
    }
    assert written == expected


def defaults_by_name() -> dict[str, object]:
    """Config field -> default, for names whose default is the same in every config that has them."""
    seen: dict[str, set[str]] = {}
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, set()).add(repr(f.default))
    return {name: eval(values.pop()) for name, values in seen.items() if len(values) == 1}  # noqa: S307


def test_no_function_default_disagrees_with_the_configs() -> None:
    known = defaults_by_name()
    wrong = []
    for info in pkgutil.walk_packages(tfpack.__path__, "tfpack."):
        if info.name == "tfpack.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__:
                continue
            for param in inspect.signature(fn).parameters.values():
                given = param.default not in (inspect.Parameter.empty, None)
                if param.name in known and given and param.default != known[param.name]:
                    wrong.append(f"{module.__name__}.{name}({param.name}={param.default!r})")
    assert not wrong, wrong


def test_pack_inputs_honours_the_embed_section(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(30))
    config = tmp_path / "cfg.yaml"
    config.write_text("embed:\n  dtype: float16\n  embed_on: full\norder:\n  k: 8\n")
    out = tmp_path / "out"
    args = ["pack", str(data), "-o", str(out), *DEMO_TOKENIZER, "--config", str(config), "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    embed_manifest = orjson.loads((out / WORK_DIR / EMBED_RUN / MANIFEST).read_bytes())
    assert embed_manifest["dtype"] == "float16" and embed_manifest["embed_on"] == "full"
    summary = orjson.loads(result.stdout)  # the summary says which model auto picked, and why
    choice = (summary["embedding_model"], summary["model_choice"])
    assert choice == ("static", "auto: static (CPU, single-turn samples)")


def test_pack_inputs_take_the_embed_flags_and_flags_beat_the_file(tmp_path: Path) -> None:
    """`pack INPUT` takes every embedding option `embed` takes; a flag overrides the config file's embed section, and
    given with a run directory (already embedded) it is refused before anything is created."""
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(30))
    config = tmp_path / "cfg.yaml"
    config.write_text("embed:\n  dtype: float16\n  embed_on: full\n")
    out = tmp_path / "out"
    args = ["pack", str(data), "-o", str(out), *DEMO_TOKENIZER, "--config", str(config), "--quiet"]
    flags = ["--model", "static", "--embed-on", "prompt", "--dtype", "float32", "--batch-size", "7"]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 0, result.stderr
    embed_manifest = orjson.loads((out / WORK_DIR / EMBED_RUN / MANIFEST).read_bytes())
    assert (embed_manifest["model"], embed_manifest["embed_on"], embed_manifest["dtype"]) == (
        "static",
        "prompt",
        "float32",
    )
    assert embed_manifest["config"]["embed"]["batch_size"] == 7
    run = out / WORK_DIR / EMBED_RUN
    result = CliRunner().invoke(app, ["pack", str(run), "-o", str(tmp_path / "o2"), *DEMO_TOKENIZER, "--model", "x"])
    assert result.exit_code == 2 and "--model: applies when pack reads and embeds input files" in result.stderr
    assert not (tmp_path / "o2").exists()
    fields = ["--prompt-field", "q", "--response-field", "a"]  # the run was read with its own fields
    result = CliRunner().invoke(app, ["pack", str(run), "-o", str(tmp_path / "o2"), *DEMO_TOKENIZER, *fields])
    assert result.exit_code == 2 and "--prompt-field: applies when pack reads and embeds" in result.stderr
    assert not (tmp_path / "o2").exists()


def test_a_repeatable_flag_not_given_keeps_the_files_list(tmp_path: Path) -> None:
    """`--weights` and `--decontaminate` not given leave the config file's lists in force (typer passes an empty
    tuple for them; that is not an empty list given)."""
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    config = tmp_path / "cfg.yaml"
    config.write_text("pack:\n  weights: [nope=2]\n")
    args = ["pack", str(data), "-o", str(tmp_path / "o"), *DEMO_TOKENIZER, "--config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--weights: no source named 'nope'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_an_unknown_embed_key_is_rejected(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    config = tmp_path / "cfg.yaml"
    config.write_text("embed:\n  dtyp: float16\n")
    result = CliRunner().invoke(
        app, ["pack", str(data), "-o", str(tmp_path / "o"), *DEMO_TOKENIZER, "--config", str(config)]
    )
    assert result.exit_code != 0
    assert "unknown key(s) dtyp" in result.output


@pytest.mark.parametrize("field", ["window", "k", "nprobe", "quantile", "n_random", "hops"])
def test_ordering_function_defaults_follow_order_config(field: str) -> None:
    from tfpack.config import OrderConfig
    from tfpack.ordering.knn import build_knn
    from tfpack.ordering.threshold import resolve_threshold
    from tfpack.ordering.walk import walk

    for fn in (walk, build_knn, resolve_threshold):
        param = inspect.signature(fn).parameters.get(field)
        if param is not None and param.default is not inspect.Parameter.empty:
            assert param.default == getattr(OrderConfig, field)
            assert param.kind is inspect.Parameter.KEYWORD_ONLY
