"""Small helpers shared by every bench module: running commands, logging, timing."""

from __future__ import annotations

import fcntl
import os
import shutil
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("LAYERFS_BENCH_CACHE", "/var/cache/layerfs-bench"))


class BenchError(Exception):
    """A failure worth one clear line (not a traceback) from `scripts/bench`."""


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays the table (or the JSON)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    quiet: bool = False,
    capture: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise BenchError naming the command and its stderr.

    `quiet` discards stdout (long tool output would drown the progress log);
    `capture` returns stdout and stderr as text.
    """
    args = [str(a) for a in argv]
    stdout = subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None)
    stderr = subprocess.PIPE if capture or quiet else None
    proc = subprocess.run(
        args,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()
        tail = f": {detail[-1]}" if detail else ""
        raise BenchError(f"`{shlex.join(args)}` exited {proc.returncode}{tail}")
    return proc


def timed(argv: Sequence[str | os.PathLike[str]], *, shell: bool = False) -> float:
    """Wall time in seconds of one command, output discarded; fails loudly.

    Uses a plain fork+exec per measurement: the ~1 ms spawn cost is the same for
    every filesystem, so ratios stay fair.
    """
    args: str | list[str] = str(argv[0]) if shell else [str(a) for a in argv]
    start = time.perf_counter()
    proc = subprocess.run(
        args,
        shell=shell,
        executable="/bin/bash" if shell else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        shown = args if isinstance(args, str) else shlex.join(args)
        raise BenchError(f"timed command `{shown}` failed: {proc.stderr.strip()[-300:]}")
    return elapsed


@contextmanager
def exclusive(cache: Path) -> Iterator[None]:
    """One bench at a time per cache directory: two would share mount points and
    scratch dirs, and each removes the other's "stale" mounts at start."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"another scripts/bench is running on {cache}") from None
        yield


def drop_caches() -> None:
    """Write back and drop page, dentry and inode caches, for the cold figures."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def format_duration(seconds: float) -> str:
    """Human form for the build log: 83 s -> '1m23s'."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def cached_layout(layout: Path, rebuild: bool) -> bool:
    """Whether the cached OCI layout `layout` can be used as it is. When not (missing,
    or --rebuild), it and older versions beside it (oci-v*) are removed, for the
    caller to build it anew."""
    if rebuild and layout.exists():
        shutil.rmtree(layout)
    if layout.exists():
        return True
    for old in layout.parent.glob("oci-v*"):
        shutil.rmtree(old)
    return False
