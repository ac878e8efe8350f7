"""Benchmark decontamination: reading benchmark files, n-gram matching against a brute force, nearest items, and
planted copies and paraphrases found through a real embed run with the packaged model.

The benchmark items and paraphrases below are written for these tests, in the style of GSM8K, HumanEval and
MT-bench (no benchmark text is copied).
"""

from __future__ import annotations

import doctest
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import qa_rows, write_jsonl
from tfpack.config import DEFAULT_MODEL, EmbedConfig, PackConfig
from tfpack.embedding.stage import embed_texts, run_embed
from tfpack.errors import ConfigError, InputError, StaleArtifactError
from tfpack.filters.contamination import (
    BenchmarkItems,
    Contamination,
    NgramIndex,
    _word_table,
    embedding_nearest,
    fallback_texts,
    find_contamination,
    nearest_items,
    ngram_matches,
    proposed_nearest,
    read_benchmarks,
    reason,
    sample_texts,
    summarize,
    words,
)
from tfpack.filters.stage import decontaminate
from tfpack.ingest.formats import FormatOptions
from tfpack.ingest.readers import Location
from tfpack.workdir import EMBEDDINGS_FILE, SAMPLES_FILE, read_manifest

MATH = [  # GSM8K style: question, answer
    (
        "Priya bakes 36 cookies for a school fair. She sells two thirds of them in the morning and half of the rest "
        "in the afternoon. How many cookies does she have left at the end of the day?",
        "She sells 36 * 2/3 = <<36*2/3=24>>24 cookies in the morning.\nThat leaves 36 - 24 = <<36-24=12>>12.\n"
        "In the afternoon she sells 12 / 2 = <<12/2=6>>6 cookies.\nShe has 12 - 6 = <<12-6=6>>6 left.\n#### 6",
    ),
    (
        "A train travels at 60 miles per hour for 2.5 hours and then at 40 miles per hour for another 1.5 hours. "
        "How far does the train travel in total?",
        "First it covers 60 * 2.5 = <<60*2.5=150>>150 miles.\nThen 40 * 1.5 = <<40*1.5=60>>60 miles.\n"
        "In total 150 + 60 = <<150+60=210>>210 miles.\n#### 210",
    ),
    (
        "Marco has $250 in his savings account. Each week he deposits $15 and spends $5 of it. How much money will "
        "be in the account after 8 weeks?",
        "Each week the account grows by 15 - 5 = <<15-5=10>>10 dollars.\nIn 8 weeks that is 8 * 10 = <<8*10=80>>80."
        "\nThe account holds 250 + 80 = <<250+80=330>>330 dollars.\n#### 330",
    ),
    (
        "A rectangular garden is 12 meters long and 8 meters wide. A path 1 meter wide runs around the outside of "
        "the garden. What is the area of the path?",
        "With the path the rectangle is 14 by 10, so 14 * 10 = <<14*10=140>>140 square meters.\nThe garden is "
        "12 * 8 = <<12*8=96>>96.\nThe path is 140 - 96 = <<140-96=44>>44 square meters.\n#### 44",
    ),
]
CODE = [  # HumanEval style
    {
        "task_id": "Style/0",
        "prompt": 'def running_maximum(values: list[int]) -> list[int]:\n    """Return a list whose i-th element is '
        'the largest of values[0..i].\n    >>> running_maximum([3, 1, 4, 1, 5])\n    [3, 3, 4, 4, 5]\n    """\n',
        "canonical_solution": "    result, best = [], None\n    for v in values:\n        best = v if best is None "
        "else max(best, v)\n        result.append(best)\n    return result\n",
        "test": "def check(candidate):\n    assert candidate([3, 1, 4, 1, 5]) == [3, 3, 4, 4, 5]\n"
        "    assert candidate([]) == []\n",
        "entry_point": "running_maximum",
    },
    {
        "task_id": "Style/1",
        "prompt": 'def count_vowels(word: str) -> int:\n    """Count the vowels a, e, i, o and u in a word, ignoring '
        'case.\n    >>> count_vowels("Banana")\n    3\n    """\n',
        "canonical_solution": '    return sum(ch in "aeiou" for ch in word.lower())\n',
        "test": 'def check(candidate):\n    assert candidate("Banana") == 3\n    assert candidate("") == 0\n',
        "entry_point": "count_vowels",
    },
]
CHAT = [  # MT-bench style
    {
        "question_id": 81,
        "category": "writing",
        "turns": [
            "Write a persuasive blog post encouraging city residents to replace short car trips with cycling, "
            "covering health, cost and environmental benefits.",
            "Now rewrite your post as a short speech for a city council meeting.",
        ],
    },
    {
        "question_id": 82,
        "category": "reasoning",
        "turns": [
            "A farmer has 17 sheep and all but 9 run away. How many sheep does the farmer have left? Explain your "
            "reasoning.",
            "If the farmer then buys twice as many sheep as he has left, how many does he have?",
        ],
    },
]
# Reworded benchmark prompts, in item order (MATH, then CODE, then CHAT): a user turn each, two for a chat item.
PARAPHRASES: list[list[str]] = [
    [
        "For a school fair Priya made 36 cookies. In the morning she sold 2/3 of them, and in the afternoon she sold "
        "half of what remained. How many cookies were left over?"
    ],
    [
        "A train goes 60 miles per hour for 2.5 hours, then 40 miles per hour for 1.5 more hours. What total "
        "distance does it travel?"
    ],
    [
        "Marco starts with $250 saved. Every week he puts in $15 and takes out $5. After 8 weeks, how much money "
        "does his account hold?"
    ],
    [
        "There is a 1-meter-wide path surrounding a rectangular garden that measures 12 m by 8 m. Find the area of "
        "the path."
    ],
    [
        "Write a Python function running_maximum(values) that returns, for each position i, the maximum of the "
        "values up to and including i; for example [3, 1, 4, 1, 5] gives [3, 3, 4, 4, 5]."
    ],
    [
        "Implement count_vowels(word) in Python: it should return how many of the letters a, e, i, o, u occur in the "
        "word, case-insensitively (count_vowels('Banana') == 3)."
    ],
    [
        "Compose a persuasive blog article urging people in cities to cycle instead of driving for short trips, and "
        "cover the health, money and environmental benefits.",
        "Turn that post into a brief speech for a city council meeting.",
    ],
    [
        "All but 9 of a farmer's 17 sheep run away. How many sheep remain? Explain how you got the answer.",
        "Then the farmer buys double the number of sheep he has left. How many sheep does he have now?",
    ],
]
# Same topics, different items: none may be flagged.
SAME_TOPIC = [
    "Priya bakes 48 muffins and packs them into boxes of 6. She gives 3 boxes to her neighbours. How many muffins "
    "does she keep?",
    "A car drives 300 kilometres on 24 litres of fuel. How many litres does it need for 450 kilometres?",
    "Marco earns $18 per hour and works 6 hours on Saturday and 4 on Sunday. How much does he earn that weekend?",
    "A circular pond has a radius of 5 meters. What is its circumference, to the nearest meter?",
    "Write a Python function that returns the second largest number in a list.",
    "Write a Python function that reverses the order of the words in a sentence.",
    "Write a blog post reviewing a new smartphone's camera and battery life.",
    "A shepherd counts his sheep: 23 in the field and 14 in the barn. How many sheep does he have?",
]
TEST_THRESHOLD = 0.82  # measured with the packaged all-MiniLM-L6-v2: paraphrases >= 0.86, same-topic items <= 0.75


