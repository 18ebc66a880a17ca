"""A container's terminal and output: the pty of `-t`, and the copying to and from it.

With `-t` the container gets the slave side of a new pty of its own devpts as its
stdin, stdout and stderr and its controlling terminal; the launcher gets the master
over a socket. In the
foreground the user's terminal is put in raw mode and bytes flow both ways, so
Ctrl-C is the byte 0x03 that the pty's line discipline turns into SIGINT for the
container's foreground process, not a signal to the launcher; the window size
follows the user's terminal (SIGWINCH). Detached, the output goes to the log.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import selectors
import signal
import socket
import termios
import tty
from collections.abc import Callable, Iterator

Sink = Callable[[bytes], None]


def window_size(fd: int) -> bytes | None:
    """A terminal's window size (struct winsize), None when `fd` is no terminal."""
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def copy_window_size(source: int, target: int) -> None:
    if (size := window_size(source)) is not None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(target, termios.TIOCSWINSZ, size)


def console_socket() -> tuple[socket.socket, socket.socket]:
    """(the launcher's end, the container's end) of the socket a pty's master comes back on."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def attach_console(sock: int, size: bytes | None) -> None:
    """In the container, its /dev mounted: a pty of the container's own devpts becomes
    stdin, stdout and stderr, and its master goes back to the launcher over `sock`, as
    runc's and crun's console socket does. A pty of the host's devpts would be no tty by
    name inside (`tty` says "not a tty", ssh and sudo refuse it)."""
    master, slave = os.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
    with socket.socket(fileno=sock) as channel:
        channel.sendmsg([b"m"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)
    os.close(master)


def receive_console(sock: socket.socket) -> int | None:
    """The pty master the container sent; None when it ended before sending one."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
    return fds[0] if fds else None


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The user's terminal in raw mode for the block (restored whatever happens)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):  # a terminal hung up meanwhile
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def window_follows(terminal: int, master: int) -> Iterator[None]:
    """Pass the user's window size on to the container while the block runs."""
    def resized(_signum: int, _frame: object) -> None:
        copy_window_size(terminal, master)
    saved = signal.signal(signal.SIGWINCH, resized)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, saved)


def write_all(fd: int) -> Sink:
    def sink(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return sink


def _discard(_data: bytes) -> None:
    pass


def pump(sources: dict[int, Sink], stdin: tuple[int, int] | None = None) -> None:
    """Copy each source fd to its sink until every source is at its end (the last writer
    of a pipe closed it, or a pty's slave side is gone: EIO). `stdin`, (from, to), is
    copied too while it lasts; its end closes `to` unless that is also a source."""
    selector = selectors.DefaultSelector()
    for fd in sources:
        selector.register(fd, selectors.EVENT_READ)
    if stdin is not None:
        selector.register(stdin[0], selectors.EVENT_READ)
    open_sources = set(sources)
    while open_sources:
        for key, _ in selector.select():
            fd = key.fd
            try:
                data = os.read(fd, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b""
            if fd in sources:
                if data:
                    try:
                        sources[fd](data)
                    except OSError:  # a reader gone (closed stdout): drained from now on, not copied
                        sources[fd] = _discard
                else:
                    selector.unregister(fd)
                    open_sources.discard(fd)
            elif stdin is not None:
                if data:
                    with contextlib.suppress(OSError):  # the container stopped reading
                        write_all(stdin[1])(data)
                else:
                    selector.unregister(fd)
                    if stdin[1] not in sources:
                        os.close(stdin[1])
    selector.close()
