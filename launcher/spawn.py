"""The container's own namespaces and its pid 1.

The launcher forks pid 1 into a pid namespace made for it (unshare(CLONE_NEWPID)
takes effect for the children made after it), without a process in between:
each fork of a 30 MiB interpreter costs 3-4 ms here, its page tables and the
pages it writes copied. Root then puts the launcher's own pid namespace back for
its later children (setns); rootless that is refused (it takes CAP_SYS_ADMIN
where the host's namespace belongs), so the launcher forks nothing after pid 1:
the mount's server is forked before, and its unmount is a syscall. pid 1
unshares the mount, uts, ipc (and network) namespaces, sets the hostname,
brings up loopback, builds the root filesystem (rootfs.py), takes the pty when
there is one, and becomes the init (init.py). It dies with the launcher
(PR_SET_PDEATHSIG); signals are blocked from before the fork, so that one sent
early waits for the init instead of killing pid 1 with a Python traceback.

`ready` is the write end of a pipe the launcher reads: it closes unwritten when
the command's execve succeeded, and carries "CODE message" when pid 1's set-up
(125) or the exec (126, 127) failed, so that `run -d` can say so as docker does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket

import prctl

from launcher import init, rootfs, syscalls
from launcher.console import attach_console
from launcher.init import Command
from launcher.network import NONE, loopback_up
from launcher.rootfs import RootfsPlan
from layerfs.errors import EXIT_LAUNCHER, LayerfsError

_CONSOLE_FD, _READY_FD = 3, 4


def spawn(plan: RootfsPlan, command: Command, hostname: str, network: str, fds: tuple[int, int, int],
          console: tuple[int, bytes | None] | None, ready: int) -> int:
    """Fork pid 1 in new namespaces; its pid as the host sees it (the launcher's child)."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {*init.FORWARDED, signal.SIGCHLD})
    try:
        try:
            syscalls.unshare(syscalls.CLONE_NEWPID)
        except OSError as e:
            raise LayerfsError(f"cannot create the container's pid namespace: {e.strerror}") from None
        launcher = os.pidfd_open(os.getpid())  # pid 1 sees no parent (getppid() is 0 there)
        try:
            pid1 = os.fork()
            if pid1 == 0:
                try:
                    _be_pid1(plan, command, hostname, network, fds, console, ready, launcher)
                finally:
                    os._exit(EXIT_LAUNCHER)
        finally:
            os.close(launcher)
        with contextlib.suppress(OSError):  # see the module's doc
            syscalls.setns(own, syscalls.CLONE_NEWPID)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(own)
    return pid1


def _be_pid1(plan: RootfsPlan, command: Command, hostname: str, network: str, fds: tuple[int, int, int],
             console: tuple[int, bytes | None] | None, ready: int, launcher: int) -> None:
    report = ready
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if select.select([launcher], [], [], 0)[0]:  # it died before the line above
            os._exit(EXIT_LAUNCHER)
        os.close(launcher)
        os.setsid()  # out of the terminal's signals: they come through the launcher
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
                         | (syscalls.CLONE_NEWNET if network == NONE else 0))
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

