"""The images in a store: index.json entries grouped by manifest, and reference resolution.

index.json holds one descriptor per name (`org.opencontainers.image.ref.name` =
"name:tag"), plus at most one unnamed descriptor for an image that has no name
left, as OCI tools expect. An image's id is its config digest, as in docker.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.image.manifest import REF_NAME, Descriptor, Manifest, diff_ids, parse_json
from layerfs.image.reference import is_digest, is_id_prefix, parse_reference
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


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading ----------------------------------------------------------------------

    def _load(self, digest: str, names: list[str]) -> Image:
        data = self.store.read_blob(digest)
        manifest = Manifest.parse(data, f"manifest {digest}")
        config = parse_json(self.store.read_blob(manifest.config.digest), f"config {manifest.config.digest}")
        return Image(digest, manifest, parse_json(data, "manifest"), config, names)

    def images(self) -> list[Image]:
        """Every image, in the order first named, each with all its names."""
        names: dict[str, list[str]] = {}
        for entry in self.store.read_index()["manifests"]:
            listed = names.setdefault(entry["digest"], [])
            ref = (entry.get("annotations") or {}).get(REF_NAME)
            if ref:
                listed.append(ref)
        return [self._load(digest, refs) for digest, refs in names.items()]

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
            for image in images:
                if ref.digest and image.digest == ref.digest and any(
                        n.rsplit(":", 1)[0] == ref.name for n in image.names):
                    return image
                if not ref.digest and str(ref) in image.names:
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
        index = self.store.read_index()
        entries = index["manifests"]
        same = [e for e in entries if e["digest"] == descriptor.digest]
        if name is None:
            if not same:
                entries.append(descriptor.to_json())
        else:
            entries[:] = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != name
                          and not (e["digest"] == descriptor.digest and not e.get("annotations"))]
            entries.append(dict(descriptor.to_json(), annotations={REF_NAME: name}))
        self.store.write_index(index)

    def descriptor(self, image: Image) -> Descriptor:
        media_type = image.manifest_doc.get("mediaType") or image.manifest.media_type
        size = self.store.blob_path(image.digest).stat().st_size
        return Descriptor(media_type, image.digest, size)

    def untag(self, image: Image, name: str) -> None:
        """Remove one name; an image left with no name is removed too."""
        index = self.store.read_index()
        index["manifests"] = [e for e in index["manifests"]
                              if (e.get("annotations") or {}).get(REF_NAME) != name]
        self.store.write_index(index)

    def remove(self, image: Image) -> None:
        index = self.store.read_index()
        index["manifests"] = [e for e in index["manifests"] if e["digest"] != image.digest]
        self.store.write_index(index)

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


def reference_name(text: str) -> str:
    """Normalise a NAME[:TAG] given on the command line to the stored "name:tag" form."""
    ref = parse_reference(text)
    if ref.digest:
        raise LayerfsError(f"cannot name an image {text!r}: a name may not contain a digest")
    return str(ref)

