"""Putting /dev/fuse on a mount point for a user without privileges: fusermount3, spawned.

libfuse mounts for such a user by forking and running the setuid fusermount3,
which opens /dev/fuse, mounts it and sends the descriptor back over a socket
(named by $_FUSE_COMMFD). Forked from a service worker, a 30 MiB interpreter,
that fork alone costs 2-3 ms of a 20 ms `layerfs mount`; posix_spawn runs the
same program without copying the page tables (vfork). libfuse then takes the
descriptor as the mount point "/dev/fd/N", its way of serving a mount made by
someone else, and leaves the unmount to whoever made it: to us.

Only mount options go to fusermount3 (every option layerfs passes libfuse is
one); it adds what it computes itself (rootmode, user_id, group_id).
"""

from __future__ import annotations

import array
import os
import shutil
import socket

FUSERMOUNT = "fusermount3"
# What libfuse gives fusermount3 for every mount by a user (fusermount3 enforces them anyway).
USER_DEFAULTS = ("nosuid", "nodev")


def fusermount(mountpoint: str, options: set[str]) -> tuple[int | None, str]:
    """The /dev/fuse descriptor now mounted at `mountpoint`, or None and why not (the
    last line fusermount3 printed)."""
    program = shutil.which(FUSERMOUNT)
    if program is None:
        return None, f"{FUSERMOUNT} is missing: install the fuse3 package to mount without root"
    wanted = [*USER_DEFAULTS, *sorted(options - set(USER_DEFAULTS) - {"suid", "dev"})]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    said_r, said_w = os.pipe2(os.O_CLOEXEC)
    try:
        os.set_inheritable(theirs.fileno(), True)  # the one descriptor it gets besides 0-2
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        pid = os.posix_spawn(program, [FUSERMOUNT, "-o", ",".join(wanted), "--", mountpoint], env,
                             file_actions=[(os.POSIX_SPAWN_DUP2, said_w, 2)])
    except OSError as e:
        ours.close()
        return None, f"cannot run {FUSERMOUNT}: {e.strerror}"
    finally:
        theirs.close()
        os.close(said_w)
    try:
        fd = _receive_fd(ours)
        os.waitpid(pid, 0)
        said = _read_all(said_r).decode(errors="replace").strip().splitlines()
    finally:
        ours.close()
        os.close(said_r)
    if fd is None:
        return None, said[-1] if said else f"{FUSERMOUNT} sent no descriptor"
    return fd, ""


def _receive_fd(sock: socket.socket) -> int | None:
    fds = array.array("i")
    try:
        _data, ancillary, _flags, _address = sock.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
    except OSError:
        return None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        return None
    os.set_inheritable(fds[0], False)
    return fds[0]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)
