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
