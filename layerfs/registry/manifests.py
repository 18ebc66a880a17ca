"""Manifests from a registry: fetched by tag or digest, verified, and the host's
platform picked from an image index (manifest list).

A manifest fetched by digest must hash to that digest; one fetched by tag is
whatever the registry says, and its digest is computed from the bytes (a
Docker-Content-Digest header that disagrees is an error: the registry lies).
Schema 1 manifests (deprecated since 2017, signed and unverifiable here) are
refused with a line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerfs.errors import BadInput
from layerfs.image.manifest import (DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, OCI_INDEX, OCI_MANIFEST,
                                    Descriptor, parse_json)
from layerfs.registry.auth import scope
from layerfs.registry.client import Registry, RegistryError
from layerfs.store.digest import sha256_of

ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST])
MANIFEST_LIMIT = 4 << 20   # the distribution server's own limit for a manifest
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    media_type: str
    digest: str

    @property
    def doc(self) -> dict[str, Any]:
        return parse_json(self.data, f"manifest {self.digest}")

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (self.media_type == "" and "manifests" in self.doc)


def fetch_manifest(registry: Registry, repository: str, reference: str, what: str) -> Fetched:
    """GET /v2/REPO/manifests/REFERENCE (a tag or a digest), verified."""
    response = registry.send("GET", f"/v2/{repository}/manifests/{reference}",
                             (scope(repository, "pull"),), headers={"Accept": ACCEPT}, stream=True)
    try:
        if response.status_code != 200:
            raise registry.fail(response, what)
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > MANIFEST_LIMIT:
                raise BadInput(f"{what}: the manifest is larger than {MANIFEST_LIMIT >> 20} MiB")
    finally:
        response.close()
    digest = sha256_of(data)
    if reference.startswith("sha256:") and digest != reference:
        raise BadInput(f"{what}: the registry sent a manifest whose digest is {digest}, not {reference}")
    claimed = response.headers.get("docker-content-digest")
    if claimed and claimed.startswith("sha256:") and claimed != digest:
        raise BadInput(f"{what}: the registry says the manifest is {claimed}, its bytes hash to {digest}")
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    doc = parse_json(data, f"{what}: manifest")
    media_type = doc.get("mediaType") or media_type
    if media_type in SCHEMA1 or doc.get("schemaVersion") == 1:
        raise RegistryError(f"{what}: the registry serves only a schema 1 manifest, which layerfs "
                            "does not read (re-push the image with a current client)")
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST):
        if "manifests" in doc:
            media_type = OCI_INDEX
        elif "layers" in doc:
            media_type = OCI_MANIFEST
        else:
            raise BadInput(f"{what}: unknown manifest type {media_type!r}")
    return Fetched(data, media_type, digest)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise BadInput(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    return Platform(*parts)


def _entry_platform(entry: dict[str, Any]) -> Platform:
    plat = entry.get("platform") or {}
    return Platform(str(plat.get("os", "?")), str(plat.get("architecture", "?")), plat.get("variant") or None)


def choose(index: Fetched, want: Platform, what: str) -> Descriptor:
    """The manifest for `want` in an image index; the error names what exists."""
    entries = [e for e in index.doc.get("manifests") or [] if isinstance(e, dict)]
    runnable = [e for e in entries if (e.get("platform") or {}).get("architecture") != "unknown"]
    matches = [e for e in runnable
               if _entry_platform(e).os == want.os and _entry_platform(e).architecture == want.architecture
               and (want.variant is None or _entry_platform(e).variant in (want.variant, None))]
    if want.variant is not None:  # an exact variant beats an entry that names none
        matches.sort(key=lambda e: _entry_platform(e).variant != want.variant)
    if matches:
        return Descriptor.parse(matches[0], f"{what}: image index")
    have = ", ".join(sorted({str(_entry_platform(e)) for e in runnable})) or "no platforms"
    raise BadInput(f"{what} has no image for {want}; it has {have} (choose one with --platform)")
