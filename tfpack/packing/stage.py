"""The packing stage's steps: tokenize every sample into a token store (`tokenize_samples`), and write packs as
shards (`write_packs`). tfpack.pipeline runs them in the job.

Tokenizing renders each sample with the chat template, verifies its loss spans (a sample whose spans cannot be
verified is refused with its reason, never written with plausible-looking wrong labels) and cuts or drops an
over-long one (packing/cut.py). Writing assembles each pack's ids, labels, position ids and segment metadata.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray

from tfpack.arrays import pair_cosines
from tfpack.config import PackConfig
from tfpack.errors import InputError
from tfpack.ingest.readers import Location, file_kind
from tfpack.ingest.samples import batch_conversations, count_samples, iter_sample_batches
from tfpack.packing.cut import fit_to_max_len
from tfpack.packing.shards import pack_row, write_shard
from tfpack.packing.tokenizer import (
    Refusal,
    TokenizedSample,
    Tokenizer,
    encode,
    label_batch,
    load_tokenizer,
    render_batch,
    tokenize_batch,
)
from tfpack.packing.tokenstore import TokenStore
from tfpack.parallel import RayEngine, engine_for
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import (
    DATA_DIR,
    DROPPED_FILE,
    ERRORS_FILE,
    IGNORE_INDEX,
    atomic_path,
    shard_name,
    short_hash,
    write_jsonl,
)


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
