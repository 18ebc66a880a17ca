"""The resident service: one per user and store, listening on a private unix socket.

It exists to be warm. Everything a start or a mount needs is imported before
the first request (and the garbage collector's view of it frozen, so forks share
those pages); each command then runs in a worker forked from here, which costs
a fork instead of an interpreter start and ~200 imports. The loop itself only
accepts, checks who is calling (SO_PEERCRED: this user only, also for root),
and hands the command to a worker (workers.py: forking them, the one forked
ahead of the next request, reaping); it is single-threaded so that forking
from it is safe, and it holds nothing a command needs after the fork:
containers and mounts live in processes of their own, recorded in the store, so
that a service that stops or is killed takes none of them along.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from layerfs.service.place import Place
from layerfs.service.wire import WireError, close_all, identity, mount_namespace, peer_uid, receive, send
from layerfs.service.worker import Runner
from layerfs.service.workers import Workers

REQUEST_TIMEOUT = 5.0  # a caller that connects sends its request at once


@dataclass
class Service:
    place: Place
    store_root: str
    runner: Runner
    idle_seconds: float
    details: Callable[[], dict[str, Any]] = dict  # what `service status` adds (caches, namespaces)
    outdated: Callable[[], bool] = lambda: False  # whether its code changed on disk since it started
    after_command: Callable[[], None] = lambda: None  # with no command running (refresh caches)
    started: float = field(default_factory=time.time)
    served: int = 0
    _stopping: bool = False

    def serve(self, ready_fd: int) -> None:
        """Listen, say so on `ready_fd`, and serve until stopped or idle for too long."""
        _open_standard_streams()  # or a caller's socket or streams could get fds 0-2 here
        pid_lock = self._take_pid_file()
        if pid_lock is None:
            _say(ready_fd, "another service holds " + self.place.pid)
            return
        try:
            self._listener = listener = self._listen()
        except OSError as e:
            _say(ready_fd, f"cannot listen on {self.place.socket}: {e.strerror}")
            return
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._stop)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        self._selector.register(wake_r, selectors.EVENT_READ, lambda: _drain(wake_r))
        self.workers = Workers(self._selector, self.runner,
                               [listener.fileno(), wake_r, wake_w, pid_lock, self._selector.fileno()],
                               self.after_command)
        identity = os.stat(self.place.socket).st_ino
        _say(ready_fd, "ok")
        try:
            self.workers.fork_spare()
            self._loop()
            with contextlib.suppress(OSError):
                if os.path.getsize(self.place.log) == 0:  # a clean end leaves nothing to read
                    os.unlink(self.place.log)
        finally:
            with contextlib.suppress(OSError):
                if os.stat(self.place.socket).st_ino == identity:  # not a successor's
                    os.unlink(self.place.socket)
            with contextlib.suppress(OSError):
                os.unlink(self.place.pid)
            listener.close()
            self.workers.close()

    # -- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while not self._stopping:
            running = bool(self.workers.running)
            if not running and time.monotonic() >= idle_since + self.idle_seconds:
                return  # idle long enough
            idle = None if running else max(0.0, idle_since + self.idle_seconds - time.monotonic())
            for key, _mask in self._selector.select(self.workers.timeout(idle)):
                try:
                    key.data()
                except Exception:  # noqa: BLE001 - one command's trouble must not end the others'
                    traceback.print_exc()
            if not self._stopping:
                self.workers.fork_spare_if_due()
            if self.workers.running:
                idle_since = time.monotonic()

    def _stop(self, _signum: int, _frame: object) -> None:
        self._stopping = True

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        if peer_uid(conn) != os.geteuid():
            conn.close()  # the directory is private; a caller from elsewhere is refused all the same
            return
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            got = receive(conn)
        except (OSError, WireError):
            got = None
        if got is None:
            conn.close()
            return
        request, fds = got
        conn.settimeout(None)
        if "run" in request:
            self._start(conn, request, fds)
            return
        what = request.get("control")
        with contextlib.suppress(OSError):
            send(conn, {"status": self.status()})
        conn.close()
        if what == "stop":
            self._stopping = True

    def _start(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        why = ("another store's service" if request.get("root") != self.store_root else
               "another mount namespace" if request.get("mntns") != mount_namespace() else
               "other groups" if request.get("ids") != identity() else None)
        if not why and self.outdated():
            why = "its code changed since it started"
            self._stopping = True  # the next command starts a service of the new code
        if why:
            with contextlib.suppress(OSError):
                send(conn, {"fallback": why})
            close_all(fds)
            conn.close()
            return
        self.served += 1
        self.workers.start(conn, request, fds)

    # -- the files that say a service lives ----------------------------------------

    def _take_pid_file(self) -> int | None:
        """Lock the pid file for as long as this service lives: a second service of the
        same store (its socket removed by hand, say) finds it locked and leaves."""
        fd = os.open(self.place.pid, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _listen(self) -> socket.socket:
        """Bind a fresh socket: one left by a dead service (we hold the pid file, so no
        live service owns it) is removed first. Mode 0600, in a 0700 directory."""
        with contextlib.suppress(OSError):
            os.unlink(self.place.socket)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        saved = os.umask(0o177)
        try:
            listener.bind(self.place.socket)
        finally:
            os.umask(saved)
        listener.listen(128)
        listener.setblocking(False)
        return listener

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "store": self.store_root, "socket": self.place.socket,
                "started": self.started, "uptime": round(time.time() - self.started, 3),
                "idle_timeout": self.idle_seconds, "served": self.served, "running": len(self.workers.running),
                "python": sys.version.split()[0], **self.details()}


def _open_standard_streams() -> None:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)


def _say(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode(errors="replace") + b"\n")
    with contextlib.suppress(OSError):
        os.close(fd)


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 512):
            pass


