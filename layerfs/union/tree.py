"""The merged tree: every layer's index applied in order into one in-memory tree.

A FUSE lookup is then one dict access whatever the number of layers (overlayfs
and fuse-overlayfs probe each layer on a miss). Per layer the OCI rules apply in
this order: opaque markers (hide all lower children), whiteouts (hide one lower
name), then the layer's entries in tar order, where a directory over a
directory keeps the children and takes the new attributes and anything else
replaces what was there. Parents missing for any of those are created as plain
directories, as tar extractors do.

Inode numbers are assigned in a depth-first walk, so the same layer chain gives
the same numbers on every mount. The finished tree is cached on disk, keyed by
the chain, in a flat form that loads several times faster than re-merging.
"""

from __future__ import annotations

import marshal
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import xxhash

from layerfs.layer.index import (BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK,
                                 Entry, LayerIndex)

CACHE_FORMAT = 2
IMPLICIT_DIR_MODE = 0o755

SOCKET = "s"  # only made inside a container (layers cannot carry sockets)
FILE_TYPE = {REGULAR: stat.S_IFREG, DIRECTORY: stat.S_IFDIR, SYMLINK: stat.S_IFLNK,
             CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO, SOCKET: stat.S_IFSOCK}


class Node:
    """One inode of the merged tree. Hardlinked names share a Node."""

    __slots__ = ("ino", "kind", "mode", "uid", "gid", "size", "mtime_ns", "atime_ns", "ctime_ns",
                 "rdev", "xattrs", "target", "payload", "children", "nlink", "parent", "cache",
                 "upper")

    def __init__(self, kind: str, mode: int, uid: int, gid: int, size: int = 0, mtime_ns: int = 0,
                 rdev: int = 0, xattrs: dict[bytes, bytes] | None = None, target: bytes = b"",
                 payload: str = "") -> None:
        self.ino = 0
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        # A layer records only mtime; atime and ctime start there and move with changes.
        self.atime_ns = self.ctime_ns = mtime_ns
        self.rdev = rdev
        self.xattrs = xattrs
        self.target = target
        self.payload = payload
        self.children: dict[bytes, Node] | None = {} if kind == DIRECTORY else None
        self.nlink = 1
        self.parent: Node | None = None
        self.cache: object = None  # the FUSE layer's attribute object, built on first use
        self.upper = False  # payload lives in a container's writable layer

    @property
    def st_mode(self) -> int:
        return FILE_TYPE[self.kind] | self.mode

    def copy(self) -> "Node":
        """The same inode with a children dict of its own (a directory's next state)."""
        twin = Node.__new__(Node)
        for name in Node.__slots__:
            setattr(twin, name, getattr(self, name))
        if self.children is not None:
            twin.children = dict(self.children)
        return twin

    def take_attributes(self, other: "Node") -> None:
        """Directory over directory: keep the children, take everything else."""
        for name in ("mode", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "xattrs"):
            setattr(self, name, getattr(other, name))


def _node_from_entry(entry: Entry, files_dir: str) -> Node:
    xattrs = {k.encode("utf-8", "surrogateescape"): v for k, v in entry.xattrs.items()} if entry.xattrs else None
    # Linux shows every symlink as 0777 whatever the tar header says (overlayfs and umoci agree).
    mode = 0o777 if entry.kind == SYMLINK else entry.mode
    return Node(entry.kind, mode, entry.uid, entry.gid, entry.size, entry.mtime_ns, entry.rdev,
                xattrs, os.fsencode(entry.target) if entry.kind == SYMLINK else b"",
                f"{files_dir}/{entry.payload}" if entry.payload else "")


def _count_directory_links(nodes: list[Node | None]) -> None:
    """A directory's nlink: itself, its entry in the parent, and each subdirectory's ".."."""
    for node in nodes:
        if node is not None and node.kind == DIRECTORY:
            node.nlink = 2 + sum(1 for c in node.children.values() if c.kind == DIRECTORY)  # type: ignore[union-attr]


