"""`load`: every image of a docker-archive or oci-archive, with all its names, into the store.

Each image goes through the one verified import path (`import_image`): every digest
and diff_id checked while it streams, nothing visible before index.json is replaced.
An archive of several images is checked whole first (every name, and every layer
against its digests), so that a bad image late in it fails the load before the first
is imported and the store stays as it was. A compressed archive (`docker save | gzip`)
and standard input are spooled, decompressed, to an unnamed scratch file first: a tar
is read by random access, and a pipe allows none.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerfs.errors import BadInput, LayerfsError
from layerfs.image.catalog import Catalog, Image, reference_name
from layerfs.image.importer import import_image
from layerfs.image.manifest import diff_ids, parse_json
from layerfs.image.source import SourceImage, TarFiles
from layerfs.image.transports import archive_images
from layerfs.layer.compression import decompressed, sniff
from layerfs.layer.stored import is_unpacked
from layerfs.progress import Progress
from layerfs.store.digest import HashingReader, Readable, verify
from layerfs.store.layout import Store

CHUNK = 1 << 20


@dataclass
class Loaded:
    """An image now in the store, with the names the archive gave it (maybe none)."""

    image: Image
    names: list[str]


def load_archive(store: Store, archive: Path | Readable, label: str, progress: Progress) -> list[Loaded]:
    """Import every image of `archive` (a file, or a stream such as standard input, which
    `label` names in messages) and return them in archive order."""
    with _opened(store, archive, label) as files:
        listed = [(source, _names(files.label, names)) for source, names in archive_images(files)]
        if len(listed) > 1:
            _check_layers(store, listed, progress)
        loaded = []
        for source, names in listed:
            image, _ = import_image(store, source, names[0] if names else None, progress)
            if names[1:]:
                _add_names(store, image, names[1:])
            loaded.append(Loaded(image, names))
    return loaded


def _names(label: str, names: list[str]) -> list[str]:
    """The archive's names in the store's form, all checked before anything is imported."""
    checked = []
    for name in names:
        try:
            normal = reference_name(name)
        except BadInput as e:
            raise BadInput(f"{label}: cannot name an image {name!r}: {e.message}") from None
        if normal not in checked:
            checked.append(normal)
    return checked


def _add_names(store: Store, image: Image, names: list[str]) -> None:
    """The names after the first (which the import gave), in one index.json."""
    catalog = Catalog(store)
    with store.locked(), catalog.batch():
        descriptor = catalog.descriptor(image)
        for name in names:
            catalog.name(descriptor, name)


def _check_layers(store: Store, listed: list[tuple[SourceImage, list[str]]], progress: Progress) -> None:
    """Read each distinct layer once against the digests its image claims, as the import
    will (layers the store holds already and the import will not read are skipped)."""
    seen: set[tuple[str | None, str]] = set()
    for source, names in listed:
        claimed = diff_ids(parse_json(source.config or b"", "image config"))
        if len(claimed) != len(source.layers):
            raise BadInput(f"image config lists {len(claimed)} layers but the manifest has {len(source.layers)}")
        for number, (layer, diff_id) in enumerate(zip(source.layers, claimed), 1):
            key = (layer.digest, diff_id)
            stored = layer.digest is not None and store.has_blob(layer.digest) and is_unpacked(store, diff_id)
            if key in seen or stored:
                continue
            seen.add(key)
            what = f"layer {number}/{len(claimed)} of {names[0] if names else 'an unnamed image'}"
            progress.task(f"checking {what}", layer.size)
            stream = layer.open(store.tmp)
            try:
                raw = HashingReader(stream, on_read=progress.advance)
                plain = HashingReader(decompressed(raw, what)[0])
                plain.drain()
                raw.drain()
            finally:
                getattr(stream, "close", lambda: None)()
            verify(what, layer.digest, raw.digest)
            verify(f"{what} (uncompressed)", diff_id, plain.digest)


# -- opening the archive ---------------------------------------------------------------------


@contextlib.contextmanager
def _opened(store: Store, archive: Path | Readable, label: str) -> Iterator[TarFiles]:
    """The archive as random-access files: a plain tar file as it is, anything else
    (compressed, a stream, or a path that is a pipe) through an unnamed spool file
    that vanishes with us."""
    with contextlib.ExitStack() as stack:
        path = archive if isinstance(archive, Path) else None
        if path is not None:
            f = stack.enter_context(open(path, "rb"))
            archive = f
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                if sniff(f.read(4)) != "none":
                    path = None
                f.seek(0)
            else:  # read once, as it comes
                path = None
        if path is None:
            spool = stack.enter_context(_spooled(store, archive, label))  # type: ignore[arg-type]
            path = Path(f"/proc/self/fd/{spool.fileno()}")
        files = _tar_files(path, label)
        stack.callback(files.close)
        yield files


@contextlib.contextmanager
def _spooled(store: Store, stream: Readable, label: str) -> Iterator[BinaryIO]:
    """`stream` decompressed into an unnamed file, in the store's scratch area when there
    is one (same disk as the layers it becomes), else the system's temporary directory.
    Unnamed, so no clean-up of tmp/ by another writer can take it away midway."""
    where = store.tmp if store.tmp.is_dir() else None
    with tempfile.TemporaryFile(dir=where) as spool:
        plain, _kind = decompressed(stream, label)
        try:
            while chunk := plain.read(CHUNK):
                spool.write(chunk)
        except OSError as e:
            raise LayerfsError(f"cannot spool {label} to {where or tempfile.gettempdir()}: "
                               f"{(e.strerror or str(e)).lower()}") from None
        spool.flush()
        yield spool


def _tar_files(path: Path, label: str) -> TarFiles:
    try:
        files = TarFiles(path)
    except (BadInput, tarfile.TarError, EOFError):
        raise BadInput(f"{label} is not a readable tar archive (not a tar, or cut short): give a "
                       "docker-archive or an oci-archive (`layerfs save`, `docker save`, "
                       "`podman save`)") from None
    files.label = label
    return files
