"""Detect a record's SFT format and normalise it into chat turns.

Every sample becomes a `Conversation`: `Turn(role, content, extra)` turns with role in {system, user, assistant,
tool} (or a single `text` turn for plain-text samples), and the record's `tools` list, if any. `content` is None for
an OpenAI tool-call message without text; `extra` keeps the message's other keys (`tool_calls`, `name`,
`tool_call_id`, `reasoning_content`, ...) as JSON, because chat templates read them. An empty system message counts as
no system message. Supported formats:

- `messages`: OpenAI style, `{"messages": [{"role": "user", "content": "..."}, ...], "tools": [...]}` (optional)
- `sharegpt`: `{"conversations": [{"from": "human", "value": "..."}, ...]}` (roles case-insensitive)
- `alpaca`: `{"instruction", "input" or "context" (optional), "output" or "response", "system" (optional)}`: Dolly's
  `instruction`/`context`/`response` is alpaca with the context kept after the instruction
- `prompt-completion`: a prompt/response pair under one of the names in `PAIR_FIELDS`, or any pair given
  with `--prompt-field/--response-field`; TRL's conversational form (`prompt` and `completion` as lists of messages)
  is read as the messages of both, in order
- `text`: `{"text": "..."}` (or `--text-field`), trained on in full
- `tabular`: a table row (CSV, Parquet, JSON object) with `--label-field F`: the user turn lists the other columns
  as `name: value` lines in column order (or `--columns`, or a `--prompt-template`), the assistant turn is the label.
  Never detected: `--label-field` (or `--format tabular`) asks for it.

Detection looks at one record's keys, in the priority order messages > sharegpt > alpaca > prompt-completion > text;
two matches at the same level (e.g. both `messages` and `conversations`, or two prompt/response pairs) are
ambiguous and need `--format` or explicit field flags.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from tfpack.errors import ConfigError, InputError

if TYPE_CHECKING:
    import jinja2


class Turn(NamedTuple):
    """One message: `content` None only for a tool-call message without text; `extra` the other keys, as JSON."""

    role: str
    content: str | None
    extra: str | None = None


class Conversation(NamedTuple):
    """A sample: its turns and the JSON list of tool schemas the record offers the template (None if none)."""

    turns: tuple[Turn, ...]
    tools: str | None = None


FORMATS = ("messages", "sharegpt", "alpaca", "prompt-completion", "text", "tabular")
MISSING = "(missing)"  # how a tabular prompt names a null or empty cell
PAIR_FIELDS: tuple[tuple[str, str], ...] = (
    ("prompt", "completion"),
    ("prompt", "response"),
    ("question", "answer"),
    ("query", "response"),
    ("query", "answer"),
    ("input", "target"),
)
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "function_call": "assistant",
}
MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_FLAG_HINT = (
    "pass --format (messages|sharegpt|alpaca|prompt-completion|text), "
    "or --prompt-field/--response-field, or --text-field, or --label-field for table rows"
)


@dataclass(frozen=True)
class FieldMap:
    """How one file's records map onto turns: the format and, where it has them, the field names."""

    format: str
    prompt: str | None = None
    response: str | None = None
    text: str | None = None
    columns: tuple[str, ...] | None = None  # tabular: the prompt's columns, in order
    template: str | None = None  # tabular: the --prompt-template

    def to_dict(self) -> dict[str, Any]:
        """As the manifest stores it: the tabular keys only for a table."""
        out = asdict(self)
        if self.format != "tabular":
            return {k: v for k, v in out.items() if k not in ("columns", "template")}
        return {**out, "columns": list(self.columns or ())}


