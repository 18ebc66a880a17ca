"""A terminal progress bar for imports (rich), only when stderr is a terminal."""

from __future__ import annotations

import sys
from types import TracebackType

from layerfs.progress import Silent


class Bar:
    """layerfs.progress.Progress drawn as one rich bar per unit of work (one per layer)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)
        self._rich = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), TimeRemainingColumn(),
                              console=Console(stderr=True))
        self._task: int | None = None

    def _finish(self) -> None:
        """A layer whose size was unknown (or already stored) still ends as a full bar."""
        if self._task is not None:
            task = next(t for t in self._rich.tasks if t.id == self._task)
            self._rich.update(self._task, total=task.completed)

    def task(self, description: str, total: int | None) -> None:
        self._finish()
        self._task = self._rich.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._rich.advance(self._task, amount)

    def __enter__(self) -> "Bar":
        self._rich.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self._finish()
        self._rich.stop()


class Quiet(Silent):
    def __enter__(self) -> "Quiet":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_for_terminal(quiet: bool) -> Bar | Quiet:
    """A bar if a person is watching stderr, else silence (scripts, CI, pipes)."""
    if quiet or not sys.stderr.isatty():
        return Quiet()
    return Bar()
