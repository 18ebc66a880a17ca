"""Mount a merged tree and serve it: in the foreground, or as a daemon that outlives the CLI.

`layerfs mount` must return only once the mount is live, and fail with one clear
line if it cannot be. So everything that can be checked is checked before the
fork (mount point, /dev/fuse, the tree itself); the daemon then mounts and
reports "ok" or the reason through a pipe, and the CLI waits for that word.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import prctl

from layerfs.errors import BadInput, Busy, LayerfsError, NotFound
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.mounts import (FSTYPE, MountRecord, daemon_alive, drop_record, live_mounts,
                                  mount_namespace, mount_table, save_record)

if TYPE_CHECKING:
    import pyfuse3

# After answering a request the daemon polls for the next one this long before it
# sleeps. On a VM, waking a sleeping thread costs ~70 us, four times the round trip
# itself; requests of a busy client arrive within a few microseconds, so the poll
# catches nearly all of them, and an idle mount still sleeps.
SPIN_US = 50
# What `ps` shows for a daemon (/proc/PID/comm), and how `layerfs unshare` finds the
# daemons of its namespace to stop them when it ends.
DAEMON_NAME = "layerfs-mount"


def absolute(path: Path) -> Path:
    """`path` made absolute with its parent resolved, without touching `path` itself:
    a FUSE mount whose daemon died answers every stat with ENOTCONN."""
    full = os.path.abspath(path)
    return Path(os.path.realpath(os.path.dirname(full)), os.path.basename(full))


def check_mountpoint(path: Path) -> Path:
    """The absolute mount point, if it exists, is an empty directory and is not mounted
    on already. What a directory holds would be hidden by the mount, and come back at
    umount: refused, so nobody loses sight of files they meant to see."""
    mountpoint = absolute(path)
    if str(mountpoint) in mount_table():
        raise Busy(f"{mountpoint} is already a mount point: unmount it or choose another directory")
    if not mountpoint.exists():
        raise NotFound(f"mount point {mountpoint} does not exist: create the directory first")
    if not mountpoint.is_dir():
        raise BadInput(f"mount point {mountpoint} is not a directory")
    with os.scandir(mountpoint) as entries:
        if next(entries, None) is not None:
            raise BadInput(f"mount point {mountpoint} is not empty: mount on an empty directory")
    return mountpoint


def check_fuse() -> None:
    """Fail early, in words, where libfuse would only print "fuse: failed to open /dev/fuse"."""
    if not os.path.exists("/dev/fuse"):
        raise LayerfsError("FUSE is not available: /dev/fuse is missing (load the fuse kernel module)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise LayerfsError("cannot open /dev/fuse: permission denied (as root: chmod 0666 /dev/fuse)")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise LayerfsError("fusermount3 is missing: install the fuse3 package to mount without root")


def _serve(make_operations: Callable[[], "pyfuse3.Operations"], mountpoint: Path, fsname: str,
           options: set[str], on_mounted: Callable[[str | None], None]) -> int:
    """Mount, call `on_mounted(error or None)`, serve until unmounted or signalled."""
    import pyfuse3
    import trio

    try:
        operations = make_operations()
    except LayerfsError as e:
        on_mounted(e.message)
        return 1
    options = options | {f"fsname={fsname}", "subtype=layerfs"}
    with tempfile.TemporaryFile() as libfuse_messages:
        saved_stderr = os.dup(2)
        os.dup2(libfuse_messages.fileno(), 2)
        try:
            pyfuse3.init(operations, str(mountpoint), options)
        except RuntimeError:
            libfuse_messages.seek(0)
            said = libfuse_messages.read().decode(errors="replace").strip().splitlines()
            on_mounted(f"cannot mount {mountpoint}: {said[-1] if said else 'libfuse refused'}")
            return 1
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    still_mounted = True
    # Every handler here runs to completion without awaiting, so the patched pyfuse3's
    # loop can serve requests without trio's per-request scheduling, and poll briefly
    # for the next request instead of sleeping between requests (see SPIN_US).
    blocking_main = getattr(pyfuse3, "main_blocking", None)

    async def main() -> None:
        nonlocal still_mounted
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
            nursery.start_soon(stop_on_signal)
            await (blocking_main(SPIN_US) if blocking_main else pyfuse3.main())
            still_mounted = False  # main() returns by itself only once the kernel unmounted us
            nursery.cancel_scope.cancel()

    try:
        on_mounted(None)
        trio.run(main)
    finally:
        pyfuse3.close(unmount=still_mounted)
        close = getattr(operations, "close", None)
        if close is not None:
            close()
    return 0


def mount(store: Store, make_operations: Callable[[], "pyfuse3.Operations"], mountpoint: Path,
          label: str, record_id: str, foreground: bool, kind: MountKind, writable: bool = False,
          with_parent: bool = False) -> int:
    """Mount what `make_operations` serves at `mountpoint`; return the serving pid once live.

    `make_operations` runs in the serving process (so a container's writable layer
    is opened by its only writer); `label` and `record_id` (image or container id)
    go into the mount record. `with_parent`: the daemon unmounts and ends when this
    process ends, even by SIGKILL (a container's launcher)."""
    check_fuse()
    fsname = "layerfs:" + label
    options = kind.fuse_options() | (set() if writable else {"ro"})

    def record(pid: int) -> None:
        save_record(store, MountRecord.of_daemon(str(mountpoint), label, record_id, pid, kind.label))

    if foreground:
        def on_mounted(error: str | None) -> None:
            if error:
                raise LayerfsError(error)
            record(os.getpid())
        try:
            return _serve(make_operations, mountpoint, fsname, options, on_mounted)
        finally:
            drop_record(store, str(mountpoint))

    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        os.setsid()
        if with_parent:
            prctl.set_pdeathsig(signal.SIGTERM)
            if os.getppid() != parent:  # it died before the line above
                os._exit(1)
        prctl.set_name(DAEMON_NAME)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        code = 1

        def report(error: str | None) -> None:
            if error is None:
                record(os.getpid())
            os.write(write_end, (error or "ok").encode() + b"\n")
            os.close(write_end)
        try:
            code = _serve(make_operations, mountpoint, fsname, options, report)
        except BaseException as e:  # noqa: BLE001 - a daemon has nobody else to tell
            try:
                report(f"mount daemon failed: {e}")
            except OSError:
                pass
        finally:
            drop_record(store, str(mountpoint))
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.readline().decode(errors="replace").strip()
    if answer != "ok":
        os.waitpid(pid, 0)
        raise LayerfsError(answer or f"the mount daemon for {mountpoint} died before mounting")
    return pid


def unmount(store: Store, path: Path, timeout: float = 10.0, force: bool = False) -> None:
    """Unmount a layerfs mount and wait for its daemon to finish.

    force=True is for removing what is mounted: a busy mount is detached lazily and
    its daemon stopped, so processes still inside get ENOTCONN instead of a daemon
    writing into a layer that is about to be deleted."""
    mountpoint = str(absolute(path))
    records = [r for r in live_mounts(store) if r.mountpoint == mountpoint]
    if mount_table().get(mountpoint) != FSTYPE:
        elsewhere = next((r for r in records if not r.here), None)
        if elsewhere is not None and (force or abandoned(elsewhere.pid)):
            os.kill(elsewhere.pid, signal.SIGTERM)  # it unmounts in its own namespace
            _wait_exit(elsewhere.pid, mountpoint, timeout)
            return
        if elsewhere is not None:
            raise NotFound(f"{mountpoint} is mounted in another mount namespace (daemon pid "
                           f"{elsewhere.pid}, e.g. a `layerfs unshare` session) that is still in use: "
                           "unmount it there")
        raise NotFound(f"{mountpoint} is not a layerfs mount (see `layerfs mounts`)")
    pid = next((r.pid for r in records if r.here), None)
    done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        busy = any("busy" in line.lower() for line in said)
        if busy and force:
            done = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
            said = done.stderr.strip().splitlines()
            if done.returncode == 0 and pid is not None and daemon_alive(pid):
                os.kill(pid, signal.SIGTERM)
        elif busy:
            raise Busy(f"{mountpoint} is busy: close the files and shells using it, then umount again")
        if done.returncode != 0:
            raise LayerfsError(f"cannot unmount {mountpoint}: {said[-1] if said else 'fusermount3 failed'}")
    if pid is not None:
        _wait_exit(pid, mountpoint, timeout)
    drop_record(store, mountpoint)


def _wait_exit(pid: int, mountpoint: str, timeout: float) -> None:
    """Wait for a daemon to finish; one that does not must not have its layer removed
    or its mount point reused under it."""
    deadline = time.monotonic() + timeout
    while daemon_alive(pid):
        if time.monotonic() > deadline:
            raise Busy(f"the daemon of {mountpoint} (pid {pid}) did not stop within "
                       f"{timeout:.0f} s: stop it (kill {pid}) and try again")
        time.sleep(0.005)


def abandoned(pid: int) -> bool:
    """Whether a daemon is all that is left in its mount namespace (the session that
    made it was killed): nothing can reach its mount, so nothing is lost by stopping it."""
    namespace = mount_namespace(pid)
    if not namespace:
        return False
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and mount_namespace(entry.name) == namespace:
            if _command(entry.name) not in (DAEMON_NAME, None):  # None: gone meanwhile
                return False
    return True


def is_daemon(pid: str) -> bool:
    return _command(pid) == DAEMON_NAME


def _command(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None
