"""`save`: images of the store written as one archive that docker, podman and skopeo load.

Two formats, as `docker save` / `podman save` write them:

- docker-archive: manifest.json (one {Config, RepoTags, Layers} entry per image), the
  config as `<hex>.json` (its sha256 is the image id, so a load gives the same id),
  every layer uncompressed as `<diff_id hex>.tar` (the format has no compressed
  layers), the legacy per-layer directories and `repositories` skopeo writes too.
- oci-archive: a tar of an OCI image layout holding the stored blobs byte for byte
  (manifest, config, compressed layers), so every digest and `name@sha256:`
  reference stays valid; index.json names each image as the store does.

Nothing leaves the store unverified: configs and manifests are checked on read, and
each layer is hashed while it streams, against its digest and (docker-archive, where
it is decompressed) its diff_id. A layer shared by several images is written once.
The caller gives the output (a file written atomically, or a pipe).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from layerfs.errors import BadInput
from layerfs.image.catalog import Catalog, Image, name_in
from layerfs.image.manifest import OCI_INDEX, OCI_MANIFEST, REF_NAME, Descriptor
from layerfs.image.tar_stream import TarWriter, Writer
from layerfs.image.transports.oci import CONTAINERD_NAME
from layerfs.layer.compression import sniff
from layerfs.layer.stored import copy_layer_tar
from layerfs.progress import Progress
from layerfs.store.digest import HashingReader, sha256_of, verify
from layerfs.store.layout import LAYOUT_VERSION, Store

CHUNK = 1 << 20
FORMATS = ("docker-archive", "oci-archive")


@dataclass
class Saved:
    """One image to write, with the names it is written under (none when given by id)."""

    image: Image
    names: list[str] = field(default_factory=list)


def chosen(store: Store, refs: list[str]) -> list[Saved]:
    """Resolve every REF (name, id or digest) before anything is written, so an unknown
    one fails the command with nothing made. A REF given by name puts that name into
    the archive; several REFs of one image make one entry with all their names."""
    catalog = Catalog(store)
    by_id: dict[str, Saved] = {}
    for ref in refs:
        image = catalog.resolve(ref)
        saved = by_id.setdefault(image.id, Saved(image))
        name = name_in(ref, image)  # the catalog's rule: `alpine` is docker.io/library/alpine
        if name is not None and name not in saved.names:
            saved.names.append(name)
    return list(by_id.values())


def write_archive(store: Store, saved: list[Saved], archive_format: str, out: Writer,
                  progress: Progress) -> None:
    if archive_format == "docker-archive":
        _docker_archive(store, saved, TarWriter(out), progress)
    elif archive_format == "oci-archive":
        _oci_archive(store, saved, TarWriter(out), progress)
    else:
        raise BadInput(f"unknown archive format {archive_format!r}: use one of {', '.join(FORMATS)}")


# -- layers ------------------------------------------------------------------------------------


def _plain_size(store: Store, layer: Descriptor, diff_id: str, tar: TarWriter, what: str,
                progress: Progress) -> int | None:
    """The uncompressed size a tar header needs: an uncompressed blob's own, None when the
    output can be patched later, else found by one checking pass (output to a pipe)."""
    with store.open_blob(layer.digest) as blob:
        compression = sniff(blob.read(4))
    if compression == "none":
        return layer.size
    if tar.seekable:
        return None
    progress.task(f"checking {what}", layer.size)
    return copy_layer_tar(store, layer.digest, diff_id, None, what, progress.advance)


def _layer_pairs(image: Image) -> list[tuple[Descriptor, str]]:
    layers, ids = image.manifest.layers, image.diff_ids
    if len(layers) != len(ids):
        raise BadInput(f"image {image.short_id} in the store is inconsistent: its manifest has "
                       f"{len(layers)} layers, its config {len(ids)}")
    return list(zip(layers, ids))


def _label(saved: Saved) -> str:
    return saved.names[0] if saved.names else saved.image.short_id


# -- docker-archive ------------------------------------------------------------------------


def _docker_archive(store: Store, saved: list[Saved], tar: TarWriter, progress: Progress) -> None:
    entries: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for item in saved:
        image = item.image
        config_name = f"{_hex(image.id)}.json"
        tar.file(config_name, store.read_blob(image.id))
        layer_names = []
        pairs = _layer_pairs(image)
        for number, (layer, diff_id) in enumerate(pairs, 1):
            name = f"{_hex(diff_id)}.tar"
            layer_names.append(name)
            if name in written:
                continue
            what = f"layer {number}/{len(pairs)} of {_label(item)}"
            size = _plain_size(store, layer, diff_id, tar, what, progress)
            progress.task(what, layer.size)
            tar.stream(name, size, lambda out, layer=layer, diff_id=diff_id, what=what:
                       copy_layer_tar(store, layer.digest, diff_id, out, what, progress.advance))
            written.add(name)
        top = _legacy_layers(tar, image, written)
        for name in item.names:
            repository, tag = name.rsplit(":", 1)
            repositories.setdefault(repository, {})[tag] = top
        entries.append({"Config": config_name, "RepoTags": item.names or None, "Layers": layer_names})
    tar.file("manifest.json", json.dumps(entries, separators=(",", ":")).encode())
    tar.file("repositories", _compact(repositories))
    tar.close()


_LEGACY_KEYS = ("architecture", "config", "container", "container_config", "created",
                "docker_version", "os")


def _legacy_layers(tar: TarWriter, image: Image, written: set[str]) -> str:
    """The pre-1.10 `docker save` layout beside manifest.json, as skopeo writes it: per
    layer `<id>/json`, `VERSION` and `layer.tar` (a link to the real one), ids chained
    through their parents; returns the top layer's id (what `repositories` names)."""
    chain = parent = ""
    for number, diff_id in enumerate(image.diff_ids, 1):
        chain = diff_id if not chain else sha256_of(f"{chain} {diff_id}".encode())
        layer: dict[str, Any] = {"parent": parent} if parent else {}
        if number == len(image.diff_ids):
            layer.update({key: image.config.get(key) for key in _LEGACY_KEYS})
        layer_id = _hex(sha256_of(_compact(dict(layer, layer_id=chain))))
        layer["id"] = layer_id
        if layer_id not in written:
            tar.symlink(f"{layer_id}/layer.tar", f"../{_hex(diff_id)}.tar")
            tar.file(f"{layer_id}/VERSION", b"1.0")
            tar.file(f"{layer_id}/json", _compact(layer))
            written.add(layer_id)
        parent = layer_id
    return parent


