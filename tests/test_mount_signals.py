"""Stopping a mount's server: what a user of fuse-overlayfs or sshfs expects.

SIGTERM, SIGINT and SIGHUP to a server (a browse mount's, a container mount's, a
running container's runtime mount's, or `mount --foreground` itself) unmount
cleanly: the session ends, a container's layer keeps every write, the mount point
is an empty directory again, no record is left, and the server exits 0. A server
killed with SIGKILL leaves a dead mount: `layerfs mounts` shows it as dead,
`layerfs umount` takes it down, and it holds up no rmi, rm or mount.

Real mounts, as root and rootless. Every command runs in-process
(LAYERFS_NO_SERVICE=1). The test process is a child subreaper, so that the mount
daemons, orphaned once `layerfs mount` returns, are its own children: their exit
status is read, not guessed.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import prctl
import pytest

from conftest import LAYERFS_BIN, TEST_USER, Layerfs
from support.errors import one_line_error
from support.oci import directory, file, make_layer, write_oci_layout
from support.runnable import runnable_layer
from support.snapshot import assert_same_tree, snapshot_as

IMAGE = "sig:1"
STOPS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
SIGNAL_IDS = [s.name for s in STOPS]


class InProcess(Layerfs):
    """A Layerfs whose commands never go through the resident service."""

    def env(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        return dict(super().env(overrides), LAYERFS_NO_SERVICE="1")


@pytest.fixture(autouse=True)
def adopted() -> Iterator[None]:
    """Daemons orphaned during the test become this process's children (see
    `exit_status`); the ones that ended are reaped afterwards."""
    prctl.set_child_subreaper(True)
    try:
        yield
    finally:
        prctl.set_child_subreaper(False)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


@pytest.fixture(params=["root", "rootless"])
def lfs(request: pytest.FixtureRequest) -> Iterator[InProcess]:
    """The CLI as root and as the test user, with IMAGE imported."""
    user = None if request.param == "root" else TEST_USER
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.skip(f"test user {user} missing: run scripts/test, which creates it")
    workdir = Path(tempfile.mkdtemp(prefix="layerfs-test-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    obj = InProcess(user=user, workdir=workdir)
    obj.give(workdir)
    obj.import_layers([make_layer([directory("lower"), file("lower/keep", b"kept\n"),
                                   file("lower/gone", b"to delete\n"), file("lower/log", b"first\n")])], IMAGE)
    yield obj
    obj.cleanup()


def as_identity(lfs: Layerfs, argv: list[str]) -> list[str]:
    """`argv` as the identity, exec'd in place (the pid is the command's own)."""
    if not lfs.rootless:
        return argv
    return ["setpriv", f"--reuid={lfs.user}", f"--regid={lfs.user}", "--init-groups", "--", *argv]


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


def exit_status(pid: int, timeout: float = 20) -> int:
    """Wait for an adopted daemon to end; its exit status."""
    pidfd = os.pidfd_open(pid)
    try:
        assert select.select([pidfd], [], [], timeout)[0], f"server {pid} still runs after {timeout} s"
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


def records(lfs: Layerfs) -> list[dict[str, Any]]:
    return json.loads(lfs.run("mounts", "--json").stdout)


def server_of(lfs: Layerfs, mountpoint: Path) -> int:
    [record] = [r for r in records(lfs) if r["mountpoint"] == str(mountpoint)]
    return record["pid"]


def in_table(mountpoint: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mountpoint) for line in f)


def mount(lfs: Layerfs, ref: str) -> Path:
    mountpoint = lfs.mkdir(f"mnt-{uuid.uuid4().hex[:8]}")
    lfs.run("mount", ref, str(mountpoint))
    return mountpoint


def assert_unmounted(lfs: Layerfs, mountpoint: Path) -> None:
    """Gone from the mount table and the records, an empty directory again."""
    assert not in_table(mountpoint)
    assert records(lfs) == [] and len(lfs.run("mounts").stdout.splitlines()) == 1
    assert lfs.sh(["ls", "-A", str(mountpoint)]).stdout == b""


def stop(pid: int, signum: int) -> None:
    os.kill(pid, signum)
    assert exit_status(pid) == 0


# ---------------------------------------------------------------------------
# Browse mounts


@pytest.mark.parametrize("signum", STOPS, ids=SIGNAL_IDS)
def test_a_signal_unmounts_a_browse_mount(lfs: InProcess, signum: int) -> None:
    mountpoint = mount(lfs, IMAGE)
    assert lfs.sh(["cat", f"{mountpoint}/lower/keep"]).stdout == b"kept\n"
    stop(server_of(lfs, mountpoint), signum)
    assert_unmounted(lfs, mountpoint)


_READER = """
import os, sys
path = sys.argv[1]
print("reading", flush=True)
while True:
    try:
        os.listxattr(path)  # the kernel caches no xattrs: every call is a request
    except OSError:
        break
