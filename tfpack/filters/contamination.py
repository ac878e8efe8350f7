"""Benchmark decontamination: find training samples that copy or paraphrase items of evaluation sets.

A training sample is contaminated by a benchmark item when

- embedding: the item is its nearest benchmark item and their cosine is >= the threshold, both embedded by the
  training run's full model on the same side of the conversation (`embed_on`). On a static-model run the static
  model only proposes: training samples whose nearest item by it is >= threshold - `CANDIDATE_MARGIN` are embedded
  by its source model, which decides (`proposed_nearest`), so a threshold means the same for every model; or
- n-gram: they share `n` consecutive normalised words (13 by default, the usual convention). Normalised words
  (`words`) are the runs of `\\w` characters of the lowercased text (letters, digits and `_` in any script), so
  case, punctuation and whitespace do not matter: "Ann's cat, 12-pack" is `ann s cat 12 pack`. A text shorter
  than `n` words has no n-grams and never matches.

N-gram matching hashes every window of `n` word hashes (64-bit) in numba kernels, looks each training window up in
the sorted benchmark hashes and confirms every hit by comparing the words' bytes, so a hash collision never reports
a match. Benchmark files are read like training inputs (JSONL, JSON array, Parquet, formats detected per file);
records that no format fits (HumanEval, MT-bench) are read by `fallback_texts`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import first_bad_row, gather_float32
from tfpack.errors import ConfigError, InputError, StaleArtifactError
from tfpack.filters.dedup import CANDIDATE_MARGIN
from tfpack.ingest.formats import FieldMap, FormatOptions, full_text, prompt_text, resolve_field_map, to_conversation
from tfpack.ingest.readers import STDIN, BadRecord, Location, expand_inputs, read_records
from tfpack.ingest.samples import iter_sample_batches
from tfpack.ordering.knn import block_knn

NGRAM = 13
# The cosine threshold, from `scripts/bench_contamination.py cosines`: all-MiniLM-L6-v2 puts the tests' paraphrases at
# 0.865-0.970 from their items and same-topic items at <= 0.741, and 0.40% of 2,000 GSM8K questions have another at
# >= 0.85 (0.30% at >= 0.9). Static runs are decided by the same full model, so the same threshold holds.
DEFAULT_THRESHOLD = 0.85
PROMPT_FIELDS = ("prompt", "question", "problem", "instruction", "query", "input", "turns", "messages")
_WORD = re.compile(r"\w+")
_BATCH = 8192  # training texts per n-gram kernel call (bounds the bytes held at once)
_CHUNK = 16_384  # training embedding rows per nearest-item search
_QUOTE = 60  # characters of the shared words kept in a reason


class BenchmarkItems(NamedTuple):
    """Benchmark items in file order: where each is, its prompt side (embedded when the run used
    `embed_on='prompt'`) and its full text (for n-grams, and embedded with `embed_on='full'`)."""

    locations: list[Location]
    prompts: list[str]
    texts: list[str]

    def texts_for(self, embed_on: str) -> list[str]:
        """The texts to embed for a run embedded on `embed_on` ('prompt' or 'full')."""
        return self.prompts if embed_on == "prompt" else self.texts

    def files(self) -> list[str]:
        """The benchmark files, in the order read."""
        return list(dict.fromkeys(loc.source for loc in self.locations))


def read_benchmarks(files: list[str], formats: FormatOptions | None = None) -> BenchmarkItems:
    """Read every record of the benchmark `files` (globs allowed) as an item.

    `formats` None detects each file's format like a training input's (pass benchmark-specific options, not the
    training run's). A record no format fits, or that its file's format cannot read (e.g. a chat with no assistant
    turn), is read by `fallback_texts`; explicit `formats` are applied strictly.
    """
    options = formats or FormatOptions()
    strict = options.format != "auto" or bool(options.prompt_field or options.text_field)
    paths = expand_inputs(files)
    if STDIN in paths:
        raise ConfigError("benchmark files cannot be read from stdin; save the benchmark to a file")
    locations: list[Location] = []
    prompts: list[str] = []
    texts: list[str] = []
    for path in paths:
        fmap: FieldMap | None = None
        read = len(locations)
        for loc, record in read_records(path):
            where = str(loc)
            if isinstance(record, BadRecord):
                raise InputError(f"{where}: {record.reason}")
            if len(locations) == read:
                fmap = _field_map(record, options, where, strict)
            prompt, text = item_texts(record, fmap, where, strict)
            locations.append(loc)
            prompts.append(prompt)
            texts.append(text)
        if len(locations) == read:
            raise InputError(f"{path}: benchmark file holds no records")
    return BenchmarkItems(locations, prompts, texts)


def _field_map(record: Any, options: FormatOptions, where: str, strict: bool) -> FieldMap | None:
    """The file's field map from its first record; None (read every record by `fallback_texts`) when no format
    fits and none was asked for."""
    try:
        return resolve_field_map(record, options, where)
    except InputError:
        if strict:
            raise
        return None


def item_texts(record: Any, fmap: FieldMap | None, where: str, strict: bool = False) -> tuple[str, str]:
    """(prompt side, full text) of one benchmark record: by its file's field map, else by `fallback_texts`."""
    if fmap is not None:
        try:
            turns = to_conversation(record, fmap, where).turns
            full = full_text(turns)
            return prompt_text(turns) or full, full
        except InputError:
            if strict:
                raise
    return fallback_texts(record, where)


def fallback_texts(record: Any, where: str) -> tuple[str, str]:
    """(prompt side, full text) of a record no format fits, from its text fields.

    Text fields are strings, lists of strings and lists of chat messages (their string `content` or `value`); the
    full text is every non-empty one in record order, joined by newlines (ids and short labels included: they
    only add a few words). The prompt side is the first of `PROMPT_FIELDS` holding text, else the full text. A
    record that is itself a string is its own text.

    >>> fallback_texts({"task_id": "HumanEval/0", "prompt": "def f(x):", "test": "assert f(1)"}, "he.jsonl:1")
    ('def f(x):', 'HumanEval/0\\ndef f(x):\\nassert f(1)')
    >>> fallback_texts({"question_id": 81, "turns": ["Write a poem.", "Shorter."]}, "mt.jsonl:1")
    ('Write a poem.\\nShorter.', 'Write a poem.\\nShorter.')
    """
    if isinstance(record, str) and record.strip():
        return record, record
    fields = {k: t for k, v in record.items() if (t := _field_text(v))} if isinstance(record, dict) else {}
    if not fields:
        seen = f"keys seen: {', '.join(map(str, record)) or 'none'}" if isinstance(record, dict) else "not an object"
        raise InputError(
            f"{where}: benchmark record has no text (no non-empty string, list of strings or chat messages; {seen})"
        )
    full = "\n".join(fields.values())
    return next((fields[k] for k in PROMPT_FIELDS if k in fields), full), full


def _field_text(value: Any) -> str:
    """A field's text: a string, or the strings of a list (chat messages by their content); '' when none."""
    if isinstance(value, str):
        return value if value.strip() else ""
    if isinstance(value, list):
        parts = (item if isinstance(item, str) else _message_text(item) for item in value)
        return "\n".join(p for p in parts if p.strip())
    return ""


def _message_text(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    text = item.get("content", item.get("value"))
    return text if isinstance(text, str) else ""


# N-grams. Texts are lowercased and encoded as UTF-8; kernels decode code points and split words with `_word_table`.


def words(text: str) -> list[str]:
    """The normalised words n-grams are made of: runs of `\\w` in the lowercased text.

    >>> words("Ann's cat, 12-PACK_x!")
    ['ann', 's', 'cat', '12', 'pack_x']
    """
    return _WORD.findall(text.lower())


@functools.cache
def _word_table() -> NDArray[np.bool_]:
    """For each code point, whether `re` counts it as `\\w` (str.isalnum, or '_'), as `words` does."""
    return np.fromiter((chr(c).isalnum() or c == 95 for c in range(0x110000)), np.bool_, 0x110000)


def _utf8(texts: list[str]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """The lowercased texts' UTF-8 bytes, concatenated, and where each text ends."""
    parts = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    return np.frombuffer(b"".join(parts), np.uint8), np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))


class _Words(NamedTuple):
    """The words of texts: the bytes (`_utf8`), each word's byte span and 64-bit hash, and each text's first word
    and word count (the words of text t are `first[t] : first[t] + n_words[t]`)."""

    buf: NDArray[np.uint8]
    starts: NDArray[np.int64]
    stops: NDArray[np.int64]
    hashes: NDArray[np.uint64]
    first: NDArray[np.int64]
    n_words: NDArray[np.int64]


def _split_words(texts: list[str]) -> _Words:
    buf, ends = _utf8(texts)
    table = _word_table()
    n_words = _count_words(buf, ends, table)
    first = np.cumsum(n_words) - n_words
    starts, stops, hashes = _word_spans(buf, ends, table, first, int(n_words.sum()))
    return _Words(buf, starts, stops, hashes, first, n_words)


@numba.njit(cache=True, inline="always")
def _code_point(buf: Any, i: int) -> tuple[Any, int]:
    """The code point of the UTF-8 sequence at `buf[i]`, and its length in bytes."""
    b = np.int64(buf[i])
    if b < 0x80:
        return b, 1
    if b < 0xE0:
        return ((b & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2
    if b < 0xF0:
        return ((b & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F), 3
    cp = ((b & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12) | ((np.int64(buf[i + 2]) & 0x3F) << 6)
    return cp | (np.int64(buf[i + 3]) & 0x3F), 4


@numba.njit(cache=True)
def _next_word(buf: Any, pos: int, end: int, table: Any) -> tuple[int, int]:
    """Byte span `[start, stop)` of the first word at or after `pos` (before `end`); start == end when none."""
    while pos < end:
        cp, size = _code_point(buf, pos)
        if table[cp]:
            break
        pos += size
    start = pos
    while pos < end:
        cp, size = _code_point(buf, pos)
        if not table[cp]:
            break
        pos += size
    return start, pos


@numba.njit(cache=True, parallel=True)
def _count_words(buf: Any, ends: Any, table: Any) -> Any:
    count = np.zeros(len(ends), np.int64)
    for t in numba.prange(len(ends)):
        pos = ends[t - 1] if t else 0
        while True:
            start, pos = _next_word(buf, pos, ends[t], table)
            if start == ends[t]:
                break
            count[t] += 1
    return count


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: the window hash's polynomial base


@numba.njit(cache=True, inline="always")
def _word_hash(buf: Any, start: int, stop: int) -> Any:
    """FNV-1a of the word's bytes, finalised by splitmix64's mixer (well-spread bits for the window hash)."""
    h = _FNV_OFFSET
    for i in range(start, stop):
        h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
    h = (h ^ (h >> np.uint64(30))) * _MIX1
    h = (h ^ (h >> np.uint64(27))) * _MIX2
    return h ^ (h >> np.uint64(31))


@numba.njit(cache=True, parallel=True)
def _word_spans(buf: Any, ends: Any, table: Any, first: Any, total: int) -> Any:
    starts = np.empty(total, np.int64)
    stops = np.empty(total, np.int64)
    hashes = np.empty(total, np.uint64)
    for t in numba.prange(len(ends)):
        pos = ends[t - 1] if t else 0
        w = first[t]
        while True:
            start, pos = _next_word(buf, pos, ends[t], table)
            if start == ends[t]:
                break
            starts[w], stops[w] = start, pos
            hashes[w] = _word_hash(buf, start, pos)
            w += 1
    return starts, stops, hashes


@numba.njit(cache=True, parallel=True)
def _window_hashes(hashes: Any, first: Any, n_words: Any, n: int, mask: Any) -> Any:
    """Entry `first[t] + j` (j < n_words[t] - n + 1): the hash of words j..j+n-1 of text t (polynomial in the word
    hashes, mod 2^64, then `& mask`); other entries are unused."""
    out = np.zeros(len(hashes), np.uint64)
    for t in numba.prange(len(first)):
        for j in range(first[t], first[t] + n_words[t] - n + 1):
            h = np.uint64(0)
            for k in range(n):
                h = h * _BASE + hashes[j + k]
            out[j] = h & mask
    return out


@numba.njit(cache=True, inline="always")
def _same_words(
    buf: Any, ring_starts: Any, ring_stops: Any, head: int, b_buf: Any, b_starts: Any, b_stops: Any, j: int
) -> bool:
    """Whether the words in the ring (oldest at `head`) equal benchmark words j..j+n-1, byte for byte."""
    n = len(ring_starts)
    for k in range(n):
        r = (head + k) % n
        length = ring_stops[r] - ring_starts[r]
        if b_stops[j + k] - b_starts[j + k] != length:
            return False
        for c in range(length):
            if buf[ring_starts[r] + c] != b_buf[b_starts[j + k] + c]:
                return False
    return True


@numba.njit(cache=True, parallel=True)
def _first_matches(
    buf: Any,
    ends: Any,
    table: Any,
    n: int,
    mask: Any,
    bitmap: Any,
    keys: Any,
    key_word: Any,
    key_item: Any,
    b_buf: Any,
    b_starts: Any,
    b_stops: Any,
) -> Any:
    """Per text: its first window (in text order) equal to a benchmark window, as (item, global benchmark word,
    text's word); -1s when none. Among benchmark windows with the same words, the first in (item, position) order
    wins. One pass over each text's bytes: the last n words' spans and hashes in a ring, the window hash rolled
    (the same polynomial as `_window_hashes`), looked up only when its bit is set in `bitmap`."""
    top = np.uint64(1)
    for _ in range(n - 1):
        top *= _BASE  # _BASE ** (n - 1), the weight of a window's oldest word
    bits = np.uint64(len(bitmap) * 64 - 1)
    out = np.full((len(ends), 3), -1, np.int64)
    for t in numba.prange(len(ends)):
        ring_starts = np.empty(n, np.int64)
        ring_stops = np.empty(n, np.int64)
        ring_hashes = np.zeros(n, np.uint64)
        pos, end, c, h = (ends[t - 1] if t else 0), ends[t], 0, np.uint64(0)
        while True:
            start, pos = _next_word(buf, pos, end, table)
            if start == end:
                break
            r, word_hash = c % n, _word_hash(buf, start, pos)
            h = (h - ring_hashes[r] * top) * _BASE + word_hash  # ring_hashes[r] is the word leaving (0 at first)
            ring_starts[r], ring_stops[r], ring_hashes[r] = start, pos, word_hash
            c += 1
            if c < n:
                continue
            key = h & mask
            slot = key & bits
            if not (bitmap[slot >> np.uint64(6)] >> (slot & np.uint64(63))) & np.uint64(1):
                continue
            k = np.searchsorted(keys, key)
            while k < len(keys) and keys[k] == key:
                if _same_words(buf, ring_starts, ring_stops, c % n, b_buf, b_starts, b_stops, key_word[k]):
                    out[t, 0], out[t, 1], out[t, 2] = key_item[k], key_word[k], c - n
                    break
                k += 1
            if out[t, 0] >= 0:
                break
    return out


def _bitmap(keys: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """A bit per slot of a table of >= 64 slots per key (a power of two), set where some key's low bits land: a
    window whose bit is clear cannot match, so most windows skip the binary search."""
    n_bits = 1 << max(12, int(64 * len(keys)).bit_length())
    bitmap = np.zeros(n_bits // 64, np.uint64)
    slots = keys & np.uint64(n_bits - 1)
    np.bitwise_or.at(bitmap, slots >> np.uint64(6), np.left_shift(np.uint64(1), slots & np.uint64(63)))
    return bitmap


class NgramMatches(NamedTuple):
    """Per training text: the first benchmark item sharing an n-gram (-1: none), where that n-gram starts among the
    item's words and among the text's words (-1: none); positions index `words(text)`."""

    item: NDArray[np.int64]
    item_word: NDArray[np.int64]
    sample_word: NDArray[np.int64]


class NgramIndex:
    """The n-grams of benchmark texts, hashed and sorted once, matched against training texts batch by batch.

    `hash_bits` < 64 keeps fewer bits of each window hash (0: every window collides with every other); results are
    the same whatever its value, since every hash hit is confirmed word by word.
    """

    def __init__(self, bench_texts: list[str], n: int = NGRAM, hash_bits: int = 64) -> None:
        if n < 1:
            raise ConfigError(f"n-gram length must be >= 1, got {n}")
        if not 0 <= hash_bits <= 64:
            raise ConfigError(f"hash_bits must be in [0, 64], got {hash_bits}")
        self.n = n
        self.mask = np.uint64((1 << hash_bits) - 1)
        self.bench = _split_words(bench_texts)
        b = self.bench
        windows = _window_hashes(b.hashes, b.first, b.n_words, n, self.mask)
        item = np.repeat(np.arange(len(bench_texts), dtype=np.int64), b.n_words)
        word = np.flatnonzero(np.arange(len(item)) - b.first[item] < b.n_words[item] - n + 1)  # window starts
        order = np.argsort(windows[word], kind="stable")
        self.keys, self.key_word, self.key_item = windows[word][order], word[order], item[word][order]
        self.bitmap = _bitmap(self.keys)

    def first_matches(self, texts: list[str]) -> NgramMatches:
        """For each of `texts`, its first n-gram shared with a benchmark text (see `NgramMatches`)."""
        (buf, ends), b = _utf8(texts), self.bench
        found = _first_matches(
            buf, ends, _word_table(), self.n, self.mask, self.bitmap,
            self.keys, self.key_word, self.key_item, b.buf, b.starts, b.stops,
        )  # fmt: skip
        item, item_word = found[:, 0], found[:, 1]
        hit = item >= 0
        item_word[hit] -= b.first[item[hit]]
        return NgramMatches(item, item_word, found[:, 2])


def ngram_matches(train_texts: list[str], bench_texts: list[str], n: int = NGRAM) -> NgramMatches:
    """For each training text, the first benchmark text it shares `n` consecutive normalised words with.

    >>> ngram_matches(["So: A B, c d!", "a b x"], ["x y", "zz a b c d"], n=4).item.tolist()
    [1, -1]
    """
    index = NgramIndex(bench_texts, n)
    parts = [index.first_matches(train_texts[i : i + _BATCH]) for i in range(0, len(train_texts), _BATCH)]
    if not parts:
        return NgramMatches(*(np.empty(0, np.int64) for _ in range(3)))
    return NgramMatches(*(np.concatenate(column) for column in zip(*parts, strict=True)))


# Embeddings.


def nearest_items(
    train_emb: NDArray[Any], bench_emb: NDArray[np.float32], chunk: int = _CHUNK
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each training row's nearest benchmark row by cosine, exactly: (item index [N] int64, cosine [N] float64).

    `train_emb` ([N, d] float32 or float16, e.g. memory-mapped) is read `chunk` rows at a time; the search is faiss
    brute force in float32 and the winner's cosine is recomputed in float64 from both rows' norms.
    """
    n, dim = train_emb.shape
    if bench_emb.ndim != 2 or bench_emb.shape[1] != dim or not len(bench_emb):
        raise ConfigError(f"benchmark embeddings have shape {bench_emb.shape}, expected [B >= 1, {dim}]")
    bench = np.ascontiguousarray(bench_emb, dtype=np.float32)
    bench_norms = np.linalg.norm(bench.astype(np.float64), axis=1)
    item = np.empty(n, np.int64)
    cos = np.empty(n, np.float64)
    for start in range(0, n, chunk):
        rows = gather_float32(train_emb, np.arange(start, min(start + chunk, n), dtype=np.int64))
        best = block_knn(rows, bench, 1)[1][:, 0].astype(np.int64)
        dots = np.einsum("ij,ij->i", rows, bench[best], dtype=np.float64)
        cos[start : start + len(rows)] = dots / (np.linalg.norm(rows.astype(np.float64), axis=1) * bench_norms[best])
        item[start : start + len(rows)] = best
    return item, cos


class Nearest(NamedTuple):
    """Per training row: its nearest benchmark item by the deciding model (-1: not examined) and their float64
    cosine (-inf: not examined)."""

    item: NDArray[np.int64]
    cos: NDArray[np.float64]


def embedding_nearest(items: BenchmarkItems, train_emb: NDArray[Any], bench_emb: NDArray[np.float32]) -> Nearest:
    """`nearest_items` of every training row, after checking that each item's embedding is usable."""
    bad = first_bad_row(np.linalg.norm(np.asarray(bench_emb, dtype=np.float32), axis=1))
    if bad is not None:
        raise InputError(f"{items.locations[bad[0]]}: the benchmark item's embedding {bad[1]}; check its text")
    return Nearest(*nearest_items(train_emb, bench_emb))


def proposed_nearest(
    items: BenchmarkItems,
    proposal: NDArray[Any],
    bench_proposal: NDArray[np.float32],
    min_cos: float,
    embed_rows: Callable[[NDArray[np.int64]], NDArray[np.float32]],
    bench_emb: NDArray[np.float32],
    margin: float = CANDIDATE_MARGIN,
) -> tuple[Nearest, int]:
    """Nearest items by a deciding model that embeds only the candidates: the training rows whose nearest item by
    the `proposal` vectors (a static model's; items: `bench_proposal`) is >= `min_cos - margin`. `embed_rows(rows)`
    gives the deciding model's unit vectors of those rows (sorted), `bench_emb` its vectors of every item; the
    other rows are not examined. Sound as far as the static model puts every pair the deciding model rates >=
    `min_cos` at >= `min_cos - margin` (scripts/bench_contamination.py `decide` measures it). Also returns how many
    rows were candidates."""
    proposed = embedding_nearest(items, proposal, bench_proposal)
    candidates = np.flatnonzero(proposed.cos >= min_cos - margin)
    item = np.full(len(proposal), -1, dtype=np.int64)
    cos = np.full(len(proposal), -np.inf)
    if candidates.size:
        item[candidates], cos[candidates] = embedding_nearest(items, embed_rows(candidates), bench_emb)
    return Nearest(item, cos), len(candidates)


# Both together.


class Contamination(NamedTuple):
    """A contaminated training sample: the benchmark item (index into `BenchmarkItems`) and its location, and why:
    `kind` 'embedding' (`cos` >= the threshold) or 'ngram' (`shared`: the first shared n-gram's words)."""

    sample_id: int
    item: int
    location: Location
    kind: str
    cos: float | None = None
    shared: str | None = None


def sample_texts(samples_file: Path, side: str) -> Iterator[tuple[list[int], list[str]]]:
    """(sample ids, texts) of a run's `samples.parquet`, batch by batch in row order: the full texts (`side`
    'full': what n-grams are taken from in training samples, every turn, so a copied answer counts too), or the
    prompts ('prompt')."""
    text = full_text if side == "full" else prompt_text
    for ids, conversations in iter_sample_batches(samples_file, _BATCH):
        yield ids, [text(c.turns) for c in conversations]


def find_contamination(
    batches: Iterable[tuple[list[int], list[str]]],
    items: BenchmarkItems,
    nearest: Nearest | None = None,
    min_cos: float = DEFAULT_THRESHOLD,
    n: int = NGRAM,
) -> list[Contamination]:
    """The contaminated samples among `batches` ((sample ids, full texts) in embedding-row order, e.g.
    `sample_texts`), in that order.

    With `nearest` (row i: the i-th sample of `batches`; from `embedding_nearest` on the run's model, or
    `proposed_nearest`), a sample whose nearest item has cosine >= `min_cos` is contaminated by it ('embedding');
    else a sample sharing an `n`-gram with an item is ('ngram'). Without it only n-grams are checked.
    """
    index = NgramIndex(items.texts, n)
    hits: list[Contamination] = []
    row = 0
    for ids, texts in batches:
        if nearest is None:
            near_item, near_cos = np.zeros(len(ids), np.int64), np.full(len(ids), -np.inf)
        else:
            near_item, near_cos = nearest.item[row : row + len(ids)], nearest.cos[row : row + len(ids)]
            if len(near_cos) != len(ids):
                raise StaleArtifactError(f"the embeddings have {len(nearest.item)} rows, fewer than the samples")
        found = index.first_matches(texts)
        for i, sample_id in enumerate(ids):
            if near_cos[i] >= min_cos:
                item = int(near_item[i])
                hits.append(Contamination(sample_id, item, items.locations[item], "embedding", cos=float(near_cos[i])))
            elif (item := int(found.item[i])) >= 0:
                shared = " ".join(words(items.texts[item])[found.item_word[i] : found.item_word[i] + n])
                hits.append(Contamination(sample_id, item, items.locations[item], "ngram", shared=shared))
        row += len(ids)
    if nearest is not None and row != len(nearest.item):
        raise StaleArtifactError(f"the embeddings have {len(nearest.item)} rows, the samples {row}")
    return hits


def reason(hit: Contamination) -> str:
    """The dropped-sample reason for a hit.

    >>> reason(Contamination(12, 40, Location("gsm8k_test.jsonl", "line", 41), "embedding", cos=0.96234))
    'contaminated: gsm8k_test.jsonl line 41 (cos 0.962)'
    """
    where = f"{hit.location.source} {hit.location.unit} {hit.location.index}"
    if hit.kind == "embedding":
        return f"contaminated: {where} (cos {hit.cos:.3f})"
    shared = hit.shared or ""
    quoted = shared if len(shared) <= _QUOTE else shared[: _QUOTE - 3].rsplit(" ", 1)[0] + " ..."
    return f"contaminated: {where} ({len(shared.split())}-gram '{quoted}')"


def summarize(items: BenchmarkItems, hits: list[Contamination]) -> list[dict[str, Any]]:
    """Per benchmark file, in order: its items and the training samples it contaminates, in all and by kind."""
    summary: dict[str, dict[str, Any]] = {
        path: {"file": path, "items": 0, "contaminated": 0, "embedding": 0, "ngram": 0} for path in items.files()
    }
    for loc in items.locations:
        summary[loc.source]["items"] += 1
    for hit in hits:
        entry = summary[hit.location.source]
        entry["contaminated"] += 1
        entry[hit.kind] += 1
    return list(summary.values())
