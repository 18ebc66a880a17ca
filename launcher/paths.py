"""Paths inside a container's root, resolved as the container would resolve them.

The launcher works on the image's tree from outside (mount points, the working
directory, volume targets, /etc files), as root. A path there is the image's
to choose: `/var/run -> /run`, `/etc/resolv.conf -> /run/systemd/...`, or a
hostile `/proc -> /etc`. Joining it to the root and letting the host follow the
links would act on host files; here every symbolic link is followed within the
root, an absolute target starts again at the root, and `..` stops there, as
chroot(2) and runc's securejoin do.

Before a fresh container's first start its root is the image's merged tree
exactly, which the launcher holds in memory: a `TreeView` of it answers the same
questions without a round trip through the FUSE mount for each path component
(about 20 of them, a quarter of a millisecond each while the mount's server is
still warming up).
"""

from __future__ import annotations

import errno
import os
import stat

from layerfs.union.tree import FILE_TYPE, REGULAR, SYMLINK, Node

_MAX_LINKS = 40  # the kernel's limit for one lookup


class TreeView:
    """The root as a merged tree has it (for a container whose layer is still empty)."""

    def __init__(self, root: Node) -> None:
        self.root = root

    def node(self, parts: list[str]) -> Node | None:
        node: Node | None = self.root
        for part in parts:
            children = node.children if node is not None else None
            node = children.get(os.fsencode(part)) if children is not None else None
        return node


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def resolve_in(root: str, path: str, view: TreeView | None = None) -> str:
    """The host path of `path` inside `root`, its links followed within `root`; the
    part that does not exist yet is kept as given, below what does."""
    return os.path.join(root, *_resolved(root, path, view))


def _resolved(root: str, path: str, view: TreeView | None) -> list[str]:
    pending, resolved, links = _parts(path), [], 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = _link_target(root, [*resolved, part], view)
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if target.startswith("/"):
            resolved = []
        pending = _parts(target) + pending
    return resolved


def _link_target(root: str, parts: list[str], view: TreeView | None) -> str | None:
    """What the symbolic link at `parts` points to; None when it is no link (or missing)."""
    if view is not None:
        node = view.node(parts)
        return os.fsdecode(node.target) if node is not None and node.kind == SYMLINK else None
    candidate = os.path.join(root, *parts)
    try:
        if not stat.S_ISLNK(os.lstat(candidate).st_mode):
            return None
    except FileNotFoundError:
        return None
    return os.readlink(candidate)


def kind_inside(root: str, path: str, view: TreeView | None = None) -> int | None:
    """The file type (stat.S_IFMT) of `path` inside `root`, None when missing."""
    if view is not None:
        node = view.node(_resolved(root, path, view))
        return FILE_TYPE[node.kind] if node is not None else None
    try:
        return stat.S_IFMT(os.lstat(resolve_in(root, path)).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_inside(root: str, path: str, view: TreeView | None = None) -> str | None:
    """A text file of the container (its /etc/passwd, say), None when it has none."""
    parts = _resolved(root, path, view)
    where = os.path.join(root, *parts)
    if view is not None:
        node = view.node(parts)
        if node is None:
            return None
        if node.kind == REGULAR and node.payload:
            where = node.payload  # the layer's own copy
    try:
        with open(where) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
