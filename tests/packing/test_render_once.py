"""The skeleton shortcut renders each sample once and locates its turns exactly where the rendered probe would.

For every template family × conversation of the gallery (tests/packing/templates.py), each assistant turn's span from
the skeleton (`_turn_span` with the content's slot) equals the span from the probe rendered with a sentinel, and a
sample whose shape was seen before costs one rendering however many turns it trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.packing.templates import CONVERSATIONS, FAMILIES, REASONING, build_bpe, family_tokenizer
from tfpack.ingest.formats import Conversation, Turn
from tfpack.packing import tokenizer as tokenizer_module
from tfpack.packing.tokenizer import (
    Rendered,
    _turn_span,
    content_slots,
    load_tokenizer,
    render,
    render_messages,
    skeleton_of,
)

PLAIN_FAMILIES = [f for f, (template, *_) in FAMILIES.items() if "{% generation %}" not in template]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    bpe = build_bpe(tmp_path_factory.mktemp("bpe"))
    return {f: family_tokenizer(bpe, f, tmp_path_factory.mktemp(f"family{i}")) for i, f in enumerate(FAMILIES)}


def conversation_of(messages: list[dict[str, Any]]) -> Conversation:
    return Conversation(tuple(Turn(m["role"], m["content"]) for m in messages), None)


def family_named(prefix: str) -> str:
    return next(f for f in FAMILIES if f.startswith(prefix))


@pytest.mark.parametrize("family", PLAIN_FAMILIES)
@pytest.mark.parametrize("name", [*CONVERSATIONS, "reasoning"])
def test_skeleton_spans_equal_rendered_probe_spans(family_dirs: dict[str, Path], family: str, name: str) -> None:
    tokenizer = load_tokenizer(str(family_dirs[family]), None)
    messages = REASONING if name == "reasoning" else CONVERSATIONS[name]
    try:
        text, _ = render_messages(tokenizer, messages, None)
    except Exception:
        pytest.skip(f"{family} refuses the {name} conversation")
    skeleton = skeleton_of(tokenizer, messages, None, None)
    slots = content_slots(skeleton, messages, text) if skeleton is not None else None
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not slots or i not in slots:
            continue
        assert _turn_span(tokenizer, messages, i, text, None, slots[i]) == _turn_span(
            tokenizer, messages, i, text, None
        )


def test_skeleton_is_rejected_when_the_template_changes_the_content(family_dirs: dict[str, Path]) -> None:
    """Mistral trims the answer: a content with surrounding spaces is not the skeleton's slot filled verbatim."""
    tokenizer = load_tokenizer(str(family_dirs[family_named("mistral")]), None)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Seven.  "}]
    text, _ = render_messages(tokenizer, messages, None)
    skeleton = skeleton_of(tokenizer, messages, None, None)
    assert skeleton is not None
    assert content_slots(skeleton, messages, text) is None


def test_one_rendering_per_sample_of_a_known_shape(
    family_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = load_tokenizer(str(family_dirs[family_named("qwen2.5")]), None)
    calls = []
    real = tokenizer_module.render_messages

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tokenizer_module, "render_messages", counted)
    chat = CONVERSATIONS["multi-turn"]
    for k in range(3):
        messages = [{**m, "content": f"{m['content']} ({k})"} for m in chat]
        assert isinstance(render(conversation_of(messages), tokenizer, "assistant"), Rendered)
    assert len(calls) == 3 + 1  # one per sample, plus the shape's skeleton


def test_content_holding_a_sentinel_character_is_probed_by_rendering(family_dirs: dict[str, Path]) -> None:
    """The slot is the probe's difference only when the content cannot extend it: such a sample takes no shortcut,
    and its span is still the probe's."""
    tokenizer = load_tokenizer(str(family_dirs[family_named("qwen2.5")]), None)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\ue001 closes it"}]
    assert skeleton_of(tokenizer, messages, None, None) is None
    rendered = render(conversation_of(messages), tokenizer, "assistant")
    assert isinstance(rendered, Rendered)
    lo, hi = rendered.spans[0]
    assert rendered.text[lo:hi].startswith("\ue001 closes it")