@dataclass(frozen=True)
class FormatOptions:
    """What the user asked for: `format='auto'` detects per file; explicit fields override detection.

    Tabular rows: `label_field` (implies `format='tabular'`), `columns` (the prompt's columns, in order; default all
    but the label), `prompt_template` (a Jinja string over those columns). `csv_columns` names the columns of CSV
    files without a header row. `columns` and `csv_columns` take a sequence or a comma-separated string.
    """

    format: str = "auto"
    prompt_field: str | None = None
    response_field: str | None = None
    text_field: str | None = None
    id_field: str | None = None
    label_field: str | None = None
    columns: tuple[str, ...] | None = None
    prompt_template: str | None = None
    csv_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            raise ConfigError(f"--format: unknown format '{self.format}'; choose auto or one of {', '.join(FORMATS)}")
        if (self.prompt_field is None) != (self.response_field is None):
            raise ConfigError("--prompt-field and --response-field must be given together")
        if self.prompt_field and self.text_field:
            raise ConfigError("--text-field cannot be combined with --prompt-field/--response-field")
        for name in ("columns", "csv_columns"):
            object.__setattr__(self, name, column_names(getattr(self, name), f"--{name.replace('_', '-')}"))
        tabular_flags = self.label_field is not None or self.columns is not None or self.prompt_template is not None
        if self.format == "tabular" or tabular_flags:
            self._check_tabular()

    def _check_tabular(self) -> None:
        if self.format not in ("auto", "tabular"):
            raise ConfigError(
                f"--label-field, --columns and --prompt-template go with --format tabular, not {self.format}"
            )
        if not self.label_field:
            raise ConfigError("--format tabular needs --label-field COLUMN: the column the model learns to answer")
        if self.prompt_field or self.text_field:
            raise ConfigError("--label-field cannot be combined with --prompt-field/--response-field or --text-field")
        if self.columns and self.label_field in self.columns:
            raise ConfigError(
                f"--columns: '{self.label_field}' is the label (the response); leave it out of the prompt"
            )
        if self.prompt_template is not None:
            compile_prompt_template(self.prompt_template)
        object.__setattr__(self, "format", "tabular")

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values (sequences as lists), as the manifest stores them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def column_names(value: Any, flag: str) -> tuple[str, ...] | None:
    """A list of column names from a sequence or a comma-separated string; unique and non-empty."""
    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",")) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{flag}: expected comma-separated column names, got {value!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{flag}: column(s) {', '.join(repeated)} named twice")
    return names


@functools.lru_cache(maxsize=8)
def compile_prompt_template(source: str) -> jinja2.Template:
    """A `--prompt-template` compiled in the sandbox transformers renders chat templates in (undefined names fail)."""
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        return ImmutableSandboxedEnvironment(undefined=StrictUndefined).from_string(source)
    except TemplateSyntaxError as e:
        raise ConfigError(f"--prompt-template {_excerpt(source)}: {e.message} (template line {e.lineno})") from e


def _excerpt(source: str) -> str:
    """A template named on one line."""
    return repr(source if len(source) <= 60 else source[:57] + "...")


def resolve_field_map(record: Any, options: FormatOptions, where: str) -> FieldMap:
    """Choose the field map for a file from its first record (`where` names it in errors)."""
    if options.format == "tabular":
        return _tabular_field_map(record, options, where)
    if options.prompt_field and options.response_field:
        return FieldMap("prompt-completion", prompt=options.prompt_field, response=options.response_field)
    if options.text_field:
        return FieldMap("text", text=options.text_field)
    if not isinstance(record, dict):
        raise InputError(f"{where}: record is a JSON {type(record).__name__}, expected an object")
    keys = set(record)
    seen = f"keys seen: {', '.join(sorted(keys)) or 'none'}"
    if options.format != "auto":
        chosen = [fmap for level in _candidates(keys) for fmap in level if fmap.format == options.format]
        if not chosen:
            raise InputError(f"{where}: record does not fit --format {options.format} ({seen}); {_FLAG_HINT}")
        return chosen[0]
    for level in _candidates(keys):
        if len(level) > 1:
            names = " and ".join(_describe(fmap) for fmap in level)
            raise InputError(f"{where}: ambiguous format, record matches {names}; {_FLAG_HINT}")
        if level:
            return level[0]
    raise InputError(f"{where}: cannot detect the format ({seen}); {_FLAG_HINT}")


def _tabular_field_map(record: Any, options: FormatOptions, where: str) -> FieldMap:
    """The label and prompt columns of a table, checked against its first row's columns (a `ConfigError`: a wrong
    flag fails the run whatever `--on-error` says)."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: record is a JSON {type(record).__name__}, expected an object (a table row)")
    assert options.label_field is not None
    names = list(record)
    hint = "" if options.csv_columns else "; a CSV file without a header row needs --csv-columns"
    for flag, field in [("--label-field", options.label_field), *(("--columns", c) for c in options.columns or ())]:
        if field not in record:
            raise ConfigError(f"{where}: {flag} '{field}' is not a column (columns: {', '.join(names)}){hint}")
    columns = options.columns or tuple(n for n in names if n != options.label_field)
    return FieldMap("tabular", response=options.label_field, columns=columns, template=options.prompt_template)


def _candidates(keys: set[str]) -> list[list[FieldMap]]:
    """Field maps a record with these keys could follow, grouped by detection priority."""
    chat = [FieldMap(fmt) for fmt, field in (("messages", "messages"), ("sharegpt", "conversations")) if field in keys]
    response = next((name for name in ("output", "response") if name in keys), None)
    alpaca = [FieldMap("alpaca", prompt="instruction", response=response)] if "instruction" in keys and response else []
    pairs = [FieldMap("prompt-completion", prompt=p, response=r) for p, r in PAIR_FIELDS if p in keys and r in keys]
    text = [FieldMap("text", text="text")] if "text" in keys else []
    return [chat, alpaca, pairs, text]


def _describe(fmap: FieldMap) -> str:
    if fmap.format == "prompt-completion":
        return f"{fmap.prompt}/{fmap.response}"
    return fmap.format


def to_conversation(record: Any, fmap: FieldMap, where: str) -> Conversation:
    """Normalise one record into a conversation, or raise `InputError` naming `where` and the field."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: record is a JSON {type(record).__name__}, expected an object")
    if fmap.format == "tabular":
        return _table_row(record, fmap, where)
    if fmap.format == "messages":
        turns = _chat_turns(_list_field(record, "messages", where), where, "messages", "role", "content", MESSAGE_ROLES)
        return Conversation(_checked_chat(turns, where, "messages"), _tools(record, where))
    if fmap.format == "sharegpt":
        turns = _chat_turns(
            _list_field(record, "conversations", where), where, "conversations", "from", "value", SHAREGPT_ROLES
        )
        return Conversation(_checked_chat(turns, where, "conversations"), _tools(record, where))
    if fmap.format == "alpaca":
        system = record.get("system")
        head = [Turn("system", system)] if system is not None and _string(system, where, "system").strip() else []
        prompt = _required(record, "instruction", where)
        for name in ("input", "context"):
            extra = record.get(name)
            if extra is not None and _string(extra, where, name).strip():
                prompt = f"{prompt}\n\n{extra}"
        assert fmap.response is not None
        reply = _required(record, fmap.response, where)
        return Conversation((*head, Turn("user", prompt), Turn("assistant", reply)))
    if fmap.format == "prompt-completion":
        assert fmap.prompt is not None and fmap.response is not None
        asked, answered = record.get(fmap.prompt), record.get(fmap.response)
        if isinstance(asked, list) and isinstance(answered, list):  # TRL conversational prompt/completion
            turns = (
                *_chat_turns(asked, where, fmap.prompt, "role", "content", MESSAGE_ROLES),
                *_chat_turns(answered, where, fmap.response, "role", "content", MESSAGE_ROLES),
            )
            return Conversation(_checked_chat(turns, where, f"{fmap.prompt}/{fmap.response}"), _tools(record, where))
        user = _required(record, fmap.prompt, where)
        return Conversation((Turn("user", user), Turn("assistant", _required(record, fmap.response, where))))
    assert fmap.text is not None
    return Conversation((Turn("text", _required(record, fmap.text, where)),))


