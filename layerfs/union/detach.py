"""Taking a FUSE mount off its mount point, and waiting for a server to end.

Unmounting is on the hot path of `layerfs run --rm`, which must beat podman: root
(on the host, or root of the user namespace that made the mount, as the launcher
is) calls umount2(2) itself instead of spawning fusermount3, and waits for the
server on a pidfd instead of polling /proc. A user without privileges goes
through the setuid fusermount3, the only one allowed to unmount for them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import subprocess
import time

from layerfs.errors import Busy, LayerfsError
from layerfs.union.mounts import daemon_alive, process_start

MNT_DETACH = 2       # umount -l: off the tree now, the file system ends with its last user
UMOUNT_NOFOLLOW = 8  # a symbolic link put at the mount point is not followed elsewhere

_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def umount2(target: str, flags: int) -> None:
    if _libc.umount2(os.fsencode(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


def _busy(mountpoint: str) -> Busy:
    return Busy(f"{mountpoint} is busy: close the files and shells using it, then umount again")


def detach(mountpoint: str, lazy: bool) -> None:
    """Unmount `mountpoint`; `lazy` detaches it even while in use, as umount -l does.

    Raises Busy when it is in use and not `lazy`. Root whose umount2 is refused
    (EPERM: the mount belongs to a namespace above its own) falls back to
    fusermount3, which may still be allowed to."""
    if os.geteuid() == 0:
        try:
            umount2(mountpoint, (MNT_DETACH if lazy else 0) | UMOUNT_NOFOLLOW)
            return
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise _busy(mountpoint) from None
            if e.errno != errno.EPERM:
                raise LayerfsError(f"cannot unmount {mountpoint}: {e.strerror}") from None
    _fusermount(mountpoint, lazy)


def _fusermount(mountpoint: str, lazy: bool) -> None:
    try:
        done = subprocess.run(["fusermount3", "-u", *(["-z"] if lazy else []), mountpoint],
                              capture_output=True, text=True)
    except FileNotFoundError:
        raise LayerfsError(f"cannot unmount {mountpoint}: fusermount3 is missing (install fuse3)") from None
    if done.returncode == 0:
        return
    said = done.stderr.strip().splitlines()
    if any("busy" in line.lower() for line in said):
        raise _busy(mountpoint)
    raise LayerfsError(f"cannot unmount {mountpoint}: {said[-1] if said else 'fusermount3 failed'}")


def wait_exit(pid: int, started: str, timeout: float) -> bool:
    """Whether the process `pid` (that started at `started`, in clock ticks; "" if
    unknown) has ended within `timeout` seconds. A pidfd becomes readable the moment
    the process ends; without pidfd_open (Linux < 5.3) /proc is polled."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return _poll_exit(pid, timeout)
    try:
        if started and process_start(pid) != started:
            return True  # the pid was reused: the process meant is gone
        waiting = select.poll()
        waiting.register(pidfd, select.POLLIN)
        return bool(waiting.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(pidfd)


def _poll_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while daemon_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
