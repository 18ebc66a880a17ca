"""OCI image layouts (a directory, or a tar of one): index.json, blobs by digest."""

from __future__ import annotations

from layerfs.errors import BadInput, NotFound
from layerfs.image.manifest import (INDEX_TYPES, REF_NAME, Descriptor, Manifest, choose_platform,
                                    parse_json)
from layerfs.image.source import Files, SourceImage, SourceLayer
from layerfs.store.digest import sha256_of, verify

CONTAINERD_NAME = "io.containerd.image.name"  # docker 25+ and containerd name images by it


def blob_path(digest: str) -> str:
    algorithm, hexpart = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexpart}"


def read_verified(files: Files, desc: Descriptor, what: str) -> bytes:
    data = files.read(blob_path(desc.digest))
    verify(f"{files.label}: {what}", desc.digest, sha256_of(data))
    return data


def _pick(files: Files, index: dict, ref: str | None) -> Descriptor:
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise NotFound(f"{files.label} holds no images")
    if ref is None:
        if len(entries) > 1:
            names = [(e.get("annotations") or {}).get(REF_NAME, e.get("digest")) for e in entries]
            raise BadInput(f"{files.label} holds several images; name one as :REF ({', '.join(map(str, names))})")
        return Descriptor.parse(entries[0], f"{files.label}/index.json")
    for entry in entries:
        if (entry.get("annotations") or {}).get(REF_NAME) == ref:
            return Descriptor.parse(entry, f"{files.label}/index.json")
    raise NotFound(f"{files.label} has no image {ref!r}")


def oci_source(files: Files, ref: str | None) -> SourceImage:
    index = parse_json(files.read("index.json"), f"{files.label}/index.json")
    source = _image_source(files, _pick(files, index, ref), ref if ref and ":" in ref else None)
    source.closers.append(files.close)
    return source


def oci_images(files: Files) -> list[tuple[SourceImage, list[str]]]:
    """Every image of the layout with all its names (`load`): index entries of one manifest
    are one image. A name is the entry's io.containerd.image.name (docker 25+, containerd),
    else its ref.name when that is a whole `name:tag` (skopeo, podman, layerfs); a bare
    tag names nothing. The sources share `files` and do not close it: the caller does."""
    index = parse_json(files.read("index.json"), f"{files.label}/index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"{files.label} holds no images (its index.json lists no manifests)")
    by_digest: dict[str, tuple[Descriptor, list[str]]] = {}
    for entry in entries:
        desc = Descriptor.parse(entry, f"{files.label}/index.json")
        names = by_digest.setdefault(desc.digest, (desc, []))[1]
        name = _entry_name(entry)
        if name is not None and name not in names:
            names.append(name)
    return [(_image_source(files, desc, names[0] if names else None), names)
            for desc, names in by_digest.values()]


def _entry_name(entry: dict) -> str | None:
    annotations = entry.get("annotations") or {}
    if not isinstance(annotations, dict):
        return None
    for key in (CONTAINERD_NAME, REF_NAME):
        name = annotations.get(key)
        if isinstance(name, str) and ":" in name and "@" not in name:  # name:tag, not name@digest
            return name
    return None


def _image_source(files: Files, desc: Descriptor, name: str | None) -> SourceImage:
    """The image an index entry points at (this machine's, for an image index), its
    manifest and config verified and its layers checked to be there."""
    data = read_verified(files, desc, "manifest")
    doc = parse_json(data, f"{files.label}: manifest {desc.digest}")
    if desc.media_type in INDEX_TYPES or "manifests" in doc:
        desc = choose_platform(doc, f"{files.label}: image index {desc.digest}")
        data = read_verified(files, desc, "manifest")
    manifest = Manifest.parse(data, f"{files.label}: manifest {desc.digest}")
    config = read_verified(files, manifest.config, "config")
    for layer in manifest.layers:
        if not files.exists(blob_path(layer.digest)):
            raise BadInput(f"{files.label}: manifest names layer {layer.digest}, which is missing")

    def opener(digest: str):  # noqa: ANN202
        return lambda scratch: files.open(blob_path(digest))

    return SourceImage(
        layers=[SourceLayer(opener(layer.digest), layer.digest, layer.size) for layer in manifest.layers],
        config=config, manifest=data, name=name)
