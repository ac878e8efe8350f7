"""CPU embedding throughput: plain sentence-transformers (fp32 torch) against every tfpack route, what `--backend
auto` picks, and (with --frontier) the faster approximate routes, with neighbour agreement and the CPU's fp32 ceiling.

    python scripts/bench_embed.py --n 600 --text qa --frontier

Embeds the first N GSM8K train samples with all-MiniLM-L6-v2 (`qa`: question + "\\n" + answer, as ../shared/golden;
`question`: the prompt only, what `tfpack embed` embeds by default). Prints the CPU (model name and the flags that
decide the fast routes), then the fp32 GEMM rate torch reaches on this machine with its threads (the most any fp32
route can do), then per route: samples/s, the speed-up over plain sentence-transformers measured in the same run,
the transformer's achieved GFLOP/s (from the token counts) and recall@10 of the route's exact kNN graph against the
plain fp32 graph.

`openvino` runs at the CPU's native precision (bf16 on CPUs with AVX512-BF16 or AMX); on such a CPU the extra row
`openvino f32 (bf16 off)` shows what a CPU without bf16 gets. The `auto` line is the route `--backend auto` measures
and picks on this CPU (with an empty choice cache). `--frontier` adds routes that trade agreement for speed: a shorter
`max_seq_length`, fewer layers, the static model, and OpenVINO int8 by NNCF post-training quantisation (calibrated on
300 other GSM8K samples; only when nncf is installed, it is not a tfpack dependency).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tfpack.config import EmbedConfig
from tfpack.embedding import routes
from tfpack.embedding.encoders import ExportedEncoder, encode_texts, load_encoder
from tfpack.embedding.models import onnx_model_dir, resolve_model
from tfpack.ordering.knn import build_knn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"
MODEL = "all-MiniLM-L6-v2"


def recall_at(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    ids_ref, _, _ = build_knn(reference, k, "exact")
    ids_other, _, _ = build_knn(other, k, "exact")
    hits = sum(len(set(a) & set(b)) for a, b in zip(ids_ref.tolist(), ids_other.tolist(), strict=True))
    return hits / ids_ref.size


def transformer_flops(lengths: np.ndarray, config: Any) -> float:
    """Multiply-adds x 2 of a BERT-style encoder over sequences of `lengths` tokens: per token and layer the four
    attention projections and the two feed-forward matrices, plus the two attention products (score and mix)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    lengths = lengths.astype(np.float64)
    return float(layers * np.sum(lengths * (2 * (4 * d * d + 2 * d * ff) + 4 * lengths * d)))


def gemm_gflops(d: int, ff: int) -> float:
    """fp32 GFLOP/s of torch's matmul of [4096, d] by [d, ff] on this machine: the fp32 ceiling of the routes."""
    import torch

    a, w = torch.randn(4096, d), torch.randn(d, ff)
    for _ in range(3):
        a @ w
    best = float("inf")
    for _ in range(5):  # the best of 5 rounds: the ceiling, not a moment when a neighbour's job had the cores
        started = time.perf_counter()
        for _ in range(10):
            a @ w
        best = min(best, time.perf_counter() - started)
    return 2 * 4096 * d * ff * 10 / best / 1e9


