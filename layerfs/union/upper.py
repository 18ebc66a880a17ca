"""A container's writable layer: data files plus a journal of changes to the merged tree.

    upper/files/<ino>   contents of files created or written in the container
    upper/work/         copy-ups in progress (renamed into files/ when complete)
    upper/journal       one JSON line per change, keyed by inode number
    upper/reserve       space set aside for deletes on a full disk

Every change to the tree is an operation record, applied by `apply` both live
(from a FUSE handler) and when a mount replays the journal, so the two can never
disagree. Each record carries the time it happened, which becomes the ctime of
what it changed (and the mtime of directories whose names it changed). Inode numbers are stable: the image's tree numbers its inodes
deterministically (the journal's first line pins that tree), and inodes made in
the container are journaled with their numbers.

A record is written (not just buffered) before the FUSE reply, so a killed daemon
loses nothing; fsync additionally fsyncs the journal, so an fsync'd change also
survives the machine. A torn last line is ignored at replay.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from layerfs.errors import LayerfsError
from layerfs.layer.index import DIRECTORY, REGULAR
from layerfs.union.tree import MergedTree, Node

JOURNAL = "journal"
# 2: attribute and xattr changes are "attr" records (with ctime, atime, xattrs), a create
# may carry inherited ACLs. A journal of format 1 replays as it is and is marked 2 when
# opened for writing, so that a layerfs that knows only 1 refuses it instead of misreading.
FORMAT = 2
READABLE_FORMATS = (1, 2)
# Space kept aside so that deleting still works on a full disk (a delete is a journal
# line too): a delete that meets ENOSPC frees this file and tries again. Made at mount
# and again at the next delete once space is back.
RESERVE = "reserve"
RESERVE_BYTES = 64 << 10
_FREES_SPACE = ("remove", "rename")


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


def _raw(name: str) -> bytes:
    return os.fsencode(name)


class UpperLayer:
    """The writable layer of one container, bound to the merged tree of its image."""

    def __init__(self, directory: Path, tree: MergedTree, identity: str, writable: bool = True) -> None:
        """Bind the layer to `tree` (the image's merged tree) and replay its journal onto it.

        With writable=False nothing on disk is touched: that is how diff and commit
        read a container."""
        self.dir = directory
        self.files = directory / "files"
        self.files_prefix = str(self.files) + "/"
        self.work = directory / "work"
        self.tree = tree
        self.next_ino = len(tree.nodes)
        self.latest = 0  # the latest time this layer has given or seen (see `now`)
        journal = directory / JOURNAL
        header = {"format": FORMAT, "base": identity}
        if journal.exists():
            self._replay(journal, header, writable)
        elif writable:
            journal.write_text(json.dumps(header) + "\n")
        self.journal: int | None = None  # fd, O_APPEND
        self.journal_size = 0
        if writable:
            self.files.mkdir(parents=True, exist_ok=True)
            self.work.mkdir(parents=True, exist_ok=True)
            self.journal = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self.journal_size = os.fstat(self.journal).st_size
        self.reserve = directory / RESERVE
        self.has_reserve = writable and self._make_reserve()

    # -- journal ---------------------------------------------------------------------

    def _replay(self, journal: Path, header: dict[str, Any], writable: bool) -> None:
        data = journal.read_bytes()
        lines = data.split(b"\n")  # the last item is whatever follows the last newline
        try:
            first = json.loads(lines[0])
        except ValueError:
            raise LayerfsError(f"{journal} is damaged (no header)") from None
        if not isinstance(first, dict) or first.get("format") not in READABLE_FORMATS:
            raise LayerfsError(f"{journal} has a format this layerfs does not know: upgrade layerfs")
        if first.get("base") != header["base"] or len(lines) < 2:
            raise LayerfsError(f"{journal} belongs to another image tree; the container cannot be mounted")
        if writable and first["format"] != FORMAT:
            # the same length, so one small write in place: the header names the records to come
            new_header = json.dumps(dict(first, format=FORMAT)).encode()
            assert len(new_header) == len(lines[0]), "journal headers differ only in a digit"
            with open(journal, "r+b") as f:
                f.write(new_header)
        good = len(lines[0]) + 1  # bytes of complete, applied lines
        for line in lines[1:-1]:
            if line:
                try:
                    record = json.loads(line)
                except ValueError:
                    break  # torn by a crash: this and anything after it never happened
                self.apply(record)
            good += len(line) + 1
        if writable and good < len(data):
            # Cut the torn tail off, or the records appended next would follow garbage.
            os.truncate(journal, good)
        # Data is not journaled: an upper file's size is its data file's. Every journaled
        # mtime is also stamped on the data file, so a data file whose mtime differs from
        # the journal's was written since the last mtime was set: the write's stamp is the
        # mtime, and the ctime unless a later change (journaled, times only grow) moved it.
        live = set()
        for node in self.tree.nodes:
            if node is not None and node.upper and node.nlink > 0:
                found = os.stat(node.payload)
                node.size = found.st_size
                if found.st_mtime_ns != node.mtime_ns:
                    node.mtime_ns = found.st_mtime_ns
                    node.ctime_ns = max(node.ctime_ns, found.st_mtime_ns)
                    self.observe(found.st_mtime_ns)
                live.add(os.path.basename(node.payload))
        if writable:  # data of files deleted while open, or created as the daemon died
            for entry in os.scandir(self.files):
                if entry.name not in live:
                    os.unlink(entry.path)
            shutil.rmtree(self.work, ignore_errors=True)

    def record(self, op: list[Any]) -> None:
        """Journal one change, then apply it to the tree (both before the caller replies).

        The line goes out in one write(2) before the tree changes, so a full disk
        (ENOSPC) leaves both as they were and the OSError reaches the caller; a
        delete then uses the reserve. Handlers check everything `apply` relies on."""
        assert self.journal is not None, "a read-only view of a container cannot change"
        line = (json.dumps(op, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        frees_space = op[0] in _FREES_SPACE
        if frees_space and not self.has_reserve:
            self.has_reserve = self._make_reserve()
        try:
            self._append(line)
        except OSError as e:
            if not (e.errno == errno.ENOSPC and frees_space and self.has_reserve):
                raise
            self.reserve.unlink()
            self.has_reserve = False
            self._append(line)
        self.apply(op)

    def _append(self, line: bytes) -> None:
        """One journal line in one write(2); a partial line is cut off again."""
        try:
            written = os.write(self.journal, line)  # type: ignore[arg-type]
        except OSError:
            os.ftruncate(self.journal, self.journal_size)  # type: ignore[arg-type]
            raise
        if written != len(line):
            os.ftruncate(self.journal, self.journal_size)  # type: ignore[arg-type]
            raise OSError(errno.ENOSPC, "journal write cut short")
        self.journal_size += written

    def _make_reserve(self) -> bool:
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError:
            self.reserve.unlink(missing_ok=True)
            return False
        return True

    def sync(self) -> None:
        if self.journal is not None:
            os.fsync(self.journal)

    def close(self) -> None:
        if self.journal is not None:
            self.sync()
            os.close(self.journal)
            self.journal = None

    # -- the operations ----------------------------------------------------------------

    def now(self) -> int:
        """The time of a change: the clock, but never before a time already given or
        seen. Data-file stamps may come from a finer clock than ours (multigrain
        timestamps), and a chmod after a write must not get a ctime before the write's."""
        self.latest = max(now_ns(), self.latest)
        return self.latest

    def observe(self, stamp: int) -> int:
        """Note a time the kernel stamped (on a data file); returns it."""
        self.latest = max(self.latest, stamp)
        return stamp

    def new_ino(self) -> int:
        ino = self.next_ino
        self.next_ino += 1
        return ino

    def data_path(self, ino: int) -> str:
        return f"{self.files_prefix}{ino}"

    def change(self, node: Node, changes: dict[str, Any]) -> None:
        """Journal and apply attribute changes (see metadata.py), xattrs given as bytes."""
        if "xattrs" in changes:
            changes = dict(changes, xattrs=encode_xattrs(changes["xattrs"]))
        self.record(["attr", node.ino, changes])

    def apply(self, op: list[Any]) -> None:
        kind = op[0]
        nodes = self.tree.nodes
        self.latest = max(self.latest, _time_of(op))
        if kind == "create":
            _, parent, name, node_kind, mode, uid, gid, rdev, target, ino, t, *inherited = op
            xattrs = _decode_xattrs(inherited[0]) if inherited and inherited[0] else None
            node = Node(node_kind, mode, uid, gid, 0, t, rdev, xattrs or None,
                        _raw(target) if target else b"")
            node.ino = ino
            node.nlink = 2 if node_kind == DIRECTORY else 1
            if node_kind == REGULAR:
                node.payload, node.upper = self.data_path(ino), True
            self._attach(nodes[parent], _raw(name), node, t)
            self.next_ino = max(self.next_ino, ino + 1)
        elif kind == "remove":
            _, parent, name, t = op
            self._detach(nodes[parent], _raw(name), t)
        elif kind == "rename":
            _, old_parent, old_name, new_parent, new_name, t = op
            node = nodes[old_parent].children[_raw(old_name)]  # type: ignore[union-attr,index]
            self._detach(nodes[old_parent], _raw(old_name), t, keep=True)
            if _raw(new_name) in nodes[new_parent].children:  # type: ignore[union-attr,operator]
                self._detach(nodes[new_parent], _raw(new_name), t)
            self._attach(nodes[new_parent], _raw(new_name), node, t)  # type: ignore[arg-type]
            node.ctime_ns = t  # type: ignore[union-attr]  # as ext4 does for the renamed inode
            node.cache = None  # type: ignore[union-attr]
        elif kind == "link":
            _, ino, parent, name, t = op
            node = nodes[ino]
            node.nlink += 1  # type: ignore[union-attr]
            node.ctime_ns = t  # type: ignore[union-attr]
            node.cache = None  # type: ignore[union-attr]
            self._attach(nodes[parent], _raw(name), node, t)  # type: ignore[arg-type]
        elif kind == "attr":
            _, ino, changes = op
            node = nodes[ino]
            for key, value in changes.items():
                if key == "xattrs":
                    _set_xattrs(node, _decode_xattrs(value))  # type: ignore[arg-type]
                else:
                    setattr(node, key, value)
            node.cache = None  # type: ignore[union-attr]
        elif kind == "xattr":  # journals written before xattr changes became "attr" records
            _, ino, name, value = op
            _set_xattrs(nodes[ino], {_raw(name): None if value is None else bytes.fromhex(value)})  # type: ignore[arg-type]
        elif kind == "data":
            _, ino = op
            node = nodes[ino]
            node.payload, node.upper = self.data_path(ino), True  # type: ignore[union-attr]
        else:
            raise LayerfsError(f"unknown change {kind!r} in the journal of {self.dir}")

    def _attach(self, parent: Node, name: bytes, node: Node, t: int) -> None:
        while len(self.tree.nodes) <= node.ino:
            self.tree.nodes.append(None)
        self.tree.nodes[node.ino] = node
        parent.children[name] = node  # type: ignore[index]
        if node.kind == DIRECTORY:
            node.parent = parent
            parent.nlink += 1
        elif node.parent is None:
            node.parent = parent
        self._touch(parent, t)

    def _detach(self, parent: Node, name: bytes, t: int, keep: bool = False) -> None:
        node = parent.children.pop(name)  # type: ignore[union-attr]
        if node.kind == DIRECTORY:
            parent.nlink -= 1
        elif not keep:
            node.nlink -= 1
            node.ctime_ns = t  # its link count changed (seen through its other names)
            node.cache = None
        self._touch(parent, t)

    @staticmethod
    def _touch(directory: Node, t: int) -> None:
        directory.mtime_ns = directory.ctime_ns = t
        directory.cache = None

    # -- copy-up -------------------------------------------------------------------------

    def copy_up(self, node: Node, keep_data: bool = True) -> None:
        """Give a lower file its own data in this layer (atomic: built in work/, renamed).

        keep_data=False is for a file about to be truncated to nothing: no point copying."""
        if node.upper or node.kind != REGULAR:
            return
        staged = self.work / str(node.ino)
        try:
            if node.payload and keep_data:
                shutil.copyfile(node.payload, staged)  # sendfile/copy_file_range underneath
            else:
                staged.touch()
            os.utime(staged, ns=(node.mtime_ns, node.mtime_ns))  # the data file carries the mtime
            os.replace(staged, self.data_path(node.ino))
        except OSError:
            staged.unlink(missing_ok=True)  # a full disk: the lower file stays in place
            raise
        self.record(["data", node.ino])


CLOCK_REALTIME_COARSE = 5  # Linux; Python 3.11's time module does not name it


def now_ns() -> int:
    """The time of a change, from the clock the kernel stamps files with (ext4 and the
    data files of this layer alike), so that a write's data-file stamp never comes
    before the journaled create or chmod that preceded it."""
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


def _time_of(op: list[Any]) -> int:
    """When a record's change happened (0 for those that carry no time)."""
    if op[0] == "create":
        return op[10]
    if op[0] in ("remove", "rename", "link"):
        return op[-1]
    if op[0] == "attr":
        return op[2].get("ctime_ns", 0)
    return 0


def encode_xattrs(xattrs: dict[bytes, bytes | None]) -> dict[str, str | None]:
    return {_name(k): None if v is None else v.hex() for k, v in xattrs.items()}


def _decode_xattrs(xattrs: dict[str, str | None]) -> dict[bytes, bytes | None]:
    return {_raw(k): None if v is None else bytes.fromhex(v) for k, v in xattrs.items()}


def _set_xattrs(node: Node, changes: dict[bytes, bytes | None]) -> None:
    """Set (or, for None, remove) xattrs of `node`; an empty set is stored as None."""
    xattrs = dict(node.xattrs or {})
    for name, value in changes.items():
        if value is None:
            xattrs.pop(name, None)
        else:
            xattrs[name] = value
    node.xattrs = xattrs or None

