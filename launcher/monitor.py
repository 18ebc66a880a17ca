"""Start a container and watch it until it ends: the launcher's one long job.

The order of a start, crun's around a FUSE root:

1. a user namespace (rootless: the user as root, with its subordinate ids) or, for
   root, a private mount namespace;
2. the container's layerfs runtime mount at containers/<id>/rootfs, its server
   forked from here, so that every id of the namespace may enter and setuid works;
3. in the layer, as root inside: the mount points the image lacks, the working
   directory and the volume targets; the user looked up in the container's own
   /etc/passwd and /etc/group; the runtime's /etc files written beside;
4. pid 1, forked into a new pid namespace, which unshares the mount, uts, ipc
   (and network) namespaces, builds the root filesystem (rootfs.py), pivots into
   it and becomes the init (init.py) (spawn.py);
5. this process learns whether the command's execve worked, then waits for it:
   passing signals on and the terminal through in the foreground, filling the
   log when detached, stopping the container if its FUSE server dies;
6. then the exit status is recorded, the mount taken down, and with --rm the
   container removed.

Every process below dies with the one above it (PR_SET_PDEATHSIG), so a killed
launcher leaves a stopped container and a consistent layer, never a hung mount.
Paths of the image are resolved inside its root (paths.py): its symbolic links
never lead the launcher, root in its namespace, to the host's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from launcher import syscalls
from launcher.console import pump, raw_terminal, window_follows, write_all
from launcher.idmap import IdMap, user_map
from launcher.init import Command, exit_status
from launcher.logs import STDOUT, LogWriter
from launcher.network import NONE, etc_files
from launcher.options import RunOptions
from launcher.paths import TreeView, kind_inside, read_inside, resolve_in
from launcher.rootfs import MOUNT_POINTS, RootfsPlan
from launcher.spawn import spawn
from launcher.state import read_state, state_locked, write_state
from launcher.stdio import Stdio
from launcher.users import ExecUser, resolve_user
from launcher.held import join_held
from launcher.userns import enter_user_namespace
from launcher.volumes import bind_volumes
from layerfs import handoff
from layerfs.container.mounting import mount_container
from layerfs.container.records import Container, Containers
from layerfs.container.volumes import Volumes
from layerfs.errors import EXIT_LAUNCHER, Busy, LayerfsError, NotFound
from layerfs.identity import in_user_namespace
from layerfs.image.catalog import Catalog
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.build import merged_tree
from layerfs.union.daemon import unmount
from layerfs.union.mounts import drop_record

ROOTFS, ETC = "rootfs", "etc"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def id_map(options: RunOptions) -> IdMap | None:
    """The user namespace's map, or None for root on the host (no user namespace)."""
    if os.geteuid() == 0 and not in_user_namespace():
        return None
    return user_map(os.getuid(), os.getgid(), single=options.userns == "single")


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
        self._view: TreeView | None = None

    def run(self, detached: bool, on_started: Callable[[str | None], None] = lambda _failure: None) -> int:
        """Run the container until it ends and return its exit status. `on_started` is
        called once the command runs (None), or with "CODE message" when it could
        not start: a detached start reports back with it."""
        if read_state(self.directory).alive:
            raise Busy(f"container {self.container.name} is already running")
        with_userns = self._enter()
        self.rootfs.mkdir(exist_ok=True)
        self._view = self._first_start_view()
        daemon = mount_container(self.store, self.container, self.rootfs, MountKind(runtime=True, suid=True),
                                 with_parent=True)
        code, pid1 = EXIT_LAUNCHER, 0
        try:
            stdio = Stdio.make(self.options, detached)  # after the mount: its server holds none of it
            plan, command = self._prepare(with_userns)
            ready_r, ready_w = os.pipe()
            with _SignalsForwarded() as forwarded:  # from before the fork: none may kill us meanwhile
                pid1 = spawn(plan, command, self._hostname(), self.options.network, stdio.fds,
                             stdio.for_pid1, ready_w)
                forwarded.to(pid1)
                os.close(ready_w)
                with _end_with(daemon, pid1):
                    stdio.started()
                    failure = _read_all(ready_r)
                    write_state(self.directory, read_state(self.directory).running(pid1, os.getpid()))
                    with contextlib.suppress(OSError):  # a caller gone away does not stop the container
                        on_started(failure or None)
                    code = self._watch(pid1, stdio, detached)
                    pid1 = 0  # reaped
            stdio.close()
        except BaseException:
            if pid1:  # whatever failed here, the container does not outlive it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
                code = exit_status(os.waitpid(pid1, 0)[1])
            raise
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
            self._finish(code, daemon)
        return code

    # -- before pid 1 ------------------------------------------------------------------

    def _enter(self) -> bool:
        """Into the container's user namespace, or for root a private mount namespace;
        whether it was a user namespace."""
        idmap = id_map(self.options)
        if idmap is not None:
            if not join_held(idmap):  # the resident service's, when this start is its fork
                enter_user_namespace(idmap)
            return True
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        return False

    def _first_start_view(self) -> TreeView | None:
        """At a container's first start its layer is empty and its root is the image's
        merged tree, held in memory (launcher/paths.py): what _prepare looks up there."""
        with os.scandir(self.containers.upper(self.container)) as entries:
            if next(entries, None) is not None:
                return None
        image = Catalog(self.store).resolve(self.container.image_digest)
        return TreeView(merged_tree(self.store, image.diff_ids).root)

    def _hostname(self) -> str:
        return self.options.hostname or self.container.id[:12]

    def _prepare(self, with_userns: bool) -> tuple[RootfsPlan, Command]:
        root, view = str(self.rootfs), self._view
        made = [made for path, kind in MOUNT_POINTS if (made := _make(root, path, kind, view))]
        self.containers.add_mount_points(self.container, made)
        process = self.options.process
        for path in [process.cwd, *(v.target for v in self.options.volumes), *process.volumes]:
            if kind_inside(root, path, view) != stat.S_IFDIR:
                os.makedirs(resolve_in(root, path, view), exist_ok=True)
        volumes, anonymous = bind_volumes(self.store, self.container, self.options, root)
        if anonymous != self.options.anonymous:
            self._remember_anonymous(anonymous)
        self.etc.mkdir(exist_ok=True)
        for name, text in etc_files(self._hostname(), self.options.network).items():
            (self.etc / name).write_text(text)
        user = resolve_user(process.user, read_inside(root, "/etc/passwd", view),
                            read_inside(root, "/etc/group", view))
        plan = RootfsPlan(root, str(self.etc), volumes, self.options.read_only, self.options.network == NONE)
        return plan, _command(process.argv, process.env, process.cwd, user, self._hostname(), self.options,
                              with_userns)

    def _remember_anonymous(self, anonymous: dict[str, str]) -> None:
        self.options = RunOptions.from_json(dict(self.options.to_json(), anonymous=anonymous))
        self.containers.set_run(self.container, self.options.to_json())

    # -- while it runs -----------------------------------------------------------------

    def _watch(self, pid1: int, stdio: Stdio, detached: bool) -> int:
        if detached:
            log = LogWriter(self.directory)
            try:
                sources = {stdio.master: STDOUT} if stdio.master is not None else stdio.pipes or {}
                pump({fd: log.sink(stream) for fd, stream in sources.items()})
            finally:
                log.close()
        elif stdio.master is not None and self.options.interactive:  # the user's keys go in raw
            with raw_terminal(0), window_follows(0, stdio.master):
                pump({stdio.master: write_all(1)}, (0, stdio.master))
        elif stdio.master is not None:  # -t alone: Ctrl-C is a signal to this process, passed on
            with window_follows(0, stdio.master):
                pump({stdio.master: write_all(1)})
        _, status = os.waitpid(pid1, 0)
        return exit_status(status)

    def _finish(self, code: int, daemon: int) -> None:
        with state_locked(self.directory):
            write_state(self.directory, read_state(self.directory).exited(code))
        if self.options.remove:
            self._discard_mount(daemon)
            if not handoff.allowed():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(daemon, 0)
                remove(self.store, self.container)
                return
            aside = remove(self.store, self.container, set_aside=True)
            handoff.leave(lambda: _delete(daemon, aside))
            return
        with contextlib.suppress(LayerfsError):
            unmount(self.store, self.rootfs, force=True)

    def _discard_mount(self, daemon: int) -> None:
        """`--rm`: the layer is about to go, so its server need not flush and unmount
        in order (a third of a short container's life): detach the mount, which lives
        in this launcher's own mount namespace, and kill the server (the caller reaps it)."""
        with contextlib.suppress(OSError):
            syscalls.umount(str(self.rootfs), syscalls.MNT_DETACH)
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)
        drop_record(self.store, str(self.rootfs))


