"""Loading and running a sentence-transformers model: torch, or its ONNX export in OpenVINO or ONNX Runtime.

OpenVINO (`openvino`, the default on CPU when installed) runs bf16 on CPUs with native bf16 and fp32 elsewhere;
ONNX Runtime runs the export as it is (`onnx`, exact fp32; `onnx-int8`, dynamic int8 linear layers). Every encoder
returns L2-normalised float32 rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import first_bad_row, unit_rows
from tfpack.config import EmbedConfig
from tfpack.embedding.models import (
    onnx_model_dir,
    resolve_backend,
    resolve_device,
    resolve_model,
    static_model_dir,
    static_source,
)
from tfpack.errors import ConfigError, DependencyError, InputError
from tfpack.ingest.formats import Turn, full_text, prompt_text

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

STATIC_BATCH = 1024  # texts per model2vec call: tokenizing dominates, larger batches only hold more memory


class ExportedEncoder:
    """A sentence-transformers model whose transformer runs from its ONNX export, in OpenVINO or ONNX Runtime.

    Tokenizing and the modules after the transformer (pooling, normalisation) stay the model's own, so any model
    whose first module is a text Transformer works. OpenVINO picks bf16 on CPUs with native bf16 (AVX512-BF16,
    AMX) and fp32 elsewhere; ONNX Runtime runs the graph as exported (fp32, or int8 linear layers). The precision is
    recorded in the manifest.
    """

    def __init__(self, model: SentenceTransformer, onnx_file: Path, runtime: str) -> None:
        self.model = model
        self.preprocess = getattr(model, "preprocess", None) or model.tokenize
        if runtime == "openvino":
            try:
                import openvino
            except ImportError as e:
                raise DependencyError("--backend openvino needs OpenVINO; run `pip install openvino`") from e
            compiled = openvino.Core().compile_model(str(onnx_file), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
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
    """A model2vec static model: each text is the mean of its tokens' distilled vectors (no transformer), so CPU
    throughput is that of the tokenizer; see `models.static_model_dir`."""

    def __init__(self, model_dir: Path, max_seq_length: int) -> None:
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(model_dir))
        self.max_seq_length = max_seq_length
        self.dim = int(self.model.dim)

    def encode(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        return self.model.encode(texts, max_length=self.max_seq_length, batch_size=batch_size).astype(np.float32)


Encoder = Union["SentenceTransformer", ExportedEncoder, StaticEncoder]


def load_static(cfg: EmbedConfig, source: str) -> tuple[StaticEncoder, dict[str, Any]]:
    """The static model distilled from `source` (cached), and what was resolved (for the manifest)."""
    model_dir = static_model_dir(source)
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


def load_encoder(cfg: EmbedConfig) -> tuple[Encoder, dict[str, Any]]:
    """Load the model for `cfg`; also return what was resolved (for the manifest)."""
    source = static_source(cfg.model)
    if source is not None:
        return load_static(cfg, source)
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
