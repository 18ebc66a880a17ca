"""Commit: a container's changes become one OCI layer on top of its image's layers.

The layer is a plain tar in the OCI form any tool reads: changed and added entries
with their owners, modes, xattrs and data; `.wh.NAME` for each deletion; a
`.wh..wh..opq` marker in a directory made anew; parent directories included so
extractors find them; names of one inode after the first as tar hardlinks. The
new image goes through the ordinary importer, so the layer is verified and
unpacked like any other. `write_tree` writes a whole tree the same way, as one
tar (`layerfs export`).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from layerfs.container.changes import ADDED, DELETED, Change, container_changes
from layerfs.container.records import Container
from layerfs.errors import BadInput
from layerfs.image.catalog import Catalog, Image
from layerfs.image.importer import import_image
from layerfs.image.source import SourceImage, SourceLayer
from layerfs.layer.index import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, PATH_MAX, REGULAR, SYMLINK
from layerfs.progress import Progress
from layerfs.store.layout import Store
from layerfs.union.tree import MergedTree, Node

_TAR_TYPE = {REGULAR: tarfile.REGTYPE, DIRECTORY: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE,
             CHARDEV: tarfile.CHRTYPE, BLOCKDEV: tarfile.BLKTYPE, FIFO: tarfile.FIFOTYPE}
OPAQUE = b".wh..wh..opq"


def _tar_name(path: bytes) -> str:
    """The member name of `path`. The kernel lets a tree grow beyond PATH_MAX (through
    relative paths), but tar, umoci and containerd open each entry by its whole path
    and could not unpack it: such a commit is refused, in one line."""
    if len(path) >= PATH_MAX:
        raise BadInput(f"cannot commit {os.fsdecode(path[:60])!r}...: a path of {len(path)} "
                       "bytes is beyond PATH_MAX, so no other tool could unpack the image; "
                       "move it higher up or delete it")
    return os.fsdecode(path.lstrip(b"/")) or "."  # the root directory: "./"


def _info(path: bytes, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(_tar_name(path))
    info.type = _TAR_TYPE[node.kind]
    info.mode, info.uid, info.gid = node.mode, node.uid, node.gid
    info.mtime = node.mtime_ns / 1e9
    if node.kind == SYMLINK:
        info.linkname = os.fsdecode(node.target)
    if node.kind in (CHARDEV, BLOCKDEV):
        info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
    for name, value in (node.xattrs or {}).items():
        info.pax_headers["SCHILY.xattr." + os.fsdecode(name)] = value.decode("utf-8", "surrogateescape")
    return info


def _marker(path: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(_tar_name(path))
    info.mode = 0
    return info


def _names_of_linked_files(tree: MergedTree) -> dict[int, list[bytes]]:
    """Every path of each non-directory that has more than one name."""
    names: dict[int, list[bytes]] = {}
    stack: list[tuple[Node, bytes]] = [(tree.root, b"")]
    while stack:
        directory, path = stack.pop()
        for name, node in directory.children.items():  # type: ignore[union-attr]
            if node.kind == DIRECTORY:
                stack.append((node, path + b"/" + name))
            elif node.nlink > 1:
                names.setdefault(node.ino, []).append(path + b"/" + name)
    return names


class _LayerWriter:
    def __init__(self, tar: tarfile.TarFile, current: MergedTree) -> None:
        self.tar = tar
        self.current = current
        self.written_dirs: set[bytes] = {b""}
        self.written_files: set[bytes] = set()
        self.first_name: dict[int, str] = {}
        self.linked_names = _names_of_linked_files(current)

    def parents(self, path: bytes) -> None:
        """Write the directories above `path` that the layer has not written yet."""
        parts = path.split(b"/")[1:-1]
        node, prefix = self.current.root, b""
        for part in parts:
            node = node.children[part]  # type: ignore[index]
            prefix += b"/" + part
            if prefix not in self.written_dirs:
                self.tar.addfile(_info(prefix, node))
                self.written_dirs.add(prefix)

    def add(self, change: Change) -> None:
        if change.covered:
            return  # an opaque marker already hides it; whiteouts there confuse overlayfs
        self.parents(change.path)
        if change.kind == DELETED:
            head, _, name = change.path.rpartition(b"/")
            self.tar.addfile(_marker(head + b"/.wh." + name))
            return
        node = change.node
        if node is None or node.kind not in _TAR_TYPE:
            return  # sockets live only as long as the container
        if node.kind == DIRECTORY:
            if change.path not in self.written_dirs:  # not already as a parent of a hardlink
                self.tar.addfile(_info(change.path, node))
                self.written_dirs.add(change.path)
            if change.opaque:
                self.tar.addfile(_marker(change.path + b"/" + OPAQUE))
        else:
            # A layer can only link names it holds: a changed inode with several names
            # brings all of them, or the names left in lower layers would come apart.
            for path in [change.path, *self.linked_names.get(node.ino, ())]:
                if path not in self.written_files:
                    self.parents(path)
                    self._entry(path, node)

    def _entry(self, path: bytes, node: Node) -> None:
        info = _info(path, node)
        self.written_files.add(path)
        if node.ino in self.first_name:
            info.type, info.linkname = tarfile.LNKTYPE, self.first_name[node.ino]
            self.tar.addfile(info)
            return
        self.first_name[node.ino] = info.name
        if node.kind != REGULAR:
            self.tar.addfile(info)
            return
        info.size = node.size
        if node.payload:
            with open(node.payload, "rb") as data:
                self.tar.addfile(info, data)
        else:
            self.tar.addfile(info)


def write_layer(current: MergedTree, changes: Iterable[Change], out: BinaryIO) -> None:
    """Write the container's changes (to `current`, its tree) as an OCI layer tar."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        writer = _LayerWriter(tar, current)
        for change in changes:
            writer.add(change)