def timed(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[np.ndarray, float]:
    encode(texts[:32])  # warm-up: first-call allocation and compilation are not throughput
    started = time.perf_counter()
    vectors = encode(texts)
    return vectors, time.perf_counter() - started


def nncf_int8(st: Any, onnx_file: Path, calibration: list[str], out: Path) -> Path | None:
    """OpenVINO IR of the ONNX export with int8 weights and activations by NNCF (transformer preset), or None."""
    try:
        import nncf
        import openvino
    except ImportError:
        return None
    model = openvino.Core().read_model(str(onnx_file))
    names = [port.get_any_name() for port in model.inputs]
    feeds = []
    for start in range(0, len(calibration), 16):
        features = (getattr(st, "preprocess", None) or st.tokenize)(calibration[start : start + 16])
        feeds.append({name: features[name].numpy() for name in names})
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    openvino.save_model(quantized, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--text", choices=("qa", "question"), default="qa")
    parser.add_argument("--frontier", action="store_true", help="also time the approximate routes")
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} not present")
    rows = [orjson.loads(line) for line in DATA.read_bytes().splitlines()[: args.n + 300]]
    all_texts = [r["question"] + "\n" + r["answer"] if args.text == "qa" else r["question"] for r in rows]
    texts, calibration = all_texts[: args.n], all_texts[args.n :]

    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(resolve_model(MODEL), device="cpu")
    config = plain[0].auto_model.config
    lengths = np.minimum([len(ids) for ids in plain.tokenizer(texts)["input_ids"]], plain.max_seq_length)
    flops = transformer_flops(lengths, config)
    base, t_base = timed(lambda t: plain.encode(t, normalize_embeddings=True), texts)  # ST defaults: batch 32
    ceiling = gemm_gflops(config.hidden_size, config.intermediate_size)
    print(f"CPU: {routes.cpu_identity()}")
    print(
        f"fp32 GEMM ceiling (torch, [4096,{config.hidden_size}]x[{config.hidden_size},{config.intermediate_size}]): "
        f"{ceiling:.1f} GFLOP/s"
    )
    print(
        f"N={len(texts)} GSM8K {args.text}, {MODEL}, tokens/text mean {lengths.mean():.0f} (max_seq_length "
        f"{plain.max_seq_length}), {flops / len(texts) / 1e9:.3f} GFLOP/text"
    )
    print(f"{'route':<44}{'samples/s':>10}{'speed-up':>10}{'GFLOP/s':>9}{'% ceil':>8}{'recall@10':>11}")

    def report(name: str, seconds: float, vectors: np.ndarray, work: float | None = flops) -> None:
        rate = f"{work / seconds / 1e9:>9.1f}{work / seconds / 1e9 / ceiling:>8.0%}" if work else f"{'-':>9}{'-':>8}"
        print(
            f"{name:<44}{len(texts) / seconds:>10.1f}{t_base / seconds:>9.2f}×{rate}{recall_at(base, vectors):>11.3f}"
        )

    report("sentence-transformers fp32 (plain)", t_base, base)
    model_path = resolve_model(MODEL)
    onnx_dir, onnx_file = onnx_model_dir(model_path, int8=False)
    for backend in ("torch", "onnx", "onnx-int8", "openvino"):
        model, resolved = load_encoder(EmbedConfig(backend=backend, device="cpu"))
        vectors, seconds = timed(lambda t, m=model, b=resolved["batch_size"]: encode_texts(m, t, b), texts)
        report(f"tfpack {backend} {resolved['precision']} (batch {resolved['batch_size']})", seconds, vectors)
        if backend == "openvino" and resolved["precision"] != "fp32":
            f32 = ExportedEncoder(
                SentenceTransformer(model_path, device="cpu"), onnx_dir / onnx_file, "openvino", "f32"
            )
            vectors, seconds = timed(lambda t, m=f32, b=resolved["batch_size"]: encode_texts(m, t, b), texts)
            report("tfpack openvino f32 (bf16 off)", seconds, vectors)
    with tempfile.TemporaryDirectory() as cache:
        routes.cache_root = lambda: Path(cache)  # an empty choice cache: measure as a first run here would
        picked, record = routes.choose_backend(EmbedConfig(device="cpu"), routes.MEASURE_FROM_SAMPLES, lambda: texts)
    timings = ", ".join(f"{k} {v:.1f}/s" for k, v in record["samples_per_s"].items())
    print(f"--backend auto on this CPU picks: {picked} (its measurement on {len(texts)} texts: {timings})")
    if not args.frontier:
        return
    print("frontier (approximate routes):")
    full = plain.max_seq_length
    for max_len in (128, 64):
        plain.max_seq_length = max_len
        vectors, seconds = timed(lambda t: plain.encode(t, normalize_embeddings=True), texts)
        report(
            f"torch fp32, max_seq_length {max_len}",
            seconds,
            vectors,
            transformer_flops(np.minimum(lengths, max_len), config),
        )
    plain.max_seq_length = full
    layers = plain[0].auto_model.encoder.layer
    for kept in (4, 3):
        plain[0].auto_model.encoder.layer = layers[:kept]
        vectors, seconds = timed(lambda t: plain.encode(t, normalize_embeddings=True), texts)
        report(f"torch fp32, first {kept} of {len(layers)} layers", seconds, vectors, flops * kept / len(layers))
    plain[0].auto_model.encoder.layer = layers
    static, resolved = load_encoder(EmbedConfig(model="static"))
    vectors, seconds = timed(lambda t: encode_texts(static, t, resolved["batch_size"]), texts)
    report("tfpack static (--model static)", seconds, vectors, None)
    with tempfile.TemporaryDirectory() as tmp:
        ir = nncf_int8(plain, onnx_dir / onnx_file, calibration, Path(tmp) / "int8.xml")
        if ir is None:
            print("openvino NNCF int8: skipped (pip install nncf to measure it)")
            return
        int8 = ExportedEncoder(SentenceTransformer(model_path, device="cpu"), ir, "openvino")
        vectors, seconds = timed(lambda t: encode_texts(int8, t, 16), texts)
        report("openvino int8 (NNCF, transformer preset)", seconds, vectors)


if __name__ == "__main__":
    main()