def chat(*turns: str, answer: str = "Here is my answer.") -> dict[str, Any]:
    messages = []
    for turn in turns:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def write_benchmarks(tmp: Path) -> list[str]:
    """The three benchmark files: GSM8K-style JSONL, HumanEval-style Parquet, MT-bench-style JSON array."""
    math = write_jsonl(tmp / "math_test.jsonl", [{"question": q, "answer": a} for q, a in MATH])
    code = tmp / "code_eval.parquet"
    pq.write_table(pa.Table.from_pylist(CODE), code)
    chats = tmp / "chat_bench.json"
    chats.write_bytes(orjson.dumps(CHAT))
    return [str(math), str(code), str(chats)]


def test_static_runs_are_decided_by_their_source_model(planted: dict[str, Any], tmp_path: Path) -> None:
    """On a `--model static` run the static model proposes and all-MiniLM-L6-v2 decides: the same samples, items
    and cosines as the MiniLM run at the same threshold (the static model's own cosines differ)."""
    static_run = tmp_path / "static"
    train = planted["run"].parent / "train.jsonl"
    run_embed([str(train)], static_run, EmbedConfig(model="static", dtype="float16"), FormatOptions())
    cfg = PackConfig(decontaminate_threshold=TEST_THRESHOLD)
    found = {}
    for name, run in (("minilm", planted["run"]), ("static", static_run)):
        manifest = read_manifest(run, "embed", "tfpack embed")
        emb = np.load(run / EMBEDDINGS_FILE, mmap_mode="r")
        rows = np.arange(len(emb), dtype=np.int64)
        found[name] = decontaminate(planted["items"], run, manifest, emb, cfg, rows, np.ones(len(emb), np.bool_))
    minilm, static = found["minilm"], found["static"]
    assert static.rows.tolist() == minilm.rows.tolist() == list(range(2 * N_ITEMS))
    where = [(e["reason"].rsplit(" (", 1)[0], e["kind"]) for e in minilm.entries]  # "contaminated: FILE line N"
    assert [(e["reason"].rsplit(" (", 1)[0], e["kind"]) for e in static.entries] == where
    np.testing.assert_allclose([e["cos"] for e in static.entries], [e["cos"] for e in minilm.entries], atol=2e-3)
    assert minilm.summary["model"] == DEFAULT_MODEL and "proposed_by" not in minilm.summary
    assert static.summary["model"] == DEFAULT_MODEL and static.summary["proposed_by"] == "static"
    assert 2 * N_ITEMS <= static.summary["candidates"] <= planted["n"]
    emb = np.load(static_run / EMBEDDINGS_FILE).astype(np.float32)
    bench = embed_texts(planted["items"].texts_for("prompt"), read_manifest(static_run, "embed", "tfpack embed"))
    _, own = nearest_items(emb, bench)
    reported = np.array([e["cos"] for e in static.entries])
    assert np.abs(own[: 2 * N_ITEMS] - reported).max() > 0.01, "the cosines are the full model's, not the static one's"


