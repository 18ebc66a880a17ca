"""Terminal progress bars for imports and pulls (rich), only when stderr is a terminal."""

from __future__ import annotations

import sys
from types import TracebackType

from layerfs.progress import Silent, Task


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
            _complete(self._rich, self._task)

    def task(self, description: str, total: int | None) -> None:
        self._finish()
        self._task = self._rich.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._rich.advance(self._task, amount)

    def concurrent(self, description: str, total: int | None) -> Task:
        return _RichTask(self._rich, self._rich.add_task(description, total=total))

    def __enter__(self) -> "Bar":
        self._rich.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self._finish()
        self._rich.stop()


class _RichTask:
    """A bar of its own among others (rich's Progress is thread-safe)."""

    def __init__(self, rich, task_id: int) -> None:  # noqa: ANN001 - rich.progress.Progress
        self._rich = rich
        self._id = task_id

    def advance(self, amount: int) -> None:
        self._rich.advance(self._id, amount)

    def done(self) -> None:
        _complete(self._rich, self._id)


def _complete(rich, task_id: int) -> None:  # noqa: ANN001 - rich.progress.Progress
    task = next(t for t in rich.tasks if t.id == task_id)
    rich.update(task_id, total=task.completed)


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
