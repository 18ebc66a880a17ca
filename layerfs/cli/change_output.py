"""How change listings print: plain lines for scripts (docker diff's `A /path`, paths
C-quoted), a tree on a terminal, and details with -v."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from layerfs.cli.output import human_size, quote_path
from layerfs.inspect.analyze import MetadataReadd, PathCopies
from layerfs.inspect.changes import LETTER, MODIFIED, TYPE_NAME, PathChange
from layerfs.layer.index import DIRECTORY, REGULAR


def details(change: PathChange) -> str:
    """What -v adds after the path: what differs, and the sizes of files."""
    if change.kind == MODIFIED:
        fields = [f"type: {TYPE_NAME[change.old_type]} -> {TYPE_NAME[change.type]}" if f == "type" else f
                  for f in change.fields]
        if change.old_size != change.size:
            fields.append(f"{human_size(change.old_size)} -> {human_size(change.size)}")
        elif change.type == REGULAR:
            fields.append(human_size(change.size))
        return f"  ({'; '.join(fields)})"
    if change.entries > 1:
        return f"  ({change.entries} entries, {human_size(change.size)})"
    return f"  ({human_size(change.size)})" if change.type == REGULAR else ""


def print_lines(changes: Iterable[PathChange], verbose: bool) -> None:
    lines = [f"{LETTER[c.kind]} {quote_path(c.path)}{details(c) if verbose else ''}\n" for c in changes]
    sys.stdout.write("".join(lines))  # one write: a large diff is 100k lines


def print_tree(changes: Iterable[PathChange], verbose: bool) -> None:
    """The changed paths as a tree: each directory on the way printed once, then its
    changed entries below it, each with its letter."""
    shown: list[bytes] = []  # the directories of the line printed last, outermost first
    for change in changes:
        parts = change.path.strip(b"/").split(b"/") if change.path != b"/" else []
        depth = 0
        while depth < len(shown) and depth < len(parts) - 1 and shown[depth] == parts[depth]:
            depth += 1
        del shown[depth:]
        for part in parts[depth:-1]:
            print("    " * len(shown) + "  " + quote_path(part) + "/")
            shown.append(part)
        name = (quote_path(parts[-1]) + ("/" if change.type == DIRECTORY else "")) if parts else "/"
        print("    " * len(shown) + LETTER[change.kind] + " " + name + (details(change) if verbose else ""))
        if parts:
            shown.append(parts[-1])


def readd_sentence(readd: MetadataReadd) -> str:
    """One metadata-only re-add, in words, with the fix (analyze and the TUI)."""
    files = f"{readd.files} file{'s' if readd.files > 1 else ''}"
    what = f"changing only their {' and '.join(sorted(readd.changed))}" if readd.changed else "unchanged"
    return (f"Layer {readd.layer} stores {files} again with the same content ({human_size(readd.size)}), "
            f"{what}. Fix: {readd.fix}.")


def layers_of(copies: PathCopies) -> str:
    """The layers holding a path's copies, then "-N" for the layer that deleted it."""
    return ",".join(str(n) for n, _ in copies.copies) + (f",-{copies.deleted_in}" if copies.deleted_in else "")
