"""The reference answer: the tree an image's layers must produce, by the OCI layer rules.

Deliberately naive and independent of layerfs: it replays each layer tar onto an
in-memory tree the way extracting the layers in turn onto an empty directory would.
Per layer (OCI image-spec layer.md):

1. every opaque marker `D/.wh..wh..opq` deletes all children D already has (from
   lower layers), wherever the marker stands in the tar;
2. every whiteout `D/.wh.NAME` deletes D/NAME as lower layers left it; a whiteout
   never hides an entry of its own layer;
3. the other entries apply in tar order: a directory over a directory keeps the
   children and takes the new owner, mode, mtime and xattrs; anything else replaces
   what was at that path (a replaced directory loses its whole subtree); a hard link
   (typeflag 1) becomes another name of the inode its target names at that moment.

Parent directories that no entry creates are made with mode 0755, owner 0:0 (as
`tar -x` would). A symlink's mode is always 0777, as Linux shows it. nlink counts the
names of an inode that are still visible, as on a real extracted tree.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field

from .oci import decompress
from .snapshot import Node, assign_link_groups

OPAQUE = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."


@dataclass(eq=False)  # identity matters: hard links are names sharing one _Inode object
class _Inode:
    type: str
    mode: int
    uid: int
    gid: int
    mtime: int = 0
    data: bytes = b""
    target: str | None = None
    rdev: tuple[int, int] | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)


def _default_dir() -> _Inode:
    return _Inode("dir", 0o755, 0, 0)


def normalize(name: str) -> str:
    """A tar member name as an absolute tree path: "./a//b/" -> "/a/b", "." -> "/"."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"member name escapes the root: {name!r}")
    return "/" + "/".join(parts)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    # tarfile decodes PAX values as UTF-8 with surrogateescape, so this is the exact bytes
    return {key[len("SCHILY.xattr."):]: value.encode("utf-8", "surrogateescape")
            for key, value in member.pax_headers.items() if key.startswith("SCHILY.xattr.")}


def _inode(member: tarfile.TarInfo, data: bytes) -> _Inode:
    common = dict(mode=member.mode & 0o7777, uid=member.uid, gid=member.gid,
                  mtime=int(member.mtime), xattrs=_xattrs(member))
    if member.isreg():
        return _Inode("file", data=data, **common)
    if member.isdir():
        return _Inode("dir", **common)
    if member.issym():
        return _Inode("symlink", **{**common, "mode": 0o777}, target=member.linkname)
    if member.ischr() or member.isblk():
        return _Inode("chardev" if member.ischr() else "blockdev",
                      rdev=(member.devmajor, member.devminor), **common)
    if member.isfifo():
        return _Inode("fifo", **common)
    raise ValueError(f"unsupported tar member type {member.type!r} for {member.name!r}")


class _Tree:
    """path -> inode; several paths may share one inode (hard links)."""

    def __init__(self) -> None:
        self.paths: dict[str, _Inode] = {"/": _default_dir()}

    def remove_children(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.paths if p.startswith(prefix)]:
            del self.paths[p]

    def remove(self, path: str) -> None:
        """Delete `path` and, for a directory, everything under it."""
        if self.paths.pop(path, None) is not None:
            self.remove_children(path)

    def ensure_dir(self, path: str) -> None:
        """Create `path` and its missing parents as default directories."""
        if path != "/":
            self.ensure_dir(_parent(path))
        existing = self.paths.get(path)
        if existing is None:
            self.paths[path] = _default_dir()
        elif existing.type != "dir":
            raise ValueError(f"{path!r} is used as a directory but is a {existing.type}")

    def put(self, path: str, new: _Inode) -> None:
        old = self.paths.get(path)
        if old is not None and old.type == "dir" and new.type == "dir":
            old.mode, old.uid, old.gid = new.mode, new.uid, new.gid
            old.mtime, old.xattrs = new.mtime, new.xattrs
            return
        if path == "/":
            raise ValueError("the root of a layer must be a directory")
        self.ensure_dir(_parent(path))
        if old is not None:
            self.remove(path)
        self.paths[path] = new


def read_members(layer_tar: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members of an uncompressed layer tar, in order, each with its file data
    (empty for anything but a regular file)."""
    with tarfile.open(fileobj=io.BytesIO(layer_tar), mode="r:", encoding="utf-8",
                      errors="surrogateescape") as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]


def _apply(tree: _Tree, layer_tar: bytes) -> None:
    opaque_dirs, whiteouts, entries = [], [], []
    for member, data in read_members(layer_tar):
        path = normalize(member.name)
        name = _basename(path) if path != "/" else ""
        if name == OPAQUE:
            opaque_dirs.append(_parent(path))
        elif name.startswith(WHITEOUT_PREFIX):
            whiteouts.append(_join(_parent(path), name[len(WHITEOUT_PREFIX):]))
        else:
            entries.append((path, member, data))

    # Steps 1 and 2 run before any entry of this layer exists, so they can only hide lower ones.
    for d in opaque_dirs:
        tree.ensure_dir(d)
        tree.remove_children(d)
    for w in whiteouts:
        tree.ensure_dir(_parent(w))
        tree.remove(w)
    for path, member, data in entries:
        if member.islnk():
            target = tree.paths.get(normalize(member.linkname))
            if target is None or target.type == "dir":
                raise ValueError(f"hard link {path!r} -> {member.linkname!r}: no such file")
            tree.put(path, target)
        else:
            tree.put(path, _inode(member, data))


def _node(inode: _Inode) -> Node:
    node = Node(type=inode.type, mode=inode.mode, uid=inode.uid, gid=inode.gid,
                xattrs=dict(sorted(inode.xattrs.items())))
    if inode.type == "dir":
        return node
    node.mtime = inode.mtime
    node.size = 0
    if inode.type == "file":
        node.size = len(inode.data)
        node.sha256 = hashlib.sha256(inode.data).hexdigest()
    elif inode.type == "symlink":
        node.target = inode.target
        node.size = len(os.fsencode(inode.target))
    elif inode.type in ("chardev", "blockdev"):
        node.rdev = inode.rdev
    return node


def apply_layers(layers: list[bytes]) -> dict[str, Node]:
    """The merged tree of `layers` (base first; plain, gzip or zstd tars)."""
    tree = _Tree()
    for layer in layers:
        _apply(tree, decompress(layer))
    nodes: dict[str, Node] = {}
    names_by_inode: dict[int, list[str]] = {}
    for path, inode in tree.paths.items():
        nodes[path] = _node(inode)
        if inode.type != "dir":
            names_by_inode.setdefault(id(inode), []).append(path)
    for names in names_by_inode.values():
        for name in names:
            nodes[name].nlink = len(names)
    assign_link_groups(nodes, list(names_by_inode.values()))
    return nodes
