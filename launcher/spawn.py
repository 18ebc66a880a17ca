"""The container's own namespaces and its pid 1.

A child of the launcher unshares the pid, mount, uts, ipc (and network)
namespaces and forks pid 1, the first process of the new pid namespace. pid 1
sets the hostname, brings up loopback, builds the root filesystem (rootfs.py),
takes the pty when there is one, and becomes the init (init.py). Both die with
the process above them (PR_SET_PDEATHSIG); signals are blocked from before the
fork, so that one sent early waits for the init instead of killing pid 1 with a
Python traceback.

`ready` is the write end of a pipe the launcher reads: it closes unwritten when
the command's execve succeeded, and carries "CODE message" when pid 1's set-up
(125) or the exec (126, 127) failed, so that `run -d` can say so as docker does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket

import prctl

from launcher import init, rootfs, syscalls
from launcher.console import attach_console
from launcher.init import Command, exit_status
from launcher.network import NONE, loopback_up
from launcher.rootfs import RootfsPlan
from layerfs.errors import EXIT_LAUNCHER, LayerfsError

_CONSOLE_FD, _READY_FD = 3, 4


def spawn(plan: RootfsPlan, command: Command, hostname: str, network: str, fds: tuple[int, int, int],
          console: tuple[int, bytes | None] | None, ready: int) -> tuple[int, int]:
    """Fork the process that holds the container's new namespaces, and pid 1 in them;
    returns (that process, pid 1 as the host sees it)."""
    report_r, report_w = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        code = EXIT_LAUNCHER
        try:
            os.close(report_r)
            prctl.set_pdeathsig(signal.SIGKILL)
            if os.getppid() != parent:  # the launcher died before the line above
                os._exit(code)
            os.setsid()  # out of the terminal's signals: they come through the launcher
            flags = (syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS
                     | syscalls.CLONE_NEWIPC | (syscalls.CLONE_NEWNET if network == NONE else 0))
            syscalls.unshare(flags)
            signal.pthread_sigmask(signal.SIG_BLOCK, {*init.FORWARDED, signal.SIGCHLD})
            pid1 = os.fork()
            if pid1 == 0:
                _be_pid1(plan, command, hostname, network, fds, console, ready)
            for fd in [ready] + ([console[0]] if console is not None else []):
                os.close(fd)  # pid 1's alone: they must close when pid 1 ends
            os.write(report_w, f"{pid1}\n".encode())
            os.close(report_w)
            _, status = os.waitpid(pid1, 0)
            code = exit_status(status)
        except OSError as e:
            os.write(2, f"layerfs: error: cannot create the container's namespaces: {e.strerror}\n".encode())
        finally:
            os._exit(code)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        answer = report.readline().strip()
    if not answer:
        os.waitpid(child, 0)
        raise LayerfsError("the container's namespaces could not be created (see above)")
    return child, int(answer)


def _be_pid1(plan: RootfsPlan, command: Command, hostname: str, network: str, fds: tuple[int, int, int],
             console: tuple[int, bytes | None] | None, ready: int) -> None:
    report = ready
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        # stdio to 0-2, the ready pipe to 4 and the console socket to 3, nothing else
        keep = {_READY_FD: ready} | ({_CONSOLE_FD: console[0]} if console is not None else {})
        high = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for target, fd in keep.items()}
        for target, fd in enumerate(fds):
            if fd != target:
                os.dup2(fd, target)
        for target, fd in high.items():
            os.dup2(fd, target)
        report = _READY_FD
        os.closerange(_READY_FD + 1, os.sysconf("SC_OPEN_MAX"))
        if console is None:
            os.closerange(_CONSOLE_FD, _READY_FD)
        socket.sethostname(hostname)
        if network == NONE:
            loopback_up()
        for note in rootfs.set_up(plan):
            os.write(2, f"layerfs: note: {note}\n".encode())
        if console is not None:
            attach_console(_CONSOLE_FD, console[1])
    except OSError as e:
        message = f"cannot set up the container: {e.strerror or e}"
        os.write(2, f"layerfs: error: {message}\n".encode())
        with contextlib.suppress(OSError):
            os.write(report, f"{EXIT_LAUNCHER} {message}".encode())
        os._exit(EXIT_LAUNCHER)
    init.run(command, _READY_FD)

