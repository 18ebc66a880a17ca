"""Printing for people and for scripts: tables, sizes, times, JSON."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def ago(timestamp: str) -> str:
    """"3 days ago" from an RFC 3339 time, as docker prints it; the raw text if unparsable."""
    try:
        when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp or "unknown"
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    seconds = (datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()
    for unit, length in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                         ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "less than a minute ago"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        sys.stdout.write("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


_ESCAPES = {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord('"'): '\\"', ord("\\"): "\\\\"}


def quote_path(raw: bytes) -> str:
    """A path for one line of text output: as it is, or, when it holds control
    characters, quotes, backslashes or bytes that are not UTF-8, in double quotes with
    C escapes (\\n, \\t, \\377), as git prints such paths. Scripts use --json."""
    text = raw.decode("utf-8", "surrogateescape")
    if not any(ord(c) < 0x20 or c in '"\\\x7f' or 0xDC80 <= ord(c) <= 0xDCFF for c in text):
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
