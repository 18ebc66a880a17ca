"""Layers in the store: unpacked once per diff_id, shared by every image that uses them.

`stage` is the one way a layer enters the store. It reads the compressed blob
once: the bytes are hashed (digest) and copied to scratch space, decompressed,
hashed again (diff_id) and unpacked, all as they stream. Both digests are checked
before `publish` renames anything into place, and an importer publishes only
when every layer of the image has been staged, so bad input changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from layerfs.errors import BadInput, LayerfsError
from layerfs.layer.compression import decompressed, sniff
from layerfs.layer.index import LayerIndex
from layerfs.layer.unpack import unpack
from layerfs.layer.unpack_process import ChildUnpack
from layerfs.store.digest import HashingReader, Readable, verify
from layerfs.store.layout import Store

INDEX_NAME = "index.json"
COPY_CHUNK = 1 << 20


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def layer_dir(store: Store, diff_id: str) -> Path:
    return store.layers / diff_id.split(":", 1)[1]


def is_unpacked(store: Store, diff_id: str) -> bool:
    return (layer_dir(store, diff_id) / INDEX_NAME).exists()


def require_unpacked(store: Store, diff_ids: list[str]) -> None:
    """Fail in one line when a layer of the chain is not unpacked (a store damaged by hand)."""
    missing = [d for d in diff_ids if not is_unpacked(store, d)]
    if missing:
        raise LayerfsError(f"layer {missing[0]} is not unpacked in {store.root}; import the image again")


def load_index(store: Store, diff_id: str) -> LayerIndex:
    return LayerIndex.load(layer_dir(store, diff_id) / INDEX_NAME)


def unpacked_size(store: Store, diff_id: str) -> int:
    """Bytes of file content the layer holds (0 if it is not unpacked)."""
    try:
        return int((layer_dir(store, diff_id) / "size").read_text())
    except (FileNotFoundError, ValueError):
        return 0


@dataclass
class StagedLayer:
    """A verified layer waiting in scratch space; `blob`/`unpacked` are None if already stored."""

    digest: str
    diff_id: str
    size: int
    compression: str
    blob: Path | None
    unpacked: Path | None

    def publish(self, store: Store) -> None:
        if self.blob is not None:
            store.adopt_blob(self.blob, self.digest)
        if self.unpacked is not None and not is_unpacked(store, self.diff_id):
            target = layer_dir(store, self.diff_id)
            if target.exists():  # no index inside: debris of an older crash
                os.rename(target, self.unpacked.parent / f"stale-{os.urandom(6).hex()}")
            os.rename(self.unpacked, target)


def stage(store: Store, scratch: Path, open_blob: Callable[[], Readable], *,
          digest: str | None, diff_id: str | None, what: str,
          on_read: Callable[[int], None] | None = None, fork: bool = False) -> StagedLayer:
    """Read, verify and unpack one layer blob into `scratch`.

    `digest` and `diff_id` are what the image claims (None where the source makes
    no claim, as for a plain tarball); a mismatch raises BadInput. With `fork`, the
    unpacking runs in a child process (several layers staged at once then use every
    core); the result is the same.
    """
    have_blob = digest is not None and store.has_blob(digest)
    have_layer = diff_id is not None and is_unpacked(store, diff_id)
    if have_blob and have_layer:
        with store.open_blob(digest) as f:  # type: ignore[arg-type]
            compression = sniff(f.read(4))
        size = store.blob_path(digest).stat().st_size  # type: ignore[arg-type]
        return StagedLayer(digest, diff_id, size, compression, None, None)  # type: ignore[arg-type]
    tag = os.urandom(6).hex()
    blob_tmp = None if have_blob else scratch / f"blob-{tag}"
    work = None if have_layer else scratch / f"layer-{tag}"
    source = store.open_blob(digest) if have_blob else open_blob()  # type: ignore[arg-type]
    if fork and work is not None:
        return _stage_forked(source, blob_tmp, work, digest, diff_id, what, on_read)
    try:
        with open(blob_tmp, "wb") if blob_tmp else contextlib.nullcontext() as sink:
            raw = HashingReader(source, sink, on_read)
            tar_stream, compression = decompressed(raw, what)
            # an uncompressed blob is its own tar: one hash serves as digest and diff_id
            plain = HashingReader(tar_stream) if compression != "none" else None
            try:
                if work is not None:
                    unpack(plain or tar_stream, work, what)
                if plain is not None:
                    plain.drain()
            except BadInput:
                _blame_digest(raw, digest, what)
                raise
            raw.drain()
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    plain_digest = plain.digest if plain is not None else raw.digest
    verify(what, digest, raw.digest)
    verify(f"{what} (uncompressed)", diff_id, plain_digest)
    return StagedLayer(raw.digest, plain_digest, raw.size, compression, blob_tmp, work)


def _stage_forked(source: Readable, blob_tmp: Path | None, work: Path, digest: str | None,
                  diff_id: str | None, what: str, on_read: Callable[[int], None] | None) -> StagedLayer:
    """`stage` with the unpacking in a child (layer/unpack_process.py): this thread
    reads the blob, hashes and keeps it, and feeds the child through a pipe."""
    child = ChildUnpack(work, what)
    try:
        with open(blob_tmp, "wb") if blob_tmp else contextlib.nullcontext() as sink:
            raw = HashingReader(source, sink, on_read)
            while chunk := raw.read(COPY_CHUNK):
                child.feed(chunk)
        try:
            plain_digest, compression = child.result()
        except BadInput:
            _blame_digest(raw, digest, what)
            raise
    finally:
        child.close()
        close = getattr(source, "close", None)
        if close is not None:
            close()
    plain_digest = plain_digest or raw.digest
    verify(what, digest, raw.digest)
    verify(f"{what} (uncompressed)", diff_id, plain_digest)
    return StagedLayer(raw.digest, plain_digest, raw.size, compression, blob_tmp, work)


def _blame_digest(raw: HashingReader, digest: str | None, what: str) -> None:
    """A layer that fails to decompress or unpack may simply be the wrong bytes (a
    registry or a disk that corrupted them): when the blob does not match its digest,
    say that, which is the cause, rather than what the garbage looked like."""
    if digest is None:
        return
    try:
        raw.drain()
    except LayerfsError:
        return  # the stream itself failed: the first error stands
    verify(what, digest, raw.digest)


def copy_layer_tar(store: Store, digest: str, diff_id: str, out: Writable | None, what: str,
                   on_read: Callable[[int], None] | None = None) -> int:
    """Stream a stored layer blob decompressed into `out` (None: only check it), both
    digests verified on the way: what is written is the layer's tar, whose sha256 is
    `diff_id`. Returns the tar's size."""
    with store.open_blob(digest) as blob:
        raw = HashingReader(blob, on_read=on_read)
        stream, _compression = decompressed(raw, what)
        plain = HashingReader(stream)
        while chunk := plain.read(COPY_CHUNK):
            if out is not None:
                out.write(chunk)
        raw.drain()
    verify(f"{what} in the store at {store.root}", digest, raw.digest)
    verify(f"{what} in the store at {store.root} (uncompressed)", diff_id, plain.digest)
    return plain.size
