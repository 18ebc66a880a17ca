"""Shared fixtures: run the real `layerfs` command as root and as an unprivileged user.

Every test that touches the CLI goes through `Layerfs.run`, so the same test body
exercises the rootful and the rootless path (the `lfs` fixture is parametrized).
Scratch space lives under /tmp (not pytest's tmp_path, which is private to root)
and belongs to the user the commands run as.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.oci import write_oci_layout

TEST_USER = "layerfs-test"
LAYERFS_BIN = str(Path(sys.executable).parent / "layerfs")
SERVICE_IDLE = 20  # seconds: the many stores of a run must not leave idle services for minutes


def in_process_pass() -> bool:
    """Whether this run checks the in-process path: LAYERFS_TEST_NO_SERVICE=1 (scripts/test
    sets it for its second pass) runs every command without the resident service."""
    return os.environ.get("LAYERFS_TEST_NO_SERVICE", "") not in ("", "0")


def fuse_mounts_under(prefix: Path) -> list[str]:
    """Mount points below `prefix`, deepest first, so they can be unmounted in order."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mountpoint = line.split()[4].encode().decode("unicode_escape")
            if mountpoint.startswith(str(prefix) + "/"):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


@dataclass
class Layerfs:
    """One identity (root or the test user) with its own store and scratch directory."""

    user: str | None
    workdir: Path
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.workdir / "store"

    @property
    def rootless(self) -> bool:
        return self.user is not None

    def wrap(self, argv: list[str]) -> list[str]:
        """Prefix a command line so that it runs as this identity."""
        if self.user is None:
            return argv
        return ["runuser", "-u", self.user, "--", *argv]

    def env(self, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The environment layerfs runs in: none of the test process's LAYERFS* settings;
        services that exit soon after their test (SERVICE_IDLE); everything in-process
        for the parity pass (LAYERFS_TEST_NO_SERVICE=1, see scripts/test); then
        `overrides`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFS")}
        env["LAYERFS_SERVICE_IDLE"] = str(SERVICE_IDLE)
        if in_process_pass():
            env["LAYERFS_NO_SERVICE"] = "1"
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            env.update(HOME=pw.pw_dir, USER=self.user, LOGNAME=self.user)
            env.pop("XDG_DATA_HOME", None)
            env.pop("XDG_RUNTIME_DIR", None)
        env.update(overrides or {})
        return env

    def sh(self, argv: list[str], *, check: bool = True, input: bytes | None = None,
           timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run any command as this identity, capturing bytes output (`env`: variables
        set on top of `Layerfs.env()`)."""
        proc = subprocess.run(self.wrap(argv), input=input, capture_output=True,
                              timeout=timeout, env=self.env(env), cwd=self.workdir)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{argv!r} exited {proc.returncode}\nstdout: {proc.stdout.decode(errors='replace')}"
                f"\nstderr: {proc.stderr.decode(errors='replace')}")
        return proc

    def run(self, *args: str, check: bool = True, input: bytes | None = None,
            timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `layerfs --root STORE ARGS...` as this identity; text output."""
        proc = self.sh([LAYERFS_BIN, "--root", str(self.root), *args], check=check,
                       input=input, timeout=timeout, env=env)
        return subprocess.CompletedProcess(proc.args, proc.returncode,
                                           proc.stdout.decode(errors="replace"),
                                           proc.stderr.decode(errors="replace"))

    def mkdir(self, name: str) -> Path:
        """A fresh directory in the scratch area, owned by this identity."""
        path = self.workdir / name
        path.mkdir(parents=True)
        self.give(path)
        return path

    def give(self, path: Path) -> None:
        """Hand a file or tree made by the test (as root) over to this identity."""
        if self.user is None:
            return
        pw = pwd.getpwnam(self.user)
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(path)], check=True)

    def import_layers(self, layers: list[bytes], name: str) -> None:
        """Write `layers` as an OCI layout of this identity's and `layerfs import` it as `name`."""
        source = self.workdir / f"src-{uuid.uuid4().hex[:8]}"
        write_oci_layout(source, layers)
        self.give(source)
        self.run("import", f"oci:{source}", name, "-q")

    @contextmanager
    def mounted(self, ref: str) -> Iterator[Path]:
        """`layerfs mount REF MP` on a fresh directory for the block. After a block that
        passed, the umount must succeed (unless the block took the mount down itself);
        after a failure it is best effort."""
        mountpoint = self.mkdir(f"mnt-{uuid.uuid4().hex[:8]}")
        self.run("mount", ref, str(mountpoint))
        try:
            yield mountpoint
        except BaseException:
            self.run("umount", str(mountpoint), check=False)
            raise
        if str(mountpoint) in fuse_mounts_under(self.workdir):
            self.run("umount", str(mountpoint))

    def store_snapshot(self) -> dict[str, tuple[int, int]]:
        """Every file under the store with (size, mtime_ns): to prove a failure changed nothing."""
        snap: dict[str, tuple[int, int]] = {}
        if not self.root.exists():
            return snap
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel.split(os.sep)[0] in ("tmp", "mounts", "cache"):
                continue
            for name in filenames:
                st = os.lstat(os.path.join(dirpath, name))
                snap[os.path.join(rel, name)] = (st.st_size, st.st_mtime_ns)
        return snap

    def service_files(self) -> list[Path]:
        """Where the service of this identity's store would have its socket (see
        layerfs/service/place.py): beside the others in $XDG_RUNTIME_DIR/layerfs or
        /tmp/layerfs-UID."""
        uid = os.getuid() if self.user is None else pwd.getpwnam(self.user).pw_uid
        name = f"service-{zlib.crc32(str(self.root).encode()):08x}.sock"
        places = [Path(f"/tmp/layerfs-{uid}")]
        runtime = self.env().get("XDG_RUNTIME_DIR")
        if runtime:
            places.insert(0, Path(runtime) / "layerfs")
        return [place / name for place in places]

    def stop_service(self) -> None:
        """Stop the resident service of this identity's store, if one runs (quietly;
        without a start of layerfs when no socket says one might)."""
        if not any(os.path.lexists(path) for path in self.service_files()):
            return
        try:
            self.sh([LAYERFS_BIN, "--root", str(self.root), "service", "stop"], check=False, timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def cleanup(self) -> None:
        self.stop_service()
        for mountpoint in fuse_mounts_under(self.workdir):
            subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _make(user: str | None) -> Layerfs:
    workdir = Path(tempfile.mkdtemp(prefix="layerfs-test-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    lfs = Layerfs(user=user, workdir=workdir)
    lfs.give(workdir)
    return lfs


def _require_test_user() -> None:
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        pytest.skip(f"test user {TEST_USER} missing: run scripts/test, which creates it")


@pytest.fixture(params=["root", "rootless"])
def lfs(request: pytest.FixtureRequest) -> Iterator[Layerfs]:
    """The layerfs CLI as root and as the unprivileged test user."""
    user = None if request.param == "root" else TEST_USER
    if user:
        _require_test_user()
    obj = _make(user)
    yield obj
    obj.cleanup()


@pytest.fixture
def lfs_root() -> Iterator[Layerfs]:
    """The layerfs CLI as root only (for tests that need kernel overlayfs as an oracle)."""
    obj = _make(None)
    yield obj
    obj.cleanup()


@pytest.fixture
def lfs_user() -> Iterator[Layerfs]:
    """The layerfs CLI as the unprivileged test user only."""
    _require_test_user()
    obj = _make(TEST_USER)
    yield obj
    obj.cleanup()
