"""Stats: what a pack output (or an embed run) holds, counted independently from the shards themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.errors import StaleArtifactError
from tfpack.order import load_embeddings, to_float32
from tfpack.threshold import resolve_threshold
from tfpack.workdir import MANIFEST, read_manifest


def mean_pairwise_similarity(unit: NDArray[np.float32], groups: list[NDArray[np.int64]]) -> float:
    """Mean over groups of ≥ 2 rows of their mean pairwise cosine similarity (rows are unit vectors)."""
    values = []
    for rows in groups:
        m = len(rows)
        if m < 2:
            continue
        v = unit[rows].astype(np.float64)
        total = v.sum(0)
        values.append((total @ total - m) / (m * (m - 1)))
    return float(np.mean(values)) if values else float("nan")


def pack_stats(out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Counts, fill, pack sizes and relatedness of a `tfpack pack` output."""
    manifest = read_manifest(out_dir, "pack", f"tfpack pack RUN_DIR -o {out_dir}")
    table = pq.read_table(sorted(out_dir.glob("part-*.parquet")), columns=["sample_ids", "num_tokens", "num_loss_tokens"])
    sizes = np.asarray([len(x) for x in table.column("sample_ids").to_pylist()])
    tokens = int(table.column("num_tokens").to_numpy().sum())
    max_len = int(manifest["max_len"])
    packs = table.num_rows
    row_of = _row_of_sample(Path(manifest["run_dir"]))
    groups = [row_of[np.asarray(ids, dtype=np.int64)] for ids in table.column("sample_ids").to_pylist()]
    emb, _, _ = load_embeddings(Path(manifest["run_dir"]))
    vectors = to_float32(emb)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    shuffled = np.random.default_rng(seed).permutation(np.concatenate(groups))
    random_groups = np.split(shuffled, np.cumsum(sizes)[:-1])
    return {
        "packs": packs,
        "samples": int(sizes.sum()),
        "tokens": tokens,
        "loss_tokens": int(table.column("num_loss_tokens").to_numpy().sum()),
        "fill_rate": round(tokens / (packs * max_len), 6),
        "padding_tokens": packs * max_len - tokens,
        "samples_per_pack": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "dropped": manifest["counts"]["dropped"],
        "truncated": manifest["counts"]["truncated"],
        "max_len": max_len,
        "threshold": manifest["threshold"],
        "window": manifest["window"],
        "k": manifest["k"],
        "embedding_model": manifest["embedding_model"],
        "mean_pack_similarity": round(mean_pairwise_similarity(unit, groups), 6),
        "random_pack_similarity": round(mean_pairwise_similarity(unit, random_groups), 6),
    }


def _row_of_sample(run_dir: Path) -> NDArray[np.int64]:
    """Embedding row of each sample_id (-1 for ids with no row)."""
    ids = pq.read_table(run_dir / "samples.parquet", columns=["sample_id"]).column(0).to_numpy()
    row_of = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    row_of[ids] = np.arange(len(ids))
    return row_of


def embed_stats(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Size, model, similarity distribution of random pairs and what `--threshold auto` would pick."""
    manifest = read_manifest(run_dir, "embed", f"tfpack embed INPUT... -o {run_dir}")
    emb, _, _ = load_embeddings(run_dir)
    vectors = to_float32(emb)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(vectors), (2, 100_000))
    keep = i != j
    sims = np.einsum("ij,ij->i", vectors[i[keep]], vectors[j[keep]])
    auto = resolve_threshold(vectors, "auto", seed=seed)
    return {
        "n": manifest["n"],
        "dim": manifest["dim"],
        "model": manifest["model"],
        "backend": manifest["backend"],
        "pair_similarity": {f"p{q}": round(float(np.percentile(sims, q)), 4) for q in (1, 2, 10, 50, 90, 99)},
        "auto_threshold": round(float(auto.cosine or 0), 6),
        "auto_distance_threshold": auto.distance,
    }


def stats(path: Path, seed: int = 0) -> dict[str, Any]:
    """Stats of a pack output or an embed run directory, whichever `path` is."""
    if not (path / MANIFEST).is_file():
        raise StaleArtifactError(f"{path}: no manifest.json; point stats at a finished `tfpack pack` or `tfpack embed` output")
    import orjson

    stage = orjson.loads((path / MANIFEST).read_bytes()).get("stage")
    return pack_stats(path, seed) if stage == "pack" else embed_stats(path, seed)
