"""Mount a container's writable layer over its image: the one way a container is served.

`layerfs mount CONTAINER` and the launcher both come here, so there is one writer
per container: a container already mounted (anywhere, in any mount namespace) is
refused with exit 4.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from layerfs.container.records import WRITER_LOCK, Container, Containers
from layerfs.errors import Busy
from layerfs.image.catalog import Catalog
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.build import merged_tree
from layerfs.union.daemon import mount
from layerfs.union.mounts import live_mounts
from layerfs.union.operations import container_operations
from layerfs.union.tree import tree_identity


def mounted_at(store: Store, container: Container) -> str | None:
    """Where the container is mounted, if it is."""
    return next((r.mountpoint for r in live_mounts(store) if r.id == container.id), None)


def mount_container(store: Store, container: Container, mountpoint: Path, kind: MountKind,
                    foreground: bool = False, with_parent: bool = False) -> int:
    """Serve the container at `mountpoint`; returns the serving pid once the mount is live
    (with `foreground`, serves from this process until unmounted; `with_parent`, a
    daemon that ends with this process)."""
    if where := mounted_at(store, container):
        raise Busy(f"container {container.name} is already mounted at {where} (or running): one writer at a time")
    lock = _writer_lock(Containers(store).path(container),
                        f"container {container.name} is already mounted or running: one writer at a time")
    try:
        image = Catalog(store).resolve(container.image_digest)
        tree = merged_tree(store, image.diff_ids)
        make = container_operations(tree, Containers(store).upper(container),
                                    tree_identity(image.diff_ids, tree), kind)
        return mount(store, make, mountpoint, container.name, container.id, foreground, kind, writable=True,
                     with_parent=with_parent)
    finally:
        os.close(lock)  # the server's inherited copy holds the lock for as long as it serves


def _writer_lock(directory: Path, busy: str) -> int:
    """The container's writer lock, taken: two starts (or a start and a mount) at the
    same moment both pass the mount-record check above; only one gets this."""
    fd = os.open(directory / WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(busy) from None
    return fd
