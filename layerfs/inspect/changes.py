"""The change engine: what a layer, a range of layers, another image or a container
added, modified and deleted, path by path, from the merged trees alone.

Every listing compares two states of a tree (union/compare.py says what differs).
States of one image share every directory a layer did not touch (MergedTree.layered),
so a layer's changes cost a walk of what it touched, and so do two images that share
their first layers.

Rules, the same for all:
- added: a path only the newer state has; below an added directory every path is listed;
- deleted: a path only the older state has (a whiteout, an opaque directory hiding it,
  a directory that became a file or a link); a deleted directory is one line, with
  everything it held in its size and entry count;
- modified: a path both hold whose FIELDS differ. A file re-added with the same content
  hash, owner and mode (and, unless times are ignored, mtime) is no change: a reader
  cannot tell it from the copy below. It still costs a copy, which `analyze` counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from layerfs.container.changes import ADDED as CONTAINER_ADDED
from layerfs.container.changes import DELETED as CONTAINER_DELETED
from layerfs.container.changes import Change
from layerfs.layer.index import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, REGULAR, SYMLINK
from layerfs.union.compare import changed_children, differences
from layerfs.union.tree import SOCKET, Node

ADDED, MODIFIED, DELETED = "added", "modified", "deleted"
KINDS = (ADDED, MODIFIED, DELETED)
LETTER = {ADDED: "A", MODIFIED: "C", DELETED: "D"}  # docker diff's letters
TYPE_NAME = {REGULAR: "file", DIRECTORY: "directory", SYMLINK: "symlink", CHARDEV: "char-device",
             BLOCKDEV: "block-device", FIFO: "fifo", SOCKET: "socket"}


@dataclass(slots=True)
class PathChange:
    path: bytes              # absolute: b"/etc/passwd"
    kind: str                # ADDED, MODIFIED or DELETED
    type: str                # the object's kind (the old one's for a deletion)
    size: int                # bytes it holds; a directory counts everything below it when deleted
    fields: tuple[str, ...] = ()  # what differs, for MODIFIED (union/compare.py FIELDS)
    old_size: int = 0        # the older object's bytes, for MODIFIED
    entries: int = 1         # paths a deletion removes (a directory and all below it)
    old_type: str = ""       # for a type change

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": os.fsdecode(self.path), "kind": self.kind,
                                  "type": TYPE_NAME[self.type], "size": self.size}
        if self.kind == MODIFIED:
            doc.update(changed=list(self.fields), old_size=self.old_size)
            if self.old_type:
                doc["old_type"] = TYPE_NAME[self.old_type]
        if self.kind == DELETED:
            doc["entries"] = self.entries
        return doc


def subtree(node: Node) -> tuple[int, int]:
    """(bytes of regular files, number of paths) at and below `node`, each name counted."""
    size, count = (node.size if node.kind == REGULAR else 0), 1
    if node.kind == DIRECTORY:
        stack = [node]
        while stack:
            for child in stack.pop().children.values():  # type: ignore[union-attr]
                count += 1
                if child.kind == REGULAR:
                    size += child.size
                elif child.kind == DIRECTORY:
                    stack.append(child)
    return size, count


def lookup(root: Node, path: bytes) -> Node | None:
    """The node at an absolute path of a state, or None."""
    node: Node | None = root
    for part in path.strip(b"/").split(b"/") if path.strip(b"/") else []:
        if node is None or node.kind != DIRECTORY:
            return None
        node = node.children.get(part)  # type: ignore[union-attr]
    return node


def _own_size(node: Node) -> int:
    return node.size if node.kind == REGULAR else 0


def _deleted(path: bytes, node: Node) -> PathChange:
    size, count = subtree(node)
    return PathChange(path, DELETED, node.kind, size, entries=count)


def compare_states(old_root: Node, new_root: Node, times: bool = True) -> list[PathChange]:
    """Every change from one state to another, sorted by path. Subtrees that are the
    same object in both (a directory no layer in between touched) are skipped."""
    found: list[PathChange] = []
    if old_root is not new_root and (fields := differences(old_root, new_root, times)):
        found.append(PathChange(b"/", MODIFIED, DIRECTORY, 0, fields))
    stack: list[tuple[Node | None, Node, bytes]] = [(old_root, new_root, b"")]
    while stack:
        old_dir, new_dir, path = stack.pop()
        for name, old, new in changed_children(old_dir, new_dir):
            child_path = path + b"/" + name
            if new is None:
                found.append(_deleted(child_path, old))  # type: ignore[arg-type]
                continue
            if old is None:
                found.append(PathChange(child_path, ADDED, new.kind, _own_size(new)))
            elif fields := differences(old, new, times):
                found.append(PathChange(child_path, MODIFIED, new.kind, _own_size(new), fields,
                                        _own_size(old), old_type=old.kind if "type" in fields else ""))
            if new.kind == DIRECTORY or (old is not None and old.kind == DIRECTORY):
                # Below a directory made a file, what the directory held is deleted.
                stack.append((old if old is not None and old.kind == DIRECTORY else None, new, child_path))
    found.sort(key=tree_order)
    return found


def tree_order(change: PathChange) -> list[bytes]:
    """Sort key: a directory's entries right after it (/a, /a/x, /a.b), as a tree lists them."""
    return change.path.split(b"/")


def container_path_changes(changes: Iterable[Change]) -> list[PathChange]:
    """A container's changes (container/changes.py, what commit writes) as the listing
    every other diff gives: what a directory made anew holds again unchanged is no change."""
    found = []
    for change in changes:
        if change.kind == CONTAINER_DELETED:
            found.append(_deleted(change.path, change.old))  # type: ignore[arg-type]
        elif change.kind == CONTAINER_ADDED or change.old is None:
            found.append(PathChange(change.path, ADDED, change.node.kind, _own_size(change.node)))  # type: ignore[union-attr]
        else:
            old, new = change.old, change.node
            fields = differences(old, new)  # type: ignore[arg-type]
            if not fields and new.kind != DIRECTORY and old.atime_ns != new.atime_ns:  # type: ignore[union-attr]
                fields = ("atime",)  # only a container sets times without writing
            if not fields:
                continue
            found.append(PathChange(change.path, MODIFIED, new.kind, _own_size(new), fields,  # type: ignore[union-attr]
                                    _own_size(old), old_type=old.kind if "type" in fields else ""))
    found.sort(key=tree_order)
    return found


def select(changes: Iterable[PathChange], kinds: set[str] | None, prefixes: list[bytes]) -> Iterator[PathChange]:
    """The changes of the given kinds (None: all) at or below one of `prefixes` (none: all)."""
    for change in changes:
        if kinds is not None and change.kind not in kinds:
            continue
        if prefixes and not any(change.path == p or change.path.startswith(p.rstrip(b"/") + b"/")
                                for p in prefixes):
            continue
        yield change
