"""Progress reporting passed into library code: the base classes do nothing (quiet, not a TTY, tests)."""

from __future__ import annotations

from types import TracebackType


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
