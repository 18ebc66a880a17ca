"""What an importer needs from any source format, and file access inside directories or tars.

Every transport (oci, oci-archive, docker-archive, dir, tar) reduces to a
SourceImage: a config (or none, to be built), a manifest to keep (or none), and
layers that can be opened as byte streams with the digests the source claims.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from layerfs.errors import BadInput, NotFound
from layerfs.store.digest import Readable


@dataclass
class SourceLayer:
    """One layer of a source image: `open(scratch)` streams its (possibly compressed) blob."""

    open: Callable[[Path], Readable]
    digest: str | None = None
    size: int | None = None
    diff_id: str | None = None   # claimed here only when the source has no config


@dataclass
class SourceImage:
    layers: list[SourceLayer]
    config: bytes | None = None        # None: a config is built from base_config, or fresh
    manifest: bytes | None = None      # None: an OCI manifest is built
    name: str | None = None            # the name the source carries, used if the user gives none
    created_by: str = ""               # history line for built configs
    comment: str = ""                  # history comment for built configs (commit -m)
    base_config: dict[str, Any] | None = None  # the config a built one extends (commit)
    closers: list[Callable[[], None]] = field(default_factory=list)
    cancel: Callable[[], None] | None = None  # makes streams being read fail fast (parallel staging)

    def close(self) -> None:
        for close in self.closers:
            close()


class Files:
    """Read-only access to files by relative path in a directory or an (uncompressed) tar."""

    def __init__(self, label: str) -> None:
        self.label = label

    def open(self, path: str) -> BinaryIO:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def read(self, path: str, limit: int = 64 << 20) -> bytes:
        """Small files only (JSON documents): refuse anything absurdly large."""
        with self.open(path) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BadInput(f"{self.label}: {path} is too large to be a manifest or config")
        return data

    def missing(self, path: str) -> NotFound:
        return NotFound(f"{self.label}: {path} is missing")

    def close(self) -> None:
        pass


class DirFiles(Files):
    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root

    def _path(self, path: str) -> Path:
        if path.startswith("/") or ".." in path.split("/"):
            raise BadInput(f"{self.label}: refusing path {path!r} outside the layout")
        return self.root / path

    def open(self, path: str) -> BinaryIO:
        try:
            return open(self._path(path), "rb")
        except FileNotFoundError:
            raise self.missing(path) from None
        except OSError as e:
            raise BadInput(f"{self.label}: cannot read {path}: {e.strerror}") from None

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()


class TarFiles(Files):
    """Members of a tar archive, found by normalised name, read without extracting."""

    def __init__(self, archive: Path) -> None:
        super().__init__(str(archive))
        try:
            self._tar = tarfile.open(archive, "r:")
        except FileNotFoundError:
            raise NotFound(f"{archive} does not exist") from None
        except (tarfile.TarError, OSError) as e:
            raise BadInput(f"{archive} is not a readable tar archive ({e})") from None
        self._members = {os.path.normpath(m.name).lstrip("/"): m for m in self._tar.getmembers()
                         if m.isfile()}

    def open(self, path: str) -> BinaryIO:
        member = self._members.get(os.path.normpath(path))
        if member is None:
            raise self.missing(path)
        return self._tar.extractfile(member)  # type: ignore[return-value]

    def exists(self, path: str) -> bool:
        return os.path.normpath(path) in self._members

    def close(self) -> None:
        self._tar.close()
