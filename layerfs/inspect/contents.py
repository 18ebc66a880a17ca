"""File contents of two states: a unified diff of one file, and a report directory that
other tools can read (each side's differing files, and the JSON listing)."""

from __future__ import annotations

import difflib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from layerfs.errors import BadInput, NotFound
from layerfs.inspect.changes import DELETED, PathChange, lookup
from layerfs.layer.index import REGULAR, SYMLINK
from layerfs.union.tree import Node

TEXT_LIMIT = 16 * 1024 * 1024  # a file beyond this is not diffed line by line


def _read(node: Node | None) -> bytes | None:
    if node is None:
        return None
    if node.kind == SYMLINK:
        return b"-> " + node.target + b"\n"
    if node.kind != REGULAR:
        raise BadInput("only regular files and symlinks have contents to diff")
    if node.size > TEXT_LIMIT:
        return None
    if not node.payload:
        return b""
    with open(node.payload, "rb") as f:
        return f.read()


def file_diff(old_root: Node, new_root: Node, path: str) -> str:
    """A unified diff of the file at `path` in both states ("" when equal); a binary or
    huge file gives one line saying that they differ."""
    raw = os.fsencode("/" + path.strip("/"))
    old, new = lookup(old_root, raw), lookup(new_root, raw)
    if old is None and new is None:
        raise NotFound(f"{path}: no such file in either state")
    a, b = _read(old), _read(new)
    if a == b and (old is None) == (new is None):
        return ""
    label = os.fsdecode(raw)
    if (a is None and old is not None) or (b is None and new is not None) or b"\0" in (a or b"") + (b or b""):
        return f"Binary files a{label} and b{label} differ\n"
    lines = difflib.unified_diff((a or b"").decode("utf-8", "replace").splitlines(keepends=True),
                                 (b or b"").decode("utf-8", "replace").splitlines(keepends=True),
                                 "/dev/null" if old is None else f"a{label}",
                                 "/dev/null" if new is None else f"b{label}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def write_report(directory: Path, changes: Iterable[PathChange], old_root: Node, new_root: Node,
                 doc: dict[str, object]) -> None:
    """DIR/old/PATH and DIR/new/PATH for every differing regular file (as each side has
    it), and DIR/report.json. DIR must be new or empty, so nothing of the user's is
    overwritten; paths come from validated indexes, never `..` or absolute."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BadInput(f"report directory {directory} exists and is not empty")
    directory.mkdir(parents=True, exist_ok=True)
    for change in changes:
        sides = [("old", old_root)] + ([] if change.kind == DELETED else [("new", new_root)])
        for side, root in sides:
            node = lookup(root, change.path)
            if node is None or node.kind != REGULAR:
                continue
            target = directory / side / os.fsdecode(change.path.lstrip(b"/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if node.payload:
                shutil.copyfile(node.payload, target)
            else:
                target.touch()
    (directory / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
