"""One-layer images from a root filesystem: a directory (`dir:`) or a tarball (`tar:`)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from layerfs.errors import BadInput
from layerfs.image.source import SourceImage, SourceLayer
from layerfs.layer.generate import Skip, write_dir_tar


def tar_source(path: Path) -> SourceImage:
    if not path.is_file():
        raise BadInput(f"{path} is not a file (tar: takes a tarball, plain, gzip or zstd)")

    def open_tar(scratch: Path) -> BinaryIO:
        return open(path, "rb")

    return SourceImage([SourceLayer(open_tar)], created_by=f"layerfs import tar:{path.name}")


def dir_source(path: Path, skip: Skip | None = None) -> SourceImage:
    """The tree under `path` as one layer; unreadable paths fail it, or go to `skip`."""
    if not path.is_dir():
        raise BadInput(f"{path} is not a directory (dir: takes a root filesystem directory)")

    def open_dir(scratch: Path) -> BinaryIO:
        tarball = scratch / "rootfs.tar"
        with open(tarball, "wb") as out:
            write_dir_tar(path, out, skip)
        return open(tarball, "rb")

    return SourceImage([SourceLayer(open_dir)], created_by=f"layerfs import dir:{path.name}")
