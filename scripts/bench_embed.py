"""CPU embedding throughput: plain sentence-transformers (fp32 torch) vs tfpack's backends, with neighbour agreement.

    python scripts/bench_embed.py --n 2000

Embeds the first N GSM8K train samples (question + "\\n" + answer, as ../shared/golden) with all-MiniLM-L6-v2 and
prints samples/s for each backend, the speed-up over plain sentence-transformers measured in the same run, and
recall@10 of each backend's exact kNN graph against the fp32 graph.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import orjson

from tfpack.config import EmbedConfig
from tfpack.embedding.encoders import encode_texts, load_encoder
from tfpack.embedding.models import resolve_model
from tfpack.ordering.knn import build_knn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"


def recall_at(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    ids_ref, _, _ = build_knn(reference, k, "exact")
    ids_other, _, _ = build_knn(other, k, "exact")
    hits = sum(len(set(a) & set(b)) for a, b in zip(ids_ref.tolist(), ids_other.tolist(), strict=True))
    return hits / ids_ref.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"{DATA} not present")
    rows = [orjson.loads(line) for line in DATA.read_bytes().splitlines()[: args.n]]
    texts = [r["question"] + "\n" + r["answer"] for r in rows]

    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    plain.encode(texts[:64])
    start = time.perf_counter()
    base = plain.encode(texts, normalize_embeddings=True)  # sentence-transformers defaults: batch 32
    t_base = time.perf_counter() - start
    print(f"N={len(texts)} GSM8K question+answer, all-MiniLM-L6-v2, max_seq_length 256, CPU")
    print(f"{'backend':<36}{'samples/s':>10}{'speed-up':>10}{'recall@10':>11}")
    print(f"{'sentence-transformers fp32 (plain)':<36}{len(texts) / t_base:>10.1f}{1.0:>9.2f}×{1.0:>11.3f}")
    for backend in ("torch", "onnx", "onnx-int8", "openvino"):
        model, resolved = load_encoder(EmbedConfig(backend=backend, device="cpu"))
        encode_texts(model, texts[:64], resolved["batch_size"])
        start = time.perf_counter()
        vectors = encode_texts(model, texts, resolved["batch_size"])
        seconds = time.perf_counter() - start
        name = f"tfpack {backend} {resolved['precision']} (batch {resolved['batch_size']})"
        print(f"{name:<36}{len(texts) / seconds:>10.1f}{t_base / seconds:>9.2f}×{recall_at(base, vectors):>11.3f}")


if __name__ == "__main__":
    main()
