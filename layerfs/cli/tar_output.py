"""Where a tar goes (export, save): a file written atomically, or standard output but
never a terminal, refused before any work is done."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from layerfs.cli.signals import terminate_as_interrupt
from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.store.layout import atomic_writer


def destination(text: str | None) -> Path | None:
    """The file to write (None: standard output), refused before anything is read:
    a terminal, a directory, or a directory that is not there."""
    if text is None or text == "-":
        if _stdout_is_terminal():
            raise BadInput("refusing to write a tar to a terminal: give -o FILE, or redirect "
                           "standard output to a file or a pipe")
        return None
    path = Path(os.path.abspath(text))
    try:
        if path.is_dir():
            raise BadInput(f"{path} is a directory: give -o the name of the file to write")
        if not path.parent.is_dir():
            raise NotFound(f"cannot write {path}: directory {path.parent} does not exist")
    except OSError as e:  # a directory on the way this user may not search
        raise LayerfsError(f"cannot write {path}: {(e.strerror or str(e)).lower()}") from None
    return path


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError, OSError):  # closed: the write fails as one line later
        return False


class _Stdout:
    """Bytes to standard output, failing as one line when it cannot be written."""

    def write(self, data: bytes) -> int:
        write_bytes = getattr(sys.stdout, "write_bytes", None)
        if write_bytes is not None:
            write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
        return len(data)

    def flush(self) -> None:
        sys.stdout.flush()


class Counting:
    """A writer that reports how much went through it."""

    def __init__(self, out: Any, on_write: Callable[[int], None]) -> None:
        self._out = out
        self._on_write = on_write

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._on_write(len(data))
        return len(data)


@contextlib.contextmanager
def writing(target: Path | None) -> Iterator[Any]:
    """A binary writer to `target` (None: standard output). A file is made under a
    temporary name beside it and renamed onto it only when everything is written, so
    a failure, Ctrl-C, SIGTERM or SIGHUP leaves no partial file and the old one, if
    any, as it was."""
    if target is None:
        out = _Stdout()
        yield out
        out.flush()
        return
    with terminate_as_interrupt(), contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(atomic_writer(target))
        except OSError as e:
            raise LayerfsError(f"cannot write {target}: {(e.strerror or str(e)).lower()}") from None
        yield f
