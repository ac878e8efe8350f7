"""Near-duplicate removal (`--dedup S`): a sample is removed only when a sample that is kept is a near-duplicate of it.

The rule (SemHash's): samples claim to be kept in `rank` order (`--dedup-keep first`: input order; `longest`: most
characters, then input order); a sample is removed iff a sample already kept has float64 cosine >= S to it, and is
reported with the most similar such kept sample (ties: the better rank) and their cosine, always >= S. So no two kept
samples are near-duplicates and no removal rests on a chain of pairs. Samples in `skip` (already left out) take no
part.

Pairs come from the kNN graph: its float32 similarities >= S - `_SLACK`, each re-checked in float64. A row whose k-th
neighbour is still that close may have more near-duplicates than the graph holds, so its pairs are found again by
an exact scan of every row (`scan_rows`): no pair is missed for want of k.

Example: cosines a-b 0.97, b-c 0.96, a-c 0.93, S 0.95, `first` → `a` kept, `b` removed (0.97 to `a`), `c` kept
(its only pair >= S is with `b`, which is gone).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from tfpack.arrays import gather_float32
from tfpack.config import DEFAULT_MODEL, EmbedConfig, OrderConfig
from tfpack.ingest.formats import full_text, prompt_text
from tfpack.ingest.samples import iter_sample_batches
from tfpack.ordering.knn import as_float32, build_knn, cached_knn, import_faiss
from tfpack.progress import NULL_PROGRESS, Progress
from tfpack.workdir import KNN_DIR, SAMPLES_FILE

_SLACK = 1e-3  # float32 similarities this far below S are re-checked too
_SCAN_ROWS = 2048  # rows scanned per range search (its hits: at most 2048 x _SCAN_BLOCK, as the numpy scan had)
_SCAN_BLOCK = 32_768  # rows of `vectors` per flat index searched
_PAIR_CHUNK = 16_384  # pairs per float64 re-check (its rows gathered at once)
# Candidates for the full model: rows whose nearest static neighbour is >= S - CANDIDATE_MARGIN. On GSM8K every
# pair the full model puts >= S is >= S - 0.07 by the static model (prompts, S 0.95; docs/benchmarks.md "Dedup").
CANDIDATE_MARGIN = 0.1


class Duplicates(NamedTuple):
    """Per sample: the kept row it duplicates (-1 when it is kept, or took no part) and their float64 cosine."""

    kept_as: NDArray[np.int64]
    cosine: NDArray[np.float64]

    @property
    def removed(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.kept_as >= 0)

    def group_sizes(self) -> NDArray[np.int64]:
        """Size of each group of two or more samples: a kept sample and those removed in its name."""
        counts = np.bincount(self.kept_as[self.kept_as >= 0])
        return counts[counts > 0] + 1


def exact_cosines(vectors: NDArray[Any], a: NDArray[np.int64], b: NDArray[np.int64]) -> NDArray[np.float64]:
    """Float64 cosine of rows `a[i]` and `b[i]` (as stored: float32 or float16), a chunk of pairs at a time: the
    chunk's rows are gathered once and the float64 dot products and norms taken in a kernel, without a copy per
    pair (millions of pairs on templated data)."""
    out = np.empty(len(a), dtype=np.float64)
    chunk = _PAIR_CHUNK
    used = np.zeros(len(vectors), dtype=np.bool_)  # the chunk's rows, found without sorting its ids
    local = np.zeros(len(vectors), dtype=np.int64)
    for start in range(0, len(a), chunk):
        ca, cb = a[start : start + chunk], b[start : start + chunk]
        used[:] = False
        used[ca] = used[cb] = True
        rows = np.flatnonzero(used)
        local[rows] = np.arange(len(rows))
        block = gather_float32(vectors, rows)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        out[start : start + len(ca)] = _cosines64(block, norms, local[ca], local[cb])
    return out


@numba.njit(cache=True, parallel=True)
def _cosines64(rows: Any, norms: Any, a: Any, b: Any) -> Any:  # pragma: no cover - compiled
    """Per pair i: the float64 dot product of `rows[a[i]]` and `rows[b[i]]` over their float64 `norms`."""
    out = np.empty(len(a), dtype=np.float64)
    for i in numba.prange(len(a)):
        x, y = rows[a[i]], rows[b[i]]
        dot = 0.0
        for t in range(len(x)):
            dot += np.float64(x[t]) * np.float64(y[t])
        out[i] = dot / (norms[a[i]] * norms[b[i]])
    return out


def saturated_rows(nbr_ids: NDArray[Any], nbr_sims: NDArray[Any], min_cos: float) -> NDArray[np.int64]:
    """Rows whose k-th (last) neighbour is still >= `min_cos` - slack: the graph may not hold all their pairs."""
    last_ids, last_sims = np.asarray(nbr_ids[:, -1]), np.asarray(nbr_sims[:, -1])
    return np.flatnonzero((last_ids >= 0) & (last_sims >= min_cos - _SLACK)).astype(np.int64)


def scan_rows(
    vectors: NDArray[Any], rows: NDArray[np.int64], min_cos: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every pair (row, other) with float32 inner product >= `min_cos` - slack, other != row: an exact scan of all
    rows of `vectors` (unit rows, possibly memory-mapped) for each of `rows`, a block of rows at a time (faiss's
    range search over a flat index: BLAS products, hits collected in its threads)."""
    faiss = import_faiss()
    found_a, found_b = [], []
    for first in range(0, len(vectors), _SCAN_BLOCK):
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(as_float32(vectors[first : first + _SCAN_BLOCK]))
        for start in range(0, len(rows), _SCAN_ROWS):
            queries = rows[start : start + _SCAN_ROWS]
            lims, _, hits = index.range_search(gather_float32(vectors, queries), min_cos - _SLACK)
            qi = np.repeat(np.arange(len(queries)), np.diff(lims).astype(np.int64))
            other = hits.astype(np.int64) + first
            own = other != queries[qi]
            found_a.append(queries[qi][own])
            found_b.append(other[own])
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(found_a), np.concatenate(found_b)) if found_a else (empty, empty)


