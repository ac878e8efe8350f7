"""Progress reporting passed into library code: the base classes do nothing (quiet, not a TTY, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any


class Task:
    """One unit of tracked work; `advance` moves it forward."""

    def advance(self, amount: float = 1) -> None:
        """Record `amount` more units done."""

    def __enter__(self) -> Task:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Mark the task finished."""


class Progress:
    """Factory of tasks; the CLI supplies a rich-backed subclass when output is a terminal."""

    def task(self, description: str, total: float | None = None) -> Task:
        return Task()


NULL_PROGRESS = Progress()


class _TqdmTask(Task):
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, amount: float = 1) -> None:
        self.bar.update(amount)

    def close(self) -> None:
        self.bar.close()


class TqdmProgress(Progress):
    """tqdm bars on stderr: what the Python API draws with `progress=True` (the CLI draws rich bars)."""

    def task(self, description: str, total: float | None = None) -> Task:
        from tqdm.auto import tqdm

        return _TqdmTask(tqdm(total=total, desc=description, leave=False))


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """For the duration of a Python API call: other libraries' progress bars ("Loading weights"), warnings and log
    lines below an error stay off stdout/stderr; each switch is restored afterwards, so the caller's own process
    (a training script) keeps its settings."""
    import logging
    import warnings

    from huggingface_hub import utils as hub
    from transformers.utils import logging as transformers_logging

    transformers_bars = transformers_logging.is_progress_bar_enabled()
    hub_bars = not hub.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()
    hub.disable_progress_bars()
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        if transformers_bars:
            transformers_logging.enable_progress_bar()
        if hub_bars:
            hub.enable_progress_bars()


@contextmanager
def tqdm_off() -> Iterator[None]:
    """Other libraries' tqdm bars off for the duration (tfpack draws its own): also in a process that imported tqdm
    before `TQDM_DISABLE` was set, which tqdm reads only on import (a training script, the test suite)."""
    from tqdm import tqdm

    original = tqdm.__init__

    def disabled(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "disable": True})

    tqdm.__init__ = disabled  # type: ignore[method-assign]
    try:
        yield
    finally:
        tqdm.__init__ = original  # type: ignore[method-assign]


@contextmanager
def reporting(progress: Progress | bool) -> Iterator[Progress]:
    """The `Progress` a Python API call reports to: `False` (the default) draws nothing and keeps other libraries
    quiet; `True` draws tqdm bars and leaves other libraries as they are; a `Progress` is reported to, others quiet."""
    if progress is True:
        yield TqdmProgress()
        return
    with quiet_libraries():
        yield progress if isinstance(progress, Progress) else NULL_PROGRESS


def silence_third_party(quiet: bool) -> None:
    """Keep other libraries' output off the terminal: always their progress bars (tfpack draws its own) and their
    known advisory noise; with `quiet`, every warning and log line below an error ("Loading weights", hub notices).
    The switches are environment variables those libraries read when imported (tfpack imports them late, inside the
    commands), their own switches where a library was imported before (tfpack used as a library in a process that
    loaded transformers first), warning filters and `logging.disable`, which also holds for loggers a library
    configures itself."""
    import logging
    import os
    import sys
    import warnings

    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings(
        "ignore", category=UserWarning, module=r"(transformers|torch|sentence_transformers|optimum)"
    )
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # its bars ("Loading weights") read the environment only on import
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if quiet:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)  # every logger, also those a library configures on import (ray.data's)
