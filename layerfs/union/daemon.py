"""Mount a merged tree and serve it: in the foreground, or as a daemon that outlives the CLI.

`layerfs mount` must return only once the mount is live, and fail with one clear
line if it cannot be. So everything that can be checked is checked before the
fork (mount point, /dev/fuse, the tree itself); the daemon then mounts and
reports "ok" or the reason through a pipe, and the CLI waits for that word.

SIGTERM, SIGINT and SIGHUP to a server unmount its mount cleanly, as `layerfs
umount` would (see `_StopSignals` for why that takes a thread of its own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import prctl

from layerfs import handoff
from layerfs.errors import BadInput, Busy, LayerfsError, NotFound
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.attach import fusermount
from layerfs.union.detach import detach, wait_exit
from layerfs.union.mounts import (FSTYPE, MountRecord, drop_record, known_mounts, layerfs_device,
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
# What ends a server cleanly; what the signal thread interrupts the serving loop with.
# SIGURG is ignored by default, so a stray one is harmless (Go preempts with it too).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_WAKE = signal.SIGURG
_WAKE_EVERY = 0.005


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


class _StopSignals:
    """SIGTERM, SIGINT and SIGHUP end a server as `layerfs umount` would: its mount is
    detached (lazily if busy, as umount -l), the serving loop ends, and the caller
    closes the session and the writable layer's journal.

    Why a thread: the patched pyfuse3 serves from a C loop that notices a signal
    only as EINTR from the poll(2) it sleeps in. A signal that comes while it spins
    for the next request (SPIN_US after each one) or answers one is merely noted,
    and the loop then sleeps on until the next request: on an idle mount, for good.
    (A trio signal receiver fares worse still: its task never starts, since the loop
    never yields before it blocks.) So the stop signals are blocked in the serving
    thread and taken by sigwait in a thread of their own. It detaches the mount,
    which by itself ends the session when nothing else holds the mount, then sends
    the serving thread SIGURG until the loop has ended: its handler calls
    pyfuse3.terminate(), and a wake-up that lands while the loop spins is followed
    by the next one."""

    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.detached = False     # the mount is off its mount point: libfuse must not unmount the path
        self._requested = False
        self._serving = False
        self._terminate: Callable[[], None] = lambda: None
        self._device: str | None = None
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._in_sigwait = False
        self._thread: threading.Thread | None = None
        self._main = threading.get_ident()
        self._saved_mask: set[signal.Signals] = set()
        self._saved_wake: object = None

    def hold(self) -> None:
        """Hold the stop signals from before the mount exists: one that came between
        the mount and the thread would otherwise leave a dead mount."""
        self._saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._saved_wake = signal.signal(_WAKE, self._woken)

    def release(self) -> None:
        self.finish()
        while STOP_SIGNALS & signal.sigpending():  # a second Ctrl-C while stopping: already done
            signal.sigtimedwait(STOP_SIGNALS, 0)
        signal.signal(_WAKE, self._saved_wake or signal.SIG_DFL)  # type: ignore[arg-type]
        signal.pthread_sigmask(signal.SIG_SETMASK, self._saved_mask)

    def start(self, terminate: Callable[[], None]) -> None:
        """Watch for the stop signals, now that the mount exists."""
        self._terminate = terminate
        self._device = device = layerfs_device(self.mountpoint)
        self._thread = threading.Thread(target=self._watch, args=(device,), name="stop-signals", daemon=True)
        self._thread.start()

    def take_off(self) -> None:
        """Once serving has ended: the mount off its mount point, unless it is already (a
        mount libfuse did not make, which libfuse does not unmount: union/attach.py)."""
        if not self.detached:  # before start(), the device is the one mounted there now
            self.detached = self._detach(self._device or layerfs_device(self.mountpoint))

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around the serving loop, inside trio.run: only then may terminate() be called."""
        self._serving = True
        try:
            if self._requested:  # stopped before the loop began: it ends at once
                self._terminate()
            yield
        finally:
            with self._lock:  # no wake-up from here on: trio is about to close its wakeup fd
                self._serving = False

    def finish(self) -> None:
        """Once the loop has ended: stop the thread (it no longer wakes anything)."""
        self._finished.set()
        with self._lock:
            if self._in_sigwait and self._thread is not None and self._thread.ident is not None:
                signal.pthread_kill(self._thread.ident, signal.SIGHUP)  # ends its sigwait
        if self._thread is not None:
            self._thread.join()

    def _woken(self, _signum: int, _frame: object) -> None:
        if self._requested and self._serving:
            self._terminate()

    def _watch(self, device: str | None) -> None:
        with self._lock:
            self._in_sigwait = not self._finished.is_set()
        if not self._in_sigwait:
            return
        signal.sigwait(STOP_SIGNALS)
        with self._lock:
            self._in_sigwait = False
        if self._finished.is_set():
            return
        self.detached = self._detach(device)
        self._requested = True
        while not self._finished.is_set():
            with self._lock:
                if self._serving:  # before the loop, serving() sees the request itself
                    signal.pthread_kill(self._main, _WAKE)
            self._finished.wait(_WAKE_EVERY)

    def _detach(self, device: str | None) -> bool:
        """Take the mount off its mount point, if it is still ours there; whether the
        path no longer holds it (or holds it under someone else's mount: not ours to undo)."""
        if device is None:
            return False
        if layerfs_device(self.mountpoint) != device:
            return True
        try:
            detach(self.mountpoint, lazy=True)
        except LayerfsError:
            return False  # libfuse's own unmount at close tries again
        return True


