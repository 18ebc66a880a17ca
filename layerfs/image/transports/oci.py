"""OCI image layouts (a directory, or a tar of one): index.json, blobs by digest."""

from __future__ import annotations

from layerfs.errors import BadInput, NotFound
from layerfs.image.manifest import (INDEX_TYPES, REF_NAME, Descriptor, Manifest, choose_platform,
                                    parse_json)
from layerfs.image.source import Files, SourceImage, SourceLayer
from layerfs.store.digest import sha256_of, verify


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
    desc = _pick(files, index, ref)
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
        config=config, manifest=data,
        name=ref if ref and ":" in ref else None,
        closers=[files.close])

