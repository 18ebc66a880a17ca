"""Generate a layer tar from a directory tree, keeping what a rootfs needs.

Python's tarfile already records owners, modes, hardlinks, devices and fifos;
this adds extended attributes as PAX `SCHILY.xattr.*` records (what GNU tar,
containers/storage and umoci write) and a deterministic member order.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import BinaryIO

from layerfs.errors import LayerfsError


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


def write_dir_tar(root: Path, out: BinaryIO) -> None:
    """Write `root`'s tree as an uncompressed PAX tar (names relative, root as "./")."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            _add(tar, dirpath, "." if rel == "." else rel)
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                _add(tar, os.path.join(dirpath, name), os.path.normpath(os.path.join(rel, name)))


def _add(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    try:
        info = tar.gettarinfo(path, arcname)
        if info is None:  # sockets cannot be archived; tar skips them too
            return
        info.pax_headers.update(_xattr_records(path))
        if info.isreg():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
    except OSError as e:
        raise LayerfsError(f"cannot read {path}: {e.strerror}") from None
