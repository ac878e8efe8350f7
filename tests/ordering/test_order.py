from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from tests.conftest import GOLDEN, qa_rows, shared_file, write_jsonl
from tfpack.cli import app
from tfpack.config import EmbedConfig, OrderConfig
from tfpack.embedding.stage import run_embed
from tfpack.errors import StaleArtifactError
from tfpack.ingest.formats import FormatOptions
from tfpack.ordering.stage import order_embeddings, run_order

runner = CliRunner()
# The L2 thresholds the authors' script computed (../shared/golden/README.md).
REFERENCE_THRESHOLDS = {2000: 0.8991214036941528, 4096: 0.9011306762695312}


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, d))[rng.integers(0, 8, n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.shared_data
@pytest.mark.parametrize("n", [2000, 4096])
def test_reproduces_the_reference_path(tmp_path: Path, n: int) -> None:
    emb = shared_file(GOLDEN / f"emb_{n}.npy")
    ref = np.load(shared_file(GOLDEN / f"ref_path_{n}.npy"))
    result = runner.invoke(
        app,
        [
            "order",
            str(emb),
            "-o",
            str(tmp_path / "o.npy"),
            "--distance-threshold",
            str(REFERENCE_THRESHOLDS[n]),
            "--window",
            "4",
            "--start",
            "0",
            "--exact",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), ref)


@pytest.mark.shared_data
def test_golden_4096_boundary_pair_decides() -> None:
    """Step 286 of the reference path joins samples 3381 and 1844, whose distance is within one float32 step of the
    threshold: allowed at the reference threshold, rejected just above it, so the path departs exactly there."""
    x = np.load(shared_file(GOLDEN / "emb_4096.npy"))
    ref = np.load(shared_file(GOLDEN / "ref_path_4096.npy"))
    from tfpack.ordering.knn import build_knn
    from tfpack.ordering.threshold import from_distance, pair_distances
    from tfpack.ordering.walk import walk

    t = np.float32(REFERENCE_THRESHOLDS[4096])
    assert (ref[285], ref[286]) == (3381, 1844)
    assert abs(pair_distances(x[[3381]], x[[1844]])[0, 0] - t) <= np.spacing(t)
    ids, sims, _ = build_knn(x, 64, "exact")
    at = walk(x, ids, sims, from_distance(float(t)).reject_d2, exact=True)
    np.testing.assert_array_equal(at.path, ref)
    raised = np.nextafter(np.nextafter(t, np.float32(2)), np.float32(2))
    above = walk(x, ids, sims, from_distance(float(raised)).reject_d2, exact=True)
    assert np.flatnonzero(above.path != ref)[0] == 286


@pytest.mark.shared_data
def test_auto_threshold_on_golden_inputs() -> None:
    x = np.load(shared_file(GOLDEN / "emb_2000.npy"))
    result = order_embeddings(x, OrderConfig(threshold="auto", exact=True))
    # Exact quantile over off-diagonal pairs; the reference's own value is lower because torch's float32 cdist
    # leaves ~870 of its diagonal entries non-zero and counts them (docs/usage.md, "Fidelity").
    assert result.threshold.distance == pytest.approx(0.89965236, abs=1e-7)
    assert sorted(result.path.tolist()) == list(range(2000))


def test_run_dir_caches_the_graph(tmp_path: Path) -> None:
    run = tmp_path / "run"
    np.save(tmp_path / "own.npy", clustered(300).astype(np.float16))
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(300))
    run_embed([str(data)], run, EmbedConfig(dtype="float16"), FormatOptions(), precomputed=tmp_path / "own.npy")
    first = run_order(run, tmp_path / "a.npy", OrderConfig(k=16))
    second = run_order(run, tmp_path / "b.npy", OrderConfig(k=16))
    assert (first["knn_cached"], second["knn_cached"]) == (False, True)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert first["mean_adjacent_similarity"] > first["random_adjacent_similarity"] + 0.1


def test_cli_order_json(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", clustered(200))
    result = runner.invoke(
        app, ["order", str(tmp_path / "e.npy"), "-o", str(tmp_path / "o.npy"), "--threshold", "0.7", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    for key in (
        "n",
        "threshold",
        "window",
        "k",
        "fallbacks",
        "mean_adjacent_similarity",
        "random_adjacent_similarity",
        "threshold_violations",
        "seconds",
    ):
        assert key in summary
    assert summary["threshold"] == pytest.approx(0.7)
    order = np.load(tmp_path / "o.npy")
    assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(200))


def test_damaged_knn_cache_is_rebuilt(tmp_path: Path) -> None:
    """A truncated marker, a truncated array or a missing one in RUN_DIR/knn/: the graph is rebuilt (same path), never
    a traceback nor a wrong-shaped graph."""
    run = tmp_path / "run"
    np.save(tmp_path / "own.npy", clustered(300).astype(np.float16))
    run_embed(
        [str(write_jsonl(tmp_path / "qa.jsonl", qa_rows(300)))],
        run,
        EmbedConfig(dtype="float16"),
        FormatOptions(),
        precomputed=tmp_path / "own.npy",
    )
    first = run_order(run, tmp_path / "a.npy", OrderConfig(k=16))
    cache = run / "knn"
    damages = [
        lambda: (cache / "knn.json").write_bytes((cache / "knn.json").read_bytes()[:30]),
        lambda: (cache / "nbr_ids.npy").write_bytes((cache / "nbr_ids.npy").read_bytes()[:1000]),
        lambda: (cache / "nbr_sims.npy").unlink(),
    ]
    for damage in damages:
        damage()
        again = run_order(run, tmp_path / "b.npy", OrderConfig(k=16), overwrite=True)
        assert not again["knn_cached"]
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
        assert run_order(run, tmp_path / "c.npy", OrderConfig(k=16), overwrite=True)["knn_cached"]
    assert not first["knn_cached"]


def test_cli_order_rejects_bad_threshold_and_nan(tmp_path: Path) -> None:
    x = clustered(50)
    np.save(tmp_path / "e.npy", x)
    result = runner.invoke(app, ["order", str(tmp_path / "e.npy"), "-o", str(tmp_path / "o.npy"), "--threshold", "2"])
    assert result.exit_code == 2 and "--threshold: 2.0 is outside [-1, 1]" in result.stderr
    x[7] = np.nan
    np.save(tmp_path / "e.npy", x)
    result = runner.invoke(app, ["order", str(tmp_path / "e.npy"), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 1 and "embeddings row 7 is not finite" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def test_stale_run_dir_names_the_command(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(StaleArtifactError, match="run: is an empty folder; expected an embed run directory"):
        run_order(tmp_path / "run", tmp_path / "o.npy", OrderConfig())
    (tmp_path / "run" / "embed.progress.json").write_bytes(b"{}")
    with pytest.raises(StaleArtifactError, match="is incomplete .*run `tfpack embed INPUT... -o"):
        run_order(tmp_path / "run", tmp_path / "o.npy", OrderConfig())


def test_bucketed_order_is_a_permutation_and_keeps_most_of_the_similarity() -> None:
    x = clustered(3000)
    glob = order_embeddings(x, OrderConfig(threshold="0.9"))
    bucketed = order_embeddings(x, OrderConfig(threshold="0.9", buckets=8, start=5))
    assert sorted(bucketed.path.tolist()) == list(range(3000)) and bucketed.path[0] == 5
    assert bucketed.summary["buckets"] == 8
    assert bucketed.summary["mean_adjacent_similarity"] > 0.9 * glob.summary["mean_adjacent_similarity"]
    assert bucketed.summary["mean_adjacent_similarity"] > bucketed.summary["random_adjacent_similarity"] + 0.2


def test_bucketed_order_reads_a_memory_map_and_matches_in_memory(tmp_path: Path) -> None:
    x16 = clustered(2000).astype(np.float16)
    np.save(tmp_path / "e.npy", x16)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    on_disk = order_embeddings(mapped, OrderConfig(threshold="0.9", buckets=4))
    in_memory = order_embeddings(x16.astype(np.float32), OrderConfig(threshold="0.9", buckets=4))
    assert isinstance(on_disk.vectors, np.memmap), "with --buckets the embeddings are never copied whole"
    np.testing.assert_array_equal(on_disk.path, in_memory.path)
    assert on_disk.summary["mean_adjacent_similarity"] == pytest.approx(in_memory.summary["mean_adjacent_similarity"])


def test_ivfpq_global_walk_never_copies_the_embeddings(tmp_path: Path) -> None:
    x16 = clustered(4000).astype(np.float16)
    np.save(tmp_path / "e.npy", x16)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    pq = order_embeddings(mapped, OrderConfig(threshold="0.9", knn="ivfpq"))
    exact = order_embeddings(x16.astype(np.float32), OrderConfig(threshold="0.9", knn="exact"))
    assert isinstance(pq.vectors, np.memmap), "ivfpq reads the memory-mapped float16 rows, no float32 copy"
    assert pq.summary["knn"] == "ivfpq" and sorted(pq.path.tolist()) == list(range(4000))
    assert pq.summary["mean_adjacent_similarity"] > 0.98 * exact.summary["mean_adjacent_similarity"]


def test_scaled_rows_are_normalised_and_walk_as_unit_rows(tmp_path: Path) -> None:
    """Rows of arbitrary length give the path and threshold of their unit rows (inner products would not), and the
    summary says they were normalised; the memory-bounded engines, which cannot copy, refuse naming a row."""
    unit = clustered(300, 16)
    scaled = unit * np.random.default_rng(1).uniform(0.2, 5.0, (len(unit), 1)).astype(np.float32)
    for exact in (True, False):
        cfg = OrderConfig(threshold="auto", exact=exact, k=16)
        a, b = order_embeddings(unit, cfg), order_embeddings(scaled, cfg)
        assert not a.summary["normalised"] and b.summary["normalised"]
        assert a.summary["threshold"] == pytest.approx(b.summary["threshold"], abs=1e-5)
        assert b.summary["threshold"] == pytest.approx(1 - b.summary["distance_threshold"] ** 2 / 2, abs=1e-6)
        assert np.array_equal(a.path, b.path)
    path = tmp_path / "scaled.npy"
    np.save(path, scaled)
    result = CliRunner().invoke(app, ["order", str(path), "-o", str(tmp_path / "o.npy"), "--knn", "ivfpq"])
    assert result.exit_code == 1 and "embeddings row 0 has L2 norm" in result.stderr


def test_cosine_ceiling_one_allows_exact_duplicates() -> None:
    """At S = 1.0 nothing is more similar than allowed: duplicated rows follow each other without fallbacks."""
    base = clustered(60, 16)
    emb = np.repeat(base, 3, axis=0)
    for exact in (True, False):
        result = order_embeddings(emb, OrderConfig(threshold="1.0", exact=exact, k=8))
        assert result.summary["threshold_violations"] == 0
        assert sorted(result.path.tolist()) == list(range(len(emb)))
        same = (emb[result.path[1:]] == emb[result.path[:-1]]).all(axis=1)
        assert same.sum() == 2 * len(base)


def test_rows_a_little_off_unit_are_normalised_float16_rounding_is_not(tmp_path: Path) -> None:
    """float16 storage moves a unit row's norm by < 5e-4: left as it is (and accepted by the memory-bounded engines);
    a 0.5% scale is not rounding: normalised (it would shift the cosine threshold by ~1%), or refused naming the row."""
    unit = clustered(300, 16)
    x16 = unit.astype(np.float16)
    assert not order_embeddings(x16, OrderConfig(threshold="0.9")).summary["normalised"]
    np.save(tmp_path / "x16.npy", x16)
    mapped = np.load(tmp_path / "x16.npy", mmap_mode="r")
    assert not order_embeddings(mapped, OrderConfig(threshold="0.9", buckets=2)).summary["normalised"]
    off = unit.copy()
    off[42] *= 1.005
    result = order_embeddings(off, OrderConfig(threshold="0.9", exact=True))
    assert result.summary["normalised"]
    assert np.array_equal(result.path, order_embeddings(unit, OrderConfig(threshold="0.9", exact=True)).path)
    np.save(tmp_path / "off.npy", off)
    result = runner.invoke(app, ["order", str(tmp_path / "off.npy"), "-o", str(tmp_path / "o.npy"), "--buckets", "2"])
    assert result.exit_code == 1 and "embeddings row 42 has L2 norm 1.005, not 1" in result.stderr


def test_unit_rows_are_walked_in_place(tmp_path: Path) -> None:
    """Unit rows (float16, as `tfpack embed` stores them) are read where they lie, memory-mapped: no float32 copy of
    the array (1.5 GiB at 1M x 384), and the path of walking their float32 values."""
    x16 = clustered(400, 16).astype(np.float16)
    np.save(tmp_path / "x16.npy", x16)
    mapped = np.load(tmp_path / "x16.npy", mmap_mode="r")
    for exact in (True, False):
        cfg = OrderConfig(threshold="auto", exact=exact, k=16)
        in_place = order_embeddings(mapped, cfg)
        assert in_place.vectors is mapped and not in_place.summary["normalised"]
        assert np.array_equal(in_place.path, order_embeddings(x16.astype(np.float32), cfg).path)


@pytest.mark.parametrize("engine", ["copy", "--buckets", "--knn ivfpq"])
def test_zero_rows_are_refused_naming_the_row(tmp_path: Path, engine: str) -> None:
    x = clustered(300, 16)
    x[123] = 0
    np.save(tmp_path / "e.npy", x)
    args = ["order", str(tmp_path / "e.npy"), "-o", str(tmp_path / "o.npy"), "--quiet"]
    args += {"copy": [], "--buckets": ["--buckets", "2"], "--knn ivfpq": ["--knn", "ivfpq"]}[engine]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "embeddings row 123 has zero norm" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def test_duplicates_at_cosine_one_on_float16_memory_maps(tmp_path: Path) -> None:
    """The memory-bounded engines read float16 rows in place: duplicated rows still pass S = 1.0 (their float64
    squared distance is 0, never a rounding error below it)."""
    base = clustered(100, 16)
    np.save(tmp_path / "dup.npy", np.repeat(base, 3, axis=0).astype(np.float16))
    emb = np.load(tmp_path / "dup.npy", mmap_mode="r")
    for kwargs in ({"buckets": 2}, {"buckets": 2, "exact": True}, {"knn": "ivfpq"}):
        result = order_embeddings(emb, OrderConfig(threshold="1.0", k=8, **kwargs))  # type: ignore[arg-type]
        assert result.summary["threshold_violations"] == 0 and result.summary["forced_steps"] == 0
        same = (emb[result.path[1:]] == emb[result.path[:-1]]).all(axis=1)
        assert same.sum() == 2 * len(base), kwargs


def test_unreadable_embeddings_and_directory_output_are_one_line(tmp_path: Path) -> None:
    """An empty or truncated .npy, and -o naming a directory (checked before any work), each give one line."""
    np.save(tmp_path / "ok.npy", clustered(50, 8))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:500])
    for name, message in (
        ("empty.npy", "not a .npy array: No data left in file"),
        ("cut.npy", "not a .npy array: mmap length is greater than file size"),
    ):
        result = runner.invoke(app, ["order", str(tmp_path / name), "-o", str(tmp_path / "o.npy")])
        assert result.exit_code == 1 and f"{tmp_path / name}: {message}" in result.stderr, result.output
    (tmp_path / "dir").mkdir()
    result = runner.invoke(app, ["order", str(tmp_path / "empty.npy"), "-o", str(tmp_path / "dir")])
    assert result.exit_code == 2 and f"-o {tmp_path / 'dir'}: is a directory" in result.stderr


def test_ordering_scaled_rows_equals_ordering_their_embed_run(tmp_path: Path) -> None:
    """`order X.npy` normalises rows exactly as `embed --embeddings X.npy` stores them (bit for bit): same path, same
    threshold."""
    scaled = clustered(300, 16) * np.random.default_rng(2).uniform(0.5, 3.0, (300, 1)).astype(np.float32)
    np.save(tmp_path / "scaled.npy", scaled)
    run_embed(
        [str(write_jsonl(tmp_path / "qa.jsonl", qa_rows(300)))],
        tmp_path / "run",
        EmbedConfig(),
        FormatOptions(),
        precomputed=tmp_path / "scaled.npy",
    )
    cfg = OrderConfig(threshold="auto", exact=True)
    direct = run_order(tmp_path / "scaled.npy", tmp_path / "a.npy", cfg)
    via_run = run_order(tmp_path / "run", tmp_path / "b.npy", cfg)
    assert direct["normalised"] and not via_run["normalised"]
    copy = order_embeddings(scaled, OrderConfig(threshold="none", knn="exact")).vectors
    np.testing.assert_array_equal(copy, np.load(tmp_path / "run" / "embeddings.npy"))  # bit for bit
    assert direct["distance_threshold"] == via_run["distance_threshold"]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_auto_threshold_is_cached_beside_the_knn_graph(tmp_path: Path) -> None:
    from tfpack.workdir import KNN_DIR, THRESHOLD_FILE

    np.save(tmp_path / "own.npy", clustered(300))
    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(300))
    run = tmp_path / "run"
    run_embed([str(data)], run, EmbedConfig(), FormatOptions(), precomputed=tmp_path / "own.npy")
    first = run_order(run, tmp_path / "a.npy", OrderConfig(k=16))
    second = run_order(run, tmp_path / "b.npy", OrderConfig(k=16))
    assert (first["threshold_cached"], second["threshold_cached"]) == (False, True)
    assert second["distance_threshold"] == first["distance_threshold"]
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert not run_order(run, tmp_path / "c.npy", OrderConfig(k=16, quantile=0.05))["threshold_cached"]
    (run / KNN_DIR / THRESHOLD_FILE).write_text("{damaged")
    third = run_order(run, tmp_path / "d.npy", OrderConfig(k=16))
    assert not third["threshold_cached"] and third["distance_threshold"] == first["distance_threshold"]
