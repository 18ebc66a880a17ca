"""Medians, ratios and the issue's targets, as a text table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .model import Metric, Results
from .workloads import METRICS

FS_KEYS = ["kernel", "fuse-overlayfs", "layerfs"]
PEER_LIMIT = 1.0  # every timed workload, read-only and write: layerfs <= 1.0x fuse-overlayfs
KERNEL_WARM_LIMIT = 1.5  # warm workloads: layerfs <= 1.5x kernel overlayfs
LAYER_SCALING_LIMIT = 1.1  # 100-layer walk <= 1.1x the 3-layer walk


@dataclass
class Target:
    """One pass/fail line; `value` None means it could not be measured."""

    name: str
    row: str
    value: float | None
    limit: float
    short: str

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        return "PASS" if self.value <= self.limit else "FAIL"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Row:
    """One table row: a metric's medians or a derived per-filesystem ratio."""

    key: str
    label: str
    unit: str
    values: dict[str, float | None]

    def ratio(self, over: str) -> float | None:
        return _ratio(self.values.get("layerfs"), self.values.get(over))


def build_rows(results: Results) -> list[Row]:
    """Rows for the metrics that were measured, then the 100-vs-3-layer ratios."""
    rows = []
    for metric in METRICS:
        if metric.key in results.samples:
            rows.append(Row(metric.key, metric.label, metric.unit,
                            {fs: results.median(metric.key, fs) for fs in FS_KEYS}))
    for phase in ("cold", "warm"):
        many, few = f"walk100_{phase}", f"walk_{phase}"
        if many in results.samples and few in results.samples:
            values = {fs: _ratio(results.median(many, fs), results.median(few, fs)) for fs in FS_KEYS}
            rows.append(Row(f"layers_ratio_{phase}", f"walk 100 layers / 3 layers, {phase}", "x", values))
    return rows


def build_targets(rows: list[Row]) -> list[Target]:
    """The issue's targets for every row they apply to."""
    metrics: dict[str, Metric] = {m.key: m for m in METRICS}
    targets = []
    for row in rows:
        metric = metrics.get(row.key)
        if row.unit == "s":
            targets.append(Target(f"{row.label}: layerfs <= {PEER_LIMIT}x fuse-overlayfs",
                                  row.key, row.ratio("fuse-overlayfs"), PEER_LIMIT, f"<={PEER_LIMIT}x fo"))
        if metric is not None and metric.warm:
            targets.append(Target(f"{row.label}: layerfs <= {KERNEL_WARM_LIMIT}x kernel",
                                  row.key, row.ratio("kernel"), KERNEL_WARM_LIMIT, f"<={KERNEL_WARM_LIMIT}x k"))
        if row.unit == "x":
            targets.append(Target(f"{row.label}: layerfs <= {LAYER_SCALING_LIMIT}x",
                                  row.key, row.values.get("layerfs"), LAYER_SCALING_LIMIT,
                                  f"<={LAYER_SCALING_LIMIT}x"))
    return targets


def _cell(value: float | None, unit: str, missing: str) -> str:
    if value is None:
        return missing
    if unit == "s":
        return f"{value:.3f}"
    if unit == "MiB":
        return f"{value:.1f}"
    return f"{value:.2f}x"


def _missing(results: Results, row: Row, fs: str, ran: list[str]) -> str:
    """Why a cell is empty: not run, failed, or nothing to measure (kernel RSS)."""
    if fs not in ran:
        return "n/a"
    groups = [m.group for m in METRICS if m.key == row.key] or ["walk", "walk100"]
    if any(fs in results.errors.get(group, {}) for group in groups):
        return "error"
    return "-"


def render_table(results: Results, ran: list[str], header: list[str], notes: list[str]) -> str:
    """The human report: header lines, the table, the targets, notes."""
    rows = build_rows(results)
    targets = build_targets(rows)
    columns = ["workload", "kernel", "fuse-ovl", "layerfs", "lfs/fuse-ovl", "lfs/kernel", "targets"]
    lines_out: list[list[str]] = []
    for row in rows:
        cells = [f"{row.label} ({row.unit})" if row.unit != "x" else row.label]
        cells += [_cell(row.values.get(fs), row.unit, _missing(results, row, fs, ran)) for fs in FS_KEYS]
        if row.unit == "x":
            cells += ["", ""]
        else:
            cells += [_cell(row.ratio(over), "x", "") for over in ("fuse-overlayfs", "kernel")]
        mine = [t for t in targets if t.row == row.key]
        cells.append(", ".join(f"{t.short} {t.status}" for t in mine))
        lines_out.append(cells)
    widths = [max(len(c) for c in col) for col in zip(columns, *lines_out, strict=True)]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        middle = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        return "  ".join([first, *middle, cells[-1]]).rstrip()

    text = [*header, "", fmt(columns), fmt(["-" * w for w in widths])]
    text += [fmt(cells) for cells in lines_out]
    if targets:
        passed = sum(t.status == "PASS" for t in targets)
        failed = sum(t.status == "FAIL" for t in targets)
        text += ["", f"targets: {passed} PASS, {failed} FAIL, {len(targets) - passed - failed} n/a"]
        for t in targets:
            shown = "n/a" if t.value is None else f"{t.value:.2f}x"
            text.append(f"  {t.status:4}  {t.name} (got {shown})")
    if notes:
        text += ["", *notes]
    return "\n".join(text)


def render_json(results: Results, ran: list[str], meta: dict[str, object]) -> str:
    """Everything the table shows, plus raw samples, for scripts and CI."""
    rows = build_rows(results)
    targets = build_targets(rows)
    document = {
        **meta,
        "filesystems": ran,
        "rows": [
            {
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "median": row.values,
                "samples": results.samples.get(row.key, {}),
                "layerfs_over_fuse_overlayfs": row.ratio("fuse-overlayfs") if row.unit != "x" else None,
                "layerfs_over_kernel": row.ratio("kernel") if row.unit != "x" else None,
            }
            for row in rows
        ],
        "targets": [{**asdict(t), "status": t.status} for t in targets],
        "errors": results.errors,
        "entries": {ref: {fs: len(lines) for fs, lines in per_fs.items()} for ref, per_fs in results.listings.items()},
    }
    return json.dumps(document, indent=2)


def any_failed(results: Results) -> bool:
    return any(t.status == "FAIL" for t in build_targets(build_rows(results)))
