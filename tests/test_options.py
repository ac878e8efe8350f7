"""One table of options (tfpack/options.py), and every place an option shows made from it or checked against it: the
config dataclasses and configs/default.yaml, each command's flags and --help, the API's keywords and docstrings."""

from __future__ import annotations

import dataclasses
import doctest
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

import tfpack.api
import tfpack.errors
import tfpack.options
from tfpack.cli import app
from tfpack.config import SECTIONS
from tfpack.ingest.formats import FormatOptions
from tfpack.options import BY_KEY, FORMAT, OPTIONS, default, help_text

ROOT = Path(__file__).resolve().parents[1]
COMMANDS: dict[str, click.Command] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
CLASSES: dict[str, Any] = {**SECTIONS, FORMAT: FormatOptions}
# `embed`'s own flags that `pack INPUT` has no use for: pack's embed run is its own working copy, never resumed, and
# it embeds with a model (a run of precomputed embeddings is `tfpack embed --embeddings`, then `pack RUN_DIR`).
EMBED_RUN_ONLY = {"resume", "embeddings"}
# `stats`' own --seed (of its random baseline) and --dedup (a preview switch, in [-1, 1]) share a field's name only.
STATS_OWN = {"seed", "dedup"}
# One comma-separated flag value for a field that holds a tuple: FormatOptions splits it (`--columns age,income`).
COMMA_LISTS = {"columns", "csv_columns"}


def fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(CLASSES[section])}


def test_options_doctest() -> None:
    result = doctest.testmod(tfpack.options)
    assert result.attempted > 0 and result.failed == 0


def test_every_field_is_one_option_and_every_key_a_field() -> None:
    """Each field of each config dataclass (and of FormatOptions) is set by exactly one option, and nothing else."""
    keys = [key for option in OPTIONS.values() for key in option.keys]
    assert len(keys) == len(set(keys))
    assert set(keys) == {f"{section}.{name}" for section in CLASSES for name in fields(section)}


def test_flags_and_keywords_are_unique() -> None:
    flags = [option.flag for option in OPTIONS.values()]
    assert len(flags) == len(set(flags))
    assert all(option.flag == "--" + name.replace("_", "-") for name, option in OPTIONS.items())


def test_defaults_are_the_dataclass_defaults() -> None:
    """A format option's default is FormatOptions'; an option that sets several keys has one default for all."""
    for option in OPTIONS.values():
        for key in option.keys:
            section, field = key.split(".")
            assert default(option) == fields(section)[field].default, key


def test_default_yaml_has_exactly_the_config_keys() -> None:
    written = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    listed = {f"{section}.{key}" for section, keys in written.items() for key in keys}
    assert listed == {key for key in BY_KEY if key.split(".")[0] in SECTIONS}


def _params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in COMMANDS[command].params if p.name}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_takes_exactly_its_options_from_the_table(command: str) -> None:
    """A command's flags named in the table are the options that list the command, each with the table's flag, the
    help with the dataclass default, and no default of typer's own (None: 'not given', so the config file counts)."""
    params = _params(command)
    listed = {name for name, option in OPTIONS.items() if command in option.commands}
    own = STATS_OWN if command == "stats" else set()
    assert {name for name in params if name in OPTIONS} - own == listed
    for name in listed:
        param, option = params[name], OPTIONS[name]
        assert option.flag in param.opts, name
        assert getattr(param, "help", None) == help_text(option), name
        assert param.default is None, name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_each_option_with_its_default(command: str) -> None:
    """What `--help` prints: the table's help, with "[default: X]" from the dataclass."""
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    shown = re.sub(r"\s", "", result.stdout)  # wrapped at spaces and after hyphens
    for option in OPTIONS.values():
        if command in option.commands:
            assert option.flag in shown
            assert re.sub(r"\s", "", help_text(option)) in shown, option.name
            value = default(option)
            if value not in (None, False, ()):
                assert f"[default:{value}]" in shown or "[default:" in option.help, option.name


def _plain(hint: Any) -> set[Any]:
    """A field's or a flag's type without None, a repeated flag (list[str]) and a tuple of strings alike."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return {t for arg in typing.get_args(hint) for t in _plain(arg)} - {type(None)}
    return {tuple if typing.get_origin(hint) in (list, tuple) else hint}


@pytest.mark.parametrize("command", ["embed", "order", "pack", "sweep", "stats"])
def test_flag_types_are_the_field_types(command: str) -> None:
    """A flag parses what its field holds (`threshold`, `str | float`, is read as text: 'auto', 'none' or a number)."""
    fn = COMMANDS[command].callback
    hints = typing.get_type_hints(inspect.unwrap(fn), include_extras=False)  # type: ignore[arg-type]
    for name, option in OPTIONS.items():
        if command not in option.commands:
            continue
        section, field = option.keys[0].split(".")
        field_hint = typing.get_type_hints(CLASSES[section])[field]
        expected = {str} if _plain(field_hint) == {str, float} or name in COMMA_LISTS else _plain(field_hint)
        assert _plain(hints[name]) == expected, name


def test_pack_takes_every_option_embed_takes() -> None:
    """`tfpack pack INPUT` embeds INPUT: each of embed's flags is one of pack's, with the same declaration and help
    (the run's own `--resume` and `--embeddings` excepted: see EMBED_RUN_ONLY)."""
    embed, pack = _params("embed"), _params("pack")
    missing = {name for name, p in embed.items() if p.param_type_name == "option"} - set(pack) - EMBED_RUN_ONLY
    assert not missing
    for name in set(embed) & set(OPTIONS):
        assert embed[name].opts == pack[name].opts and embed[name].help == pack[name].help


API = {"embed": tfpack.api.embed, "order": tfpack.api.order, "pack": tfpack.api.pack}


def _documented(fn: Any) -> dict[str, str]:
    """The option keywords listed in the API function's docstring, with their defaults as written."""
    listed = (fn.__doc__ or "").split("Options (keyword-only")[1].split(":", 1)[1]
    return dict(re.findall(r"(\w+)=('[^']*'|[^,\s]+)", listed))


@pytest.mark.parametrize("command", sorted(API))
def test_api_takes_and_documents_every_option_of_its_command(command: str) -> None:
    """The API verb takes each option its command takes (as a keyword, or a parameter of its own), and its
    docstring lists every option keyword it takes, with the dataclass default."""
    fn = API[command]
    own = set(inspect.signature(fn).parameters)
    documented = _documented(fn)
    for name, option in OPTIONS.items():
        if command in option.commands:
            assert name in documented or name in own, name
    for name, written in documented.items():
        assert written == repr(default(OPTIONS[name])), name
        tfpack.options.keywords(command, {name: default(OPTIONS[name])}, tfpack.api.API_SECTIONS[command])


def test_an_unknown_keyword_names_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(tfpack.errors.ConfigError, match=r"^order\(\): unknown option windows; did you mean window\?$"):
        tfpack.order(tmp_path, windows=3)
    with pytest.raises(tfpack.errors.ConfigError, match=r"^embed\(\): unknown option max_len; it is an option of pack"):
        tfpack.embed(tmp_path, tmp_path / "run", max_len=3)
    assert not (tmp_path / "run").exists()
