"""The contenders, behind one small interface: prepare, mount, daemon pid.

All of them mount the same image read-only: kernel overlayfs and fuse-overlayfs
straight from the overlay-format layer dirs, layerfs from its own store after
importing the OCI layout written from those same dirs. For the write workloads
the peers mount those dirs read-write over a fresh upper dir, and layerfs
mounts a fresh container (see writable.py, which drives these commands).

layerfs runs twice: `layerfs` makes browse mounts (`layerfs mount REF DIR`: only
the mounting user may enter, nothing is checked), `layerfs-runtime` makes the
mounts a container runtime makes (`layerfs mount --allow-other REF DIR`:
default_permissions + allow_other, POSIX ACLs enforced by the kernel). Same CLI,
same store, same images; only that flag, the mount points and the names of the
bench's containers differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import mounts
from .imagebuild import BenchImage
from .ocilayout import manifest_digest
from .util import BenchError, log, run

DEFAULT_LAYERFS = Path("/opt/layerfs/venv/bin/layerfs")


@dataclass
class Mounted:
    """A live mount of one image by one filesystem."""

    mountpoint: Path
    pid: int | None

    def rss_mib(self) -> float | None:
        """Resident memory of the serving daemon (None: no daemon, i.e. the kernel)."""
        if self.pid is None:
            return None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise BenchError(f"no VmRSS for pid {self.pid}")


def _lowerdir(image: BenchImage) -> tuple[str, Path]:
    """lowerdir option (top layer first) relative to the layers' common parent.

    Relative names keep the 100-layer option under the kernel's 4 KiB limit
    for mount options; both kernel overlayfs and fuse-overlayfs resolve them
    against the working directory of the mount command.
    """
    parent = image.layer_dirs[0].parent
    if any(d.parent != parent for d in image.layer_dirs):
        raise BenchError(f"layers of {image.ref} are not in one directory")
    return ":".join(d.name for d in reversed(image.layer_dirs)), parent


def _wait_exit(pid: int | None, timeout: float = 10.0) -> None:
    """A FUSE daemon exits after its unmount; the next fresh mount must not overlap it."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                return  # a zombie is gone for our purposes
        except (OSError, IndexError):
            return
        time.sleep(0.01)


def _release_quietly(record: mounts.ActiveMount) -> None:
    """Unmount after a failure; an error is logged (release has detached the mount anyway)."""
    try:
        mounts.release(record)
    except Exception as exc:  # noqa: BLE001 - the original failure matters more
        log(f"unmounting {record.mountpoint} failed: {exc}")


