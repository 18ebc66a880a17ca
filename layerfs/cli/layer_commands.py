"""`layerfs export`: an image (as it is, or as it was after layer N) or one of its layers, as a tar."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from layerfs.cli.progress import progress_for_terminal
from layerfs.cli.references import REF_HELP, ImageAt, inspected_image, layer_number
from layerfs.container.commit import write_tree
from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.layer.compression import decompressed
from layerfs.progress import Progress
from layerfs.store.digest import HashingReader, verify
from layerfs.store.layout import Store, atomic_writer
from layerfs.union.build import merged_tree

CHUNK = 1 << 20


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands of this module through main's `command(name, func, help, ...)`."""
    p = command("export", cmd_export, "write an image, or one of its layers, as a tar",
                "Write an image as one tar: every path of its merged tree (REF@N: as it was\n"
                "after layer N), with owners, modes, times, xattrs, device numbers and hard\n"
                "links exact, so that `layerfs import tar:FILE` or any tar extractor gives the\n"
                "same tree back. With --layer N, write layer N itself instead: its tar as the\n"
                "image holds it, uncompressed (whiteouts as `.wh.` files), whose sha256 is the\n"
                "layer's diff_id.\n\n"
                "FILE is written under a temporary name and renamed at the end, so a failure or\n"
                "Ctrl-C leaves no partial file. A tar is never written to a terminal.")
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("--layer", metavar="N", type=layer_number,
                   help="write only layer N (1 is the base; see `layerfs inspect REF`), "
                        "uncompressed, exactly as the image holds it")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the tar; `-` or no -o: standard output, unless it is a "
                        "terminal. An existing FILE is replaced")


def cmd_export(store: Store, args: argparse.Namespace) -> None:
    target = _destination(args.output)
    at = inspected_image(store, args.ref, "export")
    layer = at.layer(args.layer) if args.layer is not None else None
    with progress_for_terminal(False) as progress, _writing(target) as out:
        if layer is None:
            progress.task(f"export {at.label}", None)
            write_tree(merged_tree(store, at.diff_ids), _Counting(out, progress.advance))  # type: ignore[arg-type]
        else:
            _copy_layer(store, at, args.layer, out, progress)


def _copy_layer(store: Store, at: ImageAt, number: int, out: Any, progress: Progress) -> None:
    """Layer `number`'s blob, decompressed as it streams, checked against both digests:
    what is written is the layer's tar, whose sha256 is its diff_id."""
    descriptor, diff_id = at.layer(number)
    what = f"layer {number} of {at.label}"
    progress.task(what, descriptor.size)
    with store.open_blob(descriptor.digest) as blob:
        raw = HashingReader(blob, on_read=progress.advance)
        stream, _compression = decompressed(raw, what)
        plain = HashingReader(stream)
        while chunk := plain.read(CHUNK):
            out.write(chunk)
        raw.drain()
    verify(f"{what} in the store at {store.root}", descriptor.digest, raw.digest)
    verify(f"{what} in the store at {store.root} (uncompressed)", diff_id, plain.digest)


# -- where the tar goes -----------------------------------------------------------------


def _destination(text: str | None) -> Path | None:
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


class _Counting:
    """A writer that reports how much went through it."""

    def __init__(self, out: Any, on_write: Callable[[int], None]) -> None:
        self._out = out
        self._on_write = on_write

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._on_write(len(data))
        return len(data)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _writing(target: Path | None) -> Iterator[Any]:
    """A binary writer to `target` (None: standard output). A file is made under a
    temporary name beside it and renamed onto it only when everything is written, so
    a failure, Ctrl-C, SIGTERM or SIGHUP leaves no partial file and the old one, if
    any, as it was."""
    if target is None:
        out = _Stdout()
        yield out
        out.flush()
        return
    handlers = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with contextlib.ExitStack() as stack:
            try:
                f = stack.enter_context(atomic_writer(target))
            except OSError as e:
                raise LayerfsError(f"cannot write {target}: {(e.strerror or str(e)).lower()}") from None
            yield f
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
