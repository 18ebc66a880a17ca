"""The CLI's side of the service: find it (or start it), hand it a command, relay signals.

This runs before anything else of layerfs is imported, so it uses the standard
library's lightest modules only: a command that goes through the service costs
a Python start and a connect, not the imports of the filesystem and launcher.

The command's own process (a worker forked from the service) owns the caller's
standard streams and does everything the command does; this process only
waits for its status, passing on the signals it gets (Ctrl-C, a terminal
hangup, a window resize), and then exits as the command did (a command killed
by a signal kills this process with the same signal).
"""

from __future__ import annotations

import _signal as signal  # signal.py's enums cost more than the rest of the client
import _socket as socket
import os
import stat
import sys
import time

from layerfs.service.place import Place, place_for
from layerfs.service.wire import WireError, identity, mount_namespace, peer_uid, receive, send

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGWINCH)
START_TIMEOUT = 60.0  # a first start on a cold machine imports ~200 modules from disk


class Foreign(Exception):
    """The socket, or the process behind it, is not this user's: never talk to it."""


def connect(place: Place) -> socket.socket | None:
    """A connection to the service of `place`; None when none listens there."""
    try:
        info = os.lstat(place.socket)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise Foreign(f"{place.socket} is not a socket of this user's")
    sock = _above_standard_streams(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC))
    try:
        sock.connect(place.socket)
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None
    if peer_uid(sock) != os.geteuid():
        sock.close()
        raise Foreign(f"the process listening on {place.socket} is another user's")
    return sock


def _above_standard_streams(sock: socket.socket) -> socket.socket:
    """With fd 0, 1 or 2 closed, a new socket takes that number, and would be sent to
    the command as its stream; move it above them."""
    if sock.fileno() > 2:
        return sock
    import fcntl

    moved = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)
    sock.close()
    return socket.socket(fileno=moved)


def start(place: Place, command: list[str]) -> socket.socket | None:
    """Start the service (unless a racing starter did) and connect to it.

    Starters take the lock in turn; each first tries to connect, so only the first
    starts a service and the others use it. The service says "ok" on a pipe once
    it listens, or why it could not."""
    import fcntl

    lock = os.open(place.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = connect(place)
        if sock is not None:
            return sock
        ready_r, ready_w = os.pipe()
        log = os.open(place.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # keeps a crash's
        try:
            os.posix_spawn(sys.executable, [sys.executable, *command, "--ready-fd", "3"], os.environ,
                           setsid=True, file_actions=[
                               (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                               (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                               (os.POSIX_SPAWN_DUP2, ready_w, 3)])
        finally:
            os.close(ready_w)
            os.close(log)
        if _wait_ready(ready_r) != "ok":
            return None
        return connect(place)
    finally:
        os.close(lock)


def _wait_ready(ready: int) -> str:
    """The service's first line: "ok", or why it did not start."""
    import select

    deadline = time.monotonic() + START_TIMEOUT
    said = b""
    try:
        while b"\n" not in said and time.monotonic() < deadline:
            readable, _, _ = select.select([ready], [], [], deadline - time.monotonic())
            chunk = os.read(ready, 256) if readable else b""
            if not chunk:
                break
            said += chunk
    finally:
        os.close(ready)
    return said.decode(errors="replace").strip()


def run(argv: list[str], store_root: str, command: list[str], lost_status: int) -> int | None:
    """Run `layerfs ARGV` through the service of `store_root`, starting it if needed
    with `command`; its exit status (`lost_status` if the service and the command's
    worker both vanished), or None when it must run in-process instead."""
    place = place_for(store_root, create=True)
    if place is None or _cwd() is None:  # a deleted working directory: in-process it stays one
        return None
    for _attempt in range(2):  # a service that was just exiting (idle) closes on us: once more
        try:
            sock = connect(place) or start(place, command)
        except Foreign:
            return None
        if sock is None:
            return None
        try:
            try:
                first = _request(sock, argv, store_root)
            except (OSError, WireError):
                continue
            if first is None:
                continue
            if "fallback" in first:
                return None
            return _follow(sock, first, lost_status)
        finally:
            sock.close()
    return None


def _request(sock: socket.socket, argv: list[str], store_root: str) -> dict | None:
    """Send the command with our standard streams; the worker's first answer."""
    fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
    umask = os.umask(0)
    os.umask(umask)
    send(sock, {"run": argv, "cwd": _cwd(), "env": dict(os.environ), "umask": umask, "fds": fds,
                "root": store_root, "mntns": mount_namespace(),
                "ids": identity()}, fds)
    got = receive(sock)
    return got[0] if got else None


def _follow(sock: socket.socket, first: dict, lost_status: int) -> int:
    """Pass our signals on to the worker until it reports how the command ended."""
    worker = int(first.get("pid", 0))

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass
    if worker:
        for signum in FORWARDED:
            signal.signal(signum, forward)
    message: dict | None = first
    while message is not None and "exit" not in message and "signal" not in message:
        message = _next_message(sock)
    if message is None:
        print("layerfs: error: the layerfs service stopped while running the command "
              "(what it started goes on: see `layerfs ps` and `layerfs mounts`)", file=sys.stderr)
        return lost_status
    if "signal" in message:
        return _die_by(int(message["signal"]))
    return int(message["exit"])


def _next_message(sock: socket.socket) -> dict | None:
    try:
        got = receive(sock)
    except (OSError, WireError):
        return None
    return got[0] if got else None


def _die_by(signum: int) -> int:
    """End as the command did: killed by the same signal."""
    for forwarded in FORWARDED:
        signal.signal(forwarded, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # a signal that does not kill (the command had handled it)


def control(store_root: str, what: str) -> dict | None:
    """Ask the running service of `store_root` for its status, or to stop; None when
    no service runs there."""
    place = place_for(store_root)
    if place is None:
        return None
    try:
        sock = connect(place)
    except Foreign:
        return None
    if sock is None:
        return None
    try:
        send(sock, {"control": what})
        got = receive(sock)
    except (OSError, WireError):
        got = None
    finally:
        sock.close()
    return got[0].get("status") if got else None


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None
