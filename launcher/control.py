"""What can be done to a running container from outside: signal, stop, pause, wait, exec.

Each works from the container's state (its pid 1 as the host sees it) and its
namespaces under /proc/PID/ns; none needs the monitor's help. There is no cgroup
delegation on these machines, so `pause` stops every process of the container's
pid namespace with SIGSTOP (and `unpause` continues them), as podman does without
a freezer: a process can see the SIGCONT, and a process that `exec` starts while
the container is paused is refused rather than left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from launcher import syscalls
from launcher.console import attach_console
from launcher.init import Command, exec_command, exit_status
from launcher.options import RunOptions
from launcher.paths import read_inside
from launcher.state import CREATED, EXITED, PAUSED, RUNNING, State, read_state, recorded_state, state_locked, write_state
from launcher.users import resolve_user
from layerfs.errors import Busy, LayerfsError

# setns order: the user namespace first (it grants the rights for the others), pid last
# (it takes effect for children only).
_NAMESPACES = (("user", syscalls.CLONE_NEWUSER), ("mnt", syscalls.CLONE_NEWNS), ("uts", syscalls.CLONE_NEWUTS),
               ("ipc", syscalls.CLONE_NEWIPC), ("net", syscalls.CLONE_NEWNET), ("pid", syscalls.CLONE_NEWPID))


def running_state(directory: Path, name: str) -> State:
    state = read_state(directory)
    if not state.alive:
        raise LayerfsError(f"container {name} is not running")
    return state


def send_signal(directory: Path, name: str, signum: int) -> None:
    """The signal to pid 1, which passes it on to the command (SIGKILL ends them all)."""
    os.kill(running_state(directory, name).pid, signum)


def wait_finished(directory: Path, timeout: float | None = None) -> State:
    """Wait until the container's monitor is done with it (exit recorded, mount taken
    down, removed if --rm) and return the final state; a monitor killed with SIGKILL
    finishes nothing, and its container counts as ended."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (raw := recorded_state(directory)).monitor_alive:
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(0.01)
    final = read_state(directory)
    return raw if final.status == CREATED and raw.status == EXITED else final  # removed (--rm) meanwhile


def monitor_running(directory: Path) -> bool:
    """Whether the container's monitor still runs (it may be writing the log's end)."""
    return recorded_state(directory).monitor_alive


def kill(directory: Path) -> None:
    """SIGKILL the container, if it runs, and wait for its monitor to finish."""
    state = read_state(directory)
    if state.alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        wait_finished(directory, 10.0)


def stop(directory: Path, name: str, options: RunOptions, timeout: float) -> None:
    """StopSignal, then SIGKILL after `timeout` seconds, as docker stop; no error if it
    was not running."""
    state = read_state(directory)
    if not state.alive:
        return
    if state.status == PAUSED:
        resume(directory, name)  # a stopped process cannot act on its signal
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, options.process.stop_signal)
    if wait_finished(directory, timeout).alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
    wait_finished(directory, 10.0)


def pause(directory: Path, name: str) -> None:
    with state_locked(directory):
        state = running_state(directory, name)
        if state.status == PAUSED:
            raise Busy(f"container {name} is already paused")
        _signal_all(state.pid, signal.SIGSTOP)
        write_state(directory, replace(state, status=PAUSED))


def resume(directory: Path, name: str) -> None:
    with state_locked(directory):
        state = running_state(directory, name)
        if state.status != PAUSED:
            raise LayerfsError(f"container {name} is not paused")
        _signal_all(state.pid, signal.SIGCONT)
        write_state(directory, replace(state, status=RUNNING))


def _signal_all(pid1: int, signum: int) -> None:
    """Every process of pid 1's pid namespace, pid 1 included."""
    namespace = os.readlink(f"/proc/{pid1}/ns/pid")
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/pid") == namespace:
                    os.kill(int(entry.name), signum)
            except (OSError, ProcessLookupError):
                continue


def exec_in(directory: Path, name: str, options: RunOptions, argv: list[str], user: str | None,
            workdir: str | None, env: list[str], fds: tuple[int, int, int],
            console: tuple[int, bytes | None] | None = None) -> int:
    """Start `argv` in the running container's namespaces, as `user` (default: the
    container's), with the container's environment plus `env`, on stdio `fds`, or with
    `console` (socket, window size) on a pty of the container's whose master comes back
    on that socket; returns the pid to wait for, whose exit status is the command's."""
    state = running_state(directory, name)
    if state.status == PAUSED:
        raise Busy(f"container {name} is paused: unpause it first")
    try:
        namespaces = [(os.open(f"/proc/{state.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC), flag)
                      for ns, flag in _NAMESPACES if _differs(state.pid, ns)]
    except FileNotFoundError:  # it ended just now
        raise LayerfsError(f"container {name} is not running") from None
    child = os.fork()
    if child == 0:
        _enter_and_exec(namespaces, options, argv, user, workdir, env, fds, console)
    for fd, _flag in namespaces:
        os.close(fd)
    return child


def _enter_and_exec(namespaces: list[tuple[int, int]], options: RunOptions, argv: list[str],
                    user: str | None, workdir: str | None, env: list[str],
                    fds: tuple[int, int, int], console: tuple[int, bytes | None] | None) -> None:
    """In the child of `exec`: join, then fork into the pid namespace and become the command."""
    try:
        for fd, flag in namespaces:
            syscalls.setns(fd, flag)
        for target, fd in enumerate(fds):
            if fd != target:
                os.dup2(fd, target)
        if console is not None:
            attach_console(*console)
        process = options.process
        found = resolve_user(user if user is not None else process.user, read_inside("/", "/etc/passwd"),
                             read_inside("/", "/etc/group"))
        tty = console is not None
        command = Command(tuple(argv), tuple(_merged_env(process.env, env, found.home, tty)),
                          workdir or process.cwd, found.uid, found.gid, found.groups, tty=tty,
                          no_new_privs=options.no_new_privs,
                          mknod=any(flag == syscalls.CLONE_NEWUSER for _fd, flag in namespaces))
        grandchild = os.fork()  # only children enter the pid namespace
        if grandchild == 0:
            exec_command(command)
        for sig in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        _, status = os.waitpid(grandchild, 0)
        os._exit(exit_status(status))
    except LayerfsError as e:
        os.write(2, f"layerfs: error: {e.message}\n".encode())
    except OSError as e:
        os.write(2, f"layerfs: error: cannot enter the container: {e.strerror or e}\n".encode())
    os._exit(125)


def _merged_env(container: list[str], given: list[str], home: str, tty: bool) -> list[str]:
    merged = {e.split("=", 1)[0]: e for e in container}
    merged.update({e.split("=", 1)[0]: e for e in given})
    merged.setdefault("HOME", f"HOME={home}")
    if tty:
        merged.setdefault("TERM", "TERM=xterm")
    return list(merged.values())


def _differs(pid: int, ns: str) -> bool:
    """Whether pid 1 has a namespace of this kind of its own (not the caller's)."""
    return os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")

