"""Blob downloads as readers that survive a cut connection.

A layer is staged by reading it (hashing and unpacking as it streams), so a
download is a reader: `read` pulls the next bytes of the HTTP body. When the
connection drops midway, the reader asks again with `Range: bytes=N-` and carries
on from byte N (a server that ignores Range resends from 0 and the first N bytes
are skipped), up to the client's retry budget. The digest is checked by whoever
reads (layer staging), over exactly the bytes read, so a resumed blob is verified
as a whole; a body longer than the manifest's size stops at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from layerfs.errors import BadInput
from layerfs.registry.auth import scope
from layerfs.registry.client import Registry, RegistryError


class BlobReader:
    """read() over /v2/REPO/blobs/DIGEST, resuming with Range when the stream breaks."""

    def __init__(self, registry: Registry, repository: str, digest: str, size: int | None) -> None:
        self._registry = registry
        self._path = f"/v2/{repository}/blobs/{digest}"
        self._scopes = (scope(repository, "pull"),)
        self._what = f"blob {digest[:19]} of {repository}"
        self._size = size
        self._offset = 0
        self._buffer = b""
        self._pos = 0
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._failures = 0
        self._ended = False

    def _open(self) -> None:
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        response = self._registry.send("GET", self._path, self._scopes, headers=headers, stream=True)
        if response.status_code == 416 and self._size is not None and self._offset >= self._size:
            response.close()
            self._ended = True
            return
        if response.status_code not in (200, 206):
            raise self._registry.fail(response, self._what)
        skip = 0
        if self._offset and response.status_code == 200:
            skip = self._offset  # Range ignored: the body starts over
        elif response.status_code == 206:
            start = response.headers.get("content-range", "").removeprefix("bytes ").split("-", 1)[0]
            if start != str(self._offset):
                response.close()
                raise RegistryError(f"{self._what}: asked to resume at byte {self._offset}, "
                                    f"the registry sent {response.headers.get('content-range')!r}")
        self._response = response
        # pieces as they arrive, not re-chunked: httpx holds a partial chunk back, and
        # loses it when the connection breaks, so a resume would start over from 0
        self._chunks = response.iter_bytes()
        while skip:
            data = next(self._chunks, b"")
            if not data:
                break
            skip -= len(data)
            if skip < 0:
                self._buffer, self._pos = data[skip:], 0
                self._offset += len(self._buffer)
                skip = 0

    def _next(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        while True:
            self._registry.check_cancel()
            if self._ended:
                return b""
            if self._chunks is None:
                self._open()
                continue
            try:
                data = next(self._chunks, b"")
            except httpx.TransportError as e:
                self._drop()
                self._failures += 1
                if self._failures > self._registry.access.retries:
                    raise RegistryError(f"{self._what}: the download broke off at byte "
                                        f"{self._offset} {self._failures} times ({e})") from None
                self._registry.pause(self._failures - 1)
                continue
            if not data:
                self._drop()
                if self._size is not None and self._offset < self._size:
                    self._failures += 1   # a clean end before the size: resume as for a cut
                    if self._failures > self._registry.access.retries:
                        raise RegistryError(f"{self._what}: the registry sent {self._offset} of "
                                            f"{self._size} bytes")
                    continue
                self._ended = True
                return b""
            self._offset += len(data)
            if self._size is not None and self._offset > self._size:
                self._drop()
                raise BadInput(f"{self._what}: the registry sent more than the {self._size} bytes "
                               "the manifest gives")
            return data

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response = None
        self._chunks = None

    def read(self, size: int = -1, /) -> bytes:
        """Bytes from the body. Callers (tarfile, the decompressor) ask for small pieces
        of large chunks, so a chunk is kept whole with a read position: slicing the rest
        off at each call would copy up to a mebibyte per 512-byte header."""
        if size is not None and 0 <= size <= len(self._buffer) - self._pos:
            start, self._pos = self._pos, self._pos + size
            return self._buffer[start:self._pos]
        rest = self._buffer[self._pos:] if self._pos else self._buffer
        if size is None or size < 0:
            parts = [rest]
            self._buffer, self._pos = b"", 0
            while data := self._next():
                parts.append(data)
            return b"".join(parts)
        parts, need = [rest], size - len(rest)
        self._buffer, self._pos = b"", 0
        while need > 0:
            data = self._next()
            if not data:
                break
            if len(data) > need:
                self._buffer, self._pos = data, need
                data = data[:need]
            parts.append(data)
            need -= len(data)
        return b"".join(parts)

    def close(self) -> None:
        self._drop()
        self._ended = True


def read_small_blob(registry: Registry, repository: str, digest: str, size: int | None,
                    limit: int = 64 << 20) -> bytes:
    """A config or other JSON blob, whole (bounded, resumable like any blob)."""
    if size is not None and size > limit:
        raise BadInput(f"blob {digest} of {repository} claims {size} bytes, too large for a config")
    reader = BlobReader(registry, repository, digest, size)
    try:
        data = reader.read(limit + 1)
    finally:
        reader.close()
    if len(data) > limit:
        raise BadInput(f"blob {digest} of {repository} is too large for a config")
    return data