@pytest.mark.slow  # embeds benchmark items with the full model
def test_docstring_examples() -> None:
    import tfpack.filters.contamination as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# Reading benchmark files.


def test_reads_mapped_humaneval_and_mtbench_records(tmp_path: Path) -> None:
    items = read_benchmarks(write_benchmarks(tmp_path))
    assert len(items.locations) == 8
    assert [str(loc) for loc in items.locations[3:5]] == [
        f"{tmp_path}/math_test.jsonl:4",
        f"{tmp_path}/code_eval.parquet:row 0",
    ]
    assert items.prompts[0] == MATH[0][0] and items.texts[0] == f"{MATH[0][0]}\n{MATH[0][1]}"
    assert items.prompts[4] == CODE[0]["prompt"]  # HumanEval: the prompt is the prompt side...
    assert CODE[0]["canonical_solution"] in items.texts[4] and CODE[0]["test"] in items.texts[4]  # ...all is text
    assert items.prompts[6] == "\n".join(CHAT[0]["turns"])  # MT-bench: the turns
    assert items.locations[7] == Location(f"{tmp_path}/chat_bench.json", "item", 2)
    assert items.files() == [
        f"{tmp_path}/math_test.jsonl",
        f"{tmp_path}/code_eval.parquet",
        f"{tmp_path}/chat_bench.json",
    ]
    assert items.texts_for("prompt") is items.prompts and items.texts_for("full") is items.texts


def test_fallback_reads_strings_lists_and_prompt_only_chats() -> None:
    assert fallback_texts("Just a question?", "q.json:item 1") == ("Just a question?", "Just a question?")
    user_only = {"messages": [{"role": "user", "content": "Solve x + 1 = 3."}]}  # no assistant turn: not trainable
    assert fallback_texts(user_only, "m.jsonl:1") == ("Solve x + 1 = 3.", "Solve x + 1 = 3.")
    record = {"id": 3, "context": "Ann has 2 cats.", "question": "How many cats?", "choices": ["1", "2"], "n": 2.5}
    assert fallback_texts(record, "r.jsonl:1") == ("How many cats?", "Ann has 2 cats.\nHow many cats?\n1\n2")


