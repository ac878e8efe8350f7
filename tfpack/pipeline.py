"""The job, as named steps: `tfpack pack`, `tfpack sweep` and the API run it here, so every path gets every step.

    check     options, inputs and the output folder, before anything is written      (workdir, config)
    embed     inputs → samples.parquet + embeddings, or an embed run loaded          (ingest, embedding)
    tokenize  chat template, verified loss spans, over-long samples cut or dropped    (packing.stage)
    filter    benchmark copies and near-duplicates removed; --weights drawn          (filters, packing.mixture)
    order     the TFP path over the samples left                                     (ordering)
    pack      the path cut into packs of at most max_len tokens                      (packing.packer)
    write     shards, drop lists, card, Megatron metadata, manifest last             (packing)

Each step is a function of what the earlier ones returned; `order`, `pack` and `write` run once per epoch. The
parallel parts of a step (tokenizing, writing shards) run in process or on Ray (`--engine ray`, tfpack.parallel).
Step times are returned in the summary's `step_seconds`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.arrays import gather_float32, unit_rows
from tfpack.config import EmbedConfig, OrderConfig, PackConfig, check_on_error
from tfpack.embedding.stage import run_embed
from tfpack.errors import ConfigError, InputError
from tfpack.filters.contamination import BenchmarkItems, read_benchmarks
from tfpack.filters.stage import NEAR_DUPLICATE, Filtered, dedup_summary, filter_samples
from tfpack.ingest.formats import FormatOptions
from tfpack.ingest.readers import STDIN, expand_inputs
from tfpack.ingest.samples import source_names
from tfpack.ordering.plan import WalkPlan
from tfpack.ordering.stage import load_embeddings, order_embeddings
from tfpack.packing.card import write_card, write_megatron_metadata
from tfpack.packing.epochs import epoch_start, pack_ids, reach_of, repeated_pairs
from tfpack.packing.mixture import draw_copies, sample_sources, separate_copies, source_counts, source_weights
from tfpack.packing.packer import pack_path, separate_near_duplicates
from tfpack.packing.stage import (
    TokenizedSamples,
    nothing_to_pack,
    path_similarities,
    tokenize_samples,
    tokenizer_fields,
    write_packs,
)
from tfpack.packing.tokenizer import Tokenizer, load_tokenizer, set_tokenizer_threads, template_overhead
from tfpack.packing.tokenstore import TokenStore
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.report.sweep import threshold_row
from tfpack.version import __version__
from tfpack.workdir import (
    CONTAMINATION_FILE,
    DROPPED_FILE,
    EMBED_RUN,
    ERRORS_FILE,
    REPEATS_FILE,
    SAMPLES_FILE,
    TOKENS_DIR,
    WORK_DIR,
    atomic_path,
    epoch_dir_name,
    fingerprint_file,
    knn_cache_dir,
    prepare_out_dir,
    read_manifest,
    rerun_embed,
    write_jsonl,
    write_manifest,
)

SCHEMA_VERSION = 1
STEPS = ("check", "embed", "tokenize", "filter", "order", "pack", "write")
ORDER_KEYS = (
    "fallbacks",
    "forced_steps",
    "mean_adjacent_similarity",
    "random_adjacent_similarity",
    "threshold_violations",
)


@dataclass
class StepTimes:
    """Seconds spent in each step (summed over epochs): `with times("order"): ...`."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] += time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {step: round(seconds, 3) for step, seconds in self.seconds.items()}


# --- check ---------------------------------------------------------------------------------------------------------


class Job(NamedTuple):
    """What `check` settled: the tokenizer, where the samples come from, the benchmarks to filter against."""

    tokenizer: Tokenizer
    run_source: Path | None  # an embed run given as the input; None: input files, embedded into OUT/.tfpack/
    benchmarks: BenchmarkItems | None


