"""OCI and Docker manifests and configs: media types, parsing, and building new ones.

layerfs keeps a source's manifest byte for byte when it has one (so its digest,
and `name@sha256:` references to it, stay valid) and writes OCI manifests when it
must make one (plain tarballs, old docker-save archives).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from layerfs.errors import BadInput
from layerfs.store.digest import check_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
LAYER_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI spelling, to pick from multi-platform indexes."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
    return "linux", arch


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise BadInput(f"{what} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{what} is not a JSON object")
    return doc


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def parse(cls, doc: Any, what: str) -> "Descriptor":
        try:
            return cls(doc.get("mediaType", ""), check_digest(doc["digest"]), int(doc["size"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BadInput(f"{what}: malformed descriptor {doc!r}") from None
        except BadInput as e:
            raise BadInput(f"{what}: {e.message}") from None

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """The parts of an image manifest layerfs uses."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]

    @classmethod
    def parse(cls, data: bytes, what: str = "manifest") -> "Manifest":
        doc = parse_json(data, what)
        media_type = doc.get("mediaType", OCI_MANIFEST)
        if media_type in INDEX_TYPES or "manifests" in doc:
            raise BadInput(f"{what} is an image index, not an image manifest")
        if "config" not in doc or not isinstance(doc.get("layers"), list):
            raise BadInput(f"{what} has no config or layers")
        return cls(media_type, Descriptor.parse(doc["config"], what),
                   [Descriptor.parse(layer, what) for layer in doc["layers"]])


def build_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }, indent=2).encode()


def diff_ids(config: dict[str, Any], what: str = "image config") -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        raise BadInput(f"{what} has no rootfs.diff_ids")
    try:
        return [check_digest(d) for d in ids]
    except BadInput as e:
        raise BadInput(f"{what}: {e.message}") from None


def choose_platform(index: dict[str, Any], what: str) -> Descriptor:
    """Pick this machine's manifest from a multi-platform image index."""
    want_os, want_arch = host_platform()
    entries = index.get("manifests") or []
    for entry in entries:
        plat = entry.get("platform") or {}
        if plat.get("os") == want_os and plat.get("architecture") == want_arch:
            return Descriptor.parse(entry, what)
    if len(entries) == 1:
        return Descriptor.parse(entries[0], what)
    raise BadInput(f"{what} has no image for {want_os}/{want_arch}")
