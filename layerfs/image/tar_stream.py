"""A tar archive written member by member to a file or a pipe, as skopeo writes archives.

tarfile wants each member's size before its data; a layer decompressed while it is
written has a size known only at its end. On output that can seek, the header is
written with a placeholder and patched afterwards, so the layer is read once; on a
pipe the caller must say the size first.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import Protocol

from layerfs.errors import BadInput, LayerfsError

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class TarWriter:
    """A tar written member by member as skopeo writes archives (numeric owner 0, mtime 0,
    GNU headers so that a layer over 8 GiB still fits). tarfile needs each member's size
    up front; a decompressed layer's is known only once it is written, so on output that
    can seek its header is patched afterwards (a pipe needs the size beforehand)."""

    def __init__(self, out: Writer) -> None:
        self._out = out
        self.offset = 0
        try:
            self.seekable = bool(out.seekable())  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            self.seekable = False

    @staticmethod
    def _header(name: str, kind: bytes, size: int, mode: int, linkname: str = "") -> bytes:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
        info.uname = info.gname = ""
        info.linkname = linkname
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.offset += len(data)

    def _pad(self, size: int) -> None:
        if size % _BLOCK:
            self._write(bytes(_BLOCK - size % _BLOCK))

    def directory(self, name: str) -> None:
        self._write(self._header(name.rstrip("/") + "/", tarfile.DIRTYPE, 0, 0o755))

    def symlink(self, name: str, target: str) -> None:
        self._write(self._header(name, tarfile.SYMTYPE, 0, 0o777, target))

    def file(self, name: str, data: bytes) -> None:
        self._write(self._header(name, tarfile.REGTYPE, len(data), 0o444))
        self._write(data)
        self._pad(len(data))

    def stream(self, name: str, size: int | None, fill: Callable[[Writer], int]) -> None:
        """A member whose data `fill` writes (returning how much); `size` None only
        when `seekable`."""
        if size is None and not self.seekable:
            raise LayerfsError(f"internal error: {name} has no size and the output cannot seek")
        start = self.offset
        header = self._header(name, tarfile.REGTYPE, size or 0, 0o444)
        self._write(header)
        written = fill(_Counted(self))
        if size is None:
            patched = self._header(name, tarfile.REGTYPE, written, 0o444)
            if len(patched) != len(header):  # GNU headers never grow with the size
                raise LayerfsError(f"internal error: the tar header of {name} changed length")
            self._out.seek(start)  # type: ignore[attr-defined]
            self._out.write(patched)
            self._out.seek(0, 2)  # type: ignore[attr-defined]
        elif written != size:
            raise BadInput(f"{name}: {written} bytes were read for it, {size} were expected")
        self._pad(written)

    def close(self) -> None:
        """The end: two zero blocks, and zeros to a whole record, as tar writes."""
        end = self.offset + 2 * _BLOCK
        self._write(bytes(2 * _BLOCK + (-end) % _RECORD))


class _Counted:
    """What a member's `fill` writes to: the tar, its offset kept."""

    def __init__(self, tar: TarWriter) -> None:
        self._tar = tar

    def write(self, data: bytes, /) -> int:
        self._tar._write(data)
        return len(data)