def check_job(sources: list[str], out_dir: Path, pack_cfg: PackConfig, on_error: str, overwrite: bool) -> Job:
    """Every option and input checked, then the output folder prepared: a failed check leaves nothing behind."""
    check_on_error(on_error)
    set_tokenizer_threads(pack_cfg.workers)
    tokenizer = load_tokenizer(pack_cfg.tokenizer, pack_cfg.template)
    overhead = template_overhead(tokenizer)
    if pack_cfg.max_len <= overhead:
        raise ConfigError(
            f"--max-len {pack_cfg.max_len} is not above the template overhead: an empty user/assistant "
            f"exchange already takes {overhead} tokens ({tokenizer.template_source} with "
            f"{tokenizer.name})"
        )
    run_source = Path(sources[0]) if len(sources) == 1 and Path(sources[0]).is_dir() else None
    if run_source is not None:
        listed = read_manifest(run_source, "embed", rerun_embed(run_source)).get("inputs", [])
        source_weights(pack_cfg.weights, sample_sources(run_source / SAMPLES_FILE, listed)[0])
        inputs = [str(run_source)]
    else:
        expanded = expand_inputs(sources)  # once: it notes a file named twice
        source_weights(pack_cfg.weights, source_names([{"path": p} for p in expanded]))
        inputs = [p for p in expanded if p != STDIN]
    benchmarks = read_benchmarks(list(pack_cfg.decontaminate)) if pack_cfg.decontaminate else None
    prepare_out_dir(out_dir, "pack", overwrite, [*inputs, *pack_cfg.decontaminate])  # --overwrite: tfpack's files
    return Job(tokenizer, run_source, benchmarks)


# --- embed ---------------------------------------------------------------------------------------------------------


class EmbedRun(NamedTuple):
    """An embed run, loaded: its directory, manifest, (memory-mapped) embeddings and their fingerprint."""

    dir: Path
    manifest: dict[str, Any]
    emb: NDArray[Any]
    fingerprint: str
    sample_ids: NDArray[np.int64]


def load_run(run_dir: Path) -> EmbedRun:
    manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
    emb, emb_file, _ = load_embeddings(run_dir)
    sample_ids = pq.read_table(run_dir / SAMPLES_FILE, columns=["sample_id"]).column(0).to_numpy()
    return EmbedRun(run_dir, manifest, emb, fingerprint_file(emb_file), sample_ids)


def embed_step(
    sources: list[str],
    out_dir: Path,
    job: Job,
    embed_cfg: EmbedConfig | None,
    formats: FormatOptions | None,
    on_error: str,
    engine: str,
    progress: Progress,
) -> EmbedRun:
    """The given embed run, or the input files embedded into `OUT/.tfpack/embed/` (`embed_cfg`: default settings when
    None)."""
    if job.run_source is not None:
        return load_run(job.run_source)
    run_dir = out_dir / WORK_DIR / EMBED_RUN
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_embed(
        sources,
        run_dir,
        embed_cfg or EmbedConfig(),
        formats or FormatOptions(),
        on_error=on_error,
        progress=progress,
        engine=engine,
    )
    return load_run(run_dir)


# --- tokenize ------------------------------------------------------------------------------------------------------


def input_errors_and_refusals(run: EmbedRun, refused: list[dict[str, Any]]) -> bytes:
    """errors.jsonl's content: the run's invalid input records, then the samples the template refused."""
    errors_src = run.dir / ERRORS_FILE
    previous = errors_src.read_bytes() if errors_src.is_file() else b""
    return previous + b"".join(orjson.dumps(entry) + b"\n" for entry in refused)


# --- filter --------------------------------------------------------------------------------------------------------


class Drawn(NamedTuple):
    """--weights: each source's name, each row's source, its weight per source and each row's number of copies."""

    names: list[str]
    source_of_row: NDArray[np.int32]
    weights: NDArray[np.float64]
    copies: NDArray[np.int64]
    eligible: NDArray[np.bool_]  # rows left after tokenizing and filtering
    dropped: list[dict[str, Any]]  # the rows drawn 0 times


def draw_step(run: EmbedRun, skip: NDArray[np.bool_], pack_cfg: PackConfig) -> Drawn:
    """Copies of each sample left, by its source's weight (one each without --weights)."""
    names, source_of_row = sample_sources(run.dir / SAMPLES_FILE, run.manifest.get("inputs", []))
    weights = source_weights(pack_cfg.weights, names)
    eligible = ~skip
    copies = np.where(eligible, draw_copies(weights[source_of_row], pack_cfg.seed), 0)
    not_drawn = np.flatnonzero(eligible & (copies == 0))
    dropped = [
        {
            "sample_id": int(run.sample_ids[row]),
            "reason": f"weight {weights[source_of_row[row]]:g} of source {names[source_of_row[row]]}: not drawn",
        }
        for row in not_drawn
    ]
    return Drawn(names, source_of_row, weights, copies, eligible, dropped)


# --- order and pack ------------------------------------------------------------------------------------------------


class Ordered(NamedTuple):
    path: NDArray[np.int64]  # rows of samples.parquet, every copy once (layer after layer)
    path_sims: NDArray[np.float32]  # each path position's cosine to the previous one
    summary: dict[str, Any]  # the first layer's `order` summary
    start: int  # the epoch's start row