def test_record_with_no_text_names_file_line_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bench.jsonl", [CHAT[0], {"question_id": 5, "turns": ["", " "], "score": 1}])
    with pytest.raises(
        InputError, match=r"^.*bench\.jsonl:2: benchmark record has no text .*question_id, turns, score"
    ):
        read_benchmarks([str(path)])
    table = tmp_path / "bench.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "Why?", "answer": "x"}, {"question": " ", "answer": ""}]), table)
    with pytest.raises(InputError, match=r"bench\.parquet:row 1: benchmark record has no text"):
        read_benchmarks([str(table)])


def test_mapped_record_that_fails_falls_back_but_explicit_formats_are_strict(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q one?", "answer": "A"}, {"question": "Q two?"}])
    assert read_benchmarks([str(path)]).prompts == ["Q one?", "Q two?"]
    with pytest.raises(InputError, match=r"qa\.jsonl:2: field 'answer' missing"):
        read_benchmarks([str(path)], FormatOptions(prompt_field="question", response_field="answer"))


def test_bad_benchmark_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty.jsonl: benchmark file holds no records"):
        read_benchmarks([str(tmp_path / "empty.jsonl")])
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: invalid JSON"):
        read_benchmarks([str(tmp_path / "bad.jsonl")])
    with pytest.raises(ConfigError, match="stdin"):
        read_benchmarks(["-"])
    with pytest.raises(InputError, match="no such file"):
        read_benchmarks([str(tmp_path / "missing.jsonl")])


# N-grams.


def brute_force(train: list[str], bench: list[str], n: int) -> list[tuple[int, int, int]]:
    """Per training text: (item, item's word, text's word) of its first window found among the benchmark n-grams,
    the earliest (item, position) holding it; (-1, -1, -1) when none."""
    first: dict[tuple[str, ...], tuple[int, int]] = {}
    for item, text in enumerate(bench):
        w = words(text)
        for j in range(len(w) - n + 1):
            first.setdefault(tuple(w[j : j + n]), (item, j))
    out = []
    for text in train:
        w = words(text)
        hits = [(*first[tuple(w[i : i + n])], i) for i in range(len(w) - n + 1) if tuple(w[i : i + n]) in first]
        out.append(hits[0] if hits else (-1, -1, -1))
    return out


def as_triples(found: Any) -> list[tuple[int, int, int]]:
    return list(zip(found.item.tolist(), found.item_word.tolist(), found.sample_word.tolist(), strict=True))


VOCAB = ["a", "b", "c", "Ab", "x_1", "é", "Éa", "ß", "中文", "42"]
SEPARATORS = [" ", "  ", ", ", "!\n", "-", "’", "\t", "…", "(", "·"]
texts = st.lists(st.tuples(st.sampled_from(VOCAB), st.sampled_from(SEPARATORS)), max_size=14).map(
    lambda parts: "".join(w + s for w, s in parts)
)


@settings(max_examples=150, deadline=None)
@given(
    train=st.lists(texts, max_size=8),
    bench=st.lists(texts, min_size=1, max_size=5),
    n=st.integers(1, 4),
    hash_bits=st.sampled_from([0, 2, 64]),
)
def test_ngram_matches_equal_brute_force(train: list[str], bench: list[str], n: int, hash_bits: int) -> None:
    """Also with 0 or 2 hash bits, where unequal windows collide all the time: only confirmed matches count."""
    found = NgramIndex(bench, n, hash_bits).first_matches(train)
    assert as_triples(found) == brute_force(train, bench, n)


def test_ngram_matches_equal_brute_force_on_longer_random_texts() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    bench = [" ".join(rng.choices(vocab, k=rng.randint(0, 60))) for _ in range(40)]
    train = [" ".join(rng.choices(vocab, k=rng.randint(0, 80))) for _ in range(300)]
    train += [f"intro {b} outro" for b in bench[:20]]
    for n in (2, 3, 13):
        found = ngram_matches(train, bench, n)
        assert as_triples(found) == brute_force(train, bench, n)
    assert (ngram_matches(train, bench).item[300:] >= 0).sum() == sum(len(words(b)) >= 13 for b in bench[:20])


def test_word_table_is_re_word() -> None:
    table = _word_table()
    word = re.compile(r"\w")
    assert all(bool(word.match(chr(c))) == table[c] for c in range(0x110000))


SENTENCE = "The quick brown fox jumps over the lazy dog while seven tired cats watch from a sunny windowsill today"


def test_13_gram_matches_across_case_punctuation_and_line_breaks() -> None:
    w = SENTENCE.split()
    bench = [" ".join(w[:13]) + "."]
    shouted = "Notes -- " + ", ".join(x.upper() for x in w[:6]) + "\n" + "...".join(w[6:13]) + "!!"
    found = ngram_matches([shouted, "the quick brown fox"], bench)
    assert found.item.tolist() == [0, -1] and found.sample_word.tolist() == [1, -1]


def test_12_shared_words_do_not_match() -> None:
    w = SENTENCE.split()
    bench = [" ".join(w[:13])]
    train = [" ".join(w[:12]) + " cat " + " ".join(w[1:12]), " ".join(w[1:13]) + " zebra"]
    assert ngram_matches(train, bench).item.tolist() == [-1, -1]
    assert ngram_matches(train, bench, n=12).item.tolist() == [0, 0]


def test_forced_collisions_never_match_different_words() -> None:
    """With 0 hash bits every window of every text has the same hash: each lookup must be rejected word by word."""
    rng = random.Random(1)
    bench = [" ".join(rng.choices(["alpha", "beta", "gamma"], k=40)) for _ in range(5)]
    train = [" ".join(rng.choices(["delta", "alpha", "epsilon"], k=40)) + " gamma" for _ in range(20)]
    collided = NgramIndex(bench, 13, hash_bits=0).first_matches(train)
    assert collided.item.tolist() == [-1] * 20 == ngram_matches(train, bench).item.tolist()
    assert NgramIndex(bench, 13, hash_bits=0).first_matches([bench[3]]).item.tolist() == [3]


def test_texts_shorter_than_n_have_no_ngrams() -> None:
    assert ngram_matches(["a b c", "", "!!"], ["a b c", "", "z"], n=4).item.tolist() == [-1, -1, -1]
    assert ngram_matches(["a b c d"], ["a b c d"], n=4).item.tolist() == [0]
    assert ngram_matches([], ["a b"]).item.shape == (0,)
    with pytest.raises(ConfigError, match="n-gram length"):
        NgramIndex(["a"], 0)


# Nearest items and the combined check.


def test_nearest_items_is_exact_on_a_float16_memmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(1000, 16))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    np.save(tmp_path / "emb.npy", train.astype(np.float16))
    bench = rng.normal(size=(30, 16)).astype(np.float32)
    bench /= np.linalg.norm(bench, axis=1, keepdims=True)
    item, cos = nearest_items(np.load(tmp_path / "emb.npy", mmap_mode="r"), bench, chunk=128)
    rows = np.load(tmp_path / "emb.npy").astype(np.float64)
    sims = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ bench.astype(np.float64).T
    assert item.dtype == np.int64 and cos.dtype == np.float64
    assert (sims[np.arange(1000), item] >= sims.max(1) - 1e-6).all()
    np.testing.assert_allclose(cos, sims.max(1), atol=1e-6)
    with pytest.raises(ConfigError, match="shape"):
        nearest_items(train, bench[:, :8])


