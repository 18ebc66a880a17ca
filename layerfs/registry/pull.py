"""Pull an image from a registry into the store, through the verified import path.

The manifest (the host's platform picked from an index) and the config are read
first; the layers become a SourceImage whose streams are resumable blob
downloads, which the importer stages in parallel: each blob is hashed, kept,
decompressed, hashed again and unpacked while it downloads, and nothing is
visible in the store until every layer checked out. Blobs the store already has
(another image shares them) are never requested. The manifest is kept byte for
byte, so the pulled image's digest is the registry's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from layerfs.errors import BadInput
from layerfs.image.catalog import Image
from layerfs.image.importer import import_image
from layerfs.image.manifest import Descriptor, Manifest, host_platform, parse_json
from layerfs.image.source import SourceImage, SourceLayer
from layerfs.progress import Progress
from layerfs.registry.blobinfo import BlobInfo
from layerfs.registry.blobs import BlobReader, read_small_blob
from layerfs.registry.client import Access, Registry
from layerfs.registry.manifests import Fetched, Platform, choose, fetch_manifest
from layerfs.registry.reference import RemoteReference
from layerfs.store.digest import sha256_of, verify
from layerfs.store.layout import Store

DEFAULT_JOBS = 6


@dataclass(frozen=True)
class Resolved:
    """A remote image as its registry describes it, before any layer is read."""

    ref: RemoteReference
    manifest: Fetched          # the platform's image manifest
    index: Fetched | None      # the index it was chosen from, if any
    config: bytes

    @property
    def layers(self) -> list[Descriptor]:
        return list(Manifest.parse(self.manifest.data, f"{self.ref}: manifest").layers)


def default_platform() -> Platform:
    os_name, arch = host_platform()
    return Platform(os_name, arch)


def resolve(registry: Registry, ref: RemoteReference, platform: Platform | None) -> Resolved:
    """Read REF's manifest (through an index if it is one) and its config."""
    what = str(ref)
    fetched = fetch_manifest(registry, ref.repository, ref.manifest_ref, what)
    index = None
    if fetched.is_index:
        index = fetched
        chosen = choose(index, platform or default_platform(), what)
        fetched = fetch_manifest(registry, ref.repository, chosen.digest, f"{what} ({platform or 'host'})")
    manifest = Manifest.parse(fetched.data, f"{what}: manifest")
    config = read_small_blob(registry, ref.repository, manifest.config.digest, manifest.config.size)
    verify(f"{what}: config", manifest.config.digest, sha256_of(config))
    if index is None and platform is not None:
        doc = parse_json(config, f"{what}: config")
        have = Platform(str(doc.get("os")), str(doc.get("architecture")), doc.get("variant") or None)
        if (have.os, have.architecture) != (platform.os, platform.architecture):
            raise BadInput(f"{what} is a single-platform image for {have}, not {platform}")
    return Resolved(ref, fetched, index, config)


def pull(store: Store, ref: RemoteReference, access: Access, progress: Progress, *,
         platform: Platform | None = None, jobs: int = DEFAULT_JOBS) -> tuple[Image, str | None]:
    """Pull REF into the store under its normalised name; returns the image and the name."""
    cancel = threading.Event()
    registry = Registry(ref.api_host, ref.repository, access, cancel)
    try:
        resolved = resolve(registry, ref, platform)
        layers = resolved.layers

        def opener(layer: Descriptor):  # noqa: ANN202
            return lambda scratch: BlobReader(registry, ref.repository, layer.digest, layer.size)

        source = SourceImage(
            layers=[SourceLayer(opener(layer), layer.digest, layer.size) for layer in layers],
            config=resolved.config, manifest=resolved.manifest.data, cancel=cancel.set)
        image, name = import_image(store, source, ref.local_name, progress, jobs=jobs)
        _remember(store, ref, image, layers)
        return image, name
    finally:
        registry.close()


def _remember(store: Store, ref: RemoteReference, image: Image, layers: list[Descriptor]) -> None:
    pairs = [(layer.digest, diff_id) for layer, diff_id in zip(layers, image.diff_ids)]
    digests = [layer.digest for layer in layers] + [image.manifest.config.digest]
    BlobInfo(store).record(pairs, [(digest, ref.registry, ref.repository) for digest in digests])