def order_step(
    run: EmbedRun,
    out_dir: Path,
    kept: NDArray[np.bool_],
    skip: NDArray[np.bool_],
    copies: NDArray[np.int64],
    earlier: NDArray[np.int64],
    epoch: int,
    order_cfg: OrderConfig,
    progress: Progress,
) -> Ordered:
    """The epoch's TFP path: one walk per layer of copies (layer k: the samples with more than k copies), avoiding
    the pairs earlier epochs packed together."""
    epoch_cfg = replace(order_cfg, start=epoch_start(np.flatnonzero(kept), epoch, order_cfg.start, order_cfg.seed))
    plan = WalkPlan(skip=skip)
    paths = []
    summary: dict[str, Any] = {}
    for layer in range(int(copies.max())):
        layer_skip = skip | (copies <= layer)
        layer_start = epoch_start(np.flatnonzero(~layer_skip), layer, epoch_cfg.start, order_cfg.seed)
        ordered = order_embeddings(
            run.emb,
            replace(epoch_cfg, start=layer_start),
            knn_cache_dir(run.dir, out_dir / WORK_DIR),
            run.fingerprint,
            progress,
            plan._replace(skip=layer_skip, avoid=earlier, reach=reach_of(earlier), epoch=epoch + layer),
        )
        if layer == 0:
            summary = ordered.summary
        paths.append(ordered.path)
    path = np.concatenate(paths)
    path_sims = path_similarities(ordered.vectors, path)
    return Ordered(path, path_sims, summary, epoch_cfg.start)


def pack_step(
    run: EmbedRun, path: NDArray[np.int64], lengths: NDArray[np.int64], layers: int, pack_cfg: PackConfig
) -> list[NDArray[np.int64]]:
    """The path cut into packs (positions on `path`); `--pack-filter` and repeated copies moved apart."""
    packs = pack_path(lengths[path], pack_cfg.max_len, pack_cfg.lookahead)
    if pack_cfg.pack_filter is not None:
        packs = separate_near_duplicates(
            packs,
            path,
            lengths[path],
            pack_cfg.max_len,
            lambda rows: unit_rows(gather_float32(run.emb, rows)),
            pack_cfg.pack_filter,
        )
    if layers > 1:
        packs = separate_copies(packs, path, lengths[path], pack_cfg.max_len)
    return packs