def test_ngram_only_contamination_reasons_and_summary() -> None:
    items = BenchmarkItems(
        [Location("b.jsonl", "line", 1), Location("b.jsonl", "line", 2), Location("c.parquet", "row", 0)],
        ["q0", "q1", "q2"],
        [SENTENCE, "nothing shared here at all", "x"],
    )
    batches = [([10, 11], ["unrelated text", f"I read: {SENTENCE.upper()}"]), ([14], [SENTENCE[4:]])]
    hits = find_contamination(batches, items)
    assert [(h.sample_id, h.item, h.kind) for h in hits] == [(11, 0, "ngram"), (14, 0, "ngram")]
    assert hits[1].shared == " ".join(words(SENTENCE)[1:14])
    assert (
        reason(hits[0])
        == "contaminated: b.jsonl line 1 (13-gram 'the quick brown fox jumps over the lazy dog while seven ...')"
    )
    hit = Contamination(3, 2, items.locations[2], "embedding", cos=0.96234)
    assert reason(hit) == "contaminated: c.parquet row 0 (cos 0.962)"
    assert summarize(items, [*hits, hit]) == [
        {"file": "b.jsonl", "items": 2, "contaminated": 2, "embedding": 0, "ngram": 2},
        {"file": "c.parquet", "items": 1, "contaminated": 1, "embedding": 1, "ngram": 0},
    ]
    unit = np.eye(4, dtype=np.float32)
    with pytest.raises(StaleArtifactError, match="embeddings have 2 rows, fewer than the samples"):
        find_contamination(batches, items, embedding_nearest(items, unit[:2], unit[:3]))
    with pytest.raises(StaleArtifactError, match="embeddings have 4 rows, the samples 3"):
        find_contamination(batches, items, embedding_nearest(items, unit, unit[:3]))
    with pytest.raises(InputError, match="c.parquet:row 0: the benchmark item's embedding has zero norm"):
        embedding_nearest(items, unit[:3], np.eye(3, 4, dtype=np.float32) * [[1], [1], [0]])