def _mount_fuse(operations: "pyfuse3.Operations", mountpoint: Path, options: set[str]) -> str | None:
    """Mount; None, or why not in libfuse's (or fusermount3's) own words. A user without
    privileges mounts through fusermount3, spawned here (union/attach.py); root mounts
    with mount(2), which libfuse calls."""
    import pyfuse3

    where = str(mountpoint)
    if os.geteuid() != 0:
        fd, why = fusermount(where, options)
        if fd is None:
            return f"cannot mount {mountpoint}: {why}"
        where = f"/dev/fd/{fd}"
    with tempfile.TemporaryFile() as libfuse_messages:
        saved_stderr = os.dup(2)
        os.dup2(libfuse_messages.fileno(), 2)
        try:
            pyfuse3.init(operations, where, options)
        except RuntimeError:
            libfuse_messages.seek(0)
            said = libfuse_messages.read().decode(errors="replace").strip().splitlines()
            if where != str(mountpoint):
                with contextlib.suppress(LayerfsError):
                    detach(str(mountpoint), lazy=True)
            return f"cannot mount {mountpoint}: {said[-1] if said else 'libfuse refused'}"
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    return None


async def _run_loop(stop: _StopSignals) -> None:
    """Serve until unmounted or stopped. Every handler here runs to completion without
    awaiting, so the patched pyfuse3's loop can serve requests without trio's
    per-request scheduling, and poll briefly for the next request instead of sleeping
    between requests (see SPIN_US)."""
    import pyfuse3

    blocking_main = getattr(pyfuse3, "main_blocking", None)
    with stop.serving():
        await (blocking_main(SPIN_US) if blocking_main else pyfuse3.main())


def _mount_here(make_operations: Callable[[], "pyfuse3.Operations"], mountpoint: Path, fsname: str,
                options: set[str]) -> tuple["pyfuse3.Operations", _StopSignals] | str:
    """Mount in this process, the stop signals held: what serves it, or why not."""
    try:
        operations = make_operations()
    except LayerfsError as e:
        return e.message
    stop = _StopSignals(str(mountpoint))
    stop.hold()
    error = _mount_fuse(operations, mountpoint, options | {f"fsname={fsname}", "subtype=layerfs"})
    if error is not None:
        stop.release()
        return error
    return operations, stop


def _serve_mounted(operations: "pyfuse3.Operations", stop: _StopSignals,
                   on_serving: Callable[[], None] = lambda: None) -> int:
    """Serve a mount made by _mount_here until it is unmounted or stopped."""
    import pyfuse3
    import trio

    try:
        stop.start(pyfuse3.terminate)
        on_serving()
        trio.run(_run_loop, stop)
    finally:
        _close(operations, stop)
    return 0