"""


def test_a_signal_stops_a_server_under_load(lfs: InProcess) -> None:
    """Requests keep coming, so the signal lands while the server answers one or spins
    for the next, where the C loop does not see it: it must end all the same."""
    mountpoint = mount(lfs, IMAGE)
    reader = subprocess.Popen(as_identity(lfs, [sys.executable, "-c", _READER, f"{mountpoint}/lower/keep"]),
                              stdout=subprocess.PIPE, env=lfs.env(), text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        time.sleep(0.2)
        stop(server_of(lfs, mountpoint), signal.SIGTERM)
        assert reader.wait(timeout=20) == 0, "the reader did not see the mount go"
    finally:
        reader.kill()
        reader.wait()
    assert_unmounted(lfs, mountpoint)


def test_sigterm_detaches_a_busy_mount_lazily(lfs: InProcess) -> None:
    """A shell inside refuses `umount` (busy); SIGTERM detaches lazily, as umount -l,
    and ends the server: the shell lives on, in a directory that answers ENOTCONN."""
    mountpoint = mount(lfs, IMAGE)
    inside = subprocess.Popen(as_identity(lfs, ["sh", "-c", f"cd {mountpoint}/lower && exec sleep 60"]),
                              env=lfs.env())
    try:
        wait_until(lambda: os.readlink(f"/proc/{inside.pid}/cwd") == f"{mountpoint}/lower", "the shell to cd in")
        one_line_error(lfs.run("umount", str(mountpoint), check=False), 4, "busy")
        stop(server_of(lfs, mountpoint), signal.SIGTERM)
        assert inside.poll() is None, "the shell inside was killed"
        there = lfs.sh(["ls", f"/proc/{inside.pid}/cwd/"], check=False)
        assert there.returncode != 0 and b"not connected" in there.stderr, there.stderr
    finally:
        inside.kill()
        inside.wait()
    assert_unmounted(lfs, mountpoint)


@pytest.mark.parametrize("signum", STOPS, ids=SIGNAL_IDS)
def test_a_signal_ends_a_foreground_mount_quietly(lfs: InProcess, signum: int) -> None:
    """Ctrl-C is how `mount --foreground` says to unmount (SIGHUP: its terminal closed;
    SIGTERM: a service manager): no traceback, exit 0 as sshfs -f or fuse-overlayfs -f,
    and nothing left behind."""
    mountpoint = lfs.mkdir("fg")
    serving = subprocess.Popen(
        as_identity(lfs, [LAYERFS_BIN, "--root", str(lfs.root), "mount", "--foreground", IMAGE, str(mountpoint)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lfs.env(), cwd=lfs.workdir, text=True,
        start_new_session=True)
    try:
        assert wait_until(lambda: records(lfs), "the foreground mount")[0]["pid"] == serving.pid
        assert lfs.sh(["cat", f"{mountpoint}/lower/keep"]).stdout == b"kept\n"
        os.killpg(serving.pid, signum)  # the terminal sends Ctrl-C to the whole process group
        out, err = serving.communicate(timeout=20)
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.communicate()
    assert serving.returncode == 0, err
    assert out == "" and err.splitlines() == [f"Serving {IMAGE} at {mountpoint}; press Ctrl-C to unmount"], err
    assert_unmounted(lfs, mountpoint)


def test_root_unmounts_without_fusermount3(lfs: InProcess) -> None:
    """Root calls umount2 itself (on the hot path of `run --rm`): no fusermount3 on
    PATH changes nothing. Rootless still needs it, and says so."""
    mountpoint = mount(lfs, IMAGE)
    argv = as_identity(lfs, [LAYERFS_BIN, "--root", str(lfs.root), "umount", str(mountpoint)])
    argv[0] = shutil.which(argv[0]) or argv[0]
    done = subprocess.run(argv, env=lfs.env() | {"PATH": str(Path(LAYERFS_BIN).parent)},
                          capture_output=True, text=True, cwd=lfs.workdir)
    if lfs.rootless:
        one_line_error(done, 1, "fusermount3 is missing")
        lfs.run("umount", str(mountpoint))
    else:
        assert done.returncode == 0 and done.stderr == "", done.stderr
    assert_unmounted(lfs, mountpoint)


# ---------------------------------------------------------------------------
# Container mounts: nothing written is lost

_WRITES = """
import os, sys
root = sys.argv[1]
os.makedirs(f"{root}/new/deep")
for i in range(20):
    with open(f"{root}/new/f{i}", "wb") as f:
        f.write(f"file {i}\\n".encode() * (i + 1))
