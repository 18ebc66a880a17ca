"""Where a user's service listens: a private directory, one socket per store.

$XDG_RUNTIME_DIR/layerfs when the runtime directory is this user's (a sudo or
runuser shell may carry another user's), else /tmp/layerfs-UID. The directory
must be this user's and closed to everyone else: otherwise another user could
put a socket there and receive the commands (and the terminals) sent to it, so
the service is not used at all. Stdlib only: the client reads this first thing.
"""

from __future__ import annotations

import os
import stat
import zlib


class Place:
    """The files of one service, beside each other in the private directory."""

    __slots__ = ("directory", "socket", "lock", "pid", "log")

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        base = os.path.join(directory, name)
        self.socket = base + ".sock"  # where the service listens
        self.lock = base + ".lock"    # starters take it in turn: racing starts end with one service
        self.pid = base + ".pid"      # the service's pid; it holds a lock on this file while it lives
        self.log = base + ".log"      # the service's stderr: why it did not start, if it did not


def _runtime_directory() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime:
        try:
            if os.stat(runtime).st_uid == os.geteuid():
                return os.path.join(runtime, "layerfs")
        except OSError:
            pass
    return f"/tmp/layerfs-{os.geteuid()}"


def private_directory(create: bool) -> str | None:
    """The service directory, made if asked; None when it is missing or not private."""
    directory = _runtime_directory()
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        info = os.lstat(directory)
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077
    return directory if private else None


def place_for(store_root: str, create: bool = False) -> Place | None:
    """The service place of the store at `store_root` (an absolute path)."""
    directory = private_directory(create)
    if directory is None:
        return None
    return Place(directory, f"service-{zlib.crc32(store_root.encode()):08x}")
