"""How long-running work reports progress without knowing who draws it.

The store and importers call these hooks; the CLI plugs in a terminal progress
bar, tests and scripts get the silent default.
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    """One of several units of work that advance side by side (parallel downloads)."""

    def advance(self, amount: int) -> None: ...

    def done(self) -> None:
        """The work ended: its bar shows complete, whatever its total said."""


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> None:
        """Start a new unit of work of `total` bytes (None when unknown)."""

    def advance(self, amount: int) -> None:
        """Report `amount` more bytes done on the current unit of work."""

    def concurrent(self, description: str, total: int | None) -> Task:
        """Start a unit of work that runs beside others, with its own bar; thread-safe."""


class _SilentTask:
    def advance(self, amount: int) -> None:
        pass

    def done(self) -> None:
        pass


class Silent:
    """Progress that goes nowhere."""

    def concurrent(self, description: str, total: int | None) -> Task:
        return _SilentTask()

    def task(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass
