"""The metadata index of one unpacked layer: what the layer says, not what the disk can hold.

A rootless user cannot chown a payload file to uid 0, set a setuid bit it does not
own, or mknod a device; so owners, modes, device numbers, xattrs and link targets
live here, and payload files are plain private files named by content hash. The
union filesystem answers getattr, readlink and getxattr from this index only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

INDEX_FORMAT = 1
# What every Linux filesystem holds, in bytes: one name, and one path with its final NUL.
# A layer beyond them could not be unpacked by any tool, nor committed back out.
NAME_MAX = 255
PATH_MAX = 4096

# Entry kinds. "h" is a hardlink: `target` names an earlier entry of the same layer.
REGULAR, DIRECTORY, SYMLINK, CHARDEV, BLOCKDEV, FIFO, HARDLINK = "f", "d", "l", "c", "b", "p", "h"


@dataclass(slots=True)
class Entry:
    """One tar member after validation. `path` is relative, "" is the layer's root."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    target: str = ""
    rdev: int = 0
    xattrs: dict[str, bytes] | None = None
    payload: str = ""

    def to_json(self) -> list:
        xattrs = {k: v.hex() for k, v in self.xattrs.items()} if self.xattrs else None
        return [self.path, self.kind, self.mode, self.uid, self.gid, self.size, self.mtime_ns,
                self.target, self.rdev, xattrs, self.payload]

    @classmethod
    def from_json(cls, row: list) -> "Entry":
        path, kind, mode, uid, gid, size, mtime_ns, target, rdev, xattrs, payload = row
        if xattrs:
            xattrs = {k: bytes.fromhex(v) for k, v in xattrs.items()}
        return cls(path, kind, mode, uid, gid, size, mtime_ns, target, rdev, xattrs, payload)


@dataclass
class LayerIndex:
    """Everything a layer changes: its entries in tar order, and what it hides below it."""

    entries: list[Entry] = field(default_factory=list)
    whiteouts: list[str] = field(default_factory=list)
    opaques: list[str] = field(default_factory=list)
    size: int = 0

    def save(self, path: Path) -> None:
        doc = {"format": INDEX_FORMAT, "size": self.size, "whiteouts": self.whiteouts,
               "opaques": self.opaques, "entries": [e.to_json() for e in self.entries]}
        # ensure_ascii keeps non-UTF-8 names (surrogate escapes) representable.
        path.write_text(json.dumps(doc, ensure_ascii=True, separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> "LayerIndex":
        doc = json.loads(path.read_text())
        if doc.get("format") != INDEX_FORMAT:
            raise ValueError(f"unsupported layer index format in {path}")
        return cls([Entry.from_json(row) for row in doc["entries"]], doc["whiteouts"],
                   doc["opaques"], doc["size"])
