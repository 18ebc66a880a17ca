"""Generate a layer tar from a directory tree, keeping what a rootfs needs.

Python's tarfile already records owners, modes, hardlinks, devices and fifos;
this adds extended attributes as PAX `SCHILY.xattr.*` records (what GNU tar,
containers/storage and umoci write) and a deterministic member order.

An image must never lack part of its tree without anyone knowing: a file or
directory that cannot be read fails the tar, naming it, unless the caller asks to
skip such paths, and is then told of each one.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from layerfs.errors import LayerfsError

Skip = Callable[[str, str], None]  # told (path, why) of each path left out because it is unreadable


def _xattr_records(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    records = {}
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        records["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return records


def _add(tar: tarfile.TarFile, path: str, arcname: str) -> list[str]:
    """Add one path to the tar; return the names in it if it is a directory.

    Everything that can fail for want of permission (lstat, listing, opening) happens
    before the header is written, so that the caller can leave the path out without
    a trace (an OSError); what fails after that fails the whole tar."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        children = sorted(os.listdir(path))
        _write(tar, path, tar.gettarinfo(path, arcname))
        return children
    if stat.S_ISREG(st.st_mode):
        # Opened before tarfile sees it: a second name of an unreadable file must not
        # become a hard link to an entry that the tar never got.
        with open(path, "rb") as data:
            _write(tar, path, tar.gettarinfo(path, arcname, data), data)
        return []
    info = tar.gettarinfo(path, arcname)
    if info is not None:  # sockets cannot be archived; tar skips them too
        _write(tar, path, info)
    return []


def _write(tar: tarfile.TarFile, path: str, info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
    info.pax_headers.update(_xattr_records(path))
    try:
        tar.addfile(info, data)
    except OSError as e:
        raise LayerfsError(f"cannot archive {path!r}: {e.strerror}") from None


def _unreadable(path: str, error: OSError, skip: Skip | None) -> None:
    """Skip a path that permissions hide, if asked to; fail with its name otherwise."""
    why = (error.strerror or str(error)).lower()
    if skip is not None and isinstance(error, PermissionError):
        skip(path, why)
        return
    hint = " (`layerfs import --skip-unreadable` imports the rest)" if isinstance(error, PermissionError) else ""
    raise LayerfsError(f"cannot read {path!r}: {why}{hint}")


def write_dir_tar(root: Path, out: BinaryIO, skip: Skip | None = None) -> None:
    """Write `root`'s tree as an uncompressed PAX tar (names relative, root as "./"),
    depth first in name order, so that one tree always gives the same layer.

    A path that cannot be read fails the tar unless `skip` is given; then it is left
    out (a directory with all it holds) and `skip` is told. The root itself is never
    skipped: an image of nothing is no import."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        pending = [(str(root), ".")]
        while pending:
            path, arcname = pending.pop()
            try:
                children = _add(tar, path, arcname)
            except OSError as e:
                _unreadable(path, e, skip if arcname != "." else None)
                continue
            pending.extend((os.path.join(path, name), name if arcname == "." else f"{arcname}/{name}")
                           for name in reversed(children))
