"""A user namespace kept ready, so that a rootless start joins one instead of making one.

Making a user namespace with the subordinate map costs two runs of the setuid
newuidmap/newgidmap (~12 ms here, a fifth of a start). podman keeps one made
beforehand in its pause process, and joins it for each container; the resident
service does the same: it forks a holder that enters a namespace with the
user's map and then only waits, and each start (a worker forked from the
service, still single-threaded) joins that namespace with setns and makes its
own mount namespace there. Containers then share the user namespace, as
podman's do, and nothing else: pid, mount, uts and ipc stay their own.

The holder dies with the service (PR_SET_PDEATHSIG); containers started in its
namespace keep it alive by being in it. A process that holds nothing (every
CLI run in-process) makes a namespace per start, as before.
"""

from __future__ import annotations

import os
import signal

import prctl

from launcher import syscalls
from launcher.idmap import IdMap
from launcher.userns import enter_user_namespace
from layerfs.errors import LayerfsError
from layerfs.union.mounts import daemon_alive

NAME = "layerfs-userns"  # what ps shows for the holder


class HeldNamespace:
    def __init__(self, idmap: IdMap, pid: int, fd: int) -> None:
        self.idmap = idmap
        self.pid = pid
        self.fd = fd  # /proc/PID/ns/user, opened while the holder surely lived

    def describe(self) -> str:
        kind = "your id only" if self.idmap.single else f"{self.idmap.size} ids"
        return f"user namespace held by pid {self.pid} ({kind})"


_held: HeldNamespace | None = None


def hold(idmap: IdMap) -> HeldNamespace:
    """Start the holder of a namespace with `idmap`; later joins in this process and its
    forks use it. Call it before any thread exists, and before opening what the
    holder must not keep open (it closes every descriptor but 0-2)."""
    global _held
    said_r, said_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(said_r)
        _be_holder(idmap, parent, said_w)
    os.close(said_w)
    with os.fdopen(said_r, "rb") as said:
        answer = said.read().decode(errors="replace")
    if answer != "ok":
        os.waitpid(pid, 0)
        raise LayerfsError(answer or "the user namespace holder died")
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    _held = HeldNamespace(idmap, pid, fd)
    return _held


def _be_holder(idmap: IdMap, parent: int, said: int) -> None:
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        os.closerange(3, said)
        os.closerange(said + 1, os.sysconf("SC_OPEN_MAX"))
        prctl.set_name(NAME)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        # No mount namespace of its own: one would get a copy of every mount made on the
        # host from then on (propagation), and keep each FUSE session alive after its
        # umount. Each joiner makes its own mount namespace instead.
        enter_user_namespace(idmap, with_mounts=False)
        os.write(said, b"ok")
    except LayerfsError as e:
        os.write(said, e.message.encode(errors="replace"))
        os._exit(1)
    except OSError as e:
        os.write(said, f"cannot hold a user namespace: {e.strerror}".encode(errors="replace"))
        os._exit(1)
    os.close(said)
    while True:
        signal.pause()


def held() -> HeldNamespace | None:
    return _held


def join_held(idmap: IdMap) -> bool:
    """Move this process into the held namespace, as root there with a mount namespace of
    its own, if one is held with the same map (the subordinate ranges may have changed
    since); whether it did."""
    if _held is None or _held.idmap != idmap or not daemon_alive(_held.pid):
        return False
    syscalls.setns(_held.fd, syscalls.CLONE_NEWUSER)
    syscalls.unshare(syscalls.CLONE_NEWNS)
    if not idmap.single:
        os.setgroups([])  # as enter_user_namespace: host groups have no id inside
    return True
