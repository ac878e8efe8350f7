"""Cutting over-long samples (packing/cut.py): an exact prefix or a drop with its reason, for every label pattern."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfpack.ingest.formats import Conversation, Turn
from tfpack.packing.cut import Cut, fit_to_max_len, trained_run_ends
from tfpack.packing.tokenizer import load_tokenizer, tokenize_batch
from tfpack.workdir import IGNORE_INDEX

LABELS = np.array([-100, -100, 5, 6, -100, -100, 9, 9], dtype=np.int32)
IDS = np.array([1, 2, 5, 6, 3, 4, 9, 9], dtype=np.int32)


def test_docstring_example() -> None:
    truncated = fit_to_max_len(IDS, LABELS, 7, "truncate")
    turns = fit_to_max_len(IDS, LABELS, 7, "turns")
    assert isinstance(truncated, Cut) and truncated.ids.tolist() == IDS[:7].tolist()
    assert truncated.removed_trained == 1
    assert isinstance(turns, Cut) and turns.labels.tolist() == LABELS[:4].tolist() and turns.removed_trained == 2
    assert fit_to_max_len(IDS, LABELS, 7, "drop") == "longer than max_len (8 > 7 tokens; --long drop)"
    whole = fit_to_max_len(IDS, LABELS, 8, "drop")
    assert isinstance(whole, Cut) and whole.removed_trained == 0 and len(whole.ids) == 8


def test_drop_reasons() -> None:
    assert fit_to_max_len(IDS, LABELS, 2, "truncate") == (
        "no trained token within max_len (8 > 2 tokens; the first trained token is at 2; --long truncate)"
    )
    assert fit_to_max_len(IDS, LABELS, 3, "turns") == (
        "no whole assistant turn within max_len (8 > 3 tokens; the first ends at token 4; --long turns)"
    )
    untrained = np.full(8, IGNORE_INDEX, dtype=np.int32)
    assert "no trained token" in str(fit_to_max_len(IDS, untrained, 4, "truncate"))
    assert "no whole assistant turn" in str(fit_to_max_len(IDS, untrained, 4, "turns"))


def test_run_ends() -> None:
    assert trained_run_ends(np.array([-100, 5, 6, -100, 9], dtype=np.int32)).tolist() == [3, 5]
    assert trained_run_ends(np.array([-100, -100], dtype=np.int32)).tolist() == []


samples = st.lists(st.tuples(st.booleans(), st.integers(1, 6)), min_size=1, max_size=8).map(
    lambda runs: np.concatenate([np.full(n, 7 if t else IGNORE_INDEX, dtype=np.int32) for t, n in runs])
)


@settings(max_examples=300, deadline=None)
@given(labels=samples, max_len=st.integers(1, 40), long=st.sampled_from(["truncate", "turns", "drop"]))
def test_cut_is_an_exact_prefix_or_a_drop(labels: np.ndarray, max_len: int, long: str) -> None:
    """For every label pattern: a kept sample is a prefix of the full one (nothing appended or relabelled), fits,
    trains something when cut, and counts what it lost; `turns` ends right after a trained run."""
    ids = np.arange(len(labels), dtype=np.int32) + 1000
    out = fit_to_max_len(ids, labels, max_len, long)
    if isinstance(out, str):
        assert len(labels) > max_len
        return
    n = len(out.ids)
    assert n <= max_len or n == len(labels) <= max_len
    assert out.ids.tolist() == ids[:n].tolist() and out.labels.tolist() == labels[:n].tolist()
    assert out.removed_trained == int((labels[n:] != IGNORE_INDEX).sum())
    if n < len(labels):
        assert long != "drop" and (out.labels != IGNORE_INDEX).any()
        if long == "turns":
            assert out.labels[-1] != IGNORE_INDEX and n in trained_run_ends(labels).tolist()


def test_real_template_turns_cut_ends_after_the_end_of_turn_marker() -> None:
    """On a real tokenization (the offline tokenizer with the chatml template), `turns` keeps the first exchange
    whole, ending on the trained end-of-turn marker; `truncate` keeps exactly max_len tokens."""
    tokenizer = load_tokenizer("packaged-minilm", "chatml")
    conv = Conversation(
        (
            Turn("user", "question one"),
            Turn("assistant", "answer one"),
            Turn("user", "question two is much longer " * 5),
            Turn("assistant", "answer two " * 5),
        )
    )
    [(ids, labels, _)] = tokenize_batch([conv], tokenizer, "assistant")
    first_end = int(trained_run_ends(labels)[0])
    max_len = len(ids) - 3
    turns = fit_to_max_len(ids, labels, max_len, "turns")
    assert isinstance(turns, Cut) and len(turns.ids) == first_end
    text = "".join(tokenizer.hf.decode(turns.ids.tolist()).split()).replace("##", "")
    assert tokenizer.eot is not None and text.endswith("answerone" + tokenizer.eot)
    truncated = fit_to_max_len(ids, labels, max_len, "truncate")
    assert isinstance(truncated, Cut) and truncated.ids.tolist() == ids[:max_len].tolist()