def test_proposed_nearest_decides_on_the_deciding_model_among_the_proposed_rows() -> None:
    """A proposal model (deciding vectors plus noise) picks the candidate rows; the deciding model's exact nearest
    item and cosine are what is returned for them, nothing for the others, and only candidates are embedded."""
    rng = np.random.default_rng(3)
    bench = rng.normal(size=(40, 24))
    train = np.concatenate(
        [bench[rng.integers(0, 40, 300)] + 0.3 * rng.normal(size=(300, 24)), rng.normal(size=(700, 24))]
    )
    proposal, bench_proposal = train + 0.1 * rng.normal(size=train.shape), bench + 0.1 * rng.normal(size=bench.shape)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    items = BenchmarkItems([Location("b.jsonl", "line", i + 1) for i in range(40)], [""] * 40, [""] * 40)
    asked: list[np.ndarray] = []

    def embed_rows(rows: np.ndarray) -> np.ndarray:
        asked.append(rows)
        return unit(train[rows])

    min_cos, margin = 0.9, 0.1
    found, candidates = proposed_nearest(
        items, unit(proposal), unit(bench_proposal), min_cos, embed_rows, unit(bench), margin
    )
    _, proposed_cos = nearest_items(unit(proposal), unit(bench_proposal))
    chosen = np.flatnonzero(proposed_cos >= min_cos - margin)
    assert len(asked) == 1 and asked[0].tolist() == chosen.tolist() and candidates == len(chosen)
    assert 0 < len(chosen) < len(train)
    exact_item, exact_cos = nearest_items(unit(train), unit(bench))
    assert found.item[chosen].tolist() == exact_item[chosen].tolist()
    np.testing.assert_allclose(found.cos[chosen], exact_cos[chosen])
    others = np.setdiff1d(np.arange(len(train)), chosen)
    assert (found.item[others] == -1).all() and np.isneginf(found.cos[others]).all()
    assert (exact_cos[others] < min_cos).all(), "this data's proposal misses no row the deciding model puts >= S"
    hits = find_contamination([(list(range(len(train))), [""] * len(train))], items, found, min_cos)
    assert [h.sample_id for h in hits] == np.flatnonzero(exact_cos >= min_cos).tolist()
    nothing, none = proposed_nearest(items, unit(proposal), unit(bench_proposal), 1.5, embed_rows, unit(bench))
    assert none == 0 and len(asked) == 1 and (nothing.item == -1).all()


