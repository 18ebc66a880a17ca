"""Start a container and watch it until it ends: the launcher's one long job.

The order of a start, crun's around a FUSE root:

1. a user namespace (rootless: the user as root, with its subordinate ids) or, for
   root, a private mount namespace;
2. the container's layerfs runtime mount at containers/<id>/rootfs, its server
   forked from here, so that every id of the namespace may enter and setuid works;
3. in the layer, as root inside: the mount points the image lacks, the working
   directory and the volume targets; the user looked up in the container's own
   /etc/passwd and /etc/group; the runtime's /etc files written beside;
4. a child that unshares the pid, mount, uts, ipc (and network) namespaces and
   forks pid 1, which builds the root filesystem (rootfs.py), pivots into it and
   becomes the init (init.py);
5. this process waits for it: passing signals on and the terminal through in the
   foreground, filling the log when detached;
6. then the exit status is recorded, the mount taken down, and with --rm the
   container removed.

Every process below dies with the one above it (PR_SET_PDEATHSIG), so a killed
launcher leaves a stopped container and a consistent layer, never a hung mount.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import prctl

from launcher import init, rootfs, syscalls
from launcher.console import (attach_console, console_socket, pump, raw_terminal, receive_console, window_follows,
                              window_size, write_all)
from launcher.idmap import IdMap, user_map
from launcher.init import Command, exit_status
from launcher.logs import STDERR, STDOUT, LogWriter
from launcher.network import NONE, etc_files, loopback_up
from launcher.options import RunOptions
from launcher.rootfs import MOUNT_POINTS, RootfsPlan
from launcher.state import read_state, write_state
from launcher.users import ExecUser, resolve_user
from launcher.userns import enter_user_namespace
from launcher.volumes import bind_volumes
from layerfs.container.mounting import mount_container
from layerfs.container.records import Container, Containers
from layerfs.container.volumes import Volumes
from layerfs.errors import EXIT_LAUNCHER, Busy, LayerfsError, NotFound
from layerfs.identity import in_user_namespace
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.daemon import unmount

ROOTFS, ETC = "rootfs", "etc"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def id_map(options: RunOptions) -> IdMap | None:
    """The user namespace's map, or None for root on the host (no user namespace)."""
    if os.geteuid() == 0 and not in_user_namespace():
        return None
    return user_map(os.getuid(), os.getgid(), single=options.userns == "single")


@dataclass
class _Stdio:
    """The container's stdin, stdout, stderr, and what this process keeps of them."""

    fds: tuple[int, int, int]
    console: socket.socket | None = None      # -t: where pid 1 sends its pty's master
    console_end: socket.socket | None = None  # the container's end of it
    size: bytes | None = None                 # the user's window size, for that pty
    master: int | None = None
    pipes: dict[int, str] | None = None  # read ends of stdout, stderr -> stream (detached)

    @classmethod
    def make(cls, options: RunOptions, detached: bool) -> "_Stdio":
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if options.tty:
            mine, theirs = console_socket()
            errors = null if detached else 2  # until the pty is there: launcher errors
            return cls((null, null, errors), mine, theirs, None if detached else window_size(0))
        if detached:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            return cls((null, out_w, err_w), pipes={out_r: STDOUT, err_r: STDERR})
        return cls((0 if options.interactive else null, 1, 2))

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


class Launch:
    """One start of one container, from its namespaces to its end."""

    def __init__(self, store: Store, container: Container) -> None:
        self.store = store
        self.container = container
        self.containers = Containers(store)
        self.directory = self.containers.path(container)
        if container.run is None:
            raise LayerfsError(f"container {container.name} has nothing to run (made by an older layerfs)")
        self.options = RunOptions.from_json(container.run)
        if not self.options.process.argv:
            raise LayerfsError(f"container {container.name} has no command to run: its image has neither "
                               "Entrypoint nor Cmd (create it with a command)")
        self.rootfs = self.directory / ROOTFS
        self.etc = self.directory / ETC

    def run(self, detached: bool, on_started: Callable[[], None] = lambda: None) -> int:
        """Run the container until it ends and return its exit status; `on_started` is
        called once pid 1 runs (a detached start reports back with it)."""
        if read_state(self.directory).alive:
            raise Busy(f"container {self.container.name} is already running")
        self._enter()
        self.rootfs.mkdir(exist_ok=True)
        mount_container(self.store, self.container, self.rootfs, MountKind(runtime=True, suid=True), with_parent=True)
        code = EXIT_LAUNCHER
        try:
            stdio = _Stdio.make(self.options, detached)  # after the mount: its server holds none of it
            plan, command = self._prepare()
            child, pid1 = _spawn(plan, command, self._hostname(), self.options.network, stdio.fds,
                                 stdio.for_pid1)
            stdio.started()
            write_state(self.directory, read_state(self.directory).running(pid1, os.getpid()))
            on_started()
            code = self._watch(child, pid1, stdio, detached)
        finally:
            self._finish(code)
        return code

    # -- before pid 1 ------------------------------------------------------------------

    def _enter(self) -> None:
        idmap = id_map(self.options)
        if idmap is not None:
            enter_user_namespace(idmap)
        else:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)

    def _hostname(self) -> str:
        return self.options.hostname or self.container.id[:12]

    def _prepare(self) -> tuple[RootfsPlan, Command]:
        root = str(self.rootfs)
        made = [path for path, kind in MOUNT_POINTS if _make(root, path, kind)]
        self.containers.add_mount_points(self.container, made)
        process = self.options.process
        for path in [process.cwd, *(v.target for v in self.options.volumes), *process.volumes]:
            os.makedirs(_inside(root, path), exist_ok=True)
        volumes, anonymous = bind_volumes(self.store, self.container, self.options, root)
        if anonymous != self.options.anonymous:
            self._remember_anonymous(anonymous)
        self.etc.mkdir(exist_ok=True)
        for name, text in etc_files(self._hostname(), self.options.network).items():
            (self.etc / name).write_text(text)
        user = resolve_user(process.user, _read(root, "/etc/passwd"), _read(root, "/etc/group"))
        plan = RootfsPlan(root, str(self.etc), volumes, self.options.read_only, self.options.network == NONE)
        return plan, _command(process.argv, process.env, process.cwd, user, self._hostname(), self.options)

    def _remember_anonymous(self, anonymous: dict[str, str]) -> None:
        self.options = RunOptions.from_json(dict(self.options.to_json(), anonymous=anonymous))
        self.containers.set_run(self.container, self.options.to_json())

    # -- while it runs -----------------------------------------------------------------

    def _watch(self, child: int, pid1: int, stdio: _Stdio, detached: bool) -> int:
        with _signals_to(pid1):
            if detached:
                log = LogWriter(self.directory)
                try:
                    sources = {stdio.master: STDOUT} if stdio.master is not None else stdio.pipes or {}
                    pump({fd: log.sink(stream) for fd, stream in sources.items()})
                finally:
                    log.close()
            elif stdio.master is not None:
                stdin = (0, stdio.master) if self.options.interactive else None
                with raw_terminal(0), window_follows(0, stdio.master):
                    pump({stdio.master: write_all(1)}, stdin)
            _, status = os.waitpid(child, 0)
        return exit_status(status)

    def _finish(self, code: int) -> None:
        write_state(self.directory, read_state(self.directory).exited(code))
        with contextlib.suppress(LayerfsError):
            unmount(self.store, self.rootfs, force=True)
        if self.options.remove:
            remove(self.store, self.container)


