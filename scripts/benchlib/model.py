"""The types every workload module and the report share: metrics, results, the run's environment."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .imagebuild import BenchImage, CachePaths

if TYPE_CHECKING:
    from .filesystems import Filesystem


@dataclass(frozen=True)
class Metric:
    """One row of the report."""

    key: str
    label: str
    unit: str  # "s" or "MiB"
    group: str
    warm: bool = False


@dataclass
class Results:
    """Samples per metric and filesystem, plus what went wrong where."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)  # group -> fs -> message
    listings: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # image ref -> fs -> tree listing

    def add(self, metric: str, fs: str, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(fs, []).append(value)

    def median(self, metric: str, fs: str) -> float | None:
        values = self.samples.get(metric, {}).get(fs)
        return statistics.median(values) if values else None


@dataclass
class Env:
    """What a group runner needs besides the filesystem."""

    image3: BenchImage
    image100: BenchImage
    paths: CachePaths
    results: Results

    @property
    def mnt(self) -> Path:
        return self.paths.mnt


# A group's runner: one repetition on one filesystem (`first` is True for the
# first repetition, for one-time warm-up) -> metric key -> value.
Runner = Callable[["Filesystem", Env, bool], dict[str, float]]