def _table_row(record: dict[str, Any], fmap: FieldMap, where: str) -> Conversation:
    """A table row as a user turn (its columns, or the template rendered over them) and the label as the answer."""
    assert fmap.response is not None and fmap.columns is not None
    label = cell_text(record.get(fmap.response))
    if label is None:
        raise InputError(
            f"{where}: field '{fmap.response}' (the label) is {'empty' if fmap.response in record else 'missing'}"
        )
    if fmap.template is None:
        prompt = "\n".join(f"{name}: {cell_text(record.get(name)) or MISSING}" for name in fmap.columns)
    else:
        numeric: dict[str, str] = getattr(record, "numeric", {})
        fields = {name: _template_value(record.get(name), numeric.get(name)) for name in fmap.columns}
        try:
            prompt = compile_prompt_template(fmap.template).render(fields)
        except Exception as e:  # noqa: BLE001 - any error raised while rendering user code is that row's error
            message = " ".join(str(e).split())
            raise InputError(
                f"{where}: --prompt-template {_excerpt(fmap.template)}: {type(e).__name__}: {message}"
            ) from e
    return Conversation((Turn("user", prompt), Turn("assistant", label)))


def cell_text(value: Any) -> str | None:
    """A cell as the prompt writes it: text as written (surrounding spaces trimmed), numbers as Python writes them
    (a CSV cell keeps its own text), booleans as true/false, lists and objects as JSON; None when null, empty or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=str).decode()
    text = value.strip() if isinstance(value, str) else str(value)
    return text or None


def _template_value(value: Any, kind: str | None) -> Any:
    """A cell as a template sees it: a CSV cell of a numeric column as int or float, empty cells as None."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if kind == "int":
            return int(text)
        return float(text) if kind == "float" else text
    return None if isinstance(value, float) and math.isnan(value) else value


