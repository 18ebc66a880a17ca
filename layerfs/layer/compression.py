"""Transparent decompression of layer streams (plain tar, gzip, zstd) that notices truncation.

Library stream readers (gzip's, zstandard's) either raise late or return a short
stream silently when the input is cut; a layer must never be accepted half-read,
so this reader checks that the compressed stream really ended.
"""

from __future__ import annotations

import zlib

import zstandard
from isal import isal_zlib  # Intel's ISA-L inflate: twice zlib's speed, the same streams

from layerfs.errors import BadInput
from layerfs.store.digest import Readable

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20


def sniff(head: bytes) -> str:
    """The compression of a stream from its first bytes: "gzip", "zstd" or "none"."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class _Peeked:
    """A reader that gives back bytes already read for sniffing before the rest."""

    def __init__(self, head: bytes, source: Readable) -> None:
        self._head = head
        self._source = source

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                data, self._head = self._head, b""
                if size < 0:
                    return data + self._source.read()
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._source.read(size)


class _Decompressing:
    """read() over a compressed source; multi-member gzip and multi-frame zstd included."""

    def __init__(self, source: Readable, kind: str, what: str) -> None:
        self._source = source
        self._kind = kind
        self._what = what
        self._buffer = bytearray()
        self._finished = False
        self._obj = self._new()

    def _new(self):  # noqa: ANN202 - zlib and zstandard objects share no type
        if self._kind == "gzip":
            return isal_zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        return zstandard.ZstdDecompressor().decompressobj()

    def _fill(self, want: int) -> None:
        while not self._finished and len(self._buffer) < want:
            chunk = self._source.read(CHUNK)
            if not chunk:
                if not self._obj.eof:
                    raise BadInput(f"{self._what}: {self._kind} stream is truncated")
                self._finished = True
                break
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        try:
            while chunk:
                if self._obj.eof:
                    # A new member/frame follows the finished one.
                    self._obj = self._new()
                self._buffer += self._obj.decompress(chunk)
                chunk = self._obj.unused_data if self._obj.eof else b""
        except (zlib.error, isal_zlib.error, zstandard.ZstdError) as e:
            raise BadInput(f"{self._what}: corrupt {self._kind} data ({e})") from None

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            while not self._finished:
                self._fill(len(self._buffer) + CHUNK)
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        self._fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def decompressed(source: Readable, what: str) -> tuple[Readable, str]:
    """Wrap `source` so that reading yields the uncompressed tar; also say what it was."""
    head = source.read(4)
    kind = sniff(head)
    peeked = _Peeked(head, source)
    if kind == "none":
        return peeked, kind
    return _Decompressing(peeked, kind, what), kind
