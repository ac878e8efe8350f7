"""Where the parallel parts of a stage run: in this process (`--engine local`) or on Ray (`--engine ray`).

A stage hands its work to an engine as plain functions and worker classes that live with the stage; this module
knows nothing of any stage, and it is the only one that imports Ray. Two shapes of work:

- `imap(fn, calls)`: `fn(*args)` for each `args`, results in call order (inputs read one task per file, `--buckets`
  walks, shards written one task per shard). Locally the calls run one by one, lazily; on Ray they run as tasks,
  at most `in_flight` at a time, so the driver never holds more than a few results.
- `map_batches(samples_file, worker, kwargs, batch_size, gpus)` (Ray only): a worker class over the rows of
  `samples.parquet` in batches cut at the same boundaries as the local loop, as Ray Data `map_batches` on an actor
  pool (one model replica per actor, one GPU each when `gpus`), output in order.

Ray connects to `RAY_ADDRESS` when set (an existing cluster), else starts a local Ray; paths handed to tasks must
then be visible to every node (a shared file system).

    >>> engine = engine_for("local")
    >>> list(engine.imap(pow, [(2, 3), (3, 2)]))
    [8, 9]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tfpack.errors import ConfigError, DependencyError

ENGINES = ("local", "ray")


class LocalEngine:
    """Everything in this process, one call after the other."""

    name = "local"
    in_process = True

    def imap(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]], in_flight: int = 0) -> Iterator[Any]:
        for args in calls:
            yield fn(*args)


class RayEngine:
    """Tasks and actor pools on Ray (the cluster at RAY_ADDRESS, else a local one)."""

    name = "ray"
    in_process = False

    def __init__(self) -> None:
        self.ray = ensure_ray()

    def imap(self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]], in_flight: int = 0) -> Iterator[Any]:
        """Ray tasks, results in order; `in_flight` (0 = the cluster's CPUs + 2) bounds the tasks not yet read."""
        remote = self.ray.remote(num_cpus=1, max_retries=0)(fn)
        limit = in_flight or 2 + int(self.ray.cluster_resources().get("CPU", 1))
        pending: list[Any] = []
        for args in calls:
            pending.append(remote.remote(*args))
            if len(pending) >= limit:
                yield self.ray.get(pending.pop(0))
        for ref in pending:
            yield self.ray.get(ref)

    def map_batches(
        self, samples_file: Path, worker: type, kwargs: dict[str, Any], batch_size: int, gpus: float = 0
    ) -> Iterator[dict[str, Any]]:
        """`worker(**kwargs)` over `samples_file` in batches of `batch_size` rows, outputs in order."""
        ds = self.ray.data.read_parquet(str(samples_file))
        ds = ds.select_columns([c for c in ("sample_id", "turns", "tools") if c in ds.schema().names])
        mapped = ds.map_batches(
            worker,
            fn_constructor_kwargs=kwargs,
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=self.actor_count(gpus),
            num_gpus=gpus,
        )
        yield from mapped.iter_batches(batch_size=None, batch_format="numpy")

    def actor_count(self, gpus: float) -> int:
        """One actor per GPU when they use GPUs; else one per CPU but one, which stays free for Ray Data's read
        tasks (actors holding every CPU would starve the reader and stall the pipeline)."""
        resources = self.ray.cluster_resources()
        if gpus:
            return max(1, int(resources.get("GPU", 0)))
        return max(1, int(resources.get("CPU", 1)) - 1)


LOCAL = LocalEngine()


def engine_for(name: str) -> LocalEngine | RayEngine:
    """The engine called `name` ('local' or 'ray')."""
    if name == "local":
        return LOCAL
    if name == "ray":
        return RayEngine()
    raise ConfigError(f"--engine: expected one of {', '.join(ENGINES)}, got '{name}'")


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise DependencyError("--engine ray needs Ray Data; run `pip install 'tfpack[ray]'` (ray[data])") from e
    return ray


def ensure_ray() -> Any:
    """Initialised Ray (the cluster at RAY_ADDRESS, else local), quiet, with ordered Ray Data output."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    return ray