def remove(store: Store, container: Container, volumes: bool = True, set_aside: bool = False) -> Path | None:
    """Remove a container that does not run; with `volumes`, its anonymous volumes too
    (as `run --rm` and `rm -v` do). `set_aside`: the container is unlisted (its name free)
    at once but its files are left for the caller to delete: the directory returned."""
    anonymous = RunOptions.from_json(container.run).anonymous.values() if container.run and volumes else ()
    known = Volumes(store)
    with store.locked():
        containers = Containers(store)
        aside = containers.set_aside(container) if set_aside else containers.remove(container)
        for name in anonymous:
            with contextlib.suppress(NotFound):
                known.remove(known.get(name))
    return aside


def _delete(daemon: int, aside: Path) -> int:
    """What `run --rm` leaves for after its answer through the service (layerfs/handoff.py):
    the killed server reaped, the set-aside layer deleted."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(daemon, 0)
    shutil.rmtree(aside, ignore_errors=True)
    return 0


class _SignalsForwarded:
    """Pass the signals a user sends this process on to the container's pid 1. It is in
    place before pid 1 exists, so a signal that comes while the container starts is kept
    and passed on once `to` names pid 1, instead of killing the launcher."""

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        self.saved: dict[int, object] = {}

    def _forward(self, signum: int, _frame: object) -> None:
        if not self.pid:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def to(self, pid: int) -> None:
        self.pid = pid
        for signum in self.pending:
            self._forward(signum, None)
        self.pending.clear()

    def __enter__(self) -> "_SignalsForwarded":
        self.saved = {sig: signal.signal(sig, self._forward) for sig in _FORWARDED}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


@contextlib.contextmanager
def _end_with(daemon: int, pid1: int) -> Iterator[None]:
    """While the block runs, a FUSE server that dies (killed, crashed) takes the
    container with it: its processes would only get ENOTCONN from then on."""
    def reaped(_signum: int, _frame: object) -> None:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(daemon, os.WNOHANG)[0] == daemon:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
    saved = signal.signal(signal.SIGCHLD, reaped)
    try:
        reaped(signal.SIGCHLD, None)  # it may be gone already
        yield
    finally:
        signal.signal(signal.SIGCHLD, saved)


def _read_all(fd: int) -> str:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read().decode(errors="replace")


def _command(argv: list[str], env: list[str], cwd: str, user: ExecUser, hostname: str,
             options: RunOptions, with_userns: bool) -> Command:
    keys = {e.split("=", 1)[0] for e in env}
    extra = [f"HOSTNAME={hostname}"] if "HOSTNAME" not in keys else []
    extra += [f"HOME={user.home}"] if "HOME" not in keys else []
    if options.tty and "TERM" not in keys:
        extra.append("TERM=xterm")
    return Command(tuple(argv), tuple(extra + env), cwd, user.uid, user.gid, user.groups,
                   options.tty, options.no_new_privs, mknod=with_userns)


def _make(root: str, path: str, kind: str, view: TreeView | None) -> str | None:
    """Make an empty mount point the image lacks; the path made, inside the root."""
    target = resolve_in(root, path, view)
    if view is not None:  # the tree knows: no need to ask the mount
        parent = os.path.relpath(os.path.dirname(target), root)
        if kind_inside(root, path, view) is not None or kind_inside(root, parent, view) != stat.S_IFDIR:
            return None
    elif os.path.lexists(target) or not os.path.isdir(os.path.dirname(target)):
        return None
    if kind == "d":
        os.mkdir(target, 0o755)
    else:
        Path(target).touch(0o644)
    return os.path.relpath(target, root)

