"""The images in a store: index.json entries grouped by manifest, and reference resolution.

index.json holds one descriptor per name (`org.opencontainers.image.ref.name` =
"name:tag"), plus at most one unnamed descriptor for an image that has no name
left, as OCI tools expect. An image's id is its config digest, as in docker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from layerfs.errors import BadInput, Busy, LayerfsError, NotFound
from layerfs.image.manifest import REF_NAME, Descriptor, Manifest, diff_ids, parse_json
from layerfs.image.reference import (DIGEST_ALGORITHM, docker_normalized, is_digest, is_full_id, is_id_prefix,
                                     parse_reference)
from layerfs.layer.stored import unpacked_size
from layerfs.store.layout import Store


@dataclass
class Image:
    """One image of the store, with every name that points at it."""

    digest: str
    manifest: Manifest
    manifest_doc: dict[str, Any]
    config: dict[str, Any]
    names: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.manifest.config.digest

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def diff_ids(self) -> list[str]:
        return diff_ids(self.config)

    @property
    def created(self) -> str:
        return str(self.config.get("created", ""))


@dataclass(frozen=True)
class Use:
    """Something an image must not be removed under, in words for an error line:
    `what` it is ("used by container web") and the `remedy` ("remove the container")."""

    what: str
    remedy: str


@dataclass
class Removal:
    """What removing one reference did, for `rmi` to report as docker does."""

    image: Image
    untagged: list[str]
    deleted: bool
    kept_for: Use | None = None  # what still uses the image, kept unnamed for it


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[str, Any] | None = None  # index.json being edited by batch()

    def _index(self) -> dict[str, Any]:
        return self._pending if self._pending is not None else self.store.read_index()

    def _publish(self, index: dict[str, Any]) -> None:
        if self._pending is not None:
            self._pending = index
        else:
            self.store.write_index(index)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publish every edit made in the block as one index.json, or none if the block
        fails: a command given several references changes all of them or nothing.
        Reads in the block see the edits made so far (callers hold store.locked())."""
        self._pending = self.store.read_index()
        try:
            yield
            self.store.write_index(self._pending)
        finally:
            self._pending = None

    # -- reading ----------------------------------------------------------------------

    def _load(self, digest: str, names: list[str]) -> Image:
        data = self.store.read_blob(digest)
        manifest = Manifest.parse(data, f"manifest {digest}")
        config = parse_json(self.store.read_blob(manifest.config.digest), f"config {manifest.config.digest}")
        return Image(digest, manifest, parse_json(data, "manifest"), config, names)

    def images(self) -> list[Image]:
        """Every image, in the order first named, each with all its names.

        Readers take no lock, so an rmi may publish an index without an image and
        delete its blobs between our reading index.json and its blobs: such an image
        is left out, as if the index had been read a moment later."""
        found = []
        for digest, refs in _names_by_manifest(self._index()).items():
            try:
                found.append(self._load(digest, refs))
            except NotFound:
                if digest in _names_by_manifest(self.store.read_index()):
                    raise  # still listed: the store really lacks the blob
        return found

    def size(self, image: Image) -> int:
        return sum(unpacked_size(self.store, d) for d in image.diff_ids)

    def resolve(self, text: str) -> Image:
        """Find the image a user means: name[:tag], name@digest, sha256:id, or an id prefix."""
        images = self.images()
        if is_digest(text):
            for image in images:
                if text in (image.id, image.digest):
                    return image
            raise self._unknown(text)
        by_name: BadInput | None = None
        try:
            ref = parse_reference(text)
        except BadInput as e:
            by_name = e
        else:
            # as typed first (a local `app:1`), then as docker spells it in full (a
            # pulled `alpine` is stored as docker.io/library/alpine:latest)
            for name in dict.fromkeys((ref.name, docker_normalized(ref.name))):
                for image in images:
                    if ref.digest and image.digest == ref.digest and any(
                            n.rsplit(":", 1)[0] == name for n in image.names):
                        return image
                    if not ref.digest and f"{name}:{ref.tag}" in image.names:
                        return image
        if is_id_prefix(text) and ":" not in text.removeprefix("sha256:"):
            prefix = "sha256:" + text.removeprefix("sha256:")
            matches = [image for image in images if image.id.startswith(prefix)]
            if len({m.id for m in matches}) > 1:
                raise BadInput(f"image id prefix {text!r} is ambiguous: give more digits")
            if matches:
                return matches[0]
        if by_name is not None and not is_id_prefix(text):
            raise by_name
        raise self._unknown(text)

    def _unknown(self, text: str) -> NotFound:
        return NotFound(f"no image {text!r} in the store at {self.store.root} (see `layerfs images`)")

    # -- writing (callers hold store.locked()) ------------------------------------------

    def name(self, descriptor: Descriptor, name: str | None) -> None:
        """Point `name` (or, if None, an unnamed entry) at a stored manifest; names move."""
        index = self._index()
        entries = index["manifests"]
        same = [e for e in entries if e["digest"] == descriptor.digest]
        if name is None:
            if not same:
                entries.append(descriptor.to_json())
        else:
            losing = [e for e in entries if _ref_name(e) == name and e["digest"] != descriptor.digest]
            entries[:] = [e for e in entries if _ref_name(e) != name
                          and not (e["digest"] == descriptor.digest and not e.get("annotations"))]
            # an image that loses its last name stays, unnamed (docker's dangling <none>),
            # for `images` to list and `rmi` to remove: its blobs are never orphaned
            kept = {e["digest"] for e in entries}
            for entry in losing:
                if entry["digest"] not in kept:
                    entries.append({k: v for k, v in entry.items() if k != "annotations"})
                    kept.add(entry["digest"])
            entries.append(dict(descriptor.to_json(), annotations={REF_NAME: name}))
        self._publish(index)

    def descriptor(self, image: Image) -> Descriptor:
        media_type = image.manifest_doc.get("mediaType") or image.manifest.media_type
        size = self.store.blob_path(image.digest).stat().st_size
        return Descriptor(media_type, image.digest, size)

    def _untag(self, name: str) -> None:
        index = self._index()
        index["manifests"] = [e for e in index["manifests"]
                              if (e.get("annotations") or {}).get(REF_NAME) != name]
        self._publish(index)

    def _remove(self, image: Image) -> None:
        index = self._index()
        index["manifests"] = [e for e in index["manifests"] if e["digest"] != image.digest]
        self._publish(index)

    def remove_reference(self, ref: str, force: bool, use_of: Callable[[Image], Use | None]) -> Removal:
        """Remove what `ref` names, by docker's rules for rmi.

        A name is untagged, and the image goes with its last name. An id (or digest)
        means the image with all its names, which takes `force` when it has several,
        so that one command cannot drop names the user did not see. An image in use
        (`use_of` says by what: a container, a mount) is not removed under it:
        refused (Busy), or with `force` its names go and it stays, unnamed, for that use."""
        image = self.resolve(ref)
        name = name_in(ref, image)
        if name is not None and len(image.names) > 1:
            self._untag(name)
            return Removal(image, [name], deleted=False)
        if name is None and len(image.names) > 1 and not force:
            raise LayerfsError(f"image {ref} has several names ({', '.join(image.names)}): "
                               "remove them by name, or use -f to remove the image with all of them")
        use = use_of(image)
        if use is not None and not force:
            raise Busy(f"image {ref} is {use.what}: {use.remedy} first, or use -f to remove "
                       "only its names (the image then stays, unnamed, for that use)")
        descriptor = self.descriptor(image)
        self._remove(image)
        if use is not None:
            self.name(descriptor, None)
        return Removal(image, image.names, deleted=use is None, kept_for=use)

    def collect_garbage(self) -> tuple[int, set[str]]:
        """Delete blobs and unpacked layers no image references; return (bytes freed, live diff_ids)."""
        live_blobs: set[str] = set()
        live_layers: set[str] = set()
        for image in self.images():
            live_blobs.update([image.digest, image.id], (d.digest for d in image.manifest.layers))
            live_layers.update(image.diff_ids)
        freed = 0
        for entry in os.scandir(self.store.blobs):
            if "sha256:" + entry.name not in live_blobs:
                freed += entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
        for entry in os.scandir(self.store.layers):
            if "sha256:" + entry.name not in live_layers:
                shutil.rmtree(entry.path)
        return freed, live_layers


