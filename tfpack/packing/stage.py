"""Pack stage: order the samples along the TFP path, tokenize them, cut packs, write shards and a manifest.

Input is a run directory from `tfpack embed`, or input files (embedded first into `OUT_DIR/embed/` with the
default embed settings). Every valid sample ends in exactly one pack (with `--weights`, in one pack per copy;
repeats.jsonl lists those with several) or in `dropped.jsonl` with its reason;
malformed input records skipped with `--on-error skip` are listed in `errors.jsonl`.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.arrays import gather_float32, pair_cosines, unit_rows
from tfpack.config import EmbedConfig, OrderConfig, PackConfig, check_on_error
from tfpack.embedding.stage import embed_texts, run_embed
from tfpack.errors import ConfigError, InputError
from tfpack.ingest.formats import FormatOptions
from tfpack.ingest.readers import STDIN, Location, expand_inputs, file_kind
from tfpack.ingest.samples import batch_conversations, count_samples, iter_sample_batches, source_names
from tfpack.ordering.contamination import (
    NGRAM,
    BenchmarkItems,
    default_threshold,
    find_contamination,
    read_benchmarks,
    sample_texts,
    summarize,
)
from tfpack.ordering.contamination import reason as contamination_reason
from tfpack.ordering.dedup import DedupResult, Duplicates, dedup_run
from tfpack.ordering.plan import WalkPlan
from tfpack.ordering.stage import load_embeddings, order_embeddings
from tfpack.packing.card import write_card, write_megatron_metadata
from tfpack.packing.cut import fit_to_max_len
from tfpack.packing.epochs import epoch_start, pack_ids, reach_of, repeated_pairs
from tfpack.packing.mixture import draw_copies, sample_sources, separate_copies, source_counts, source_weights
from tfpack.packing.packer import pack_path, separate_near_duplicates
from tfpack.packing.shards import pack_row, write_shard
from tfpack.packing.tokenizer import (
    Refusal,
    TokenizedSample,
    Tokenizer,
    encode,
    label_batch,
    load_tokenizer,
    render_batch,
    set_tokenizer_threads,
    template_overhead,
    tokenize_batch,
)
from tfpack.packing.tokenstore import TokenStore
from tfpack.parallel import RayEngine, engine_for
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.version import __version__
from tfpack.workdir import (
    CARD_FILE,
    CONTAMINATION_FILE,
    DATA_DIR,
    DROPPED_FILE,
    EMBED_RUN,
    EPOCH_GLOB,
    ERRORS_FILE,
    IGNORE_INDEX,
    REPEATS_FILE,
    SAMPLES_FILE,
    TOKENS_DIR,
    WORK_DIR,
    atomic_path,
    epoch_dir_name,
    fingerprint_file,
    knn_cache_dir,
    megatron_metadata_paths,
    prepare_out_dir,
    read_manifest,
    rerun_embed,
    shard_name,
    shard_paths,
    short_hash,
    write_jsonl,
    write_manifest,
)

SCHEMA_VERSION = 1


def path_similarities(vectors: NDArray[Any], path: NDArray[np.int64], chunk: int = 65_536) -> NDArray[np.float32]:
    """Cosine similarity of each path sample to the previous one on the path (NaN for the first), chunk by chunk."""
    out = np.full(len(path), np.nan, dtype=np.float32)
    for start in range(1, len(path), chunk):
        cur, prev = path[start : start + chunk], path[start - 1 : start - 1 + chunk]
        out[start : start + len(cur)] = pair_cosines(vectors, cur, prev[: len(cur)])
    return out


Tokenized = Iterator[tuple[list[int], list[TokenizedSample | Refusal]]]


def local_tokenized(samples_file: Path, tokenizer: Tokenizer, pack_cfg: PackConfig) -> Tokenized:
    """(sample ids, per-sample (ids, labels, prompt length) or `Refusal`) per batch, in order, pipelined: while the
    fast tokenizer encodes one batch in a worker thread (Rust, outside the GIL), this thread renders the next batch's
    template and labels the previous one."""
    with ThreadPoolExecutor(1) as pool:
        pending: tuple[list[int], list[Any], Future[list[Any]]] | None = None
        for ids, conversations in iter_sample_batches(samples_file, pack_cfg.batch_size):
            rendered = render_batch(conversations, tokenizer, pack_cfg.train_on)
            encoded = pool.submit(encode, rendered, tokenizer)
            if pending is not None:
                yield pending[0], label_batch(pending[2].result(), pending[1], tokenizer.eos_id)
            pending = (ids, rendered, encoded)
        if pending is not None:
            yield pending[0], label_batch(pending[2].result(), pending[1], tokenizer.eos_id)


class TokenizeWorker:
    """Renders and tokenizes a batch of samples (ids, labels, prompt length, refusal per sample); a Ray actor."""

    def __init__(self, tokenizer: str | None, template: str | None, train_on: str) -> None:
        self.tokenizer = load_tokenizer(tokenizer, template)
        self.train_on = train_on

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = tokenize_batch(batch_conversations(batch), self.tokenizer, self.train_on)
        empty = np.zeros(0, dtype=np.int32)
        done = [(empty, empty, 0, r.reason) if isinstance(r, Refusal) else (*r, "") for r in out]
        return {
            "sample_id": np.asarray(batch["sample_id"]),
            "input_ids": [d[0] for d in done],
            "labels": [d[1] for d in done],
            "prompt_len": np.asarray([d[2] for d in done]),
            "refusal": np.asarray([d[3] for d in done], dtype=object),
        }


def ray_tokenized(samples_file: Path, pack_cfg: PackConfig, engine: RayEngine) -> Tokenized:
    """The same batches tokenized by Ray Data CPU tasks (`--engine ray`)."""
    kwargs = {"tokenizer": pack_cfg.tokenizer, "template": pack_cfg.template, "train_on": pack_cfg.train_on}
    for b in engine.map_batches(samples_file, TokenizeWorker, kwargs, pack_cfg.batch_size):
        results: list[TokenizedSample | Refusal] = [
            Refusal(str(why)) if why else (np.asarray(i, dtype=np.int32), np.asarray(lab, dtype=np.int32), int(p))
            for i, lab, p, why in zip(b["input_ids"], b["labels"], b["prompt_len"], b["refusal"], strict=True)
        ]
        yield b["sample_id"].tolist(), results


class SampleSources:
    """Where samples came from (`FILE:LINE`), from samples.parquet and the embed manifest's inputs; the columns are
    read on the first look-up only (refusals are rare)."""

    def __init__(self, samples_file: Path, inputs: list[dict[str, Any]]) -> None:
        self.samples_file, self.inputs = samples_file, inputs
        self.table: Any = None

    def __call__(self, sample_id: int) -> Location:
        if self.table is None:
            self.table = pq.read_table(self.samples_file, columns=["sample_id", "input_index", "record_index"])
        row = int(np.searchsorted(self.table.column("sample_id").to_numpy(), sample_id))
        if not self.inputs:  # a run directory without its inputs listed: name the stored row
            return Location(str(self.samples_file), "row", row)
        entry = self.inputs[self.table.column("input_index")[row].as_py()]
        unit = entry.get("unit") or {"jsonl": "line", "json": "item", "parquet": "row"}[file_kind(entry["path"])]
        return Location(entry["path"], unit, int(self.table.column("record_index")[row].as_py()))


class TokenizedSamples(NamedTuple):
    store: TokenStore  # every kept sample's ids and labels, by row of samples.parquet
    dropped: list[dict[str, Any]]  # dropped.jsonl entries (too long: see packing/cut.py)
    truncated: int  # samples cut to a prefix
    cut_trained: int  # trained tokens those cuts removed
    refused: list[dict[str, Any]]  # errors.jsonl entries: spans the template did not let tfpack verify


def tokenize_samples(
    samples_file: Path,
    tokenizer: Tokenizer,
    pack_cfg: PackConfig,
    store_dir: Path,
    *,
    progress: Progress = NULL_PROGRESS,
    on_error: str = "fail",
    inputs: list[dict[str, Any]] | None = None,
) -> TokenizedSamples:
    """Tokenize every sample, in batches, into a `TokenStore` in `store_dir`. A sample whose labels cannot be
    verified raises naming it and its source (`on_error='fail'`) or is listed as refused (`'skip'`); it is never
    written with plausible-looking wrong labels."""
    store = TokenStore(store_dir)
    dropped: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    source_of = SampleSources(samples_file, inputs or [])
    truncated = cut_trained = 0
    runner = engine_for(pack_cfg.engine)
    if isinstance(runner, RayEngine):
        batches = ray_tokenized(samples_file, pack_cfg, runner)
    else:
        batches = local_tokenized(samples_file, tokenizer, pack_cfg)
    with progress.task("tokenizing", total=count_samples(samples_file)) as task:
        for ids, results in batches:
            for sample_id, result in zip(ids, results, strict=True):
                if isinstance(result, Refusal):
                    loc = source_of(int(sample_id))
                    if on_error == "fail":
                        raise InputError(
                            f"{loc}: sample_id {sample_id}: {result.reason} (template "
                            f"{tokenizer.template_source}); fix the record, or pass --on-error skip to "
                            "list it in errors.jsonl"
                        )
                    refused.append(
                        {
                            "file": loc.source,
                            loc.unit: loc.index,
                            "sample_id": int(sample_id),
                            "stage": "pack",
                            "reason": result.reason,
                        }
                    )
                    store.skip()
                    continue
                tok, labels, _ = result
                fitted = fit_to_max_len(tok, labels, pack_cfg.max_len, pack_cfg.long)
                if isinstance(fitted, str):
                    dropped.append({"sample_id": int(sample_id), "reason": fitted})
                    store.skip()
                else:
                    truncated += len(fitted.ids) < len(tok)
                    cut_trained += fitted.removed_trained
                    store.add(fitted.ids, fitted.labels)
            task.advance(len(ids))
    store.close()
    return TokenizedSamples(store, dropped, truncated, cut_trained, refused)


def summarise_reasons(left_out: list[dict[str, Any]], top: int = 3) -> str:
    """The commonest reasons in a drop list, counted, their figures as N (`12 longer than max_len, 2 prompt alone is N
    tokens, no room for a response within max_len N`)."""
    import re

    kinds = Counter(re.sub(r"\d+", "N", entry["reason"].split(" (")[0].split(":")[0]) for entry in left_out)
    return ", ".join(f"{count} {reason}" for reason, count in kinds.most_common(top))


def nothing_to_pack(
    out_dir: Path,
    total: int,
    dropped: list[dict[str, Any]],
    refused: list[dict[str, Any]],
    long: str,
    errors: bytes,
    input_errors: int,
) -> InputError:
    """The error for a pack that left every sample out, after writing the lists that say why (dropped.jsonl, and
    errors.jsonl = `errors`: invalid input records and refusals; no manifest, so the directory never looks
    finished): how many, the main reasons, what to change."""
    write_jsonl(out_dir / DROPPED_FILE, dropped)
    with atomic_path(out_dir / ERRORS_FILE) as tmp:
        tmp.write_bytes(errors)
    fixes = []
    if any("benchmark" not in entry for entry in dropped):
        fixes.append("raise --max-len" + (" or pass --long truncate" if long != "truncate" else ""))
    if any("benchmark" in entry for entry in dropped):
        fixes.append("check the --decontaminate files (every sample matched one) or pass --decontaminate-report")
    if refused:
        fixes.append("fix the samples the chat template refuses (or pass another --template)")
    listed = " and ".join(
        str(out_dir / name) for name, rows in ((DROPPED_FILE, dropped), (ERRORS_FILE, refused)) if rows
    )
    invalid = f" (and {input_errors} invalid input records, in {out_dir / ERRORS_FILE})" if input_errors else ""
    return InputError(
        f"{out_dir}: nothing to pack, all {total} samples were left out{invalid} "
        f"({summarise_reasons(dropped + refused)}; listed in {listed}); {'; '.join(fixes)}"
    )


PackSpec = tuple[list[NDArray[np.int32]], list[NDArray[np.int32]], list[int], list[float]]


class ShardCounts(NamedTuple):
    packs: int
    tokens: int
    loss_tokens: int


def build_shard(path: Path, specs: list[PackSpec], attention: str, row_group_packs: int) -> ShardCounts:
    """Assemble packs (ids, labels, sample ids, path sims per sample) and write them as one shard. Self-contained,
    so it runs as a Ray task as well as in-process."""
    rows = [pack_row(ids, labels, members, sims, attention) for ids, labels, members, sims in specs]
    write_shard(path, rows, row_group_packs)
    return ShardCounts(len(rows), sum(r["num_tokens"] for r in rows), sum(r["num_loss_tokens"] for r in rows))


class WrittenShards(NamedTuple):
    tokens: int
    loss_tokens: int
    shards: list[dict[str, Any]]  # the manifest's shard list: file and packs


def write_packs(
    out_dir: Path,
    packs: list[NDArray[np.int64]],
    pack_order: NDArray[np.int64],
    path: NDArray[np.int64],
    tokens: TokenStore,
    sample_ids: NDArray[np.int64],
    path_sims: NDArray[np.float32],
    pack_cfg: PackConfig,
    progress: Progress = NULL_PROGRESS,
) -> WrittenShards:
    """Write packs (positions on `path`, in `pack_order`) as shards; `path_sims` per path position.

    With `--engine ray` each shard is assembled and written by a Ray task (a bounded number in flight, so the driver
    never holds more than a few shards' tokens); `out_dir` must then be reachable from the workers (a shared file
    system on a multi-node cluster).
    """

    def specs_of(first: int) -> list[PackSpec]:
        specs = []
        for p in pack_order[first : first + pack_cfg.shard_packs]:
            members = path[packs[p]]
            samples = [tokens.get(r) for r in members]
            specs.append(
                (
                    [np.array(ids) for ids, _ in samples],
                    [np.array(lab) for _, lab in samples],
                    sample_ids[members].tolist(),
                    path_sims[packs[p]].tolist(),
                )
            )
        return specs

    firsts = list(range(0, len(packs), pack_cfg.shard_packs))
    names = [shard_name(i, len(firsts)) for i in range(len(firsts))]
    (out_dir / DATA_DIR).mkdir(exist_ok=True)
    counts: list[ShardCounts] = []
    with progress.task("writing shards", total=len(packs)) as task:
        calls = (
            (out_dir / name, specs_of(first), pack_cfg.attention, pack_cfg.row_group_packs)
            for name, first in zip(names, firsts, strict=True)
        )
        for count in engine_for(pack_cfg.engine).imap(build_shard, calls):
            counts.append(count)
            task.advance(count.packs)
    shards = [{"file": name, "packs": c.packs} for name, c in zip(names, counts, strict=True)]
    return WrittenShards(sum(c.tokens for c in counts), sum(c.loss_tokens for c in counts), shards)


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
    # Every input checked before anything is created: a failed check leaves nothing behind.
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
    prepare_out_dir(out_dir, "pack", overwrite, [*inputs, *pack_cfg.decontaminate])
    # an overwritten run's shards and metadata (its --max-len may differ, so the metadata file's name too)
    for stale in [*shard_paths(out_dir), *megatron_metadata_paths(out_dir)]:
        stale.unlink()
    for name in (DROPPED_FILE, ERRORS_FILE, CARD_FILE, CONTAMINATION_FILE, REPEATS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for old_epoch in out_dir.glob(EPOCH_GLOB):
        shutil.rmtree(old_epoch)
    if run_source is not None:
        run_dir = run_source
    else:
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
            engine=pack_cfg.engine,
        )
    embed_manifest = read_manifest(run_dir, "embed", rerun_embed(run_dir))
    emb, emb_file, _ = load_embeddings(run_dir)
    # Tokenizing first: a sample the template refuses, or nothing left to pack, stops the run before the ordering.
    store_dir = out_dir / WORK_DIR / TOKENS_DIR
    tokens, dropped, truncated, cut_trained, refused = tokenize_samples(
        run_dir / SAMPLES_FILE,
        tokenizer,
        pack_cfg,
        store_dir,
        progress=progress,
        on_error=on_error,
        inputs=embed_manifest.get("inputs", []),
    )
    errors_src = run_dir / ERRORS_FILE
    errors = (errors_src.read_bytes() if errors_src.is_file() else b"") + b"".join(
        orjson.dumps(entry) + b"\n" for entry in refused
    )
    input_errors, total = int(embed_manifest.get("n_errors", 0)), len(tokens.kept)

    def nothing_left() -> InputError:
        """Every sample left out (by tokenizing, decontamination or weights): the lists written, the store gone."""
        shutil.rmtree(store_dir)
        return nothing_to_pack(out_dir, total, dropped, refused, pack_cfg.long, errors, input_errors)

    if not tokens.kept.any():
        raise nothing_left()
    sample_ids = pq.read_table(run_dir / SAMPLES_FILE, columns=["sample_id"]).column(0).to_numpy()
    skip = ~tokens.kept
    contamination = None
    decontaminate_started = time.perf_counter()
    if benchmarks is not None:
        with progress.task("decontaminating", total=None):
            contamination = decontaminate(benchmarks, run_dir, embed_manifest, emb, pack_cfg, sample_ids, tokens.kept)
        if not pack_cfg.decontaminate_report:
            skip[contamination.rows] = True
            dropped += contamination.entries
            if skip.all():
                raise nothing_left()
    decontaminate_seconds = time.perf_counter() - decontaminate_started
    fingerprint = fingerprint_file(emb_file)
    dedup = None
    if pack_cfg.dedup is not None:
        dedup = dedup_run(
            run_dir,
            embed_manifest,
            emb,
            fingerprint,
            pack_cfg.dedup,
            pack_cfg.dedup_keep,
            pack_cfg.dedup_on,
            order_cfg,
            skip,
            progress,
        )
        dropped += duplicate_entries(dedup.duplicates, sample_ids)
        skip[dedup.duplicates.removed] = True
    names, source_of_row = sample_sources(run_dir / SAMPLES_FILE, embed_manifest.get("inputs", []))
    weights = source_weights(pack_cfg.weights, names)
    eligible = ~skip
    copies = np.where(eligible, draw_copies(weights[source_of_row], pack_cfg.seed), 0)
    not_drawn = np.flatnonzero(eligible & (copies == 0))
    dropped += [
        {
            "sample_id": int(sample_ids[row]),
            "reason": f"weight {weights[source_of_row[row]]:g} of source {names[source_of_row[row]]}: not drawn",
        }
        for row in not_drawn
    ]
    skip[not_drawn] = True
    if skip.all():
        raise nothing_left()
    plan = WalkPlan(skip=skip)
    common = {
        "run_dir": str(run_dir.resolve()),
        "embedding_model": embed_manifest.get("model"),
        **tokenizer_fields(tokenizer),
        "attention": pack_cfg.attention,
        "max_len": pack_cfg.max_len,
        "window": order_cfg.window,
        "config": {"pack": asdict(pack_cfg), "order": asdict(order_cfg)},
    }
    earlier = np.full((0, len(sample_ids)), -1, dtype=np.int64)
    epochs: list[dict[str, Any]] = []
    for epoch in range(pack_cfg.epochs):
        epoch_cfg = replace(
            order_cfg, start=epoch_start(np.flatnonzero(tokens.kept), epoch, order_cfg.start, order_cfg.seed)
        )
        paths = []
        for layer in range(int(copies.max())):  # layer k: the samples with more than k copies (one layer unweighted)
            layer_skip = skip | (copies <= layer)
            layer_start = epoch_start(np.flatnonzero(~layer_skip), layer, epoch_cfg.start, order_cfg.seed)
            ordered = order_embeddings(
                emb,
                replace(epoch_cfg, start=layer_start),
                knn_cache_dir(run_dir, out_dir / WORK_DIR),
                fingerprint,
                progress,
                plan._replace(skip=layer_skip, avoid=earlier, reach=reach_of(earlier), epoch=epoch + layer),
            )
            if layer == 0:
                order_summary = ordered.summary
            paths.append(ordered.path)
        path = np.concatenate(paths)
        path_sims = path_similarities(ordered.vectors, path)
        del ordered  # the float32 embeddings are the largest thing in memory; packing does not need them
        packs = pack_path(tokens.lengths[path], pack_cfg.max_len, pack_cfg.lookahead)
        if pack_cfg.pack_filter is not None:
            packs = separate_near_duplicates(
                packs,
                path,
                tokens.lengths[path],
                pack_cfg.max_len,
                lambda rows: unit_rows(gather_float32(emb, rows)),
                pack_cfg.pack_filter,
            )
        if len(paths) > 1:
            packs = separate_copies(packs, path, tokens.lengths[path], pack_cfg.max_len)
        pack_of = pack_ids(packs, path, len(sample_ids))
        repeated, pairs = repeated_pairs(pack_of, earlier)
        earlier = np.vstack([earlier, pack_of[None]])
        epoch_dir = out_dir / epoch_dir_name(epoch) if pack_cfg.epochs > 1 else out_dir
        epoch_dir.mkdir(exist_ok=True)
        n_tokens, n_loss, shards = write_packs(
            epoch_dir,
            packs,
            np.random.default_rng(pack_cfg.seed + epoch).permutation(len(packs)),
            path,
            tokens,
            sample_ids,
            path_sims,
            pack_cfg,
            progress,
        )
        write_jsonl(epoch_dir / DROPPED_FILE, dropped)
        if pack_cfg.weights:
            repeated_rows = np.flatnonzero(copies > 1)
            write_jsonl(
                epoch_dir / REPEATS_FILE,
                [
                    {"sample_id": int(sample_ids[row]), "copies": int(copies[row]), "source": names[source_of_row[row]]}
                    for row in repeated_rows
                ],
            )
        if contamination is not None:
            write_jsonl(epoch_dir / CONTAMINATION_FILE, contamination.entries)
        with atomic_path(epoch_dir / ERRORS_FILE) as tmp:
            tmp.write_bytes(errors)
        counts = {
            "packs": len(packs),
            "samples": int(len(path)),
            "tokens": int(n_tokens),
            "loss_tokens": int(n_loss),
            "fill_rate": round(n_tokens / (len(packs) * pack_cfg.max_len), 6) if packs else 0.0,
            "dropped": len(dropped),
            "truncated": int(truncated),
            "cut_trained_tokens": int(cut_trained),
            "near_duplicates": sum(d["reason"].startswith(NEAR_DUPLICATE) for d in dropped),
            "contaminated": 0 if contamination is None else len(contamination.entries),
            "input_errors": input_errors,
            "refused": len(refused),
            "input_records": int(embed_manifest.get("n_records", len(sample_ids))),
        }
        manifest = {
            "stage": "pack",
            "schema_version": SCHEMA_VERSION,
            "tfpack_version": __version__,
            **common,
            "threshold": order_summary["threshold"],
            "distance_threshold": order_summary["distance_threshold"],
            "k": order_summary["k"],
            "seed": pack_cfg.seed + epoch,
            "counts": counts,
            "sources": source_counts(names, source_of_row, weights, eligible, path, tokens.lengths[path]),
            **({"weights": dict(zip(names, weights.tolist(), strict=True))} if pack_cfg.weights else {}),
            "order": {key: order_summary[key] for key in ORDER_KEYS} | {"start": epoch_cfg.start},
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
        epochs.append(
            {
                "dir": epoch_dir.name,
                "start": epoch_cfg.start,
                **counts,
                "repeat_rate": round(repeated / max(pairs, 1), 6),
            }
        )
    del tokens
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
        "threshold": order_summary["threshold"],
        "dedup_seconds": 0.0 if dedup is None else dedup.summary["seconds"],
        "decontaminate_seconds": round(decontaminate_seconds, 3),
        "seconds": round(seconds, 3),
        "samples_per_s": round(first["samples"] * pack_cfg.epochs / seconds, 1),
    }


NEAR_DUPLICATE = "near-duplicate of"


class Decontamination(NamedTuple):
    rows: NDArray[np.int64]  # the contaminated samples kept by tokenization, as rows of samples.parquet
    entries: list[dict[str, Any]]  # per row: its dropped.jsonl / contamination.jsonl entry
    summary: dict[str, Any]  # the manifest's `decontamination` section


def decontaminate(
    benchmarks: BenchmarkItems,
    run_dir: Path,
    embed_manifest: dict[str, Any],
    emb: NDArray[Any],
    pack_cfg: PackConfig,
    sample_ids: NDArray[np.int64],
    kept: NDArray[np.bool_],
) -> Decontamination:
    """The samples `kept` by tokenization that copy or paraphrase a benchmark item (see ordering/contamination.py).
    The items are embedded by the run's model; a run of precomputed embeddings has none, so only n-grams are
    checked there (the summary says so)."""
    with_model = embed_manifest["backend"] != "precomputed"
    threshold = pack_cfg.decontaminate_threshold
    if threshold is None:
        threshold = default_threshold(embed_manifest["backend"])
    bench_emb = embed_texts(benchmarks.texts_for(embed_manifest["embed_on"]), embed_manifest) if with_model else None
    hits = find_contamination(
        sample_texts(run_dir / SAMPLES_FILE),
        benchmarks,
        train_emb=emb if with_model else None,
        bench_emb=bench_emb,
        min_cos=threshold,
    )
    rows = np.searchsorted(sample_ids, [hit.sample_id for hit in hits]).astype(np.int64)
    hits = [hit for hit, row in zip(hits, rows, strict=True) if kept[row]]
    rows = rows[kept[rows]]
    entries = [
        {
            "sample_id": int(hit.sample_id),
            "reason": contamination_reason(hit),
            "benchmark": hit.location.source,
            hit.location.unit: hit.location.index,
            "kind": hit.kind,
            **({"cos": round(hit.cos, 6)} if hit.cos is not None else {"shared": hit.shared}),
        }
        for hit in hits
    ]
    summary = {
        "threshold": threshold if with_model else None,
        "ngram": NGRAM,
        "report_only": pack_cfg.decontaminate_report,
        "files": summarize(benchmarks, hits),
    }
    return Decontamination(rows, entries, summary)


ORDER_KEYS = (
    "fallbacks",
    "forced_steps",
    "mean_adjacent_similarity",
    "random_adjacent_similarity",
    "threshold_violations",
)


def tokenizer_fields(tokenizer: Tokenizer) -> dict[str, Any]:
    """What the manifest records of the tokenizer and chat template."""
    special = {name: getattr(tokenizer.hf, f"{name}_id", None) for name in ("eos_token", "pad_token", "bos_token")}
    return {
        "tokenizer": tokenizer.name,
        "tokenizer_hash": short_hash(tokenizer.hf.backend_tokenizer.to_str()),
        "template_source": tokenizer.template_source,
        "template_hash": tokenizer.template_hash,
        "end_of_turn": tokenizer.eot,
        "special_token_ids": {**special, "eos_token_id_used": tokenizer.eos_id},
        "ignore_index": IGNORE_INDEX,
    }


def duplicate_entries(duplicates: Duplicates, sample_ids: NDArray[np.int64]) -> list[dict[str, Any]]:
    """dropped.jsonl entries of the removed near-duplicates, each naming the kept sample it duplicates."""
    return [
        {
            "sample_id": int(sample_ids[row]),
            "reason": f"{NEAR_DUPLICATE} {int(sample_ids[kept])} (cos {cos:.4f})",
            "duplicate_of": int(sample_ids[kept]),
            "cos": round(float(cos), 6),
        }
        for row, kept, cos in zip(
            duplicates.removed,
            duplicates.kept_as[duplicates.removed],
            duplicates.cosine[duplicates.removed],
            strict=True,
        )
    ]


def dedup_summary(dedup: DedupResult, dropped: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's `dedup` section: S, which sample stays, what was compared by which model, how many were
    removed, and group sizes (a kept sample and those removed in its name)."""
    kept_for = Counter(d["duplicate_of"] for d in dropped if "duplicate_of" in d)
    sizes = Counter(n + 1 for n in kept_for.values())
    return {
        **dedup.summary,
        "removed": sum(kept_for.values()),
        "groups": len(kept_for),
        "group_sizes": {str(size): count for size, count in sorted(sizes.items())},
    }
