"""sha256 digests, and readers that compute them while data streams past.

Every byte that enters the store is hashed on the way in and compared with the
digest its source claimed; nothing is trusted because of its name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import BinaryIO, Protocol

from layerfs.errors import BadInput

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def check_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256 digest, else raise BadInput."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BadInput(f"malformed digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class HashingReader:
    """Reads from `source`, hashing every byte and optionally copying it to `sink`."""

    def __init__(self, source: Readable, sink: BinaryIO | None = None,
                 on_read: Callable[[int], None] | None = None) -> None:
        self._source = source
        self._sink = sink
        self._on_read = on_read
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        if data:
            self._hash.update(data)
            self.size += len(data)
            if self._sink is not None:
                self._sink.write(data)
            if self._on_read is not None:
                self._on_read(len(data))
        return data

    def drain(self) -> None:
        """Read to the end, so the digest covers trailing bytes nobody asked for."""
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def verify(what: str, expected: str | None, actual: str) -> None:
    """Raise BadInput naming `what` if a computed digest differs from the claimed one."""
    if expected is not None and expected != actual:
        raise BadInput(f"{what} does not match its digest: expected {expected}, got {actual}")
