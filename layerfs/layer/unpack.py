"""Unpack a layer tar into content-addressed payload files and a metadata index.

Nothing from the tar is ever used as a path on disk: payloads are stored as
files/<xxh3-128 of content>, so traversal, symlinked parents and odd names cannot
write outside the layer. They are still refused, because the same tar would be
dangerous to every other tool and layerfs must not store what it cannot commit
back out faithfully.
"""

from __future__ import annotations

import base64
import os
import tarfile
import urllib.parse
from pathlib import Path

import xxhash

from layerfs.errors import BadInput
from layerfs.layer.index import (BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, NAME_MAX, PATH_MAX,
                                 REGULAR, SYMLINK, Entry, LayerIndex)
from layerfs.store.digest import Readable

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
CHUNK = 1 << 20


def clean_path(name: str, what: str) -> str:
    """A tar member name as a relative path; absolute names and ".." are refused, and
    so are names longer than NAME_MAX bytes and paths beyond PATH_MAX: no filesystem
    can hold them, so a layer with one cannot be unpacked by any tool, nor committed
    back out as an image other tools accept. A whiteout names what it deletes after
    its prefix, so that name is what must fit."""
    if name.startswith("/"):
        raise BadInput(f"{what}: absolute path {name!r} in layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"{what}: path {name!r} escapes the layer with '..'")
    named = parts[:-1] + [parts[-1].removeprefix(WHITEOUT_PREFIX)] if parts else []
    if any(len(os.fsencode(part)) > NAME_MAX for part in named):
        raise BadInput(f"{what}: path {name!r} has a name longer than {NAME_MAX} bytes, "
                       "which no Linux filesystem can hold")
    if len(os.fsencode("/".join(named))) >= PATH_MAX:
        raise BadInput(f"{what}: path {name[:60]!r}... is {len(os.fsencode(name))} bytes long, "
                       f"beyond PATH_MAX, which no tool could unpack")
    return "/".join(parts)


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes] | None:
    """Extended attributes from PAX records (GNU/star SCHILY and libarchive spellings)."""
    found: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr."):]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr."):])
            found[name] = base64.b64decode(value + "=" * (-len(value) % 4))
    return found or None


class _Unpacker:
    def __init__(self, dest: Path, what: str) -> None:
        self.files = dest / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.what = what
        self.index = LayerIndex()
        self.kinds: dict[str, str] = {}
        self.by_path: dict[str, Entry] = {}

    def _check_parents(self, path: str) -> None:
        """Refuse entries below a symlink or file of this layer (a tar extractor would follow it)."""
        parent = path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            kind = self.kinds.get(parent)
            if kind is not None and kind != DIRECTORY:
                what = "symlink" if kind == SYMLINK else "non-directory"
                raise BadInput(f"{self.what}: {path!r} lies below {what} {parent!r}")

    def _store_payload(self, stream: Readable, size: int) -> str:
        """Store a file's content under its hash; returns the name. Most files of a
        layer are small: those are read whole, hashed, and written straight to their
        final name, or not at all when the layer already holds the same content (the
        unpack happens in scratch space, so a half-written file dies with it)."""
        if size > CHUNK:
            return self._store_large_payload(stream, size)
        data = stream.read(size)
        if len(data) != size:
            raise BadInput(f"{self.what}: file data is truncated")
        name = xxhash.xxh3_128_hexdigest(data)
        try:
            fd = os.open(self.files / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return name
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        return name

    def _store_large_payload(self, stream: Readable, size: int) -> str:
        """A file too large to hold in memory: streamed to a temporary name, then
        renamed to its hash."""
        tmp = self.files / f".tmp-{os.urandom(6).hex()}"
        digest = xxhash.xxh3_128()
        written = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            while chunk := stream.read(min(CHUNK, size - written) or CHUNK):
                digest.update(chunk)
                _write_all(fd, chunk)
                written += len(chunk)
        finally:
            os.close(fd)
        if written != size:
            os.unlink(tmp)
            raise BadInput(f"{self.what}: file data is truncated")
        name = digest.hexdigest()
        final = self.files / name
        if final.exists():
            os.unlink(tmp)
        else:
            os.rename(tmp, final)
        return name

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = clean_path(member.name, self.what)
        base = path.rsplit("/", 1)[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(path, base)
            return
        self._check_parents(path)
        entry = Entry(path, "", member.mode & 0o7777, member.uid, member.gid,
                      mtime_ns=int(round(float(member.mtime) * 1e9)), xattrs=_xattrs(member))
        if member.isreg():
            entry.kind = REGULAR
            entry.size = member.size
            if member.size:
                entry.payload = self._store_payload(tar.extractfile(member), member.size)
                self.index.size += member.size
        elif member.isdir():
            entry.kind = DIRECTORY
        elif member.issym():
            entry.kind, entry.target = SYMLINK, member.linkname
        elif member.islnk():
            self._hardlink(entry, member)
        elif member.ischr() or member.isblk():
            entry.kind = CHARDEV if member.ischr() else BLOCKDEV
            entry.rdev = os.makedev(member.devmajor, member.devminor)
        elif member.isfifo():
            entry.kind = FIFO
        else:
            raise BadInput(f"{self.what}: {path!r} has unsupported tar type {member.type!r}")
        if path == "" and entry.kind != DIRECTORY:
            raise BadInput(f"{self.what}: the layer root must be a directory")
        self.kinds[path] = entry.kind
        self.by_path[path] = entry
        self.index.entries.append(entry)

    def _hardlink(self, entry: Entry, member: tarfile.TarInfo) -> None:
        target = clean_path(member.linkname, self.what)
        original = self.by_path.get(target)
        if original is None or original.kind == DIRECTORY:
            raise BadInput(f"{self.what}: hardlink {entry.path!r} points to {member.linkname!r}, "
                           "which is not an earlier file of this layer")
        # A hardlink is the same inode: its attributes are the target's, whatever the header says.
        entry.kind, entry.target = HARDLINK, target
        for attr in ("mode", "uid", "gid", "size", "mtime_ns", "rdev", "xattrs", "payload"):
            setattr(entry, attr, getattr(original, attr))

    def _whiteout(self, path: str, base: str) -> None:
        self._check_parents(path)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if base == OPAQUE_MARKER:
            self.index.opaques.append(parent)
        elif base.startswith(WHITEOUT_PREFIX * 2):
            return  # aufs bookkeeping (.wh..wh.plnk etc.): not part of the image
        else:
            name = base[len(WHITEOUT_PREFIX):]
            if name in ("", ".", ".."):
                raise BadInput(f"{self.what}: invalid whiteout {path!r}")
            self.index.whiteouts.append(f"{parent}/{name}" if parent else name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unpack(tar_stream: Readable, dest: Path, what: str) -> LayerIndex:
    """Unpack an uncompressed tar stream into `dest` (files/ + index.json) and return the index."""
    unpacker = _Unpacker(dest, what)
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                unpacker.add(tar, member)
    except (tarfile.TarError, EOFError) as e:
        raise BadInput(f"{what}: not a valid tar ({e})") from None
    unpacker.index.save(dest / "index.json")
    # Listing images must not parse every index just to add up sizes.
    (dest / "size").write_text(str(unpacker.index.size))
    return unpacker.index