def _implicit_dir() -> Node:
    return Node(DIRECTORY, IMPLICIT_DIR_MODE, 0, 0)


class MergedTree:
    """The union of a layer chain. `nodes[ino]` is the inode; `nodes[1]` is the root."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.nodes: list[Node | None] = [None]

    # -- building -------------------------------------------------------------------

    @classmethod
    def merge(cls, layers: list[tuple[Path, LayerIndex]]) -> "MergedTree":
        """Apply `(layer directory, index)` pairs, base first."""
        tree = cls(_implicit_dir())
        for layer_path, index in layers:
            tree._apply(index, str(layer_path / "files"))
        tree._number()
        return tree

    def _dir_for(self, parts: list[bytes]) -> Node:
        """The directory at `parts`, created (or made to replace a non-directory) if need be,
        and, when the tree keeps its states, a copy of its own along the way."""
        node = self._own(self.root, None, b"")
        for part in parts:
            child = node.children.get(part)  # type: ignore[union-attr]
            if child is None or child.kind != DIRECTORY:
                child = self._new(_implicit_dir())
                node.children[part] = child  # type: ignore[index]
            else:
                child = self._own(child, node, part)
            node = child
        return node

    # -- keeping earlier states (inspection) --------------------------------------------

    _owned: set[int] | None = None  # ids of the directories the layer being applied may change

    def _new(self, node: Node) -> Node:
        if self._owned is not None:
            self._owned.add(id(node))
        return node

    def _own(self, directory: Node, parent: Node | None, name: bytes) -> Node:
        """`directory` itself when the tree changes in place (a mount's tree); else a copy
        made once per layer, so that the state before the layer keeps the original."""
        if self._owned is None or id(directory) in self._owned:
            return directory
        copy = self._new(directory.copy())
        if parent is None:
            self.root = copy
        else:
            parent.children[name] = copy  # type: ignore[index]
        return copy

    @classmethod
    def layered(cls) -> "MergedTree":
        """An empty tree to which `apply_layer` adds layers without changing the earlier
        states: each state shares every directory the next layer does not touch (path
        copying), so two states compare by walking only what differs (`old is new`)."""
        tree = cls(_implicit_dir())
        tree._owned = set()
        return tree

    def resume(self, root: Node) -> None:
        """Go back to an earlier state (a root `apply_layer` returned): the next layers
        apply over it, and the later states stay as they were."""
        self.root = root

    def apply_layer(self, index: LayerIndex, layer_path: Path) -> Node:
        """Add one more layer; return the root of the state after it (see `layered`)."""
        self._owned = set()
        self._apply(index, str(layer_path / "files"))
        return self.root

    @staticmethod
    def _split(path: str) -> tuple[list[bytes], bytes]:
        parts = os.fsencode(path).split(b"/")
        return parts[:-1], parts[-1]

    def _apply(self, index: LayerIndex, files_dir: str) -> None:
        for path in index.opaques:  # "" is the root
            self._dir_for(os.fsencode(path).split(b"/") if path else []).children.clear()  # type: ignore[union-attr]
        for path in index.whiteouts:
            parents, name = self._split(path)
            self._dir_for(parents).children.pop(name, None)  # type: ignore[union-attr]
        this_layer: dict[str, Node] = {}
        # Entries come directory by directory: each parent is looked up once, not per entry.
        parents_seen: dict[str, Node] = {}
        for entry in index.entries:
            if entry.path == "":
                self._dir_for([]).take_attributes(_node_from_entry(entry, files_dir))
                this_layer[""] = self.root
                continue
            parent, _, leaf = entry.path.rpartition("/")
            directory = parents_seen.get(parent)
            if directory is None:
                directory = parents_seen[parent] = self._dir_for(self._split(entry.path)[0])
            name = os.fsencode(leaf)
            existing = directory.children.get(name)  # type: ignore[union-attr]
            if entry.kind == HARDLINK:
                node = this_layer[entry.target]
            else:
                node = self._new(_node_from_entry(entry, files_dir))
                if node.kind == DIRECTORY and existing is not None and existing.kind == DIRECTORY:
                    existing = self._own(existing, directory, name)
                    existing.take_attributes(node)
                    node = existing
            if existing is not None and existing.kind == DIRECTORY and node is not existing:
                parents_seen.clear()  # a directory replaced: what was found below it is gone
            directory.children[name] = node  # type: ignore[index]
            this_layer[entry.path] = node

    def _number(self) -> None:
        """Assign inode numbers depth-first and count links, now that the tree is final."""
        nodes: list[Node | None] = [None]
        for parent, _name, node in self.walk():
            if node.ino and node is not self.root:
                node.nlink += 1  # another name of a hardlinked inode
                continue
            node.ino = len(nodes)
            node.nlink = 1
            node.parent = parent
            nodes.append(node)
        _count_directory_links(nodes)
        self.nodes = nodes

    def walk(self) -> Iterator[tuple[Node | None, bytes, Node]]:
        """(parent, name, node) for every name, parents before children, root first."""
        yield None, b"", self.root
        stack = [self.root]
        while stack:
            directory = stack.pop()
            for name, child in directory.children.items():  # type: ignore[union-attr]
                yield directory, name, child
                if child.kind == DIRECTORY:
                    stack.append(child)

    # -- the on-disk cache ------------------------------------------------------------

    def _records(self) -> tuple[list[tuple], list[tuple[int, bytes, int]]]:
        attrs = [(n.kind, n.mode, n.uid, n.gid, n.size, n.mtime_ns, n.rdev, n.xattrs, n.target, n.payload)
                 for n in self.nodes[1:]]  # type: ignore[union-attr]
        links = [(parent.ino if parent else 0, name, node.ino) for parent, name, node in self.walk()]
        return attrs, links

    @classmethod
    def _from_records(cls, attrs: list[tuple], links: list[tuple[int, bytes, int]]) -> "MergedTree":
        nodes: list[Node | None] = [None]
        nodes.extend(Node(*a) for a in attrs)
        for ino, node in enumerate(nodes):
            if node is not None:
                node.ino = ino
        tree = cls(nodes[1])  # type: ignore[arg-type]
        for parent_ino, name, ino in links:
            node = nodes[ino]
            if parent_ino:
                parent = nodes[parent_ino]
                parent.children[name] = node  # type: ignore[union-attr,index]
                if node.parent is None:  # type: ignore[union-attr]
                    node.parent = parent  # type: ignore[union-attr]
                else:
                    node.nlink += 1  # type: ignore[union-attr]
        _count_directory_links(nodes)
        tree.nodes = nodes
        return tree


def tree_identity(diff_ids: list[str], tree: MergedTree) -> str:
    """What a container's journal pins: the layer chain and the inode count of its tree."""
    return xxhash.xxh3_128_hexdigest("\n".join(diff_ids).encode()) + f":{len(tree.nodes) - 1}"


def chain_key(store_root: Path, diff_ids: list[str]) -> str:
    """The cache key of a layer chain (payload paths are absolute, so the root is part of it)."""
    return xxhash.xxh3_128_hexdigest(f"{CACHE_FORMAT}\n{store_root}\n{chr(10).join(diff_ids)}".encode())


def save_cached(tree: MergedTree, path: Path, diff_ids: list[str]) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(marshal.dumps((CACHE_FORMAT, diff_ids, *tree._records())))
    os.replace(tmp, path)


def load_cached(path: Path) -> MergedTree | None:
    """The cached tree at `path`, or None if absent or unreadable (then it is rebuilt)."""
    try:
        fmt, _diff_ids, attrs, links = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if fmt != CACHE_FORMAT:
        return None
    return MergedTree._from_records(attrs, links)


def cached_diff_ids(path: Path) -> list[str] | None:
    """The layer chain a cache file was built from (to prune caches of removed layers)."""
    try:
        return marshal.loads(path.read_bytes())[1]
    except (OSError, ValueError, EOFError, TypeError, IndexError):
        return None
