"""The store on disk: an OCI image layout that layerfs also keeps its own areas in.

    ROOT/oci-layout, ROOT/index.json, ROOT/blobs/sha256/<hex>   the OCI layout
    ROOT/layers/<diff_id hex>/                                  unpacked layers
    ROOT/cache/                                                 merged-tree cache
    ROOT/mounts/                                                live mount records
    ROOT/tmp/                                                   work in progress

Crash safety comes from one rule: everything is written under tmp/ and renamed
into place only after it is verified, and index.json (the list of images) is
replaced last. A killed import leaves at most unreferenced files, never a
half-visible image. Writers take ROOT/.lock first; the store's own files, index.json
included, are only ever created with it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from layerfs.errors import LayerfsError, NotFound
from layerfs.identity import is_mapped
from layerfs.store.root import default_root as default_root_text
from layerfs.store.digest import check_digest, sha256_of, verify

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
EMPTY_INDEX: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
LOCK = ".lock"
# What a store being made may hold before its oci-layout is written.
_STORE_NAMES = {LOCK, "tmp", "index.json", "blobs", "layers", "cache", "mounts"}


def default_root() -> Path:
    """Where the store lives when neither --root nor LAYERFS_ROOT says."""
    return Path(default_root_text())


def _existing_ancestor(root: Path) -> os.stat_result:
    """The stat of `root`, or of the nearest directory above it that exists: whoever
    owns that is who a store made there belongs to."""
    path = Path(os.path.abspath(root))
    while True:
        try:
            return os.stat(path)
        except FileNotFoundError:
            path = path.parent


acting_for: str | None = None  # the store owner root acts as (see act_as_owner), if any


def act_as_owner(root: Path) -> None:
    """Run the rest of the command with the effective ids and groups of the user who
    owns the store (or, for a new store, the directory it will be made in), when
    root runs it on someone else's store.

    `sudo layerfs --root ~user/... tag` would otherwise leave root-owned files that
    lock the owner out of their own store. Acting as the owner makes every file the
    store gains theirs, with no chown scattered over the code, and keeps root from
    putting into it what the owner could not have read. All ids change, real ones
    too, so that what the command starts is the owner's as well: a mount then
    belongs to them (they may enter, unmount and signal it), as if they had made it."""
    global acting_for
    if os.geteuid() != 0:
        return
    owner = _existing_ancestor(root)
    if owner.st_uid == 0 or not is_mapped(owner.st_uid):
        return
    try:
        user: pwd.struct_passwd | None = pwd.getpwuid(owner.st_uid)
    except KeyError:  # an id without a passwd entry: its files' group is all we know
        user = None
    gid = user.pw_gid if user else owner.st_gid
    groups = os.getgrouplist(user.pw_name, user.pw_gid) if user else [owner.st_gid]
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(owner.st_uid, owner.st_uid, owner.st_uid)
    acting_for = user.pw_name if user else str(owner.st_uid)


def write_atomic(path: Path, data: bytes, scratch: Path | None = None, mode: int = 0o666,
                 durable: bool = True) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    with atomic_writer(path, scratch, mode, durable) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path, scratch: Path | None = None, mode: int = 0o666,
                  durable: bool = True) -> Iterator[BinaryIO]:
    """A file written under a temporary name and renamed onto `path` once the block
    ends well (flushed to disk first); a failure or an interruption leaves the old file
    as it was and no partial one.

    The temporary file lives in `scratch` (same filesystem) when given, so that a
    writer killed midway leaves debris only where the store cleans it up. It is
    created as open(2) creates any file, 0666 less the umask (mkstemp's 0600 would
    hide index.json from other users' skopeo whatever the umask allows); `mode` narrows
    that for private files such as credentials. `durable=False` skips the flush to
    disk, for records of what runs now (mounts, a container's state), which a reboot
    makes void anyway: a start writes several, and each fsync costs it ~0.3 ms."""
    tmp = os.path.join(scratch or path.parent, f".tmp-{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Store:
    """One store root. Cheap to construct; the first writer's `locked()` creates it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.cache = self.root / "cache"
        self.mounts = self.root / "mounts"
        self.tmp = self.root / "tmp"
        self.index_path = self.root / "index.json"

    def check(self) -> None:
        """Refuse a root that is something else than a store, before any command reads
        it as an empty store or turns it into one: a missing or empty directory is
        fine (it becomes a store on first write), as is one holding `.lock` and nothing
        but a store's own names (a store that its first writer is making: the lock
        comes before oci-layout)."""
        if (self.root / "oci-layout").exists():
            return
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise LayerfsError(f"{self.root} is not a directory: --root takes the store's directory") from None
        if names and not (LOCK in names and set(names) <= _STORE_NAMES):
            raise LayerfsError(f"{self.root} is not a layerfs store (no oci-layout): choose a new or "
                               "empty directory for a store, or the directory of an existing one")

    def _ensure(self) -> None:
        """Create what the layout lacks (the lock is held: a second first writer must not
        replace an index.json that the first has just filled with an empty one). tmp/
        comes first so that the files are staged where debris is cleaned up."""
        self.tmp.mkdir(exist_ok=True)
        if not (self.root / "oci-layout").exists():
            write_atomic(self.root / "oci-layout", json.dumps(LAYOUT_VERSION).encode(), self.tmp)
        if not self.index_path.exists():
            write_atomic(self.index_path, json.dumps(EMPTY_INDEX).encode(), self.tmp)
        for d in (self.blobs, self.layers, self.cache, self.mounts):
            d.mkdir(parents=True, exist_ok=True)

    # -- locking and scratch space ------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers (import, tag, rmi, create); readers rely on atomic renames
        instead. Only the root directory and the lock file are made before the lock is
        held; everything else of a new store is made under it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._ensure()
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
        shutil.rmtree(self.set_aside(path))

    def set_aside(self, path: Path) -> Path:
        """The first half of discard: the directory renamed into tmp/ (gone from where it
        was listed); what is left to delete."""
        doomed = Path(tempfile.mkdtemp(dir=self.tmp)) / "doomed"
        os.rename(path, doomed)
        return doomed.parent

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