def test_precomputed_runs_cannot_embed_benchmarks() -> None:
    manifest = {"backend": "precomputed", "model": "precomputed:own.npy", "dim": 4}
    with pytest.raises(ConfigError, match=r"precomputed \(precomputed:own\.npy\).*--model"):
        embed_texts(["a question"], manifest)


# End to end with the packaged model: a training run holding exact copies, paraphrases and same-topic items.


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("decontam")
    bench_files = write_benchmarks(tmp)
    copies = [chat(q, answer=a) for q, a in MATH]
    copies += [chat(c["prompt"], answer=c["canonical_solution"]) for c in CODE]
    copies += [chat(*c["turns"], answer="Sure, here it is.") for c in CHAT]
    rows = copies + [chat(*p) for p in PARAPHRASES] + [chat(q) for q in SAME_TOPIC]
    rows += [chat(r["question"], answer=r["answer"]) for r in qa_rows(16)]
    data = write_jsonl(tmp / "train.jsonl", rows)
    run = tmp / "run"
    run_embed([str(data)], run, EmbedConfig(dtype="float16"), FormatOptions())
    manifest = read_manifest(run, "embed", "tfpack embed")
    items = read_benchmarks(bench_files)
    bench_emb = embed_texts(items.texts_for(manifest["embed_on"]), manifest)
    train_emb = np.load(run / EMBEDDINGS_FILE, mmap_mode="r")
    return {"run": run, "items": items, "bench_emb": bench_emb, "train_emb": train_emb, "n": len(rows)}


N_ITEMS = len(MATH) + len(CODE) + len(CHAT)
PARAPHRASE_ROWS = range(N_ITEMS, 2 * N_ITEMS)


def test_benchmarks_are_embedded_like_the_run(planted: dict[str, Any]) -> None:
    bench_emb = planted["bench_emb"]
    assert bench_emb.shape == (N_ITEMS, 384) and bench_emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bench_emb, axis=1), 1.0, atol=1e-5)
    item, cos = nearest_items(planted["train_emb"], bench_emb)
    assert item[:N_ITEMS].tolist() == list(range(N_ITEMS))  # exact copies: their own item, cosine 1
    assert (cos[:N_ITEMS] > 0.999).all()


def test_planted_copies_and_paraphrases_are_found_and_nothing_else(planted: dict[str, Any]) -> None:
    items = planted["items"]
    hits = find_contamination(
        sample_texts(planted["run"] / SAMPLES_FILE, "full"),
        items,
        embedding_nearest(items, planted["train_emb"], planted["bench_emb"]),
        min_cos=TEST_THRESHOLD,
    )
    assert [(h.sample_id, h.item, h.kind) for h in hits] == [
        *((i, i, "embedding") for i in range(N_ITEMS)),
        *((row, row - N_ITEMS, "embedding") for row in PARAPHRASE_ROWS),
    ]
    assert all(h.cos is not None and h.cos >= TEST_THRESHOLD for h in hits)
    assert summarize(items, hits)[1] == {
        "file": items.files()[1], "items": 2, "contaminated": 4, "embedding": 4, "ngram": 0
    }  # fmt: skip


def test_exact_copies_share_13_grams_and_paraphrases_are_left_to_embeddings(planted: dict[str, Any]) -> None:
    items = planted["items"]
    hits = find_contamination(sample_texts(planted["run"] / SAMPLES_FILE, "full"), items)  # n-grams only
    found = {h.sample_id: h.item for h in hits}
    assert all(found.get(i) == i for i in range(N_ITEMS))
    assert not {row for row in found if row >= N_ITEMS}, "paraphrases, same-topic and unrelated samples pass"
    assert reason(hits[0]).startswith(f"contaminated: {items.locations[0].source} line 1 (13-gram 'priya bakes 36 ")


def test_same_topic_samples_stay_below_the_threshold(planted: dict[str, Any]) -> None:
    _, cos = nearest_items(planted["train_emb"], planted["bench_emb"])
    assert cos[PARAPHRASE_ROWS.start : PARAPHRASE_ROWS.stop].min() >= TEST_THRESHOLD + 0.02
    assert cos[2 * N_ITEMS :].max() <= TEST_THRESHOLD - 0.05
