"""Loading and running a sentence-transformers model: torch, or its ONNX export in OpenVINO or ONNX Runtime.

OpenVINO (`openvino`, the default on CPU when installed) runs bf16 on CPUs with native bf16 and fp32 elsewhere;
ONNX Runtime runs the export as it is (`onnx`, exact fp32; `onnx-int8`, dynamic int8 linear layers). Every encoder
returns L2-normalised float32 rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import first_bad_row, unit_rows
from tfpack.config import EmbedConfig
from tfpack.embedding.models import (
    STATIC_TOKENIZER,
    STATIC_VECTORS,
    onnx_model_dir,
    resolve_backend,
    resolve_device,
    resolve_model,
    static_model_dir,
    static_source,
)
from tfpack.errors import ConfigError, DependencyError, InputError
from tfpack.ingest.formats import Turn, full_text, prompt_text
from tfpack.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

STATIC_BATCH = 1024  # texts per tokenizer call: tokenizing dominates, larger batches only hold more memory


class ExportedEncoder:
    """A sentence-transformers model whose transformer runs from its ONNX export, in OpenVINO or ONNX Runtime.

    Tokenizing and the modules after the transformer (pooling, normalisation) stay the model's own, so any model
    whose first module is a text Transformer works. OpenVINO picks bf16 on CPUs with native bf16 (AVX512-BF16,
    AMX) and fp32 elsewhere; ONNX Runtime runs the graph as exported (fp32, or int8 linear layers). The precision is
    recorded in the manifest.
    """

    def __init__(
        self, model: SentenceTransformer, onnx_file: Path, runtime: str, precision_hint: str | None = None
    ) -> None:
        """`precision_hint` (OpenVINO only, e.g. "f32") overrides OpenVINO's choice of inference precision:
        scripts/bench_embed.py uses it to show on a bf16 CPU what a CPU without bf16 gets."""
        self.model = model
        self.preprocess = getattr(model, "preprocess", None) or model.tokenize
        if runtime == "openvino":
            try:
                import openvino
            except ImportError as e:
                raise DependencyError("--backend openvino needs OpenVINO; run `pip install openvino`") from e
            hints = {"PERFORMANCE_HINT": "LATENCY"}
            if precision_hint:
                hints["INFERENCE_PRECISION_HINT"] = precision_hint
            compiled = openvino.Core().compile_model(str(onnx_file), "CPU", hints)
            request = compiled.create_infer_request()
            self.input_names = {port.get_any_name() for port in compiled.inputs}
            self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            self.run: Callable[[dict[str, Any]], Any] = lambda feeds: request.infer(feeds)[compiled.output(0)]
        else:
            try:
                import onnxruntime
            except ImportError as e:
                raise DependencyError(f"--backend {runtime} needs ONNX Runtime; run `pip install onnxruntime`") from e
            session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
            self.input_names = {i.name for i in session.get_inputs()}
            self.precision = "int8" if "int8" in onnx_file.name else "f32"
            self.run = lambda feeds: session.run(None, feeds)[0]

    def encode(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        """Embeddings of `texts`, batched longest first (little padding), in input order."""
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), embedding_dim(self.model)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                features = self.preprocess([texts[i] for i in rows])
                feeds = {name: features[name].numpy() for name in self.input_names}
                features["token_embeddings"] = torch.from_numpy(np.array(self.run(feeds), dtype=np.float32))
                for module in list(self.model)[1:]:
                    features = module(features)
                out[rows] = features["sentence_embedding"].float().numpy()
        return out


class StaticEncoder:
    """A static model (`models.static_model_dir`): a text's vector is the mean of the distilled vectors of its first
    `max_seq_length` tokens (no special tokens, no padding), so CPU throughput is the tokenizer's.

    Pooling is done here rather than by model2vec's `StaticModel`: its tokenizer pads to 128 tokens and a model
    reloaded from disk averages the pads in, which measured 37% of TFP's pack gain kept on GSM8K against 90% here
    (scripts/bench_static.py)."""

    def __init__(self, model_dir: Path, max_seq_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / STATIC_TOKENIZER))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.vectors = np.load(model_dir / STATIC_VECTORS)
        self.max_seq_length = max_seq_length
        self.dim = int(self.vectors.shape[1])

    def encode(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        """Mean token vectors of each text; a text with no token gets a zero row (refused by `check_embeddings`)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer.encode_batch_fast(texts[start : start + batch_size], add_special_tokens=False)
            ids = [e.ids[: self.max_seq_length] for e in encoded]
            out[start : start + len(ids)] = mean_rows(self.vectors, ids)
        return out


@numba.njit(parallel=True, cache=True)
def _mean_rows_kernel(
    vectors: NDArray[np.float32], flat: NDArray[np.int64], ends: NDArray[np.int64], out: NDArray[np.float32]
) -> None:
    for i in numba.prange(len(ends)):
        start = ends[i - 1] if i else 0
        for t in range(start, ends[i]):
            for j in range(vectors.shape[1]):
                out[i, j] += vectors[flat[t], j]
        if ends[i] > start:
            for j in range(vectors.shape[1]):
                out[i, j] /= ends[i] - start


