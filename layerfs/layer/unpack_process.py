"""Unpacking a layer in a forked process, fed through a pipe.

Unpacking is Python work per file (tar headers, index entries, one file made per
payload) and holds the GIL; threads staging several layers at once therefore
unpack one at a time. Forked off, each layer unpacks on a core of its own while
the thread that feeds it only downloads, hashes and keeps the compressed blob,
which costs little Python. The child decompresses, hashes the tar (diff_id) and
unpacks into the scratch directory it is given, then reports the digest or its
one-line error; it exits without running any of the parent's cleanup.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from layerfs.errors import BadInput, LayerfsError
from layerfs.layer.compression import decompressed
from layerfs.layer.unpack import unpack
from layerfs.store.digest import HashingReader

PIPE_BUFFER = 1 << 20


def _keep_only(fds: set[int]) -> None:
    """Close every inherited descriptor but `fds` and stdio: a sibling's pipe left
    open here would keep that sibling from ever seeing the end of its input."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _child(read_end: int, result_end: int, work: Path, what: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C, and kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    result: dict[str, str | None]
    try:
        _keep_only({read_end, result_end})
        with os.fdopen(read_end, "rb", buffering=PIPE_BUFFER) as stream:
            tar_stream, compression = decompressed(stream, what)
            plain = HashingReader(tar_stream) if compression != "none" else None
            unpack(plain or tar_stream, work, what)
            if plain is not None:
                plain.drain()
            while stream.read(PIPE_BUFFER):
                pass
        result = {"compression": compression, "diff_id": plain.digest if plain else None}
    except LayerfsError as e:
        result = {"error": e.message}
    except BaseException as e:  # noqa: BLE001 - reported to the parent as its one line
        result = {"error": f"{what}: unpacking failed ({type(e).__name__}: {e})"}
    try:
        os.write(result_end, json.dumps(result).encode())
    finally:
        os._exit(0)


class ChildUnpack:
    """A forked process unpacking the tar stream written to it into `work`."""

    def __init__(self, work: Path, what: str) -> None:
        self._what = what
        read_end, self._feed = os.pipe()
        self._result, result_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._feed)
            os.close(self._result)
            _child(read_end, result_end, work, what)
        os.close(read_end)
        os.close(result_end)
        self._reading = True

    def feed(self, data: bytes) -> None:
        """Send the next compressed bytes; once the child stopped reading (it failed),
        they are dropped: the caller still reads its input to the end for the digest."""
        view = memoryview(data)
        while view and self._reading:
            try:
                view = view[os.write(self._feed, view):]
            except BrokenPipeError:
                self._reading = False

    def result(self) -> tuple[str | None, str]:
        """Wait for the child: (the tar's digest, None for a plain tar; the compression).
        Raises BadInput with the child's error line."""
        os.close(self._feed)
        self._feed = -1
        data = b""
        while chunk := os.read(self._result, 65536):
            data += chunk
        self._reap()
        try:
            result = json.loads(data)
        except ValueError:
            raise BadInput(f"{self._what}: the unpacking process died") from None
        if "error" in result:
            raise BadInput(result["error"])
        return result["diff_id"], result["compression"]

    def close(self) -> None:
        """Stop and reap the child if it still runs (a failure or Ctrl-C in the parent)."""
        if self._feed >= 0:
            os.close(self._feed)
            self._feed = -1
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()
        if self._result >= 0:
            os.close(self._result)
            self._result = -1

    def _reap(self) -> None:
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0