def remove(store: Store, container: Container, volumes: bool = True) -> None:
    """Remove a container that does not run; with `volumes`, its anonymous volumes too
    (as `run --rm` and `rm -v` do)."""
    anonymous = RunOptions.from_json(container.run).anonymous.values() if container.run and volumes else ()
    known = Volumes(store)
    with store.locked():
        Containers(store).remove(container)
        for name in anonymous:
            with contextlib.suppress(NotFound):
                known.remove(known.get(name))


@contextlib.contextmanager
def _signals_to(pid: int) -> Iterator[None]:
    """Pass the signals a user sends this process on to the container's pid 1."""
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    saved = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _spawn(plan: RootfsPlan, command: Command, hostname: str, network: str,
           fds: tuple[int, int, int], console: tuple[int, bytes | None] | None) -> tuple[int, int]:
    """Fork the process that holds the container's new namespaces, and pid 1 in them;
    returns (that process, pid 1 as the host sees it)."""
    report_r, report_w = os.pipe()
    child = os.fork()
    if child == 0:
        code = EXIT_LAUNCHER
        try:
            os.close(report_r)
            prctl.set_pdeathsig(signal.SIGKILL)
            os.setsid()  # out of the terminal's signals: they come through the launcher
            flags = (syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS
                     | syscalls.CLONE_NEWIPC | (syscalls.CLONE_NEWNET if network == NONE else 0))
            syscalls.unshare(flags)
            pid1 = os.fork()
            if pid1 == 0:
                _be_pid1(plan, command, hostname, network, fds, console)
            if console is not None:  # pid 1's alone: its end must close when pid 1 ends
                os.close(console[0])
            os.write(report_w, f"{pid1}\n".encode())
            os.close(report_w)
            for sig in _FORWARDED:
                signal.signal(sig, signal.SIG_IGN)
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
        _, status = os.waitpid(child, 0)
        raise LayerfsError("the container's namespaces could not be created (see above)")
    return child, int(answer)


def _be_pid1(plan: RootfsPlan, command: Command, hostname: str, network: str,
             fds: tuple[int, int, int], console: tuple[int, bytes | None] | None) -> None:
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        for target, fd in enumerate(fds):
            if fd != target:
                os.dup2(fd, target)
        if console is not None and console[0] != 3:
            os.dup2(console[0], 3)
        os.closerange(3 if console is None else 4, 65536)
        socket.sethostname(hostname)
        if network == NONE:
            loopback_up()
        for note in rootfs.set_up(plan):
            os.write(2, f"layerfs: note: {note}\n".encode())
        if console is not None:
            attach_console(3, console[1])
    except OSError as e:
        os.write(2, f"layerfs: error: cannot set up the container: {e.strerror or e}\n".encode())
        os._exit(EXIT_LAUNCHER)
    init.run(command)


def _command(argv: list[str], env: list[str], cwd: str, user: ExecUser, hostname: str,
             options: RunOptions) -> Command:
    keys = {e.split("=", 1)[0] for e in env}
    extra = [f"HOSTNAME={hostname}"] if "HOSTNAME" not in keys else []
    extra += [f"HOME={user.home}"] if "HOME" not in keys else []
    if options.tty and "TERM" not in keys:
        extra.append("TERM=xterm")
    return Command(tuple(argv), tuple(extra + env), cwd, user.uid, user.gid, user.groups,
                   options.tty, options.no_new_privs)


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _make(root: str, path: str, kind: str) -> bool:
    """Make an empty mount point the image lacks; whether one was made."""
    target = _inside(root, path)
    if os.path.lexists(target) or not os.path.isdir(os.path.dirname(target)):
        return False
    if kind == "d":
        os.mkdir(target, 0o755)
    else:
        Path(target).touch(0o644)
    return True


def _read(root: str, path: str) -> str | None:
    try:
        with open(_inside(root, path)) as f:
            return f.read()
    except FileNotFoundError:
        return None
