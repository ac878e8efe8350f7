"""Stats: what a pack output (or an embed run) holds, counted independently from the shards themselves."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import unit_rows
from tfpack.config import OrderConfig, PackConfig
from tfpack.errors import ConfigError, StaleArtifactError
from tfpack.ingest.samples import read_labels
from tfpack.ordering.stage import load_embeddings, to_float32
from tfpack.ordering.threshold import resolve_threshold
from tfpack.packing.mixture import sample_sources
from tfpack.report.duplicates import dedup_stats
from tfpack.workdir import (
    SAMPLES_FILE,
    check_out_file,
    classify,
    epoch_dir_name,
    listed_shards,
    manifest_stage,
    read_manifest,
    read_parquet,
    rerun_embed,
    rerun_pack,
)

PNG_MAGIC = b"\x89PNG"


def pack_similarities(unit: NDArray[np.float32], groups: list[NDArray[np.int64]]) -> NDArray[np.float64]:
    """Per group: mean pairwise cosine similarity of its rows (unit vectors); NaN for groups of fewer than 2."""
    out = np.full(len(groups), np.nan)
    for g, rows in enumerate(groups):
        m = len(rows)
        if m >= 2:
            total = unit[rows].astype(np.float64).sum(0)
            out[g] = (total @ total - m) / (m * (m - 1))
    return out


def mean_pairwise_similarity(unit: NDArray[np.float32], groups: list[NDArray[np.int64]]) -> float:
    """Mean over groups of ≥ 2 rows of their mean pairwise cosine similarity (rows are unit vectors)."""
    sims = pack_similarities(unit, groups)
    return float(np.nanmean(sims)) if np.isfinite(sims).any() else float("nan")


def near_duplicate_rate(unit: NDArray[np.float32], groups: list[NDArray[np.int64]], threshold: float | None) -> float:
    """Share of same-pack sample pairs more similar than `threshold` (what the filter is meant to keep apart)."""
    if threshold is None:
        return float("nan")
    close = pairs = 0
    for rows in groups:
        if len(rows) >= 2:
            sims = unit[rows] @ unit[rows].T
            upper = sims[np.triu_indices(len(rows), 1)]
            close += int((np.minimum(upper, 1.0) > threshold).sum())  # duplicates' float32 dots can exceed 1
            pairs += len(upper)
    return close / pairs if pairs else 0.0


def random_packs(members: NDArray[np.int64], sizes: NDArray[Any], seed: int) -> list[NDArray[np.int64]]:
    """The baseline TFP is measured against: `members` shuffled and cut into packs of the same `sizes`."""
    shuffled = np.random.default_rng(seed).permutation(members)
    return np.split(shuffled, np.cumsum(sizes)[:-1])


def histogram(values: NDArray[Any], bins: Sequence[float]) -> dict[str, int]:
    counts, edges = np.histogram(values, bins=bins)
    return {f"{edges[i]:g}-{edges[i + 1]:g}": int(c) for i, c in enumerate(counts)}


def majority_shares(codes: NDArray[np.int64], sizes: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per pack: the share of its most common label, and its number of distinct labels. `codes`: the label code of
    each sample, packs concatenated in order; `sizes`: samples per pack (each >= 1)."""
    pack_of = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    n_labels = int(codes.max()) + 1
    keys, counts = np.unique(pack_of * n_labels + codes, return_counts=True)
    majority = np.zeros(len(sizes), dtype=np.int64)
    np.maximum.at(majority, keys // n_labels, counts)
    return majority / sizes, np.bincount(keys // n_labels, minlength=len(sizes))


def label_stats(ids_per_pack: list[list[int]], labels: dict[int, str], seed: int = 0) -> dict[str, Any]:
    """How the labels of a tabular run spread over the packs: counts of the packed samples, and the mean share of a
    pack's majority label and the share of single-label packs (of 2+ samples), TFP packs vs random packs of the same
    sizes. A majority share well above random's means related-sample packing put one class together."""
    sizes = np.asarray([len(ids) for ids in ids_per_pack])
    packed = [labels[i] for ids in ids_per_pack for i in ids]
    names, codes = np.unique(np.asarray(packed, dtype=object).astype(str), return_inverse=True)
    random_codes = codes[np.random.default_rng(seed).permutation(len(codes))]
    multi = sizes >= 2
    tfp_share, tfp_distinct = majority_shares(codes, sizes)
    random_share, random_distinct = majority_shares(random_codes, sizes)
    counts = np.bincount(codes, minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    return {
        "counts": {str(names[i]): int(counts[i]) for i in order},
        "majority_share": round(float(tfp_share.mean()), 6),
        "random_majority_share": round(float(random_share.mean()), 6),
        "single_label_packs": round(float((tfp_distinct[multi] == 1).mean()), 6) if multi.any() else None,
        "random_single_label_packs": round(float((random_distinct[multi] == 1).mean()), 6) if multi.any() else None,
    }


def pack_stats(out_dir: Path, seed: int = 0, plot: Path | None = None) -> dict[str, Any]:
    """Counts, fill, pack sizes, length histograms and relatedness of a `tfpack pack` output."""
    manifest = read_manifest(out_dir, "pack", f"tfpack pack RUN_DIR -o {out_dir} --overwrite")
    if not Path(manifest["run_dir"]).is_dir():
        raise StaleArtifactError(
            f"{manifest['run_dir']}: the embed run {out_dir} was packed from is gone (stats "
            f"reads its embeddings); restore it, or pack again with --overwrite"
        )
    table = read_parquet(
        listed_shards(out_dir, manifest),
        ["sample_ids", "sample_lengths", "num_tokens", "num_loss_tokens"],
        rerun_pack(out_dir, manifest),
    )
    ids_per_pack = table.column("sample_ids").to_pylist()
    sizes = np.asarray([len(x) for x in ids_per_pack])
    pack_tokens = table.column("num_tokens").to_numpy()
    sample_lengths = np.concatenate(table.column("sample_lengths").to_pylist())
    tokens = int(pack_tokens.sum())
    max_len = int(manifest["max_len"])
    packs = table.num_rows
    row_of = row_of_sample(Path(manifest["run_dir"]))
    groups = [row_of[np.asarray(ids, dtype=np.int64)] for ids in ids_per_pack]
    emb, _, _ = load_embeddings(Path(manifest["run_dir"]))
    vectors = to_float32(emb)
    unit = unit_rows(vectors)
    random_groups = random_packs(np.concatenate(groups), sizes, seed)
    tfp_sims, random_sims = pack_similarities(unit, groups), pack_similarities(unit, random_groups)
    threshold = manifest["threshold"]
    edges = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    summary = {
        "packs": packs,
        "samples": int(sizes.sum()),
        "tokens": tokens,
        "loss_tokens": int(table.column("num_loss_tokens").to_numpy().sum()),
        "fill_rate": round(tokens / (packs * max_len), 6),
        "padding_tokens": packs * max_len - tokens,
        "samples_per_pack": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
        "sample_length_histogram": histogram(sample_lengths, [e for e in edges if e < max_len] + [max_len]),
        "pack_fill_histogram": histogram(pack_tokens / max_len, [0, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0]),
        "dropped": manifest["counts"]["dropped"],
        "truncated": manifest["counts"]["truncated"],
        "cut_trained_tokens": manifest["counts"].get("cut_trained_tokens"),
        "long": manifest.get("config", {}).get("pack", {}).get("long"),
        "input_errors": manifest["counts"].get("input_errors", 0),
        "refused": manifest["counts"].get("refused", 0),
        "max_len": max_len,
        "attention": manifest["attention"],
        "threshold": threshold,
        "window": manifest["window"],
        "k": manifest["k"],
        "embedding_model": manifest["embedding_model"],
        "mean_pack_similarity": round(float(np.nanmean(tfp_sims)), 6) if np.isfinite(tfp_sims).any() else None,
        "random_pack_similarity": round(float(np.nanmean(random_sims)), 6) if np.isfinite(random_sims).any() else None,
        "near_duplicate_rate": round(near_duplicate_rate(unit, groups, threshold), 6),
        "random_near_duplicate_rate": round(near_duplicate_rate(unit, random_groups, threshold), 6),
    }
    packed_ids = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in ids_per_pack])
    sources = source_stats(Path(manifest["run_dir"]), row_of[packed_ids], sample_lengths, manifest)
    if len(sources) > 1 or "weights" in manifest:  # a mixture: what each source brought and what was packed
        summary["sources"] = sources
    labels = read_labels(Path(manifest["run_dir"]) / SAMPLES_FILE)
    if labels is not None:  # a tabular run: how the classes spread over the packs
        summary["labels"] = label_stats(ids_per_pack, labels, seed)
    if "dedup" in manifest:  # what --dedup removed: counted in `dropped`, detailed here
        summary["dedup"] = manifest["dedup"]
    if "decontamination" in manifest:  # per benchmark file: items, contaminated samples by kind
        summary["contaminated"] = manifest["counts"].get("contaminated", 0)
        summary["decontamination"] = manifest["decontamination"]
    pack_filter = manifest.get("config", {}).get("pack", {}).get("pack_filter")
    if pack_filter is not None:  # the share of same-pack pairs above --pack-filter: 0 unless something went wrong
        summary["pack_filter"] = pack_filter
        summary["pack_filter_pair_rate"] = round(near_duplicate_rate(unit, groups, pack_filter), 6)
    if plot is not None:
        from tfpack.report.plots import plot_pack_stats

        plot_pack_stats(plot, pack_tokens / max_len, tfp_sims, random_sims, summary)
        summary["plot"] = str(plot)
    return summary


def source_stats(
    run_dir: Path, packed_rows: NDArray[np.int64], packed_lengths: NDArray[Any], manifest: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per source (input file) of the embed run: its `--weights` weight, samples in the run, samples packed (at least
    once), copies packed, repeats (copies beyond one per sample), tokens, and its shares of the packed copies and
    tokens. `packed_rows` / `packed_lengths`: the embed-run row and token count of every sample entry in the shards."""
    embed_manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
    names, source_of_row = sample_sources(run_dir / SAMPLES_FILE, embed_manifest.get("inputs", []))
    of_entry = source_of_row[packed_rows]
    weights = manifest.get("weights", {})
    total_tokens = max(int(packed_lengths.sum()), 1)
    out = {}
    for i, name in enumerate(names):
        mine = of_entry == i
        copies, distinct = int(mine.sum()), len(np.unique(packed_rows[mine]))
        tokens = int(packed_lengths[mine].sum())
        out[name] = {
            "weight": float(weights.get(name, 1.0)),
            "samples_in": int((source_of_row == i).sum()),
            "samples_packed": distinct,
            "copies_packed": copies,
            "repeats": copies - distinct,
            "tokens": tokens,
            "sample_share": round(copies / max(len(packed_rows), 1), 6),
            "token_share": round(tokens / total_tokens, 6),
        }
    return out


def row_of_sample(run_dir: Path) -> NDArray[np.int64]:
    """Embedding row of each sample_id (-1 for ids with no row)."""
    ids = read_parquet([run_dir / SAMPLES_FILE], ["sample_id"], rerun_embed(run_dir)).column(0).to_numpy()
    row_of = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    row_of[ids] = np.arange(len(ids))
    return row_of


def embed_stats(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Size, model, similarity distribution of random pairs and what `--threshold auto` would pick."""
    manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
    emb, _, _ = load_embeddings(run_dir)
    vectors = to_float32(emb)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(vectors), (2, 100_000))
    keep = i != j
    sims = np.einsum("ij,ij->i", vectors[i[keep]], vectors[j[keep]])
    auto = resolve_threshold(vectors, "auto", seed=seed)
    labels = read_labels(run_dir / SAMPLES_FILE)
    label_counts = {} if labels is None else {"label_counts": dict(Counter(labels.values()).most_common())}
    return {
        "n": manifest["n"],
        "dim": manifest["dim"],
        "model": manifest["model"],
        "backend": manifest["backend"],
        "pair_similarity": (  # None for a one-sample run: no pair
            {f"p{q}": round(float(np.percentile(sims, q)), 4) for q in (1, 2, 10, 50, 90, 99)} if len(sims) else None
        ),
        "auto_threshold": round(float(auto.cosine or 0), 6),
        "auto_distance_threshold": auto.distance,
        **label_counts,
    }


def epochs_stats(out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Stats of each epoch of a `pack --epochs` output, and how often an epoch repeats an earlier one's pairs."""
    manifest = read_manifest(out_dir, "pack-epochs", f"tfpack pack RUN_DIR -o {out_dir} --epochs E")
    per_epoch = []
    for entry in manifest["epochs"]:
        one = pack_stats(out_dir / entry["dir"], seed)
        keys = (
            "packs",
            "samples",
            "fill_rate",
            "mean_pack_similarity",
            "random_pack_similarity",
            "near_duplicate_rate",
        )
        labels = {k: one["labels"][k] for k in ("majority_share", "random_majority_share")} if "labels" in one else {}
        per_epoch.append(
            {"dir": entry["dir"], **{k: one[k] for k in keys}, **labels, "repeat_rate": entry["repeat_rate"]}
        )
    return {"epochs": per_epoch, "max_repeat_rate": max(e["repeat_rate"] for e in per_epoch)}


def check_options(
    path: Path, stage: str, seed: int, plot: Path | None, dedup: PackConfig | None, show: int, overwrite: bool
) -> None:
    """Refuse an option `stats` would ignore for this kind of output, or a value out of range, before any work."""
    OrderConfig(seed=seed)  # an invalid seed raises OptionError, read as --seed
    if show < 0:
        raise ConfigError(f"--show: must be >= 0, got {show}")
    if show and dedup is None:
        raise ConfigError("--show: lists the groups --dedup S finds; pass --dedup S as well")
    if dedup is not None and stage != "embed":
        raise ConfigError(f"--dedup: previews an embed run's near-duplicates; {path} {classify(path).describe()}")
    if plot is not None:
        if stage == "pack-epochs":
            raise ConfigError(f"--plot: draws one packing; pass an epoch, e.g. {path / epoch_dir_name(0)}")
        if stage != "pack":
            raise ConfigError(f"--plot: draws a pack output; {path} {classify(path).describe()}")
        check_out_file(plot, overwrite, [path], flag="--plot", magic=PNG_MAGIC, beside=path)


def stats(
    path: Path,
    seed: int = 0,
    plot: Path | None = None,
    dedup: PackConfig | None = None,
    show: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Stats of a pack output (one packing or `--epochs`) or an embed run directory, whichever `path` is; with
    `dedup` (its dedup, dedup_keep and dedup_on), an embed run's near-duplicate report: what `pack` would remove
    (`show` groups listed); `plot`: a PNG to write (an existing one replaced only with `overwrite`)."""
    stage = manifest_stage(path, "point stats at a finished `tfpack pack` or `tfpack embed` output")
    check_options(path, stage, seed, plot, dedup, show, overwrite)
    if stage == "pack-epochs":
        return epochs_stats(path, seed)
    if stage == "pack":
        return pack_stats(path, seed, plot)
    summary = embed_stats(path, seed)
    if dedup is not None and dedup.dedup is not None:
        summary["near_duplicates"] = dedup_stats(path, dedup.dedup, dedup.dedup_keep, dedup.dedup_on, show)
    return summary
