"""pid 1 of a container: start the command, pass signals on, reap, exit with its status.

As catatonit and tini do: the signals a user or `layerfs stop` sends (SIGINT,
SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH) are blocked here and handed to the
command, which a pid 1 without handlers would otherwise never see (the kernel
drops them); every orphan that ends up here is reaped; when the command ends,
pid 1 exits with its status (128+N for a signal), and the kernel ends the rest.

The command's process is set up last, in this order: with a terminal, a session
of its own and the terminal as its controlling tty; the capability bounding set trimmed to
docker's defaults, the working directory, groups, gid, uid, no_new_privs if
asked, then execve. A failure there is one line on stderr and docker's exit codes:
127 not found, 126 cannot run (125, the launcher's own failure, is the caller's).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import termios
from dataclasses import dataclass
from typing import NoReturn

import prctl

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
# What docker and podman leave a container by default (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES = frozenset({
    prctl.CAP_CHOWN, prctl.CAP_DAC_OVERRIDE, prctl.CAP_FSETID, prctl.CAP_FOWNER, prctl.CAP_MKNOD,
    prctl.CAP_NET_RAW, prctl.CAP_SETGID, prctl.CAP_SETUID, prctl.CAP_SETFCAP, prctl.CAP_SETPCAP,
    prctl.CAP_NET_BIND_SERVICE, prctl.CAP_SYS_CHROOT, prctl.CAP_KILL, prctl.CAP_AUDIT_WRITE,
})
EXIT_CANNOT_RUN, EXIT_NOT_FOUND = 126, 127


class WorkdirError(Exception):
    """The command's user may not enter its working directory (docker: exit 126)."""


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    tty: bool = False
    no_new_privs: bool = False
    # CAP_MKNOD only in a user namespace, where devices it makes cannot be opened: as
    # real root without a device cgroup it would reach the host's disks.
    mknod: bool = True

    @property
    def capabilities(self) -> frozenset[int]:
        return DEFAULT_CAPABILITIES if self.mknod else DEFAULT_CAPABILITIES - {prctl.CAP_MKNOD}


def _say(message: str) -> None:
    os.write(2, f"layerfs: error: {message}\n".encode(errors="replace"))


def _resolve(command: Command) -> str:
    """The program to execute: argv[0] itself when it has a slash, else found on the
    container's PATH, as execvp would (a directory that cannot be searched is skipped)."""
    program = command.argv[0]
    if "/" in program:
        return program
    path = next((e.split("=", 1)[1] for e in command.env if e.startswith("PATH=")), "/usr/bin:/bin")
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _become(command: Command) -> None:
    """In the command's own process: everything between fork and execve."""
    if command.tty:  # its own session, the terminal its controlling one
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    prctl.capbset.drop(*(cap for cap in prctl.ALL_CAPS if cap not in command.capabilities))
    # The working directory first, as root, then once more as the user if that failed
    # (runc's order): `-u nobody` in an image whose WorkingDir is root's 0700 /root starts.
    try:
        os.chdir(command.cwd)
        entered = None
    except OSError as e:
        entered = e
    if _may_set_groups():
        os.setgroups(list(command.groups))
    os.setresgid(command.gid, command.gid, command.gid)
    os.setresuid(command.uid, command.uid, command.uid)
    if command.no_new_privs:
        prctl.set_no_new_privs(True)
    if entered is not None:
        try:
            os.chdir(command.cwd)
        except OSError:
            raise WorkdirError(f"cannot enter the working directory {command.cwd}: {entered.strerror}") from None


def _may_set_groups() -> bool:
    """False in a user namespace with one id mapped without newgidmap (--userns single):
    the kernel denies setgroups there, and the only group is already the one there is."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except FileNotFoundError:
        return True


def exec_command(command: Command, ready: int | None = None) -> NoReturn:
    """Become the command (in a process of its own): `run`'s and `exec`'s last step.
    `ready` closes with the execve, or carries "CODE message" when it fails."""
    def fail(code: int, message: str) -> NoReturn:
        _say(message)
        if ready is not None:
            os.write(ready, f"{code} {message}".encode(errors="replace"))
        os._exit(code)

    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):  # python ignores the last two
            signal.signal(sig, signal.SIG_DFL)
        if ready is not None:
            os.set_inheritable(ready, False)
            os.closerange(3, ready)
        os.closerange(3 if ready is None else ready + 1, os.sysconf("SC_OPEN_MAX"))
        _become(command)
        program = _resolve(command)
        os.execve(program, list(command.argv), dict(e.split("=", 1) for e in command.env if "=" in e))
    except WorkdirError as e:
        fail(EXIT_CANNOT_RUN, str(e))
    except FileNotFoundError:
        fail(EXIT_NOT_FOUND, f"{command.argv[0]}: executable file not found in $PATH or the container")
    except OSError as e:
        fail(EXIT_CANNOT_RUN, f"cannot run {command.argv[0]}: {e.strerror}")
    os._exit(EXIT_CANNOT_RUN)  # unreachable: execve either replaced us or raised


def _start(command: Command, ready: int) -> int:
    child = os.fork()
    if child == 0:
        exec_command(command, ready)
    os.close(ready)  # the command's alone
    return child


def run(command: Command, ready: int) -> NoReturn:
    """Be pid 1 until the command ends, then exit with its status."""
    prctl.set_proctitle("layerfs-init")  # what `ps` inside shows, not the launcher's command line
    prctl.set_name("layerfs-init")
    signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD})
    child = _start(command, ready)
    while True:
        sig = signal.sigwait({*FORWARDED, signal.SIGCHLD})
        if sig != signal.SIGCHLD:
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass
            continue
        while True:  # reap every child that ended, orphans included
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == child:
                os._exit(exit_status(status))


def exit_status(status: int) -> int:
    """A wait status as a shell's exit code: the code itself, or 128+N for signal N."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
