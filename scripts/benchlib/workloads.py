"""What is timed, and how repetitions are run and collected.

This module holds the read-only workloads; the write workloads are in
writeloads.py, and both are run by `run_benchmark` here.

Every cold figure comes from a fresh mount followed by `sync; echo 3 >
/proc/sys/vm/drop_caches`; the warm figure is the same command run again right
after, on the same mount (best of WARM_RUNS runs: on a busy 2-core machine the
minimum is the stable estimate of the cached path). The same external commands are used for every
filesystem, so process start-up costs cancel out of the ratios.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import mounts
from .filesystems import Filesystem
from .imagebuild import BIG_FILE, BenchImage
from .model import Env, Metric, Results, Runner
from .util import BenchError, drop_caches, log, timed
from .writeloads import WRITE_GROUPS, WRITE_METRICS, WRITE_RUNNERS

TAR_SUBTREE = "usr/lib/python3.11"  # ~1.2k entries, 27 MB in the bench image
WARM_RUNS = 3

READ_METRICS = [
    Metric("walk_cold", "stat every entry (find -ls), cold", "s", "walk"),
    Metric("walk_warm", "stat every entry (find -ls), warm", "s", "walk", warm=True),
    Metric("read_cold", "read 1 GiB file (dd bs=1M), cold", "s", "read"),
    Metric("read_warm", "read 1 GiB file (dd bs=1M), warm", "s", "read", warm=True),
    Metric("tar_cold", f"tar {TAR_SUBTREE} | cat, cold", "s", "tar"),
    Metric("tar_warm", f"tar {TAR_SUBTREE} | cat, warm", "s", "tar", warm=True),
    Metric("mount_ls", "mount command -> first ls answers", "s", "mount"),
    Metric("rss_walk", "daemon RSS after the walk", "MiB", "walk"),
    Metric("walk100_cold", "100 layers: stat every entry, cold", "s", "walk100"),
    Metric("walk100_warm", "100 layers: stat every entry, warm", "s", "walk100", warm=True),
    Metric("rss_walk100", "100 layers: daemon RSS after the walk", "MiB", "walk100"),
]
READ_GROUPS = ["walk", "read", "tar", "mount", "walk100"]


# ---------------------------------------------------------------- the commands


def stat_walk(mountpoint: Path) -> float:
    """lstat every entry: `find -ls` stats (and formats) each one at C speed."""
    return timed(["find", str(mountpoint), "-ls"])


LISTING_FORMAT = "%P\t%y\t%m\t%U\t%G\t%s\t%T@\t%l\n"


def tree_listing(mountpoint: Path) -> list[str]:
    """Sorted metadata listing of the tree (path, type, mode, owner, size, whole-second
    mtime, link target), to check that every filesystem shows the same image.
    Directory sizes differ between filesystems by nature and are left out."""
    out = subprocess.run(["find", str(mountpoint), "-mindepth", "1", "-printf", LISTING_FORMAT],
                         capture_output=True, check=True).stdout.decode("utf-8", "surrogateescape")
    lines = []
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[1] == "d":
            fields[5] = "-"
        fields[6] = fields[6].split(".")[0]
        lines.append("\t".join(fields))
    return sorted(lines)


def best_warm(measure: Callable[[Path], float], mountpoint: Path) -> float:
    """The warm figure: best of WARM_RUNS runs right after the cold one."""
    return min(measure(mountpoint) for _ in range(WARM_RUNS))


def read_big(mountpoint: Path) -> float:
    return timed(["dd", f"if={mountpoint / BIG_FILE}", "of=/dev/null", "bs=1M", "status=none"])


def tar_subtree(mountpoint: Path) -> float:
    """GNU tar skips reading file data when writing to /dev/null, so pipe through cat."""
    command = f"set -o pipefail; tar cf - -C {shlex.quote(str(mountpoint))} {TAR_SUBTREE} | cat > /dev/null"
    return timed([command], shell=True)


def wait_listing(mountpoint: Path, timeout: float = 30.0) -> None:
    """Run `ls MP` until it answers with the image's root entries."""
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(["ls", str(mountpoint)], capture_output=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"`ls {mountpoint}` did not answer within {timeout:.0f}s")
        time.sleep(0.001)


