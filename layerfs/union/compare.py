"""How two states of a merged tree differ, name by name: the core every change listing
stands on (a container's diff and commit, and inspection's layer and image diffs).

A regular file's content is known by its payload's name, which is the xxh3-128 of
its bytes (layer/unpack.py), so equal content is told without reading a byte.
Content written in a container has no such name yet; there the caller decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from layerfs.layer.index import BLOCKDEV, CHARDEV, DIRECTORY, REGULAR, SYMLINK
from layerfs.union.tree import Node

# What `differences` can name, in the order it names them.
FIELDS = ("type", "content", "mode", "uid", "gid", "target", "rdev", "xattrs", "mtime", "atime")


def content_id(node: Node) -> str:
    """The content hash of a regular file of an image ("" for an empty file)."""
    return os.path.basename(node.payload)


def differences(old: Node, new: Node, times: bool = True) -> tuple[str, ...]:
    """What differs between two objects at one path, by FIELDS.

    A directory's mtime is never a difference of its own: it moves whenever an entry
    is added or removed, and those are listed themselves. `times=False` ignores file
    mtimes too (a rebuilt image with the same files is the same image). ("atime" is
    named only for a container, where a program can set it.)"""
    if old.kind != new.kind:
        return ("type",)
    found = []
    if new.kind == REGULAR and (old.size != new.size or old.upper or new.upper
                                or content_id(old) != content_id(new)):
        found.append("content")
    if old.mode != new.mode:
        found.append("mode")
    if old.uid != new.uid:
        found.append("uid")
    if old.gid != new.gid:
        found.append("gid")
    if new.kind == SYMLINK and old.target != new.target:
        found.append("target")
    if new.kind in (CHARDEV, BLOCKDEV) and old.rdev != new.rdev:
        found.append("rdev")
    if (old.xattrs or None) != (new.xattrs or None):
        found.append("xattrs")
    if times and new.kind != DIRECTORY and old.mtime_ns != new.mtime_ns:
        found.append("mtime")
    return tuple(found)


def paired_children(old_dir: Node | None, new_dir: Node | None) -> Iterator[tuple[bytes, Node | None, Node | None]]:
    """(name, old, new) for every name either directory holds (None where one lacks it),
    the new directory's names first, in its order. A missing or non-directory side
    holds nothing."""
    old_children = old_dir.children if old_dir is not None and old_dir.kind == DIRECTORY else {}
    new_children = new_dir.children if new_dir is not None and new_dir.kind == DIRECTORY else {}
    for name, new in new_children.items():  # type: ignore[union-attr]
        yield name, old_children.get(name), new  # type: ignore[union-attr]
    for name, old in old_children.items():  # type: ignore[union-attr]
        if name not in new_children:  # type: ignore[operator]
            yield name, old, None


def changed_children(old_dir: Node | None, new_dir: Node) -> Iterator[tuple[bytes, Node | None, Node | None]]:
    """(name, old, new) for the names whose object differs between two states of one
    tree, in no set order: a name holding the same object in both (a directory the layers
    between did not touch, a file they did not replace) is skipped in C, by set
    difference of the two dicts' items."""
    old_children = old_dir.children if old_dir is not None and old_dir.kind == DIRECTORY else {}
    new_children = new_dir.children if new_dir.kind == DIRECTORY else {}
    for name, new in new_children.items() - old_children.items():  # type: ignore[union-attr,operator]
        yield name, old_children.get(name), new  # type: ignore[union-attr]
    for name in old_children.keys() - new_children.keys():  # type: ignore[union-attr,operator]
        yield name, old_children[name], None  # type: ignore[index]
