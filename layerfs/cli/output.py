"""Printing for people and for scripts: tables, sizes, times, JSON; and stdout that
fails as one error line when it cannot be written."""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from typing import Any, TextIO

from layerfs.errors import LayerfsError


class OutputError(LayerfsError):
    """Standard output cannot be written: closed, or the reader of its pipe went away."""


def _fd1_to_devnull() -> None:
    """Point fd 1 at /dev/null: a closed fd 1 would otherwise be the next file opened,
    and after a failed write the interpreter's flush at exit, of whatever is still
    buffered, must not fail again (Python would print "Exception ignored")."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != 1:
        os.dup2(null, 1)
        os.close(null)


class GuardedStdout:
    """sys.stdout while a command runs: a write or flush that fails raises OutputError,
    which main() reports as one line, instead of an OSError (or, with fd 1 closed at
    start, when Python sets sys.stdout to None, an AttributeError) from wherever the
    command happened to print."""

    def __init__(self, stream: TextIO | None) -> None:
        self._original = stream
        self._stream = stream
        self._error = OutputError("cannot write output: standard output is closed")
        if stream is None:
            _fd1_to_devnull()

    def __getattr__(self, name: str) -> Any:
        """The rest (isatty, fileno, encoding) is the real stream's."""
        return getattr(self._original, name)

    def write(self, text: str) -> int:
        """Write through the byte buffer until all is written: when the reader leaves
        midway, BufferedWriter returns a short count and TextIOWrapper would drop the
        rest without a word; writing the rest gets the EPIPE."""
        if self._stream is None:
            raise self._error
        self.write_bytes(text.encode(self._stream.encoding, self._stream.errors),
                         flush=self._stream.line_buffering and "\n" in text)
        return len(text)

    def write_bytes(self, raw: bytes, flush: bool = False) -> None:
        """Bytes as they are (a container's output), failing as `write` does."""
        if self._stream is None:
            raise self._error
        data = memoryview(raw)
        try:
            while data:
                data = data[self._stream.buffer.write(data):]
            if flush:
                self._stream.buffer.flush()
        except OSError as e:
            raise self._failed(e) from None

    def flush(self) -> None:
        """Flush now, inside main's error handling; once writing failed nothing is left
        worth flushing, so the flush at exit passes."""
        if self._stream is not None:
            try:
                self._stream.flush()
            except OSError as e:
                raise self._failed(e) from None

    def _failed(self, error: OSError) -> OutputError:
        self._stream = None
        _fd1_to_devnull()
        self._error = OutputError(f"cannot write output: {error.strerror or error}")
        return self._error


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _seconds_since(timestamp: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()


def _span(seconds: float) -> str | None:
    for unit, length in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                         ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return None


def ago(timestamp: str) -> str:
    """"3 days ago" from an RFC 3339 time, as docker prints it; the raw text if unparsable."""
    seconds = _seconds_since(timestamp)
    if seconds is None:
        return timestamp or "unknown"
    span = _span(seconds)
    return f"{span} ago" if span else "less than a minute ago"


def duration(timestamp: str) -> str:
    """How long since an RFC 3339 time, for "Up 5 seconds" (docker ps)."""
    seconds = _seconds_since(timestamp)
    if seconds is None:
        return "unknown"
    if seconds < 1:
        return "less than a second"
    count = int(seconds)
    return _span(seconds) or f"{count} second{'s' if count > 1 else ''}"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        sys.stdout.write("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


def one_line(text: object, limit: int | None = None) -> str:
    """`text` on one line (runs of white space as one space), cut to `limit` with "…"."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[:limit - 1] + "…"


def short_digest(digest: str) -> str:
    """The first 12 hex digits of a sha256 digest, as docker shows ids."""
    return digest.removeprefix("sha256:")[:12]


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


# Control characters, quotes, backslashes, DEL, and bytes that are not UTF-8 (escaped).
_NEEDS_QUOTES = re.compile('[\x00-\x1f"\\\\\x7f\udc80-\udcff]')
_ESCAPES = {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord('"'): '\\"', ord("\\"): "\\\\"}


def quote_path(raw: bytes) -> str:
    """A path for one line of text output: as it is, or, when it holds control
    characters, quotes, backslashes or bytes that are not UTF-8, in double quotes with
    C escapes (\\n, \\t, \\377), as git prints such paths. Scripts use --json."""
    text = raw.decode("utf-8", "surrogateescape")
    if not _NEEDS_QUOTES.search(text):
        return text
    out = []
    for c in text:
        code = ord(c)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\{code - 0xDC00:03o}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\{code:03o}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'
