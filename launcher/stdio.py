"""A container's stdin, stdout and stderr, and what the launcher keeps of them.

In the foreground without a terminal the container shares the launcher's own
fds (0 only with -i). With -t the container makes a pty of its own devpts and
sends its master back (console.py); detached, stdout and stderr are pipes that
the launcher copies into the log, and with -i stdin is a pipe kept open, so that
a shell waits for input instead of reading the end of /dev/null at once.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from launcher.console import console_socket, receive_console, window_size
from launcher.logs import STDERR, STDOUT
from launcher.options import RunOptions


@dataclass
class Stdio:
    fds: tuple[int, int, int]
    console: socket.socket | None = None      # -t: where pid 1 sends its pty's master
    console_end: socket.socket | None = None  # the container's end of it
    size: bytes | None = None                 # the user's window size, for that pty
    master: int | None = None
    pipes: dict[int, str] | None = None       # read ends of stdout, stderr -> stream (detached)
    held: list[int] = field(default_factory=list)  # kept open while the container runs

    @classmethod
    def make(cls, options: RunOptions, detached: bool) -> "Stdio":
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        stdin = 0 if options.interactive else null
        held = []
        if detached and options.interactive:
            stdin, writer = os.pipe()
            held.append(writer)
        if options.tty:
            mine, theirs = console_socket()
            errors = null if detached else 2  # until the pty is there: launcher errors
            return cls((null, null, errors), mine, theirs, None if detached else window_size(0), held=held)
        if detached:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            return cls((stdin, out_w, err_w), pipes={out_r: STDOUT, err_r: STDERR}, held=held)
        return cls((stdin, 1, 2))

    @property
    def for_pid1(self) -> tuple[int, bytes | None] | None:
        return (self.console_end.fileno(), self.size) if self.console_end is not None else None

    def started(self) -> None:
        """Pid 1 runs: close what only it needed, take the pty's master if it has one."""
        for fd in set(self.fds) - {0, 1, 2}:
            os.close(fd)
        if self.console is not None and self.console_end is not None:
            self.console_end.close()
            self.master = receive_console(self.console)
            self.console.close()

    def close(self) -> None:
        for fd in self.held + ([self.master] if self.master is not None else []) + list(self.pipes or ()):
            os.close(fd)
        self.held, self.master, self.pipes = [], None, None