def _close(operations: "pyfuse3.Operations", stop: _StopSignals) -> None:
    import pyfuse3

    stop.finish()
    if os.geteuid() != 0:
        stop.take_off()  # mounted by fusermount3 for us (see _mount_fuse): libfuse leaves it
    # libfuse unmounts unless the session ended with the mount (it checks); a path the
    # mount was detached from may hold another mount by now
    pyfuse3.close(unmount=not stop.detached)
    close = getattr(operations, "close", None)
    if close is not None:
        close()  # the journal of a container's layer, flushed
    stop.release()


def _serve(make_operations: Callable[[], "pyfuse3.Operations"], mountpoint: Path, fsname: str,
           options: set[str], on_mounted: Callable[[str | None], None]) -> int:
    """Mount, call `on_mounted(error or None)`, serve until unmounted or signalled."""
    mounted = _mount_here(make_operations, mountpoint, fsname, options)
    if isinstance(mounted, str):
        on_mounted(mounted)
        return 1
    return _serve_mounted(*mounted, on_serving=lambda: on_mounted(None))


def _as_daemon() -> None:
    """What a server is, however it started: a session of its own, no terminal, its name."""
    os.setsid()
    prctl.set_name(DAEMON_NAME)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


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
    if not with_parent and handoff.allowed():
        return _mount_for_handoff(store, make_operations, mountpoint, fsname, options, record)

    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        if with_parent:
            prctl.set_pdeathsig(signal.SIGTERM)
            if os.getppid() != parent:  # it died before the line above
                os._exit(1)
        _as_daemon()
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


def _mount_for_handoff(store: Store, make_operations: Callable[[], "pyfuse3.Operations"], mountpoint: Path,
                       fsname: str, options: set[str], record: Callable[[int], None]) -> int:
    """Mount here, and leave the serving to this process once the command has answered
    (layerfs/handoff.py): a service worker becomes the mount's server itself."""
    mounted = _mount_here(make_operations, mountpoint, fsname, options)
    if isinstance(mounted, str):
        raise LayerfsError(mounted)
    try:
        record(os.getpid())
    except BaseException:
        _close(*mounted)
        raise

    def serve() -> int:
        _as_daemon()
        try:
            return _serve_mounted(*mounted)
        finally:
            drop_record(store, str(mountpoint))
    handoff.leave(serve)
    return os.getpid()


def unmount(store: Store, path: Path, timeout: float = 10.0, force: bool = False) -> None:
    """Unmount a layerfs mount and wait for its daemon to finish.

    force=True is for removing what is mounted: a busy mount is detached lazily and
    its daemon stopped, so processes still inside get ENOTCONN instead of a daemon
    writing into a layer that is about to be deleted. A dead mount (its daemon
    killed) serves nothing and has nothing to flush: it is always detached."""
    mountpoint = str(absolute(path))
    records = [r for r in known_mounts(store) if r.mountpoint == mountpoint]
    if mount_table().get(mountpoint) != FSTYPE:
        elsewhere = next((r for r in records if not r.here), None)
        if elsewhere is not None and (force or abandoned(elsewhere.pid)):
            os.kill(elsewhere.pid, signal.SIGTERM)  # it unmounts in its own namespace
            _wait_exit(elsewhere, timeout)
            return
        if elsewhere is not None:
            raise NotFound(f"{mountpoint} is mounted in another mount namespace (daemon pid "
                           f"{elsewhere.pid}, e.g. a `layerfs unshare` session) that is still in use: "
                           "unmount it there")
        raise NotFound(f"{mountpoint} is not a layerfs mount (see `layerfs mounts`)")
    record = next((r for r in records if r.here), None)
    served = record if record is not None and record.served else None
    try:
        detach(mountpoint, lazy=record is not None and served is None)
    except Busy:
        if not force:
            raise
        detach(mountpoint, lazy=True)
        if served is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(served.pid, signal.SIGTERM)
    if served is not None:
        _wait_exit(served, timeout)
    drop_record(store, mountpoint)


def _wait_exit(record: MountRecord, timeout: float) -> None:
    """Wait for a daemon to finish; one that does not must not have its layer removed
    or its mount point reused under it."""
    if not wait_exit(record.pid, record.started, timeout):
        raise Busy(f"the daemon of {record.mountpoint} (pid {record.pid}) did not stop within "
                   f"{timeout:.0f} s: stop it (kill {record.pid}) and try again")


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
