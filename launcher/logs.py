"""The log of a detached container: every line it wrote, when, and on which stream.

One line per output line, as the CRI (and podman's k8s-file driver) write them:
`TIMESTAMP STREAM F|P TEXT`, where P marks a piece of a line that was cut (at
the end of the output, or when a line grows past a buffer) and F a full line.
The log is kept across stop and start, appended to, until the container is removed.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOG = "container.log"
STDOUT, STDERR = "stdout", "stderr"
_LONGEST_LINE = 16 << 10


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LogWriter:
    """Turns the output of both streams into log lines, appended to the container's log."""

    def __init__(self, directory: Path) -> None:
        self.fd = os.open(directory / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.pending: dict[str, bytes] = {}

    def sink(self, stream: str) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            buffered = self.pending.pop(stream, b"") + data
            *lines, rest = buffered.split(b"\n")
            out = [self._line(stream, "F", line) for line in lines]
            while len(rest) > _LONGEST_LINE:
                out.append(self._line(stream, "P", rest[:_LONGEST_LINE]))
                rest = rest[_LONGEST_LINE:]
            if rest:
                self.pending[stream] = rest
            if out:
                os.write(self.fd, b"".join(out))
        return write

    @staticmethod
    def _line(stream: str, tag: str, text: bytes) -> bytes:
        return f"{_now()} {stream} {tag} ".encode() + text + b"\n"

    def close(self) -> None:
        """Write what is left of unfinished lines, marked partial."""
        for stream, rest in self.pending.items():
            os.write(self.fd, self._line(stream, "P", rest))
        self.pending.clear()
        os.close(self.fd)


@dataclass(frozen=True)
class Entry:
    timestamp: str
    stream: str
    text: bytes     # with its newline when the line was complete


def _parse(line: bytes) -> Entry | None:
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    text = parts[3] if len(parts) == 4 else b""
    return Entry(parts[0].decode(), parts[1].decode(), text + (b"\n" if parts[2] == b"F" else b""))


def read_log(directory: Path, follow: Callable[[], bool] | None = None) -> Iterator[Entry]:
    """The entries of the log; with `follow`, new ones as they come while `follow()`
    says the container still runs (and what it wrote last, after that)."""
    try:
        log = open(directory / LOG, "rb")
    except FileNotFoundError:
        return
    with log:
        while True:
            line = log.readline()
            if line.endswith(b"\n"):
                entry = _parse(line)
                if entry is not None:
                    yield entry
                continue
            if follow is None:
                return
            log.seek(-len(line), os.SEEK_CUR)
            if not follow():
                follow = None  # one more pass reads what came before the end
                continue
            time.sleep(0.05)
