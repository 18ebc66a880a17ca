"""The store on disk: an OCI image layout that layerfs also keeps its own areas in.

    ROOT/oci-layout, ROOT/index.json, ROOT/blobs/sha256/<hex>   the OCI layout
    ROOT/layers/<diff_id hex>/                                  unpacked layers
    ROOT/cache/                                                 merged-tree cache
    ROOT/mounts/                                                live mount records
    ROOT/tmp/                                                   work in progress

Crash safety comes from one rule: everything is written under tmp/ and renamed
into place only after it is verified, and index.json (the list of images) is
replaced last. A killed import leaves at most unreferenced files, never a
half-visible image.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from layerfs.errors import LayerfsError, NotFound
from layerfs.store.digest import check_digest, sha256_of, verify

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
EMPTY_INDEX: dict[str, Any] = {"schemaVersion": 2, "manifests": []}


def default_root() -> Path:
    """Where the store lives when neither --root nor LAYERFS_ROOT says."""
    if env := os.environ.get("LAYERFS_ROOT"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/layerfs")
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "layerfs"


def write_atomic(path: Path, data: bytes, scratch: Path | None = None) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix.

    The temporary file lives in `scratch` (same filesystem) when given, so that a
    writer killed midway leaves debris only where the store cleans it up."""
    fd, tmp = tempfile.mkstemp(dir=scratch or path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Store:
    """One store root. Cheap to construct; `ensure()` creates it on first write."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.cache = self.root / "cache"
        self.mounts = self.root / "mounts"
        self.tmp = self.root / "tmp"
        self.index_path = self.root / "index.json"

    def ensure(self) -> None:
        for d in (self.blobs, self.layers, self.cache, self.mounts, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.root / "oci-layout").exists():
            write_atomic(self.root / "oci-layout", json.dumps(LAYOUT_VERSION).encode())
        if not self.index_path.exists():
            write_atomic(self.index_path, json.dumps(EMPTY_INDEX).encode())

    # -- locking and scratch space ------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers (import, tag, rmi); readers rely on atomic renames instead."""
        self.ensure()
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._clean_tmp()
            yield

    def _clean_tmp(self) -> None:
        """Remove leftovers of writers that died (we hold the lock, so no writer is live)."""
        for entry in os.scandir(self.tmp):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private directory under tmp/ that is removed whatever happens."""
        path = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def discard(self, path: Path) -> None:
        """Delete a directory of the store so that it vanishes at once: renamed into tmp/
        first, so a crash mid-delete leaves debris only where the next writer cleans up."""
        doomed = Path(tempfile.mkdtemp(dir=self.tmp)) / "doomed"
        os.rename(path, doomed)
        shutil.rmtree(doomed.parent)

    # -- blobs ----------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest).split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the store at {self.root}") from None
        verify(f"blob {digest}", digest, sha256_of(data))
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the store at {self.root}") from None

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store a small blob (manifest, config) and return its digest."""
        digest = sha256_of(data)
        verify("blob", expected, digest)
        if not self.has_blob(digest):
            write_atomic(self.blob_path(digest), data, self.tmp)
        return digest

    def adopt_blob(self, staged: Path, digest: str) -> None:
        """Move a verified blob from scratch space into the blob area (no-op if present)."""
        target = self.blob_path(digest)
        if not target.exists():
            os.replace(staged, target)

    # -- index.json -----------------------------------------------------------------

    def read_index(self) -> dict[str, Any]:
        try:
            with open(self.index_path, "rb") as f:
                index = json.load(f)
        except FileNotFoundError:
            return dict(EMPTY_INDEX, manifests=[])
        except (OSError, ValueError) as e:
            raise LayerfsError(f"cannot read {self.index_path}: {e}") from None
        index.setdefault("manifests", [])
        return index

    def write_index(self, index: dict[str, Any]) -> None:
        """Publish the list of images: the single commit point of every store change."""
        write_atomic(self.index_path, json.dumps(index, indent=2).encode(), self.tmp)