# ---------------------------------------------------------------- one repetition of a group


def _walk_on(fs: Filesystem, image: BenchImage, env: Env, prefix: str) -> dict[str, float]:
    mountpoint = env.mnt / fs.key
    with fs.mounted(image, mountpoint) as m:
        drop_caches()
        cold = stat_walk(mountpoint)
        warm = best_warm(stat_walk, mountpoint)
        rss = m.rss_mib()
        env.results.listings.setdefault(image.ref, {})[fs.key] = tree_listing(mountpoint)
    values = {f"{prefix}_cold": cold, f"{prefix}_warm": warm}
    if rss is not None:
        values[f"rss_{prefix}"] = rss
    return values


def run_walk(fs: Filesystem, env: Env, first: bool) -> dict[str, float]:
    return _walk_on(fs, env.image3, env, "walk")


def run_walk100(fs: Filesystem, env: Env, first: bool) -> dict[str, float]:
    return _walk_on(fs, env.image100, env, "walk100")


def _cold_warm(fs: Filesystem, env: Env, measure: Callable[[Path], float], prefix: str) -> dict[str, float]:
    """Mount the 3-layer image, drop caches, time `measure` cold, then warm."""
    mountpoint = env.mnt / fs.key
    with fs.mounted(env.image3, mountpoint):
        drop_caches()
        cold = measure(mountpoint)
        warm = best_warm(measure, mountpoint)
    return {f"{prefix}_cold": cold, f"{prefix}_warm": warm}


def run_read(fs: Filesystem, env: Env, first: bool) -> dict[str, float]:
    return _cold_warm(fs, env, read_big, "read")


def run_tar(fs: Filesystem, env: Env, first: bool) -> dict[str, float]:
    return _cold_warm(fs, env, tar_subtree, "tar")


def run_mount(fs: Filesystem, env: Env, first: bool) -> dict[str, float]:
    """Time from the mount command's start to the first answered `ls`.

    Caches stay warm (the repeat-mount case: binaries, Python modules and any
    on-disk merged-tree cache are in the page cache); the first repetition is
    preceded by one untimed mount so that one-time work is not counted.
    """
    mountpoint = env.mnt / fs.key
    mountpoint.mkdir(parents=True, exist_ok=True)
    rounds = 2 if first else 1
    elapsed = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        record = fs.start_mount(env.image3, mountpoint)
        try:
            wait_listing(mountpoint)
            elapsed = time.perf_counter() - start
            fs.attach_pid(record)  # so that unmount can wait for the daemon to exit
        finally:
            mounts.release(record)
    return {"mount_ls": elapsed}


READ_RUNNERS: dict[str, Runner] = {
    "walk": run_walk,
    "read": run_read,
    "tar": run_tar,
    "mount": run_mount,
    "walk100": run_walk100,
}

METRICS: list[Metric] = READ_METRICS + WRITE_METRICS  # the report's row order
GROUPS = READ_GROUPS + WRITE_GROUPS  # the run order, and the names for --only
RUNNERS: dict[str, Runner] = {**READ_RUNNERS, **WRITE_RUNNERS}


def run_benchmark(filesystems: list[Filesystem], groups: list[str], reps: int, env: Env) -> Results:
    """Each group, each repetition, each filesystem in turn (interleaved, so slow
    drift of the machine hits every column alike). A filesystem that fails a
    group is reported as an error for that group and skipped for its later reps."""
    results = env.results
    for group in groups:
        for rep in range(reps):
            shown = []
            for fs in filesystems:
                if fs.key in results.errors.get(group, {}):
                    continue
                try:
                    values = RUNNERS[group](fs, env, rep == 0)
                except BenchError as exc:
                    results.errors.setdefault(group, {})[fs.key] = str(exc)
                    log(f"{group}: {fs.key} failed: {exc}")
                    continue
                for metric, value in values.items():
                    results.add(metric, fs.key, value)
                shown.append(f"{fs.key} " + " ".join(f"{k}={v:.3f}" for k, v in values.items()))
            log(f"{group} {rep + 1}/{reps}: " + "; ".join(shown))
    return results