def _string(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{field}' must be a string, got {_type_name(value)}")
    return value


def _required(record: dict[str, Any], field: str, where: str) -> str:
    if field not in record:
        raise InputError(f"{where}: field '{field}' missing (keys seen: {', '.join(sorted(record))})")
    value = _string(record[field], where, field)
    if not value.strip():
        raise InputError(f"{where}: field '{field}' is empty")
    return value


def _list_field(record: dict[str, Any], field: str, where: str) -> Any:
    if field not in record:
        raise InputError(f"{where}: field '{field}' missing (keys seen: {', '.join(sorted(record))})")
    return record[field]


def _chat_turns(
    items: Any, where: str, field: str, role_key: str, content_key: str, roles: dict[str, str]
) -> tuple[Turn, ...]:
    """Messages as turns: known roles (any case), string or text-part content, other keys kept as JSON extras."""
    if not isinstance(items, list):
        raise InputError(f"{where}: field '{field}' must be a list of turns, got {_type_name(items)}")
    turns: list[Turn] = []
    for i, item in enumerate(items):
        name = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: field '{name}' must be an object, got {_type_name(item)}")
        raw_role = item.get(role_key)
        role = roles.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise InputError(
                f"{where}: field '{name}.{role_key}' has unknown role {raw_role!r}; expected one of {', '.join(roles)}"
            )
        raw = item.get(content_key)
        content = None if raw is None and item.get("tool_calls") else _content(raw, where, f"{name}.{content_key}")
        extra = _extras(item, (role_key, content_key), where, name)
        if role == "system" and not (content or "").strip() and extra is None:
            continue  # an empty system message is no system message
        if role in ("user", "assistant") and content is not None and not content.strip() and extra is None:
            raise InputError(f"{where}: field '{name}.{content_key}' is empty")
        turns.append(Turn(role, content, extra))
    return tuple(turns)


def _checked_chat(turns: tuple[Turn, ...], where: str, field: str) -> tuple[Turn, ...]:
    if not any(t.role == "assistant" for t in turns):
        raise InputError(f"{where}: field '{field}' has no assistant turn (nothing to train on)")
    if not any(t.role == "user" for t in turns):
        raise InputError(f"{where}: field '{field}' has no user turn (empty prompt)")
    return turns


def _extras(item: dict[str, Any], skip: tuple[str, str], where: str, name: str) -> str | None:
    """The message's other keys (tool_calls, name, tool_call_id, reasoning_content, ...) as JSON; None if none."""
    extra = {k: v for k, v in item.items() if k not in skip and v is not None and k not in ("from", "role")}
    if "tool_calls" in extra:
        calls = extra["tool_calls"]
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise InputError(f"{where}: field '{name}.tool_calls' must be a list of objects, got {_type_name(calls)}")
        if not calls:
            del extra["tool_calls"]
    if not extra:
        return None
    try:
        return orjson.dumps(extra).decode()
    except TypeError as e:
        raise InputError(f"{where}: field '{name}': cannot store its extra keys as JSON ({e})") from e


def _tools(record: dict[str, Any], where: str) -> str | None:
    """The record's `tools` (a list of schemas, or that list as a JSON string) as JSON; None when absent or empty."""
    tools = record.get("tools")
    if isinstance(tools, str):
        try:
            tools = orjson.loads(tools) if tools.strip() else None
        except orjson.JSONDecodeError as e:
            raise InputError(f"{where}: field 'tools' is a string but not JSON: {e}") from e
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise InputError(f"{where}: field 'tools' must be a list of tool schemas (objects), got {_type_name(tools)}")
    return orjson.dumps(tools).decode()


def _content(value: Any, where: str, field: str) -> str:
    """Message content: a string, or a list of `{"type": "text", "text": ...}` parts joined together."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise InputError(f"{where}: field '{field}' must be a string, got {_type_name(value)}")


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", type(None): "null", bool: "boolean"}.get(type(value), type(value).__name__)


def prompt_text(turns: tuple[Turn, ...]) -> str:
    """The text the paper embeds: the user turns (the instruction), or the whole text of a plain-text sample."""
    return "\n".join(t.content for t in turns if t.role in ("user", "text") and t.content)


def full_text(turns: tuple[Turn, ...]) -> str:
    """Every turn's content, in order (tool calls by their JSON)."""
    return "\n".join(t.content or t.extra or "" for t in turns)
