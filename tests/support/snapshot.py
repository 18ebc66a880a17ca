"""Read a real directory tree (a layerfs, overlayfs or extracted rootfs) as comparable data.

`snapshot(root) == oracle.apply_layers(layers)` is the central assertion of the mount
tests. The walk must see the mount as the identity that mounted it (a rootless FUSE
mount is invisible to root without allow_other), so this module uses only the standard
library: `snapshot_as` runs its own source with `python -c` as that user, which needs
no access to the repository. `python -m tests.support.snapshot PATH` prints the JSON.

What is compared, and why some fields are None:
- directories: type, mode, owner, xattrs only. Their nlink, size and mtime depend on
  the filesystem (overlayfs reports nlink 1 for merged directories) and are not part
  of the image.
- everything else: also mtime (seconds), size, nlink, content sha256, symlink target,
  device numbers, and `link_group`: the smallest path among the names sharing one
  inode (None for a single name), so hard links compare without inode numbers.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Protocol

_TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass
class Node:
    """What one path of a merged image tree must show. Paths are keys, not fields."""

    type: str  # file | dir | symlink | chardev | blockdev | fifo
    mode: int  # permission bits including setuid/setgid/sticky (S_IMODE)
    uid: int
    gid: int
    mtime: int | None = None  # whole seconds; None for directories
    size: int | None = None  # None for directories
    sha256: str | None = None  # regular files only
    target: str | None = None  # symlinks only
    rdev: tuple[int, int] | None = None  # (major, minor), devices only
    xattrs: dict[str, bytes] = field(default_factory=dict)
    nlink: int | None = None  # None for directories
    link_group: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["xattrs"] = {k: v.hex() for k, v in self.xattrs.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> Node:
        data = dict(data)
        data["xattrs"] = {k: bytes.fromhex(v) for k, v in data["xattrs"].items()}
        if data["rdev"] is not None:
            data["rdev"] = tuple(data["rdev"])
        return cls(**data)


def assign_link_groups(nodes: dict[str, Node], names_by_inode: list[list[str]]) -> None:
    """Set link_group for every set of names that share one inode (shared with the oracle)."""
    for names in names_by_inode:
        if len(names) > 1:
            group = min(names)
            for name in names:
                nodes[name].link_group = group


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENOSYS):
            return {}
        raise
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in sorted(names)}


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _node(path: str, st: os.stat_result) -> Node:
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    node = Node(type=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                xattrs=_xattrs(path))
    if kind == "dir":
        return node
    node.mtime = int(st.st_mtime)
    node.size = st.st_size
    node.nlink = st.st_nlink
    if kind == "file":
        node.sha256 = _file_sha256(path)
    elif kind == "symlink":
        node.target = os.readlink(path)
    elif kind in ("chardev", "blockdev"):
        node.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return node


def snapshot(root: str | os.PathLike) -> dict[str, Node]:
    """Every path under `root` ("/" is root itself, then "/a/b"), without following symlinks."""
    root = os.fspath(root)
    nodes: dict[str, Node] = {}
    names_by_inode: dict[tuple[int, int], list[str]] = {}
    stack = [("/", root)]
    while stack:
        key, real = stack.pop()
        st = os.lstat(real)
        node = nodes[key] = _node(real, st)
        if node.type == "dir":
            prefix = key.rstrip("/")
            stack.extend((f"{prefix}/{entry.name}", entry.path) for entry in os.scandir(real))
        else:
            names_by_inode.setdefault((st.st_dev, st.st_ino), []).append(key)
    assign_link_groups(nodes, list(names_by_inode.values()))
    return nodes


def dump_json(nodes: dict[str, Node]) -> str:
    # ensure_ascii escapes the surrogates that stand for non-UTF-8 name bytes
    return json.dumps({path: node.to_json() for path, node in sorted(nodes.items())},
                      ensure_ascii=True)


def load_snapshot_json(text: str | bytes) -> dict[str, Node]:
    return {path: Node.from_json(data) for path, data in json.loads(text).items()}


class _Runs(Protocol):
    def sh(self, argv: list[str]) -> subprocess.CompletedProcess[bytes]: ...


def snapshot_command(root: str | os.PathLike) -> list[str]:
    """A command line that prints the snapshot of `root` as JSON, runnable by any user."""
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    return [sys.executable, "-c", source, os.fspath(root)]


def snapshot_as(identity: _Runs, root: str | os.PathLike) -> dict[str, Node]:
    """Snapshot `root` as the identity behind `identity.sh` (the conftest `Layerfs`)."""
    return load_snapshot_json(identity.sh(snapshot_command(root)).stdout)


def _fmt(name: str, value: object) -> str:
    if name == "mode" and isinstance(value, int):
        return oct(value)
    if name == "xattrs" and isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "}"
    return repr(value)


def diff(a: dict[str, Node], b: dict[str, Node], labels: tuple[str, str] = ("expected", "actual"),
         limit: int = 60) -> str:
    """Readable differences between two trees, one line each; "" when they are equal."""
    la, lb = labels
    lines = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            lines.append(f"{path!r}: only in {la} ({a[path].type})")
        elif path not in a:
            lines.append(f"{path!r}: only in {lb} ({b[path].type})")
        elif a[path] != b[path]:
            for f in fields(Node):
                va, vb = getattr(a[path], f.name), getattr(b[path], f.name)
                if va != vb:
                    lines.append(f"{path!r}: {f.name}: {la}={_fmt(f.name, va)} "
                                 f"{lb}={_fmt(f.name, vb)}")
    if len(lines) > limit:
        lines[limit:] = [f"... and {len(lines) - limit} more differences"]
    return "\n".join(lines)


def assert_same_tree(expected: dict[str, Node], actual: dict[str, Node],
                     labels: tuple[str, str] = ("expected", "actual")) -> None:
    """Assert equality with the diff as the message (pytest's own dict diff is unreadable here)."""
    __tracebackhide__ = True  # report the failure at the caller
    text = diff(expected, actual, labels)
    if text:
        raise AssertionError(f"trees differ ({len(expected)} vs {len(actual)} paths):\n{text}")


if __name__ == "__main__":
    sys.stdout.write(dump_json(snapshot(sys.argv[1])) + "\n")
