"""Enter a rootless user namespace: the user becomes root there, with a mount namespace.

A process cannot map the ids of its own new namespace beyond itself: newuidmap
must do that from outside, on the process's pid, after the unshare. So a helper
is forked first; it waits for the unshare, runs the map helpers on its parent and
reports back, while the parent waits. Then the parent is root in the namespace,
with every capability there, and mounts it makes (a runtime FUSE mount among
them) live in its own mount namespace, invisible on the host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator

from launcher import syscalls
from launcher.idmap import IdMap, write_maps
from layerfs.errors import LayerfsError
from layerfs.identity import in_user_namespace
from layerfs.union.daemon import is_daemon
from layerfs.union.mounts import FSTYPE, daemon_alive, mount_namespace, mount_table


def enter_user_namespace(idmap: IdMap, with_mounts: bool = True) -> None:
    """Move this process into a new user namespace, as root, with `idmap`, and into a new
    mount namespace owned by it unless `with_mounts` is false."""
    if in_user_namespace():
        raise LayerfsError("already inside a user namespace")
    parent = os.getpid()
    go_read, go_write = os.pipe()
    said_read, said_write = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_write)
        os.close(said_read)
        code = 1
        try:
            if os.read(go_read, 1) == b"1":
                write_maps(parent, idmap)
                code = 0
        except LayerfsError as e:
            os.write(said_write, e.message.encode())
        except OSError as e:
            os.write(said_write, f"cannot write the id maps: {e.strerror}".encode())
        finally:
            os._exit(code)
    os.close(go_read)
    os.close(said_write)
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER | (syscalls.CLONE_NEWNS if with_mounts else 0))
    except OSError as e:
        os.write(go_write, b"0")
        os.waitpid(helper, 0)
        raise LayerfsError(f"cannot create a user namespace: {e.strerror} "
                           "(are unprivileged user namespaces disabled? see "
                           "/proc/sys/user/max_user_namespaces)") from None
    os.write(go_write, b"1")
    os.close(go_write)
    said = os.read(said_read, 4096).decode(errors="replace")
    os.close(said_read)
    _, status = os.waitpid(helper, 0)
    if status != 0:
        raise LayerfsError(said or "the id map helper failed")
    if idmap.single:
        return  # setgroups is denied with a single map: the groups stay as they were
    os.setgroups([])  # host groups have no id inside; keep none


def run_unshared(argv: list[str], idmap: IdMap) -> int:
    """Run `argv` as root of a new user namespace (as `podman unshare` does) and return
    its exit status, 128+N when a signal ended it.

    Mounts made in there cannot outlive the namespace in any useful way (nothing
    else can reach them), so the layerfs mounts left behind are detached at the
    end, which stops their daemons."""
    enter_user_namespace(idmap)
    child = os.fork()
    if child == 0:
        _exec(argv)
    with _signals_forwarded_to(child):
        _, status = os.waitpid(child, 0)
    _detach_layerfs_mounts()
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _exec(argv: list[str]) -> None:
    """Become `argv`, or exit 127 (not found) / 126 (cannot run) saying why, as shells do."""
    # A search of PATH that meets an unreadable directory says EACCES: look it up first.
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0])
    try:
        if program is None:
            raise FileNotFoundError(argv[0])
        os.execv(program, argv)
    except FileNotFoundError:
        os.write(2, f"layerfs: error: {argv[0]}: command not found\n".encode())
        os._exit(127)
    except OSError as e:
        os.write(2, f"layerfs: error: cannot run {argv[0]}: {e.strerror}\n".encode())
        os._exit(126)


@contextlib.contextmanager
def _signals_forwarded_to(child: int) -> Iterator[None]:
    """Ctrl-C and Ctrl-\\ reach the child from the terminal already: ignore them here, as
    a shell does while it waits; a SIGTERM or SIGHUP sent to this process is passed on."""
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)
    saved = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, signal.SIG_IGN), (signal.SIGQUIT, signal.SIG_IGN),
        (signal.SIGTERM, forward), (signal.SIGHUP, forward))}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _detach_layerfs_mounts(timeout: float = 10.0) -> None:
    """Detach the layerfs mounts of this namespace and stop their daemons (each
    unmounts itself on SIGTERM), then wait for them, so that nothing of the session
    outlives it."""
    for mountpoint, fstype in mount_table().items():
        if fstype == FSTYPE:
            with contextlib.suppress(OSError):
                syscalls.umount(mountpoint, syscalls.MNT_DETACH)
    daemons = _daemons_here()
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while daemons and time.monotonic() < deadline:
        time.sleep(0.01)
        daemons = [pid for pid in daemons if daemon_alive(pid)]


def _daemons_here() -> list[int]:
    """The layerfs mount daemons that live in this process's mount namespace."""
    here = mount_namespace()
    return [int(entry.name) for entry in os.scandir("/proc")
            if entry.name.isdigit() and mount_namespace(entry.name) == here and is_daemon(entry.name)]