def _every_path(tree: MergedTree) -> Iterator[tuple[bytes, Node]]:
    """(path, node) for every name below the root: parents first, in name order."""
    stack: list[tuple[bytes, Node]] = [(b"", tree.root)]
    while stack:
        path, node = stack.pop()
        if path:
            yield path, node
        if node.kind == DIRECTORY:
            children = sorted(node.children.items(), reverse=True)  # type: ignore[union-attr]
            stack.extend((path + b"/" + name, child) for name, child in children)


def write_tree(tree: MergedTree, out: BinaryIO) -> None:
    """Write all of `tree` (a flattened image) as one tar, as a layer of it is written:
    the root as "./", then every path, parents before children in name order, with its
    owner, mode, times, xattrs and device numbers; the names of one inode after the
    first as tar hardlinks. Unpacked on nothing, it gives the tree back."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(b"", tree.root))
        writer = _LayerWriter(tar, tree)
        for path, node in _every_path(tree):
            writer.add(Change(path, ADDED, node))


def commit(store: Store, container: Container, name: str, message: str,
           progress: Progress) -> tuple[Image, str | None]:
    """Make a new image: the container's image plus its changes as one layer."""
    image = Catalog(store).resolve(container.image_digest)
    current, changes = container_changes(store, container)

    def open_new_layer(scratch: Path) -> BinaryIO:
        tarball = scratch / "commit.tar"
        with open(tarball, "wb") as out:
            write_layer(current, changes, out)
        return open(tarball, "rb")

    layers = [SourceLayer(lambda scratch, d=layer.digest: store.open_blob(d), layer.digest, layer.size, known)
              for layer, known in zip(image.manifest.layers, image.diff_ids)]
    layers.append(SourceLayer(open_new_layer))
    source = SourceImage(layers, created_by=f"layerfs commit {container.name}", comment=message,
                         base_config=image.config)
    return import_image(store, source, name, progress)