# --- write --------------------------------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """What every epoch writes the same: the run, the token store, the drop lists, the filters' and the draw's
    results, and the manifest fields common to all epochs."""

    run: EmbedRun
    tokens: TokenStore
    tokenized: TokenizedSamples  # its counts (truncated, cut_trained) and refusals
    dropped: list[dict[str, Any]]  # every sample left out, with its reason
    errors: bytes  # errors.jsonl
    filtered: Filtered
    drawn: Drawn
    common: dict[str, Any]


def write_epoch(
    epoch_dir: Path,
    epoch: int,
    prep: Prepared,
    ordered: Ordered,
    packs: list[NDArray[np.int64]],
    repeated: int,
    pairs: int,
    pack_cfg: PackConfig,
    progress: Progress,
) -> dict[str, Any]:
    """One epoch's output: shards, the drop lists, the card, Megatron's metadata and the manifest (last); its counts."""
    run, drawn, filtered, dropped = prep.run, prep.drawn, prep.filtered, prep.dropped
    contamination, dedup = filtered.contamination, filtered.dedup
    path = ordered.path
    epoch_dir.mkdir(exist_ok=True)
    n_tokens, n_loss, shards = write_packs(
        epoch_dir,
        packs,
        np.random.default_rng(pack_cfg.seed + epoch).permutation(len(packs)),
        path,
        prep.tokens,
        run.sample_ids,
        ordered.path_sims,
        pack_cfg,
        progress,
    )
    write_jsonl(epoch_dir / DROPPED_FILE, dropped)
    if pack_cfg.weights:
        write_jsonl(
            epoch_dir / REPEATS_FILE,
            [
                {
                    "sample_id": int(run.sample_ids[row]),
                    "copies": int(drawn.copies[row]),
                    "source": drawn.names[drawn.source_of_row[row]],
                }
                for row in np.flatnonzero(drawn.copies > 1)
            ],
        )
    if contamination is not None:
        write_jsonl(epoch_dir / CONTAMINATION_FILE, contamination.entries)
    with atomic_path(epoch_dir / ERRORS_FILE) as tmp:
        tmp.write_bytes(prep.errors)
    counts = {
        "packs": len(packs),
        "samples": int(len(path)),
        "tokens": int(n_tokens),
        "loss_tokens": int(n_loss),
        "fill_rate": round(n_tokens / (len(packs) * pack_cfg.max_len), 6) if packs else 0.0,
        "dropped": len(dropped),
        "truncated": int(prep.tokenized.truncated),
        "cut_trained_tokens": int(prep.tokenized.cut_trained),
        "near_duplicates": sum(d["reason"].startswith(NEAR_DUPLICATE) for d in dropped),
        "contaminated": 0 if contamination is None else len(contamination.entries),
        "input_errors": int(run.manifest.get("n_errors", 0)),
        "refused": len(prep.tokenized.refused),
        "input_records": int(run.manifest.get("n_records", len(run.sample_ids))),
    }
    s = ordered.summary
    weights = drawn.weights
    manifest = {
        "stage": "pack",
        "schema_version": SCHEMA_VERSION,
        "tfpack_version": __version__,
        **prep.common,
        "threshold": s["threshold"],
        "distance_threshold": s["distance_threshold"],
        "k": s["k"],
        "seed": pack_cfg.seed + epoch,
        "counts": counts,
        "sources": source_counts(
            drawn.names, drawn.source_of_row, weights, drawn.eligible, path, prep.tokens.lengths[path]
        ),
        **({"weights": dict(zip(drawn.names, weights.tolist(), strict=True))} if pack_cfg.weights else {}),
        "order": {key: s[key] for key in ORDER_KEYS} | {"start": ordered.start},
        **({"dedup": dedup_summary(dedup, dropped)} if dedup is not None else {}),
        **({"decontamination": contamination.summary} if contamination is not None else {}),
        **(
            {"epoch": epoch, "epochs": pack_cfg.epochs, "repeated_pairs": repeated, "pairs": pairs}
            if pack_cfg.epochs > 1
            else {}
        ),
        "shards": shards,
    }
    write_megatron_metadata(epoch_dir, pack_cfg.max_len)
    write_card(epoch_dir, manifest)
    write_manifest(epoch_dir, manifest)
    return {"dir": epoch_dir.name, "start": ordered.start, **counts, "repeat_rate": round(repeated / max(pairs, 1), 6)}


# --- the job -------------------------------------------------------------------------------------------------------


def run_pack(
    sources: list[str],
    out_dir: Path,
    *,
    pack_cfg: PackConfig,
    order_cfg: OrderConfig,
    embed_cfg: EmbedConfig | None = None,
    formats: FormatOptions | None = None,
    on_error: str = "fail",
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """`tfpack pack`: write `data/train-*.parquet`, `dropped.jsonl`, `errors.jsonl`, the dataset card, Megatron-Bridge's
    packing metadata and finally `manifest.json`; working files (the embed run of input files, the token store) go
    under `.tfpack/`. Input files are embedded first with `embed_cfg` (default settings when None)."""
    started = time.perf_counter()
    times = StepTimes()
    with times("check"):
        job = check_job(sources, out_dir, pack_cfg, on_error, overwrite)
    with times("embed"):
        run = embed_step(sources, out_dir, job, embed_cfg, formats, on_error, pack_cfg.engine, progress)
    # Tokenizing first: a sample the template refuses, or nothing left to pack, stops the run before the ordering.
    store_dir = out_dir / WORK_DIR / TOKENS_DIR
    with times("tokenize"):
        tokenized = tokenize_samples(
            run.dir / SAMPLES_FILE,
            job.tokenizer,
            pack_cfg,
            store_dir,
            progress=progress,
            on_error=on_error,
            inputs=run.manifest.get("inputs", []),
        )
    tokens, dropped, refused = tokenized.store, list(tokenized.dropped), tokenized.refused
    errors = input_errors_and_refusals(run, refused)
    total, input_errors = len(tokens.kept), int(run.manifest.get("n_errors", 0))

    def nothing_left() -> InputError:
        """Every sample left out (by tokenizing, decontamination or weights): the lists written, the store gone."""
        shutil.rmtree(store_dir)
        return nothing_to_pack(out_dir, total, dropped, refused, pack_cfg.long, errors, input_errors)

    if not tokens.kept.any():
        raise nothing_left()
    with times("filter"):
        filtered = filter_samples(
            run.dir,
            run.manifest,
            run.emb,
            run.fingerprint,
            run.sample_ids,
            tokens.kept,
            job.benchmarks,
            pack_cfg,
            order_cfg,
            progress,
        )
        dropped += filtered.dropped
        if filtered.skip.all():
            raise nothing_left()
        drawn = draw_step(run, filtered.skip, pack_cfg)
        dropped += drawn.dropped
        skip = filtered.skip | (drawn.eligible & (drawn.copies == 0))
        if skip.all():
            raise nothing_left()
    common = {
        "run_dir": str(run.dir.resolve()),
        "embedding_model": run.manifest.get("model"),
        **tokenizer_fields(job.tokenizer),
        "attention": pack_cfg.attention,
        "max_len": pack_cfg.max_len,
        "window": order_cfg.window,
        "config": {"pack": asdict(pack_cfg), "order": asdict(order_cfg)},
    }
    prep = Prepared(run, tokens, tokenized, dropped, errors, filtered, drawn, common)
    earlier = np.full((0, len(run.sample_ids)), -1, dtype=np.int64)
    epochs: list[dict[str, Any]] = []
    for epoch in range(pack_cfg.epochs):
        with times("order"):
            ordered = order_step(run, out_dir, tokens.kept, skip, drawn.copies, earlier, epoch, order_cfg, progress)
        threshold = ordered.summary["threshold"]
        with times("pack"):
            packs = pack_step(run, ordered.path, tokens.lengths, int(drawn.copies.max()), pack_cfg)
            pack_of = pack_ids(packs, ordered.path, len(run.sample_ids))
            repeated, pairs = repeated_pairs(pack_of, earlier)
            earlier = np.vstack([earlier, pack_of[None]])
        with times("write"):
            epoch_dir = out_dir / epoch_dir_name(epoch) if pack_cfg.epochs > 1 else out_dir
            epochs.append(write_epoch(epoch_dir, epoch, prep, ordered, packs, repeated, pairs, pack_cfg, progress))
    with times("write"):
        del prep, tokens, tokenized
        shutil.rmtree(store_dir)
        if pack_cfg.epochs > 1:
            write_manifest(out_dir, {"stage": "pack-epochs", "tfpack_version": __version__, "epochs": epochs, **common})
    seconds = time.perf_counter() - started
    first = epochs[0]
    summary = {"out_dir": str(out_dir), **{k: v for k, v in first.items() if k not in ("dir", "start", "repeat_rate")}}
    if pack_cfg.epochs > 1:
        summary["epochs"] = [{k: e[k] for k in ("dir", "packs", "fill_rate", "repeat_rate")} for e in epochs]
    return {
        **summary,
        "embedding_model": run.manifest["model"],
        **({"model_choice": run.manifest["model_choice"]} if "model_choice" in run.manifest else {}),
        "threshold": threshold,
        "dedup_seconds": 0.0 if filtered.dedup is None else filtered.dedup.summary["seconds"],
        "decontaminate_seconds": round(filtered.decontaminate_seconds, 3),
        "seconds": round(seconds, 3),
        "samples_per_s": round(first["samples"] * pack_cfg.epochs / seconds, 1),
        "step_seconds": times.rounded(),
    }


def run_sweep(
    run_dir: Path,
    thresholds: list[str],
    order_cfg: OrderConfig,
    pack_cfg: PackConfig,
    progress: Progress = NULL_PROGRESS,
) -> list[dict[str, Any]]:
    """`tfpack sweep`: the tokenize and filter steps once, then order and pack per threshold (nothing written); one
    summary per threshold, in the order given (report/sweep.py)."""
    run = load_run(run_dir)
    tokenizer = load_tokenizer(pack_cfg.tokenizer, pack_cfg.template)
    benchmarks = read_benchmarks(list(pack_cfg.decontaminate)) if pack_cfg.decontaminate else None
    with tempfile.TemporaryDirectory() as tmp:
        tokenized = tokenize_samples(
            run.dir / SAMPLES_FILE,
            tokenizer,
            pack_cfg,
            Path(tmp),
            progress=progress,
            on_error="skip",
            inputs=run.manifest.get("inputs"),
        )
        kept, lengths = tokenized.store.kept, tokenized.store.lengths
    filtered = filter_samples(
        run.dir, run.manifest, run.emb, run.fingerprint, run.sample_ids, kept, benchmarks, pack_cfg, order_cfg, progress
    )
    left_out = len(tokenized.dropped) + len(filtered.dropped)
    cache_dir = knn_cache_dir(run_dir)
    rows = []
    for value in thresholds:
        walked = order_embeddings(
            run.emb,
            replace(order_cfg, threshold=value),
            cache_dir,
            run.fingerprint,
            progress,
            WalkPlan(skip=filtered.skip),
        )
        packs = pack_path(lengths[walked.path], pack_cfg.max_len, pack_cfg.lookahead)
        rows.append(threshold_row(value, walked, packs, lengths, pack_cfg.max_len, order_cfg.seed))
        rows[-1] |= {"dropped": left_out, "refused": len(tokenized.refused)}
    return rows
