"""What a container changed: its merged tree compared with its image's, path by path.

Identity is the inode number: the container's tree is the image's tree plus its
journal, so a node with the same number at the same path is the same object,
possibly with new attributes or data (C); a different number means the name was
deleted and made again, or renamed onto (C, and a directory made again is
opaque); a name only the image has was deleted (D); one only the container has
was added (A), with everything below it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from layerfs.container.records import Container, Containers
from layerfs.image.catalog import Catalog
from layerfs.layer.index import DIRECTORY
from layerfs.store.layout import Store
from layerfs.union.build import merged_tree
from layerfs.union.compare import differences, paired_children
from layerfs.union.tree import MergedTree, Node, tree_identity
from layerfs.union.upper import UpperLayer

ADDED, CHANGED, DELETED = "A", "C", "D"


@dataclass
class Change:
    path: bytes            # absolute: b"/etc/passwd"
    kind: str              # ADDED, CHANGED or DELETED
    node: Node | None      # the container's node (None when deleted)
    old: Node | None = None  # the image's node (None when added)
    opaque: bool = False   # a directory made anew where the image had one
    covered: bool = False  # a deletion an opaque directory above already hides


def container_trees(store: Store, container: Container) -> tuple[MergedTree, MergedTree]:
    """(the image's tree, the container's tree), read without touching the container."""
    image = Catalog(store).resolve(container.image_digest)
    base = merged_tree(store, image.diff_ids)
    current = merged_tree(store, image.diff_ids)
    UpperLayer(Containers(store).upper(container), current, tree_identity(image.diff_ids, current),
               writable=False)
    return base, current


def _differs(old: Node, new: Node) -> bool:
    """Besides what `differences` sees, a file whose atime was set has changed too."""
    return bool(differences(old, new)) or (new.kind != DIRECTORY and old.atime_ns != new.atime_ns)


def container_changes(store: Store, container: Container,
                      trees: tuple[MergedTree, MergedTree] | None = None) -> tuple[MergedTree, Iterator[Change]]:
    """(the container's tree, what it changed), as diff shows and commit writes it:
    everything but the mount points the launcher made in its layer (/proc, /etc/hosts,
    ...) while they are still empty, as docker keeps those out of sight in an init layer."""
    base, current = trees or container_trees(store, container)
    made = Containers(store).mount_points(container)
    return current, (change for change in compare(base, current)
                     if not (change.path in made and change.kind == ADDED and _empty(change.node)))


def _empty(node: Node | None) -> bool:
    return node is not None and (node.children == {} if node.kind == DIRECTORY else node.size == 0)


def compare(base: MergedTree, current: MergedTree) -> Iterator[Change]:
    """Every change, parents before their children (the order a layer tar needs).

    Below a directory made anew, everything present is new content (an opaque
    directory hides all it had), and what is gone is still reported, as covered."""
    stack: list[tuple[Node | None, Node, bytes, bool]] = [(base.root, current.root, b"", False)]
    while stack:
        old_dir, new_dir, path, anew = stack.pop()
        for name, old, new in paired_children(old_dir, new_dir):
            child_path = path + b"/" + name
            if new is None:
                yield Change(child_path, DELETED, None, old, covered=anew)
                continue
            replaced = old is not None and old.ino != new.ino
            if old is None:
                yield Change(child_path, ADDED, new)
            elif anew or replaced:
                yield Change(child_path, CHANGED, new, old, opaque=replaced and old.kind == new.kind == DIRECTORY)
            elif _differs(old, new):
                yield Change(child_path, CHANGED, new, old)
            if new.kind == DIRECTORY:
                stack.append((old, new, child_path, anew or replaced))