# -- oci-archive -----------------------------------------------------------------------------


def _oci_archive(store: Store, saved: list[Saved], tar: TarWriter, progress: Progress) -> None:
    """An OCI layout: each image's index entry named as the store names it, `name:tag`
    (skopeo's `oci-archive:FILE:name:tag` finds it, podman load takes it as the name), and
    the name again as containerd and docker 25+ look for it."""
    tar.file("oci-layout", json.dumps(LAYOUT_VERSION).encode())
    tar.directory("blobs")
    tar.directory("blobs/sha256")
    written: set[str] = set()
    manifests: list[dict[str, Any]] = []

    def small(digest: str) -> bytes:
        data = store.read_blob(digest)  # verified
        if digest not in written:
            tar.file(_blob_name(digest), data)
            written.add(digest)
        return data

    for item in saved:
        image = item.image
        manifest = small(image.digest)
        small(image.id)
        pairs = _layer_pairs(image)
        for number, (layer, _diff_id) in enumerate(pairs, 1):
            if layer.digest in written:
                continue
            what = f"layer {number}/{len(pairs)} of {_label(item)}"
            progress.task(what, layer.size)
            tar.stream(_blob_name(layer.digest), layer.size,
                       lambda out, layer=layer, what=what: _copy_blob(store, layer, out, what, progress))
            written.add(layer.digest)
        descriptor = Descriptor(image.manifest_doc.get("mediaType") or OCI_MANIFEST, image.digest,
                                len(manifest)).to_json()
        for name in item.names:
            manifests.append(dict(descriptor, annotations={REF_NAME: name, CONTAINERD_NAME: name}))
        if not item.names:
            manifests.append(descriptor)
    tar.file("index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                                      separators=(",", ":")).encode())
    tar.close()


def _copy_blob(store: Store, layer: Descriptor, out: Writer, what: str, progress: Progress) -> int:
    """A stored blob byte for byte, hashed as it goes: a damaged one fails the save."""
    with store.open_blob(layer.digest) as blob:
        raw = HashingReader(blob, on_read=progress.advance)
        while chunk := raw.read(CHUNK):
            out.write(chunk)
    verify(f"{what} in the store at {store.root}", layer.digest, raw.digest)
    return raw.size


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{_hex(digest)}"


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _compact(doc: dict[str, Any] | dict[str, dict[str, str]]) -> bytes:
    """JSON as Go's encoding/json writes a map: sorted keys, no spaces."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
