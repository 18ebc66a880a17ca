"""Reading a registry without pulling: tags of a repository, an image's manifest
and config (`inspect docker://`, as skopeo inspect)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urljoin

from layerfs.registry.auth import scope
from layerfs.registry.client import Access, Registry, parse_json_body
from layerfs.registry.manifests import Platform
from layerfs.registry.pull import Resolved, resolve
from layerfs.registry.reference import RemoteReference

PAGE = 1000


def list_tags(ref: RemoteReference, access: Access) -> list[str]:
    """Every tag of REF's repository."""
    with Registry(ref.api_host, ref.repository, access) as registry:
        return _tags(registry, ref)


def _tags(registry: Registry, ref: RemoteReference) -> list[str]:
    """The tags, following the Link pagination of the spec."""
    tags: list[str] = []
    path: str | None = f"/v2/{ref.repository}/tags/list?n={PAGE}"
    while path:
        response = registry.send("GET", path, (scope(ref.repository, "pull"),))
        if response.status_code != 200:
            raise registry.fail(response, f"tags of {ref.name}")
        doc = parse_json_body(response, f"tags of {ref.name}")
        tags += [t for t in (doc.get("tags") or []) if isinstance(t, str)]
        link = response.headers.get("link", "")
        path = None
        if 'rel="next"' in link and "<" in link:
            path = urljoin(registry.url(f"/v2/{ref.repository}/tags/list"),
                           link.split("<", 1)[1].split(">", 1)[0])
    return tags


def remote_image(ref: RemoteReference, access: Access, platform: Platform | None,
                 with_tags: bool = False) -> tuple[Resolved, list[str]]:
    """REF's manifest and config, and with `with_tags` its repository's tags, read in
    one session (one ping, one token)."""
    with Registry(ref.api_host, ref.repository, access) as registry:
        resolved = resolve(registry, ref, platform)
        return resolved, (_tags(registry, ref) if with_tags else [])


def skopeo_inspect(resolved: Resolved, tags: list[str]) -> dict[str, Any]:
    """The document `skopeo inspect docker://REF` prints."""
    config = json.loads(resolved.config)
    process = config.get("config") or {}
    layers = resolved.layers
    return {
        "Name": resolved.ref.name,
        "Digest": (resolved.index or resolved.manifest).digest,
        "RepoTags": tags,
        "Created": config.get("created"),
        "DockerVersion": config.get("docker_version", ""),
        "Labels": process.get("Labels"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        "Layers": [layer.digest for layer in layers],
        "LayersData": [{"MIMEType": layer.media_type, "Digest": layer.digest, "Size": layer.size,
                        "Annotations": None} for layer in layers],
        "Env": process.get("Env"),
    }