def mean_rows(vectors: NDArray[np.float32], ids: list[list[int]]) -> NDArray[np.float32]:
    """Row i: the mean of `vectors[ids[i]]` (zeros where `ids[i]` is empty), summed in a parallel kernel (no
    `[tokens, d]` gather).

    >>> mean_rows(np.eye(3, dtype=np.float32), [[0, 1], [], [2, 2]]).tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    ends = np.cumsum(np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids)))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(ends[-1]) if len(ends) else 0)
    out = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
    _mean_rows_kernel(vectors, flat, ends, out)
    return out


Encoder = Union["SentenceTransformer", ExportedEncoder, StaticEncoder]


def load_static(
    cfg: EmbedConfig, source: str, progress: Progress = NULL_PROGRESS
) -> tuple[StaticEncoder, dict[str, Any]]:
    """The static model distilled from `source` (cached; `progress` follows a distillation), and what was resolved
    (for the manifest)."""
    model_dir = static_model_dir(source, progress)
    resolved = {
        "model": cfg.model,
        "model_path": str(model_dir),
        "static_source": source,
        "device": "cpu",
        "backend": "static",
        "quantization": None,
        "precision": "fp32",
        "max_seq_length": cfg.max_seq_length,
        "batch_size": cfg.batch_size or STATIC_BATCH,
    }
    return StaticEncoder(model_dir, cfg.max_seq_length), resolved


def load_encoder(cfg: EmbedConfig, progress: Progress = NULL_PROGRESS) -> tuple[Encoder, dict[str, Any]]:
    """Load the model for `cfg`; also return what was resolved (for the manifest). `progress` follows the one-off
    distillation of a static model."""
    source = static_source(cfg.model)
    if source is not None:
        return load_static(cfg, source, progress)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise DependencyError("embedding needs sentence-transformers; run `pip install sentence-transformers`") from e
    device = resolve_device(cfg.device)
    backend = resolve_backend(cfg.backend, device)
    model_path = resolve_model(cfg.model)
    int8 = backend == "onnx-int8"
    model: SentenceTransformer | ExportedEncoder
    try:
        if backend == "torch":
            plain = SentenceTransformer(model_path, device=device)
            model = plain.half() if device == "cuda" else plain
        else:
            onnx_dir, file_name = onnx_model_dir(model_path, int8)
            runtime = "openvino" if backend == "openvino" else "onnxruntime"
            model = ExportedEncoder(SentenceTransformer(model_path, device="cpu"), onnx_dir / file_name, runtime)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model {cfg.model}: cannot load a sentence-transformers model: {first_line}") from e
    st = model.model if isinstance(model, ExportedEncoder) else model
    st.max_seq_length = min(cfg.max_seq_length, st.max_seq_length or cfg.max_seq_length)
    if isinstance(model, ExportedEncoder):
        precision = {"bf16": "bf16", "f16": "fp16", "int8": "int8"}.get(model.precision, "fp32")
    else:
        precision = "fp16" if device == "cuda" else "fp32"
    resolved = {
        "model": cfg.model,
        "model_path": model_path,
        "device": device,
        "backend": backend,
        "quantization": "dynamic int8, linear layers per channel, first layer fp32" if int8 else None,
        "precision": precision,
        "max_seq_length": st.max_seq_length,
        "batch_size": cfg.batch_size or (256 if device == "cuda" else 16),
    }
    return model, resolved


def embedding_dim(model: Encoder) -> int:
    """Output dimension of a model (sentence-transformers renamed the method across versions)."""
    if isinstance(model, StaticEncoder):
        return model.dim
    if isinstance(model, ExportedEncoder):
        model = model.model
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter() or 0)


def text_selector(embed_on: str) -> Callable[[tuple[Turn, ...]], str]:
    """The function that picks a sample's text to embed: its prompt (the paper's choice) or all of it."""
    return prompt_text if embed_on == "prompt" else full_text


def encode_texts(model: Encoder, texts: list[str], batch_size: int) -> NDArray[np.float32]:
    """Embed `texts` (each call is sorted by length) into L2-normalised float32 rows."""
    if isinstance(model, ExportedEncoder | StaticEncoder):
        vectors = model.encode(texts, batch_size)
        return unit_rows(vectors)
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def check_embeddings(vectors: NDArray[np.floating[Any]], sample_ids: list[int], where: str) -> None:
    """Raise naming the first sample whose embedding is not finite or has zero norm."""
    bad = first_bad_row(np.linalg.norm(vectors.astype(np.float32), axis=1))
    if bad is not None:
        i, kind = bad
        raise InputError(f"{where}: embedding of sample_id {sample_ids[i]} {kind}; check that sample's text")
