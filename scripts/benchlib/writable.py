"""A fresh writable layer over the bench image, one per run of a write workload.

Write workloads change the tree they run on, so every run starts from the image
as built. Kernel overlayfs and fuse-overlayfs get a new, empty upper dir and
work dir under the cache (the same filesystem as their lower dirs and as the
layerfs store, so copy-up and rename cost the same kind of I/O everywhere);
layerfs gets a new container. Each is registered for cleanup the moment it
exists, and removed after the run, so a failure or Ctrl-C leaves nothing.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import mounts
from .filesystems import Filesystem, Layerfs, Overlay
from .imagebuild import BenchImage
from .util import BenchError, log, timed

_serial = itertools.count(1)  # unique names within this run (the pid makes them unique across runs)


def _unique() -> str:
    return f"{os.getpid()}-{next(_serial)}"


class WritableLayer(ABC):
    """Base: create, mount read-write, unmount, commit, remove; the mounting and
    unmounting (with registration and daemon wait) are shared."""

    def __init__(self, fs: Filesystem, image: BenchImage, mountpoint: Path) -> None:
        self.fs = fs
        self.image = image
        self.mountpoint = mountpoint
        self._mount: mounts.ActiveMount | None = None
        self._leftover: mounts.Leftover | None = None

    @abstractmethod
    def describe(self) -> str:
        """Name for error messages."""

    @abstractmethod
    def _create(self) -> None:
        """Make the empty writable layer (untimed)."""

    @abstractmethod
    def _remove(self) -> None:
        """Delete the writable layer and everything in it."""

    @abstractmethod
    def _mount_argv(self) -> tuple[list[str], Path | None]:
        """The read-write mount command and where to run it."""

    @abstractmethod
    def commit_seconds(self) -> float:
        """Time turning the (unmounted) layer into an image layer; removes the result."""

    def create(self) -> None:
        self._leftover = mounts.register_leftover(self.describe(), self._remove)
        self._create()

    def remove(self) -> None:
        if self._leftover is not None:
            mounts.discard(self._leftover)
            self._leftover = None

    def tear_down_after_failure(self) -> None:
        """Unmount and remove as far as possible without raising: the failure
        (or Ctrl-C) that got us here is what must reach the caller. Whatever
        cannot be removed now stays registered for the final cleanup."""
        for step in (self.unmount, self.remove):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the original failure matters more
                log(f"{self.describe()}: {exc} (left for the final cleanup)")

    def mount(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if mounts.is_mounted(self.mountpoint):
            mounts.force_unmount(self.mountpoint)
        argv, cwd = self._mount_argv()
        self._mount = self.fs.mount_with(argv, cwd, self.mountpoint, self.describe())
        self.fs.attach_pid(self._mount)  # so that unmount waits for a FUSE daemon to exit

    def unmount(self) -> None:
        """Unmount now (the commit workload needs it before committing); idempotent."""
        if self._mount is not None:
            record, self._mount = self._mount, None
            mounts.release(record)


class OverlayUpper(WritableLayer):
    """kernel overlayfs / fuse-overlayfs: the image's lower dirs + a fresh upper and work dir."""

    def __init__(self, fs: Overlay, image: BenchImage, scratch: Path, mountpoint: Path) -> None:
        super().__init__(fs, image, mountpoint)
        self.overlay = fs
        self.dir = scratch / f"{fs.key}-{_unique()}"
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"

    def describe(self) -> str:
        return f"{self.fs.key} upper dir {self.dir}"

    def _create(self) -> None:
        self.upper.mkdir(parents=True)
        self.work.mkdir()

    def _remove(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def _mount_argv(self) -> tuple[list[str], Path | None]:
        return self.overlay.rw_mount_argv(self.image, self.upper, self.work, self.mountpoint)

    def commit_seconds(self) -> float:
        """What a peer's user must do at least to get an OCI layer blob: tar the
        upper dir and hash the stream (the digest names the blob). No whiteout
        conversion: the commit workload deletes nothing, so there are none."""
        blob = self.dir / "layer.tar"
        command = (f"set -o pipefail; tar -C {shlex.quote(str(self.upper))} -cf - . "
                   f"| tee {shlex.quote(str(blob))} | sha256sum > /dev/null")
        seconds = timed([command], shell=True)
        blob.unlink()
        return seconds


class LayerfsContainer(WritableLayer):
    """layerfs: a fresh container of the image, mounted read-write by name (named
    after the variant's RW_PREFIX, so browse and runtime containers never mix)."""

    def __init__(self, fs: Layerfs, image: BenchImage, mountpoint: Path) -> None:
        super().__init__(fs, image, mountpoint)
        self.layerfs = fs
        self.name = f"{fs.RW_PREFIX}{_unique()}"

    def describe(self) -> str:
        return f"{self.fs.key} container {self.name}"

    def _create(self) -> None:
        self.layerfs.create_container(self.image, self.name)

    def _remove(self) -> None:
        self.layerfs.remove_container(self.name)

    def _mount_argv(self) -> tuple[list[str], Path | None]:
        return self.layerfs.container_mount_argv(self.name, self.mountpoint)

    def commit_seconds(self) -> float:
        """`layerfs commit` (layer tar, digest, import into the store), then `rmi`."""
        prefix = self.layerfs.RW_PREFIX
        ref = f"{prefix}commit:{self.name.removeprefix(prefix)}"
        leftover = mounts.register_leftover(f"layerfs image {ref}", lambda: self.layerfs.remove_image(ref))
        seconds = timed(self.layerfs.commit_argv(self.name, ref))  # on failure, the final cleanup removes it
        mounts.discard(leftover)
        return seconds


def new_layer(fs: Filesystem, image: BenchImage, scratch: Path, mountpoint: Path) -> WritableLayer:
    """The writable layer each filesystem uses."""
    if isinstance(fs, Layerfs):
        return LayerfsContainer(fs, image, mountpoint)
    if isinstance(fs, Overlay):
        return OverlayUpper(fs, image, scratch, mountpoint)
    raise BenchError(f"{fs.key} has no writable mode")


@contextmanager
def fresh_layer(fs: Filesystem, image: BenchImage, scratch: Path, mountpoint: Path) -> Iterator[WritableLayer]:
    """A new writable layer, mounted read-write, for the block; unmounted (if the
    block did not) and removed after, whatever happens."""
    layer = new_layer(fs, image, scratch, mountpoint)
    try:
        layer.create()
        layer.mount()
        yield layer
    except BaseException:
        layer.tear_down_after_failure()
        raise
    layer.unmount()
    layer.remove()