def close_pairs(
    vectors: NDArray[Any],
    nbr_ids: NDArray[Any],
    nbr_sims: NDArray[Any],
    min_cos: float,
    skip: NDArray[np.bool_],
    chunk: int = 65_536,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Every pair (a < b, neither in `skip`) with float64 cosine >= `min_cos`, found on the graph and completed by
    `scan_rows` for its saturated rows; returns (a, b, cosine)."""
    found_a, found_b = [], []
    for start in range(0, len(nbr_ids), chunk):
        ids = np.asarray(nbr_ids[start : start + chunk])
        sims = np.asarray(nbr_sims[start : start + chunk])
        rows, cols = np.nonzero((sims >= min_cos - _SLACK) & (ids >= 0))
        found_a.append(rows.astype(np.int64) + start)
        found_b.append(ids[rows, cols].astype(np.int64))
    full = saturated_rows(nbr_ids, nbr_sims, min_cos)
    full = full[~skip[full]]
    if full.size:
        a, b = scan_rows(vectors, full, min_cos)
        found_a.append(a)
        found_b.append(b)
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    a, b = np.minimum(a, b), np.maximum(a, b)
    ok = ~skip[a] & ~skip[b]
    a, b = a[ok], b[ok]
    if not a.size:
        return a, b, np.zeros(0, dtype=np.float64)
    n = np.int64(len(nbr_ids))
    key = np.sort(a * n + b)  # sorted and unique: faster than np.unique on millions of pairs
    key = key[np.r_[True, key[1:] != key[:-1]]]
    a, b = key // n, key % n
    cos = exact_cosines(vectors, a, b)
    close = cos >= min_cos
    return a[close], b[close], cos[close]


@numba.njit(cache=True)
def _keep_greedy(
    order: Any, indptr: Any, others: Any, cos: Any, rank: Any, kept_as: Any, cosine: Any
) -> None:  # pragma: no cover - compiled
    """Visit rows in `order`: a row with a kept neighbour (CSR `indptr`/`others`/`cos`) is removed in the name of
    the most similar one (ties: lower rank); else it is kept. `kept_as` starts at -1; -2 marks a kept row."""
    for row in order:
        best, best_cos = -1, -np.inf
        for p in range(indptr[row], indptr[row + 1]):
            other = others[p]
            if kept_as[other] == -2 and (cos[p] > best_cos or (cos[p] == best_cos and rank[other] < rank[best])):
                best, best_cos = other, cos[p]
        if best >= 0:
            kept_as[row] = best
            cosine[row] = best_cos
        else:
            kept_as[row] = -2


def keep_greedy(
    n: int, a: NDArray[np.int64], b: NDArray[np.int64], cos: NDArray[np.float64], rank: NDArray[np.int64]
) -> Duplicates:
    """The module's rule over the near-duplicate pairs (`a[i]`, `b[i]`, cosine `cos[i]` >= S) of `n` rows: rows
    claim to be kept in `rank` order; a row with a kept near-duplicate is removed in its name."""
    left = np.concatenate([a, b])
    right = np.concatenate([b, a])
    both = np.concatenate([cos, cos])
    by_row = np.argsort(left, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(left, minlength=n), out=indptr[1:])
    members = np.unique(left)
    order = members[np.argsort(rank[members], kind="stable")]
    kept_as = np.full(n, -1, dtype=np.int64)
    cosine = np.full(n, np.nan)
    _keep_greedy(order, indptr, right[by_row], both[by_row], np.asarray(rank, dtype=np.int64), kept_as, cosine)
    kept_as[kept_as == -2] = -1
    return Duplicates(kept_as, cosine)


def near_duplicates(
    vectors: NDArray[Any],
    nbr_ids: NDArray[Any],
    nbr_sims: NDArray[Any],
    min_cos: float,
    rank: NDArray[np.int64],
    skip: NDArray[np.bool_] | None = None,
) -> Duplicates:
    """The module's rule at cosine `min_cos` over `vectors` (unit rows) and their kNN graph."""
    n = len(vectors)
    skip = np.zeros(n, dtype=np.bool_) if skip is None else skip
    a, b, cos = close_pairs(vectors, nbr_ids, nbr_sims, min_cos, skip)
    return keep_greedy(n, a, b, cos, rank)


def keep_rank(keep: str, lengths: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
    """Rank of each row for `--dedup-keep`: `first` by row (input order), `longest` by most `lengths`, then row.

    >>> keep_rank("longest", np.array([5, 9, 9, 2])).tolist()
    [2, 0, 1, 3]
    """
    rows = np.arange(len(lengths))
    if keep == "first":
        return rows
    rank = np.empty(len(lengths), dtype=np.int64)
    rank[np.lexsort((rows, -np.asarray(lengths, dtype=np.int64)))] = rows
    return rank


def proposed_duplicates(
    proposal: NDArray[Any],
    nbr_ids: NDArray[Any],
    nbr_sims: NDArray[Any],
    min_cos: float,
    rank: NDArray[np.int64],
    embed_rows: Callable[[NDArray[np.int64]], NDArray[np.float32]],
    skip: NDArray[np.bool_],
    k: int = OrderConfig.k,
    margin: float = CANDIDATE_MARGIN,
) -> tuple[Duplicates, dict[str, int]]:
    """The rule at `min_cos` on the cosines of a deciding model, which embeds only the candidates: the rows whose
    nearest neighbour on the `proposal` vectors' kNN graph (a static model's) is >= `min_cos - margin`.
    `embed_rows(rows)` gives the deciding model's unit vectors of the candidate rows (sorted); their own kNN graph
    (k neighbours, completed as `close_pairs` does) gives every candidate pair >= `min_cos` by that model. Sound as
    far as the static model rates every pair the deciding model puts >= S at >= S - margin (scripts/bench_dedup.py
    measures it). Also returns how many rows were candidates."""
    n = len(proposal)
    first = np.asarray(nbr_sims[:, 0])
    candidates = np.flatnonzero((first >= min_cos - margin - _SLACK) & (np.asarray(nbr_ids[:, 0]) >= 0) & ~skip)
    counts = {"candidates": len(candidates)}
    kept_as = np.full(n, -1, dtype=np.int64)
    cosine = np.full(n, np.nan)
    if len(candidates) < 2:
        return Duplicates(kept_as, cosine), counts
    vectors = embed_rows(candidates)
    ids, sims, _ = build_knn(vectors, min(k, len(candidates) - 1), "auto")
    found = near_duplicates(vectors, ids, sims, min_cos, rank[candidates])
    kept_as[candidates] = np.where(found.kept_as >= 0, candidates[found.kept_as], -1)
    cosine[candidates] = found.cosine
    return Duplicates(kept_as, cosine), counts


class Decider(NamedTuple):
    """The full model that decides what a static run's model proposes, by name, and its encoder (loaded on first
    use; unit float32 rows; each distinct text embedded once; `what` names the texts on the progress bar)."""

    name: str
    encode: Callable[..., NDArray[np.float32]]  # (texts, what="texts") -> [len(texts), dim]


def deciding_model(embed_cfg: EmbedConfig, progress: Progress = NULL_PROGRESS) -> Decider:
    """The full model a run's filters (dedup, decontamination) decide with: a `--model static[:SOURCE]` run's source
    model, which decides what the static model proposes, so a threshold means the same for every model; else the
    run's own model. Its embedding shows on `progress` ("embedding 980 dedup candidates with all-MiniLM-L6-v2"):
    on a CPU it is the slow part of a static run's filters."""
    from tfpack.embedding.encoders import encode_texts, load_encoder
    from tfpack.embedding.models import static_source
    from tfpack.embedding.stage import chunk_rows

    source = static_source(embed_cfg.model)
    name = (embed_cfg.model.partition(":")[2] or DEFAULT_MODEL) if source else embed_cfg.model

    @functools.cache
    def loaded() -> tuple[Any, dict[str, Any]]:
        return load_encoder(EmbedConfig(**{**vars(embed_cfg), "model": source or embed_cfg.model}))

    def encode(texts: list[str], what: str = "texts") -> NDArray[np.float32]:
        """Each distinct text is embedded once (exact copies get the same vector: cosine 1)."""
        model, resolved = loaded()
        first: dict[str, int] = {}
        copy_of = np.fromiter((first.setdefault(text, len(first)) for text in texts), np.int64, len(texts))
        distinct = list(first)
        parts = []
        chunk = chunk_rows(resolved["batch_size"])  # as `embed` chunks its model calls and progress
        with progress.task(f"embedding {len(distinct):,} {what} with {name}", total=len(distinct)) as task:
            for start in range(0, len(distinct), chunk):
                parts.append(encode_texts(model, distinct[start : start + chunk], resolved["batch_size"]))
                task.advance(len(parts[-1]))
        return np.concatenate(parts)[copy_of] if parts else np.zeros((0, 0), dtype=np.float32)

    return Decider(name, encode)


class DedupResult(NamedTuple):
    duplicates: Duplicates
    summary: dict[str, Any]  # the manifest's `dedup` section, less what `pack` adds


def compared_texts(samples_file: Path, on: str) -> tuple[list[str], NDArray[np.int64]]:
    """Each sample's text that dedup compares (`on`: full or prompt) and its whole length in characters."""
    texts: list[str] = []
    lengths: list[int] = []
    for _, conversations in iter_sample_batches(samples_file):
        for conversation in conversations:
            whole = full_text(conversation.turns)
            texts.append(whole if on == "full" else prompt_text(conversation.turns))
            lengths.append(len(whole))
    return texts, np.asarray(lengths, dtype=np.int64)


def dedup_run(
    run_dir: Path,
    manifest: dict[str, Any],
    emb: NDArray[Any],
    fingerprint: str,
    min_cos: float,
    keep: str,
    on: str,
    order_cfg: OrderConfig,
    skip: NDArray[np.bool_] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> DedupResult:
    """`--dedup S` on an embed run: the one implementation behind `pack`, the `stats` preview and the API.

    Compared: each sample's `on` text (full: prompt and response) by the run's full model (a static run's source
    model), so S means the same whatever model ordered the data. When the run's embeddings are that comparison
    (a full model on the same text), its cached kNN graph gives the pairs directly. Otherwise a static model
    proposes candidates (`proposed_duplicates`: the run's embeddings when they are static ones of the same text),
    only those are embedded by the full model, and the rule decides on its cosines. A run of
    precomputed embeddings has no model: its own vectors are compared (the summary names what they embedded).
    """
    from tfpack.embedding.encoders import encode_texts, load_encoder
    from tfpack.embedding.models import static_source

    started = time.perf_counter()
    n = len(emb)
    skip = np.zeros(n, dtype=np.bool_) if skip is None else skip
    texts, lengths = compared_texts(run_dir / SAMPLES_FILE, on)
    rank = keep_rank(keep, lengths)
    embed_cfg = EmbedConfig(**manifest["config"]["embed"])
    method = "exact" if order_cfg.exact else order_cfg.knn
    precomputed = manifest["backend"] == "precomputed"
    static_run = static_source(embed_cfg.model) is not None
    same_text = manifest["embed_on"] == on
    summary: dict[str, Any] = {"min_cos": min_cos, "keep": keep, "on": on}

    def run_graph() -> tuple[NDArray[Any], NDArray[Any]]:
        k = min(order_cfg.k, n - 1)
        ids, sims, _, _ = cached_knn(
            run_dir / KNN_DIR, fingerprint, emb, k, method, order_cfg.nprobe, order_cfg.seed, progress
        )
        return ids, sims

    if precomputed or (not static_run and same_text):
        with progress.task("finding near-duplicates", total=None):
            duplicates = near_duplicates(emb, *run_graph(), min_cos, rank, skip)
        compared = manifest["embed_on"]
        summary |= {"compared": compared, "model": manifest["model"]}
        if precomputed and compared != on:
            summary["note"] = f"precomputed embeddings of the {compared}: dedup compares those, not the {on}"
        return DedupResult(duplicates, summary | {"seconds": round(time.perf_counter() - started, 3)})

    decider = deciding_model(embed_cfg, progress)
    name = decider.name
    with progress.task("finding near-duplicates", total=None):
        if static_run and same_text:
            proposal, (ids, sims) = emb, run_graph()
            rows = np.arange(n)
        else:
            rows = np.flatnonzero(~skip)
            static, resolved = load_encoder(EmbedConfig(model=f"static:{name}", device="cpu"))
            proposal = encode_texts(static, [texts[r] for r in rows], resolved["batch_size"])
            ids, sims, _ = build_knn(proposal, min(order_cfg.k, len(rows) - 1), method, seed=order_cfg.seed)

        def embed_rows(chosen: NDArray[np.int64]) -> NDArray[np.float32]:
            return decider.encode([texts[r] for r in rows[chosen]], "dedup candidates")

        found, counts = proposed_duplicates(
            proposal, ids, sims, min_cos, rank[rows], embed_rows, skip[rows], order_cfg.k
        )
    kept_as = np.full(n, -1, dtype=np.int64)
    kept_as[rows] = np.where(found.kept_as >= 0, rows[found.kept_as], -1)
    cosine = np.full(n, np.nan)
    cosine[rows] = found.cosine
    duplicates = Duplicates(kept_as, cosine)
    summary |= {
        "compared": on,
        "model": name,
        "proposed_by": f"static:{name}",
        "proposal_cutoff": round(max(-1.0, min_cos - CANDIDATE_MARGIN), 6),
        **counts,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return DedupResult(duplicates, summary)
