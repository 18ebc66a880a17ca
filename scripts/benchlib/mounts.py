"""Keep track of every mount the bench makes, so none outlives it.

A benchmark that leaves a FUSE daemon or an overlay mount behind breaks the next
run (busy mount points, stale caches), so each mount is registered the moment it
exists and `cleanup()` runs from a `finally`, on Ctrl-C and on SIGTERM/SIGHUP.
Mounts left by a run that was SIGKILLed are found in /proc/self/mountinfo under
the bench's mount directory and removed at the next start.

The write workloads also leave things that are not mounts (upper and work
dirs, layerfs containers, committed images); those are registered as
leftovers and removed by `cleanup()` after every mount is gone, since most of
them cannot be removed while mounted.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from .util import log


@dataclass(eq=False)
class ActiveMount:
    """One live mount and the polite way to remove it."""

    mountpoint: Path
    unmount: Callable[[], None]
    pid: int | None = None  # the serving daemon, once known (None for kernel mounts)


_active: list[ActiveMount] = []


@dataclass(eq=False)
class Leftover:
    """Something a run created besides a mount, and how to remove it."""

    what: str
    remove: Callable[[], None]


_leftovers: list[Leftover] = []


def register_leftover(what: str, remove: Callable[[], None]) -> Leftover:
    """Remember something to remove if the run ends before `discard` does it."""
    record = Leftover(what, remove)
    _leftovers.append(record)
    return record


def discard(record: Leftover) -> None:
    """Remove one leftover now (normal path). If that fails it stays registered,
    so that the final cleanup tries again (a daemon may just have been slow)."""
    record.remove()
    if record in _leftovers:
        _leftovers.remove(record)


def register(mountpoint: Path, unmount: Callable[[], None]) -> ActiveMount:
    """Remember a mount that now exists; returns the record for `release`."""
    record = ActiveMount(mountpoint, unmount)
    _active.append(record)
    return record


def release(record: ActiveMount) -> None:
    """Unmount one registered mount now (normal path, not cleanup). If the polite
    unmount fails, the mount is detached anyway and the failure re-raised."""
    if record in _active:
        _active.remove(record)
    try:
        record.unmount()
    except BaseException:
        force_unmount(record.mountpoint)
        raise
    wait_unmounted(record.mountpoint)


def _unescape_mountinfo(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below `prefix`, deepest first (unmount order)."""
    found = []
    base = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mountinfo(line.split()[4])
            if point == base or point.startswith(base + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(str(p)), reverse=True)


def is_mounted(path: Path) -> bool:
    """True if `path` itself is a mount point."""
    return path in mounts_under(path)


def force_unmount(mountpoint: Path) -> None:
    """Last resort: detach the mount whatever holds it (FUSE or not)."""
    for argv in (["fusermount3", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        if not is_mounted(mountpoint):
            return
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_unmounted(mountpoint: Path, timeout: float = 10.0) -> None:
    """Some unmounts (FUSE daemons exiting) finish asynchronously; wait, then force."""
    deadline = time.monotonic() + timeout
    while is_mounted(mountpoint):
        if time.monotonic() > deadline:
            log(f"{mountpoint} still mounted after {timeout:.0f}s; detaching it")
            force_unmount(mountpoint)
            return
        time.sleep(0.02)


def cleanup() -> None:
    """Remove every registered mount, then every leftover, newest first; never raises."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not strand mounts
    try:
        while _active:
            record = _active.pop()
            try:
                record.unmount()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                log(f"unmounting {record.mountpoint} failed ({exc}); detaching it")
            force_unmount(record.mountpoint)
        while _leftovers:
            leftover = _leftovers.pop()
            try:
                leftover.remove()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                log(f"removing {leftover.what} failed: {exc}")
    finally:
        signal.signal(signal.SIGINT, old)


def remove_stale(prefix: Path) -> None:
    """Detach mounts a killed earlier run left below `prefix`."""
    for point in mounts_under(prefix):
        log(f"removing stale mount {point} from an earlier run")
        force_unmount(point)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C does: unwind, clean up, report."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def cleanup_on_exit() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt and always run `cleanup()`."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
