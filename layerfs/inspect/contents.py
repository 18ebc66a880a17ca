"""File contents of two states: a unified diff of one file, and a report directory that
other tools can read (each side's differing files, and the JSON listing)."""

from __future__ import annotations

import difflib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.inspect.changes import DELETED, TYPE_NAME, PathChange, lookup
from layerfs.layer.index import DIRECTORY, REGULAR, SYMLINK
from layerfs.union.compare import content_id
from layerfs.union.tree import Node

TEXT_LIMIT = 16 * 1024 * 1024  # a file beyond this is not diffed line by line


def _read(node: Node | None, label: str) -> bytes | None:
    """The text to compare: a file's bytes ("" when absent), a link's target; None for a
    file too big to diff line by line."""
    if node is None:
        return b""
    if node.kind == SYMLINK:
        return b"-> " + node.target + b"\n"
    if node.kind != REGULAR:
        raise BadInput(f"{label} is a {TYPE_NAME[node.kind]}: only files and symlinks have contents to diff")
    if node.size > TEXT_LIMIT:
        return None
    if not node.payload:
        return b""
    with open(node.payload, "rb") as f:
        return f.read()


def _metadata(old: Node | None, new: Node | None) -> list[str]:
    """git's lines for what differs beside the content: old/new mode, and owners."""
    if old is None or new is None:
        return [f"new file mode {new.st_mode:o}" if new is not None else f"deleted file mode {old.st_mode:o}"]  # type: ignore[union-attr]
    lines = []
    if old.st_mode != new.st_mode:
        lines += [f"old mode {old.st_mode:o}", f"new mode {new.st_mode:o}"]
    if (old.uid, old.gid) != (new.uid, new.gid):
        lines += [f"old owner {old.uid}:{old.gid}", f"new owner {new.uid}:{new.gid}"]
    return lines


def file_diff(old_root: Node, new_root: Node, path: str) -> tuple[str, bool]:
    """(a diff of the file at `path` in both states, as git prints one: mode and owner
    lines, then the unified diff of the contents; whether they differ at all). A binary
    file, or one beyond 16 MiB, gives one line saying that the contents differ."""
    raw = os.fsencode("/" + path.strip("/"))
    label = os.fsdecode(raw)
    old, new = lookup(old_root, raw), lookup(new_root, raw)
    if old is None and new is None:
        raise NotFound(f"{label}: no such file in either state")
    same_content = (old is not None and new is not None and old.kind == new.kind == REGULAR
                    and not old.upper and not new.upper and content_id(old) == content_id(new))
    a, b = (None, None) if same_content else (_read(old, label), _read(new, label))
    header = _metadata(old, new)
    if same_content or a == b:
        return "".join(f"{line}\n" for line in header), bool(header)
    if a is None or b is None or b"\0" in a + b:
        body = f"Binary files {'/dev/null' if old is None else 'a' + label} and " \
               f"{'/dev/null' if new is None else 'b' + label} differ\n"
    else:
        lines = difflib.unified_diff(a.decode("utf-8", "replace").splitlines(keepends=True),
                                     b.decode("utf-8", "replace").splitlines(keepends=True),
                                     "/dev/null" if old is None else f"a{label}",
                                     "/dev/null" if new is None else f"b{label}")
        body = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                       for line in lines)
    return "".join(f"{line}\n" for line in header) + body, True


def write_report(directory: Path, changes: Iterable[PathChange], old_root: Node, new_root: Node,
                 doc: dict[str, object]) -> None:
    """DIR/old/PATH and DIR/new/PATH for every differing file and symlink as each side has
    it (a deleted directory with all it held), and DIR/report.json. DIR must be new or
    empty, so nothing of the user's is overwritten; paths come from validated indexes,
    never `..` or absolute."""
    if directory.exists() and not directory.is_dir():
        raise BadInput(f"report directory {directory} is not a directory")
    if directory.exists() and any(directory.iterdir()):
        raise BadInput(f"report directory {directory} exists and is not empty")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for change in changes:
            sides = [("old", old_root)] + ([] if change.kind == DELETED else [("new", new_root)])
            for side, root in sides:
                node = lookup(root, change.path)
                # A deleted directory is one change: all it held goes along. Other directories'
                # entries are changes of their own.
                if node is not None and (node.kind != DIRECTORY or change.kind == DELETED):
                    _write_tree(directory / side, change.path, node)
        (directory / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as e:
        raise LayerfsError(f"cannot write the report into {directory}: {(e.strerror or str(e)).lower()}") from None


def _write_tree(base: Path, path: bytes, node: Node) -> None:
    """Write `node` (a directory with every file and link below it) at base/path."""
    stack = [(path, node)]
    while stack:
        path, node = stack.pop()
        target = base / os.fsdecode(path.lstrip(b"/"))
        if node.kind == DIRECTORY:
            stack.extend((path + b"/" + name, child) for name, child in node.children.items())  # type: ignore[union-attr]
            continue
        if node.kind not in (REGULAR, SYMLINK):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if node.kind == SYMLINK:
            os.symlink(node.target, target)
        elif node.payload:
            shutil.copyfile(node.payload, target)
        else:
            target.touch()
