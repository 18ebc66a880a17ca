"""How long-running work reports progress without knowing who draws it.

The store and importers call these hooks; the CLI plugs in a terminal progress
bar, tests and scripts get the silent default.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> None:
        """Start a new unit of work of `total` bytes (None when unknown)."""

    def advance(self, amount: int) -> None:
        """Report `amount` more bytes done on the current unit of work."""


class Silent:
    """Progress that goes nowhere."""

    def task(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass
