"""Invariants of `tfpack pack` over random conversations, chat templates, `--max-len`, `--long` and `--attention`.

Hypothesis draws a handful of conversations (1-6 turns after an optional system message, user first, roles in any
order after that, at least one assistant turn; text with unicode, surrounding and inner whitespace, empty strings), a
template family of the local gallery (tests/packing/templates.py), a max length and an attention mode. Each example
packs the records twice from one embed run (random precomputed embeddings, no model): uncut (a max length nothing
exceeds, segment attention) and as drawn. Then:

- every record lands exactly once: in a pack, in dropped.jsonl or in errors.jsonl;
- the uncut rendering is the template's (`apply_chat_template`, tokenized by the tokenizer itself; EOS appended only
  as the last token), and its trained tokens are exactly the assistant turns (templates.py's expected texts);
- a cut sample is a prefix of its uncut self, ids and labels: every trained token lies, at the same position, in an
  assistant turn of the full rendering. `--long truncate` keeps the first max_len tokens and drops a sample with no
  trained token among them; `--long turns` cuts right after the last trained run that fits and drops a sample whose
  first one does not; `--long drop` keeps only what fits, whole;
- no pack exceeds max_len; `position_ids` restart at each sample in segment mode and run on through the pack in pack
  mode; labels are -100 on each segment's first token.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.packing.packed import Sample, embed_run, listed, packed_samples, trained_runs
from tests.packing.templates import CONVERSATIONS, FAMILIES, Messages, Refuses, train_bpe, with_template
from tfpack.errors import InputError
from tfpack.workdir import IGNORE_INDEX, shard_paths

UNCUT = 100_000
EDGES = ["", " ", "\n", "  padded  ", "\n\nlead", "trail\n\n", "tab\there", "ünïcödé 東京 🙂", "a  b", "x"]
# No template markup in the text: `<|im_end|>` or `[INST]` in a message is an injection no template guards against.
TEXT = st.one_of(
    st.sampled_from(EDGES),
    st.text(st.characters(blacklist_categories=("Cs", "Co", "Cc"), blacklist_characters="<>[]|"), max_size=40),
    st.text(" \n\tabc", max_size=8),
)


# A blank user or assistant message makes the record invalid (`datasets` adds such a record on purpose).
CONTENT = TEXT.map(lambda text: text if text.strip() else text + "x")


@st.composite
def conversation(draw: st.DrawFn) -> Messages:
    roles = ["user", *draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=0, max_size=5))]
    if "assistant" not in roles:
        roles.append("assistant")
    system = [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    return system + [{"role": role, "content": draw(CONTENT)} for role in roles]


@st.composite
def datasets(draw: st.DrawFn) -> tuple[list[Messages], int]:
    """2-6 valid conversations, and sometimes an invalid one (a blank user message) among them; its index or -1."""
    chats = draw(st.lists(conversation(), min_size=2, max_size=6))
    if not draw(st.integers(0, 4)):
        return chats, -1
    at = draw(st.integers(0, len(chats)))
    return [*chats[:at], [{"role": "user", "content": " "}, {"role": "assistant", "content": "ok"}], *chats[at:]], at


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any, int]]:
    """Per gallery family: the tokenizer directory tfpack loads, the same tokenizer loaded by transformers, and the
    template's overhead (the least --max-len it takes, minus one)."""
    from transformers import AutoTokenizer

    from tfpack.packing.tokenizer import load_tokenizer, template_overhead

    corpus = [json.dumps(c, ensure_ascii=False) for c in CONVERSATIONS.values()] * 20 + EDGES
    bpe = train_bpe(tmp_path_factory.mktemp("bpe"), corpus)
    out = {}
    for family, (template, eos, bos, _) in FAMILIES.items():
        path = with_template(bpe, tmp_path_factory.mktemp("tok"), template, eos, bos)
        out[family] = (path, AutoTokenizer.from_pretrained(path), template_overhead(load_tokenizer(str(path), None)))
    return out


def pack(run: Path, out: Path, tokenizer: Path, **options: Any) -> Path:
    """`tfpack pack` of the run; a pack that left every sample out raises after writing its lists, which is fine."""
    import tfpack

    try:
        tfpack.pack(run, out, tokenizer=str(tokenizer), threshold="none", on_error="skip", **options)
    except InputError as e:
        assert "nothing to pack" in str(e), e
    return out


def landed_once(out: Path, n: int) -> dict[int, Sample]:
    """The packed samples, after checking that each of the `n` records is in exactly one place."""
    packed = packed_samples(out)
    dropped = [e["sample_id"] for e in listed(out, "dropped.jsonl")]
    errors = [e["sample_id"] for e in listed(out, "errors.jsonl")]
    assert all(e["reason"] for e in listed(out, "dropped.jsonl") + listed(out, "errors.jsonl"))
    everywhere = [*packed, *dropped, *errors]
    assert sorted(everywhere) == list(range(n)), f"packed {sorted(packed)}, dropped {dropped}, errors {errors}"
    return packed


def template_messages(messages: Messages) -> Messages:
    """What the template sees: tfpack reads a blank system message as none."""
    return messages[1:] if messages[0]["role"] == "system" and not messages[0]["content"].strip() else messages