class Filesystem:
    """Base: subclasses give `key`, the mount and unmount commands and how to find
    the daemon; the mounting, registration and waiting are shared."""

    key = ""

    def __init__(self) -> None:
        self.prepare_seconds: dict[str, float] = {}  # image ref -> one-time work done this run

    def unavailable(self) -> str | None:
        """Why this filesystem cannot run here, or None."""
        return None

    def prepare(self, image: BenchImage) -> None:
        """One-time work before any timed mount (import into a store...)."""

    def remove_leftovers(self) -> None:
        """Remove what a killed earlier run left besides mounts and scratch dirs."""

    def mount_argv(self, image: BenchImage, mountpoint: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError

    def unmount_argv(self, mountpoint: Path) -> list[str]:
        raise NotImplementedError

    def find_pid(self, mountpoint: Path) -> int | None:
        return None

    def start_mount(self, image: BenchImage, mountpoint: Path) -> mounts.ActiveMount:
        """Run the mount command and register the mount: the timed part of `mount → ls`."""
        argv, cwd = self.mount_argv(image, mountpoint)
        return self.mount_with(argv, cwd, mountpoint, image.ref)

    def mount_with(self, argv: list[str], cwd: Path | None, mountpoint: Path, what: str) -> mounts.ActiveMount:
        """Run a mount command and register the mount at once, so cleanup finds it."""
        proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            mounts.force_unmount(mountpoint)  # in case it got half way
            raise BenchError(f"{self.key}: mounting {what} failed: {proc.stderr.strip()[-300:]}")
        record = mounts.register(mountpoint, lambda: self._unmount(record))
        return record

    def _unmount(self, record: mounts.ActiveMount) -> None:
        run(self.unmount_argv(record.mountpoint), quiet=True)
        _wait_exit(record.pid)

    def attach_pid(self, record: mounts.ActiveMount) -> int | None:
        """Find the daemon serving a fresh mount (outside any timed region: for
        layerfs this is one more CLI call)."""
        try:
            record.pid = self.find_pid(record.mountpoint)
        except BaseException:
            mounts.release(record)
            raise
        return record.pid

    @contextmanager
    def mounted(self, image: BenchImage, mountpoint: Path) -> Iterator[Mounted]:
        """A fresh mount for the duration of the block; always unmounted after."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        if mounts.is_mounted(mountpoint):
            mounts.force_unmount(mountpoint)
        record = self.start_mount(image, mountpoint)
        pid = self.attach_pid(record)
        try:
            yield Mounted(mountpoint, pid)
        except BaseException:
            _release_quietly(record)  # an unmount error must not hide the failure (or Ctrl-C)
            raise
        mounts.release(record)


class Overlay(Filesystem):
    """Kernel overlayfs and fuse-overlayfs take the same options; only the command differs."""

    def rw_mount_argv(self, image: BenchImage, upper: Path, work: Path,
                      mountpoint: Path) -> tuple[list[str], Path | None]:
        """Read-write mount of the image's layers over an empty `upper` (with its `work` dir)."""
        raise NotImplementedError

    @staticmethod
    def rw_options(image: BenchImage, upper: Path, work: Path) -> tuple[str, Path]:
        """`lowerdir=...,upperdir=...,workdir=...` (lowers relative, as `_lowerdir` explains),
        and the directory to run the mount command in."""
        lowerdir, cwd = _lowerdir(image)
        return f"lowerdir={lowerdir},upperdir={upper.resolve()},workdir={work.resolve()}", cwd


class KernelOverlay(Overlay):
    """Kernel overlayfs: the speed ceiling."""

    key = "kernel"

    def unavailable(self) -> str | None:
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlay filesystem"
        return None

    def mount_argv(self, image: BenchImage, mountpoint: Path) -> tuple[list[str], Path | None]:
        lowerdir, cwd = _lowerdir(image)
        return ["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}", str(mountpoint)], cwd

    def rw_mount_argv(self, image: BenchImage, upper: Path, work: Path,
                      mountpoint: Path) -> tuple[list[str], Path | None]:
        """The kernel's default features (this is what a container runtime gets)."""
        options, cwd = self.rw_options(image, upper, work)
        return ["mount", "-t", "overlay", "overlay", "-o", options, str(mountpoint)], cwd

    def unmount_argv(self, mountpoint: Path) -> list[str]:
        return ["umount", str(mountpoint)]


class FuseOverlayfs(Overlay):
    """fuse-overlayfs (C, libfuse 3): the userspace peer to beat."""

    key = "fuse-overlayfs"

    def unavailable(self) -> str | None:
        return None if shutil.which("fuse-overlayfs") else "fuse-overlayfs is not installed"

    def mount_argv(self, image: BenchImage, mountpoint: Path) -> tuple[list[str], Path | None]:
        lowerdir, cwd = _lowerdir(image)
        return ["fuse-overlayfs", "-o", f"ro,lowerdir={lowerdir}", str(mountpoint)], cwd

    def rw_mount_argv(self, image: BenchImage, upper: Path, work: Path,
                      mountpoint: Path) -> tuple[list[str], Path | None]:
        options, cwd = self.rw_options(image, upper, work)
        return ["fuse-overlayfs", "-o", options, str(mountpoint)], cwd

    def unmount_argv(self, mountpoint: Path) -> list[str]:
        return ["fusermount3", "-u", str(mountpoint)]

    def find_pid(self, mountpoint: Path) -> int | None:
        """fuse-overlayfs daemonizes; find it by its command line naming the mount point."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"fuse-overlayfs" and str(mountpoint).encode() in argv:
                return int(proc.name)
        raise BenchError(f"cannot find the fuse-overlayfs process serving {mountpoint}")


_SERVICE_STOPS: set[Path] = set()  # the stores whose service the bench stops at its end


class Layerfs(Filesystem):
    """layerfs through its CLI (as README.md and `layerfs --help` describe it), with a bench store.

    Browse mounts: `layerfs mount REF DIR`, images and containers alike."""

    key = "layerfs"
    # Names of the bench's containers and committed images. Each layerfs variant
    # has its own, and none is a prefix of another: `remove_leftovers` of one
    # variant must never remove what the other is using.
    RW_PREFIX = "bench-rw-"
    MOUNT_FLAGS: tuple[str, ...] = ()  # passed to every `layerfs mount` of this variant

    def __init__(self, binary: Path, store: Path) -> None:
        super().__init__()
        self.binary = binary
        self.store = store

    def _cli(self, *args: str) -> list[str]:
        return [str(self.binary), "--root", str(self.store), *args]

    def unavailable(self) -> str | None:
        if not os.access(self.binary, os.X_OK):
            return f"{self.binary} does not exist yet"
        return None

    def prepare(self, image: BenchImage) -> None:
        """Import the image unless the store already holds this very manifest. The
        commands start root's resident service for the bench store (when the CLI
        has one): it is stopped when the bench ends (`service stop`; a CLI without
        the service fails it, ignored)."""
        if self.store not in _SERVICE_STOPS:
            _SERVICE_STOPS.add(self.store)
            mounts.register_leftover(f"the layerfs service of {self.store}",
                                     lambda: run(self._cli("service", "stop"), capture=True, check=False))
        wanted = manifest_digest(image.layout, image.ref)
        found = run(self._cli("inspect", image.ref, "--json"), capture=True, check=False)
        if found.returncode == 0:
            if json.loads(found.stdout).get("digest") == wanted:
                return
            log(f"layerfs store holds an older {image.ref}; replacing it")
            run(self._cli("rmi", image.ref), quiet=True)
        elif found.returncode != 3:
            raise BenchError(f"layerfs inspect {image.ref} failed: {found.stderr.strip()}")
        log(f"importing {image.ref} into {self.store} ...")
        start = time.monotonic()
        run(self._cli("import", f"oci:{image.layout}:{image.ref}", image.ref, "-q"), quiet=True)
        self.prepare_seconds[image.ref] = time.monotonic() - start
        log(f"imported {image.ref} in {self.prepare_seconds[image.ref]:.1f}s")

    def _mount(self, ref: str, mountpoint: Path) -> list[str]:
        return self._cli("mount", *self.MOUNT_FLAGS, ref, str(mountpoint))

    def mount_argv(self, image: BenchImage, mountpoint: Path) -> tuple[list[str], Path | None]:
        return self._mount(image.name, mountpoint), None

    # -- containers (the write workloads)

    def create_container(self, image: BenchImage, name: str) -> None:
        run(self._cli("create", image.ref, "--name", name), quiet=True)

    def container_mount_argv(self, name: str, mountpoint: Path) -> tuple[list[str], Path | None]:
        """`layerfs mount` takes a container name first: the mount is read-write."""
        return self._mount(name, mountpoint), None

    def commit_argv(self, name: str, ref: str) -> list[str]:
        return self._cli("commit", name, ref)

    def remove_container(self, name: str) -> None:
        """`layerfs rm`; a container that is already gone is fine (cleanup after a
        failed create)."""
        self._remove("rm", name)

    def remove_image(self, ref: str) -> None:
        """`layerfs rmi`; an image that was never made is fine (interrupted commit)."""
        self._remove("rmi", ref)

    def _remove(self, command: str, name: str) -> None:
        proc = run(self._cli(command, name), capture=True, check=False)
        if proc.returncode not in (0, 3):  # 3: unknown reference
            raise BenchError(f"layerfs {command} {name} exited {proc.returncode}: {proc.stderr.strip()}")

    def _wait_daemons(self, names: set[str]) -> None:
        """`remove_stale` has detached the killed run's mounts, but their daemons
        exit only once the kernel lets go, and `layerfs rm` refuses a container
        whose daemon still serves it."""
        listing = json.loads(run(self._cli("mounts", "--json"), capture=True).stdout)
        for entry in listing:
            if entry.get("image") in names:
                _wait_exit(int(entry["pid"]))

    def remove_leftovers(self) -> None:
        """Remove the containers and images a SIGKILLed earlier run left in the
        bench store (their names start with RW_PREFIX)."""
        prefix = self.RW_PREFIX
        containers = json.loads(run(self._cli("ps", "-a", "--json"), capture=True).stdout)
        stale = [c["name"] for c in containers if c.get("name", "").startswith(prefix)]
        if stale:
            log(f"removing containers left by an earlier run: {', '.join(stale)}")
            self._wait_daemons(set(stale))
            run(self._cli("rm", *stale), quiet=True)
        images = json.loads(run(self._cli("images", "--json"), capture=True).stdout)
        refs = [n for image in images for n in image.get("names", []) if n.startswith(prefix)]
        if refs:
            log(f"removing images left by an earlier run: {', '.join(refs)}")
            run(self._cli("rmi", *refs), quiet=True)

    def unmount_argv(self, mountpoint: Path) -> list[str]:
        return self._cli("umount", str(mountpoint))

    def find_pid(self, mountpoint: Path) -> int | None:
        listing = json.loads(run(self._cli("mounts", "--json"), capture=True).stdout)
        for entry in listing:
            if os.path.realpath(entry.get("mountpoint", "")) == os.path.realpath(mountpoint):
                return int(entry["pid"])
        raise BenchError(f"`layerfs mounts --json` does not list {mountpoint}")


class LayerfsRuntime(Layerfs):
    """layerfs as a container runtime mounts it: `layerfs mount --allow-other`
    (root only) for every image and container mount, i.e. default_permissions +
    allow_other, POSIX ACLs negotiated (the kernel checks every access and reads
    ACLs with getxattr). The same store and images as `layerfs`."""

    key = "layerfs-runtime"
    RW_PREFIX = "bench-rt-"
    MOUNT_FLAGS = ("--allow-other",)

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        usage = run(self._cli("mount", "--help"), capture=True, check=False)
        if "--allow-other" not in usage.stdout:
            return f"`{self.binary} mount` has no --allow-other option yet"
        return None


FS_KEYS = ["kernel", "fuse-overlayfs", "layerfs", "layerfs-runtime"]  # column order of the report


def all_filesystems(layerfs_binary: Path, store: Path) -> list[Filesystem]:
    """Column order of the report: ceiling, peer, ours (browse, then runtime mounts)."""
    found = [KernelOverlay(), FuseOverlayfs(), Layerfs(layerfs_binary, store), LayerfsRuntime(layerfs_binary, store)]
    assert [fs.key for fs in found] == FS_KEYS
    return found
