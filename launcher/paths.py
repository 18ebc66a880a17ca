"""Paths inside a container's root, resolved as the container would resolve them.

The launcher works on the image's tree from outside (mount points, the working
directory, volume targets, /etc files), as root. A path there is the image's
to choose: `/var/run -> /run`, `/etc/resolv.conf -> /run/systemd/...`, or a
hostile `/proc -> /etc`. Joining it to the root and letting the host follow the
links would act on host files; here every symbolic link is followed within the
root, an absolute target starts again at the root, and `..` stops there, as
chroot(2) and runc's securejoin do.
"""

from __future__ import annotations

import errno
import os
import stat

_MAX_LINKS = 40  # the kernel's limit for one lookup


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def resolve_in(root: str, path: str) -> str:
    """The host path of `path` inside `root`, its links followed within `root`; the
    part that does not exist yet is kept as given, below what does."""
    pending, resolved, links = _parts(path), [], 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending = _parts(target) + pending
    return os.path.join(root, *resolved)


def read_inside(root: str, path: str) -> str | None:
    """A text file of the container (its /etc/passwd, say), None when it has none."""
    try:
        with open(resolve_in(root, path)) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