def check_uncut(family: str, hf: Any, messages: Messages, sample: Sample | None) -> None:
    """The uncut sample is the template's rendering, tokenized as the tokenizer does, trained on the assistant turns
    only (or it was refused, which the template's own refusal requires)."""
    try:
        expected = FAMILIES[family][3](template_messages(messages))
    except Refuses:
        assert sample is None, "the template refuses this conversation, yet it was packed"
        return
    if sample is None:
        return  # refused by tfpack with a reason (errors.jsonl)
    text = hf.apply_chat_template(template_messages(messages), tokenize=False)
    own = hf(text, add_special_tokens=False)["input_ids"]
    ids = sample.input_ids
    assert ids[: len(own)] == own and (len(ids) == len(own) or ids[len(own) :] == [hf.eos_token_id])
    assert all(label in (IGNORE_INDEX, token) for label, token in zip(sample.labels, ids, strict=True))
    got = [hf.decode(ids[lo:hi]).strip() for lo, hi in trained_runs(sample.labels)]
    assert got == [e.strip() for e in expected if e.strip()], f"{family}: trained {got}, expected {expected}"


def check_layout(out: Path, max_len: int, attention: str) -> None:
    import pyarrow.parquet as pq

    for row in pq.read_table(shard_paths(out)).to_pylist() if shard_paths(out) else []:
        assert row["num_tokens"] == len(row["input_ids"]) <= max_len
        starts, lengths = row["seq_start_id"], row["seq_lengths"]
        assert lengths == (row["sample_lengths"] if attention == "segment" else [row["num_tokens"]])
        assert all(row["labels"][s] == IGNORE_INDEX for s in starts)
        assert row["position_ids"] == [j for n in lengths for j in range(n)]


def check_cut(long: str, max_len: int, full: Sample, cut: Sample | None) -> None:
    """`cut` (None: dropped) against the uncut sample, for the `--long` mode."""
    n = len(full.input_ids)
    ends = [hi for _, hi in trained_runs(full.labels)]
    if n <= max_len:
        assert cut is not None and cut.input_ids == full.input_ids and cut.labels == full.labels
        return
    if long == "drop":
        assert cut is None, f"{n} tokens > max_len {max_len}, kept under --long drop"
        return
    if long == "truncate":
        keeps = any(label != IGNORE_INDEX for label in full.labels[:max_len])
        assert (cut is not None) == keeps, "truncate keeps a sample iff a trained token lies within max_len"
    else:
        keeps = any(end <= max_len for end in ends)
        assert (cut is not None) == keeps, "turns keeps a sample iff its first trained run fits"
    if cut is None:
        return
    m = len(cut.input_ids)
    trained = [j for j, label in enumerate(cut.labels) if label != IGNORE_INDEX]
    assert all(full.labels[j] == cut.labels[j] for j in trained), "a trained token outside the full sample's turns"
    assert cut.input_ids == full.input_ids[:m], "cut ids are not a prefix of the uncut ids"
    assert cut.labels == full.labels[:m], "cut labels are not a prefix of the uncut labels"
    if long == "truncate":
        assert m == max_len
    else:
        assert m == max(end for end in ends if end <= max_len), "turns cuts after the last trained run that fits"


def check_pack(
    tokenizers: dict[str, tuple[Path, Any, int]],
    family: str,
    data: tuple[list[Messages], int],
    room: int,
    long: str,
    attention: str,
) -> None:
    path, hf, overhead = tokenizers[family]
    max_len = max(overhead + room, 8)  # --max-len takes 8 at least
    chats, invalid = data
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run = embed_run([{"messages": m} for m in chats], tmp, rows=len(chats) - (invalid >= 0))
        full = landed_once(pack(run, tmp / "full", path, max_len=UNCUT, attention="segment"), len(chats))
        for i, messages in enumerate(chats):
            if i != invalid:
                check_uncut(family, hf, messages, full.get(i))
        if invalid >= 0:
            [entry] = [e for e in listed(tmp / "full", "errors.jsonl") if e["sample_id"] == invalid]
            assert entry["line"] == invalid + 1 and "is empty" in entry["reason"]
        out = pack(run, tmp / "cut", path, max_len=max_len, long=long, attention=attention)
        cut = landed_once(out, len(chats))
        check_layout(out, max_len, attention)
        for i in full:
            check_cut(long, max_len, full[i], cut.get(i))
        assert not set(cut) - set(full), "a sample refused uncut was packed cut"


# No shrinking: each example packs twice, and shrinking a failure runs hundreds; the failing example is printed whole.
PROPERTY = settings(
    max_examples=20,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)


def cases() -> Any:
    return given(
        family=st.sampled_from(list(FAMILIES)),
        data=datasets(),
        room=st.integers(1, 120),
        attention=st.sampled_from(["segment", "pack"]),
    )


@PROPERTY
@cases()
def test_long_truncate(
    tokenizers: Any, family: str, data: tuple[list[Messages], int], room: int, attention: str
) -> None:
    check_pack(tokenizers, family, data, room, "truncate", attention)


@PROPERTY
@cases()
def test_long_turns(tokenizers: Any, family: str, data: tuple[list[Messages], int], room: int, attention: str) -> None:
    check_pack(tokenizers, family, data, room, "turns", attention)


LONG_CHAT = [{"role": "user", "content": "a question " * 30}, {"role": "assistant", "content": "an answer " * 30}]
BLANK_PROMPT = [{"role": "user", "content": " "}, {"role": "assistant", "content": "ok"}]


@PROPERTY
@cases()
# Every valid sample dropped and one invalid record: the pack stops with "nothing to pack"; the invalid record must
# still be listed in OUT/errors.jsonl, as it is when something is packed.
@example(
    family="chatml with {% generation %}", data=([BLANK_PROMPT, LONG_CHAT, LONG_CHAT], 0), room=1, attention="pack"
)
def test_long_drop(tokenizers: Any, family: str, data: tuple[list[Messages], int], room: int, attention: str) -> None:
    check_pack(tokenizers, family, data, room, "drop", attention)