with open(f"{root}/new/deep/big", "wb") as f:
    f.write(bytes(range(256)) * 4096)
with open(f"{root}/lower/log", "ab") as f:
    f.write(b"second\\n")
os.unlink(f"{root}/lower/gone")
os.rename(f"{root}/new/f0", f"{root}/renamed")
os.symlink("new/f1", f"{root}/link")
os.chmod(f"{root}/new/f2", 0o600)
"""


def write_through(lfs: Layerfs, mountpoint: Path) -> dict[str, Any]:
    """Write, delete, rename and chmod through the mount; the tree then seen."""
    lfs.sh([sys.executable, "-c", _WRITES, str(mountpoint)])
    tree = snapshot_as(lfs, mountpoint)
    assert "/lower/gone" not in tree and "/new/f0" not in tree and tree["/new/deep/big"].size == 1 << 20
    assert tree["/new/f2"].mode == 0o600 and tree["/link"].target == "new/f1"
    return tree


def assert_kept(lfs: Layerfs, container: str, before: dict[str, Any]) -> None:
    """Mounted again, the container shows exactly what it showed before."""
    again = mount(lfs, container)
    assert_same_tree(before, snapshot_as(lfs, again), ("before the stop", "mounted again"))
    assert lfs.sh(["cat", f"{again}/lower/log", f"{again}/renamed"]).stdout == b"first\nsecond\nfile 0\n"
    lfs.run("umount", str(again))


@pytest.mark.parametrize("signum", STOPS, ids=SIGNAL_IDS)
def test_a_signal_keeps_every_write_of_a_container_mount(lfs: InProcess, signum: int) -> None:
    lfs.run("create", "--name", "box", IMAGE)
    mountpoint = mount(lfs, "box")
    before = write_through(lfs, mountpoint)
    stop(server_of(lfs, mountpoint), signum)
    assert_unmounted(lfs, mountpoint)
    assert_kept(lfs, "box", before)


def test_ctrl_c_keeps_every_write_of_a_foreground_container_mount(lfs: InProcess) -> None:
    lfs.run("create", "--name", "box", IMAGE)
    mountpoint = lfs.mkdir("fg")
    serving = subprocess.Popen(
        as_identity(lfs, [LAYERFS_BIN, "--root", str(lfs.root), "mount", "--foreground", "box", str(mountpoint)]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lfs.env(), cwd=lfs.workdir, text=True,
        start_new_session=True)
    try:
        wait_until(lambda: records(lfs), "the foreground mount")
        before = write_through(lfs, mountpoint)
        os.killpg(serving.pid, signal.SIGINT)
        _, err = serving.communicate(timeout=20)
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.communicate()
    assert serving.returncode == 0 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert_unmounted(lfs, mountpoint)
    assert_kept(lfs, "box", before)


def test_sigterm_to_a_running_containers_server_keeps_its_writes(lfs: InProcess) -> None:
    """The runtime mount the launcher makes: its server stopped, the container (which
    cannot go on without its root) ends, and its layer holds what it wrote."""
    source = lfs.workdir / "busybox"
    write_oci_layout(source, [runnable_layer()], config={"Env": ["PATH=/bin"]})
    lfs.give(source)
    lfs.run("import", f"oci:{source}", "box:1", "-q")
    lfs.run("run", "-d", "--name", "r", "box:1", "sh", "-c", "echo written > /srv/out; echo r''eady; sleep 100")
    wait_until(lambda: "ready" in lfs.run("logs", "r").stdout, "the container to write")
    [record] = records(lfs)
    assert record["kind"] == "runtime" and not record["here"]
    os.kill(record["pid"], signal.SIGTERM)
    wait_until(lambda: json.loads(lfs.run("ps", "-a", "--json").stdout)[0]["status"] == "exited",
               "the container to end")
    wait_until(lambda: not running(record["pid"]), "its server to end")
    assert records(lfs) == []
    again = mount(lfs, "r")
    assert lfs.sh(["cat", f"{again}/srv/out"]).stdout == b"written\n"
    lfs.run("umount", str(again))
    lfs.run("rm", "r")


# ---------------------------------------------------------------------------
# A server killed with SIGKILL: a dead mount


def assert_listed_dead(lfs: Layerfs, mountpoint: Path, pid: int) -> None:
    [record] = records(lfs)
    assert record["alive"] is False and record["pid"] == pid and record["mountpoint"] == str(mountpoint)
    assert {"mountpoint", "image", "id", "pid", "kind", "namespace", "started", "here"} <= record.keys()
    header, row = lfs.run("mounts").stdout.splitlines()
    assert header.split()[-1] == "STATUS" and row.split()[0] == str(mountpoint) and row.split()[-1] == "dead"


def kill_server(lfs: Layerfs, mountpoint: Path) -> int:
    pid = server_of(lfs, mountpoint)
    assert "alive" in lfs.run("mounts").stdout and records(lfs)[0]["alive"] is True
    os.kill(pid, signal.SIGKILL)
    assert exit_status(pid) == -signal.SIGKILL
    assert in_table(mountpoint), "a killed server's mount stays, dead"
    return pid


def assert_mount_point_usable(lfs: Layerfs, mountpoint: Path) -> None:
    assert_unmounted(lfs, mountpoint)
    lfs.run("mount", IMAGE, str(mountpoint))
    assert lfs.sh(["cat", f"{mountpoint}/lower/keep"]).stdout == b"kept\n"
    lfs.run("umount", str(mountpoint))


def test_a_killed_browse_server_leaves_a_dead_mount_umount_takes_down(lfs: InProcess) -> None:
    mountpoint = mount(lfs, IMAGE)
    pid = kill_server(lfs, mountpoint)
    assert_listed_dead(lfs, mountpoint, pid)
    one_line_error(lfs.run("mount", IMAGE, str(mountpoint), check=False), 4, "already a mount point")
    assert lfs.run("umount", str(mountpoint)).stderr == ""
    assert_mount_point_usable(lfs, mountpoint)


def test_a_dead_mount_holds_up_no_rmi(lfs: InProcess) -> None:
    """Its server, which read the image, is gone: the image may go, and the dead
    mount still comes down after."""
    mountpoint = mount(lfs, IMAGE)
    pid = kill_server(lfs, mountpoint)
    assert "Deleted: " in lfs.run("rmi", IMAGE).stdout
    assert_listed_dead(lfs, mountpoint, pid)
    lfs.run("umount", str(mountpoint))
    assert_unmounted(lfs, mountpoint)


def test_a_dead_container_mount_holds_up_no_mount_nor_rm(lfs: InProcess) -> None:
    """The dead mount's server no longer writes the layer: the container can be mounted
    elsewhere (as a start would mount it), and rm -f removes it, taking the dead mount
    down with it."""
    lfs.run("create", "--name", "box", IMAGE)
    mountpoint = mount(lfs, "box")
    pid = kill_server(lfs, mountpoint)
    assert_listed_dead(lfs, mountpoint, pid)
    elsewhere = mount(lfs, "box")
    assert lfs.sh(["cat", f"{elsewhere}/lower/keep"]).stdout == b"kept\n"
    lfs.run("umount", str(elsewhere))
    lfs.run("rm", "-f", "box")
    assert json.loads(lfs.run("ps", "-a", "--json").stdout) == []
    assert json.loads(lfs.run("mounts", "--json").stdout) == []
    assert_mount_point_usable(lfs, mountpoint)


def test_a_dead_busy_mount_is_detached_lazily(lfs: InProcess) -> None:
    """A dead mount serves nothing, so a shell left inside does not keep it mounted."""
    mountpoint = mount(lfs, IMAGE)
    inside = subprocess.Popen(as_identity(lfs, ["sh", "-c", f"cd {mountpoint} && exec sleep 60"]), env=lfs.env())
    try:
        wait_until(lambda: os.readlink(f"/proc/{inside.pid}/cwd") == str(mountpoint), "the shell to cd in")
        kill_server(lfs, mountpoint)
        lfs.run("umount", str(mountpoint))
        assert inside.poll() is None
    finally:
        inside.kill()
        inside.wait()
    assert_mount_point_usable(lfs, mountpoint)