def _ref_name(entry: dict[str, Any]) -> str | None:
    return (entry.get("annotations") or {}).get(REF_NAME)


def _names_by_manifest(index: dict[str, Any]) -> dict[str, list[str]]:
    """manifest digest -> its names, in index order (an unnamed entry gives no name)."""
    names: dict[str, list[str]] = {}
    for entry in index["manifests"]:
        listed = names.setdefault(entry["digest"], [])
        ref = (entry.get("annotations") or {}).get(REF_NAME)
        if ref:
            listed.append(ref)
    return names


def name_in(ref: str, image: Image) -> str | None:
    """The stored name that `ref` spells, if it is one of the image's names (else `ref`
    is an id, digest or name@digest and means the image itself)."""
    try:
        parsed = parse_reference(ref)
    except BadInput:
        return None
    if parsed.digest:
        return None
    for name in (str(parsed), f"{docker_normalized(parsed.name)}:{parsed.tag}"):
        if name in image.names:
            return name
    return None


def reference_name(text: str) -> str:
    """Normalise a NAME[:TAG] given on the command line to the stored "name:tag" form.

    Names that read as a digest (`sha256:abcd`) or an image id (64 hex digits) are
    refused, as docker refuses them: every command would take them for the digest or
    id of some other image."""
    ref = parse_reference(text)
    if ref.digest:
        raise BadInput(f"cannot name an image {text!r}: a name may not contain a digest")
    if ref.name == DIGEST_ALGORITHM:
        raise BadInput(f"refusing to create an ambiguous name {text!r}: {DIGEST_ALGORITHM!r} as a "
                       "repository name reads as a digest algorithm")
    if is_full_id(ref.name):
        raise BadInput(f"invalid repository name {text!r}: 64 hexadecimal digits read as an image id")
    return str(ref)

