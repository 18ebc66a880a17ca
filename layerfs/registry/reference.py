"""Remote image references, normalised as docker does.

    alpine                        -> docker.io/library/alpine:latest
    user/app:1                    -> docker.io/user/app:1
    host:5000/team/app@sha256:... -> host:5000/team/app@sha256:...
    name:tag@sha256:...           -> the digest decides; the tag is kept as the local name

The first path component is a registry when it holds a "." or a ":" or is
`localhost` (docker's rule); otherwise the image lives on Docker Hub, whose
one-component names sit under `library/`. Docker Hub's API host is not docker.io.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerfs.errors import BadInput
from layerfs.image.reference import (DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API, HUB_ALIASES, parse_reference,
                                     split_registry)

_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


def normalize_registry(text: str) -> str:
    """A registry as a user names it for login and logout: `https://host/`, `host/v2/`,
    `index.docker.io` all mean the host; Docker Hub is docker.io."""
    host = re.sub(r"^[a-z]+://", "", text.strip()).split("/", 1)[0]
    if not host or not _HOST.match(host):
        raise BadInput(f"invalid registry {text!r}: expected HOST or HOST:PORT")
    return DOCKER_HUB if host.lower() in HUB_ALIASES | {DOCKER_HUB} else host


@dataclass(frozen=True)
class RemoteReference:
    registry: str         # host[:port]; docker.io for Docker Hub
    repository: str       # path in the registry, e.g. library/alpine
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """Where the distribution API of the registry answers."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def manifest_ref(self) -> str:
        """What to ask /v2/<repo>/manifests/ for: the digest wins over the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def local_name(self) -> str | None:
        """The store name a pulled image gets: name:tag, or none for a digest alone."""
        if self.digest and not self.tag:
            return None
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_remote(text: str, *, default_tag: bool = True) -> RemoteReference:
    """Parse `[docker://]NAME[:TAG][@DIGEST]` into a normalised reference.

    `default_tag=False` keeps a missing tag missing (for `tags docker://NAME`)."""
    raw = text.removeprefix("docker://").removeprefix("//")
    if not raw:
        raise BadInput("empty image reference")
    name_tag, _, digest = raw.partition("@")
    ref = parse_reference(name_tag)
    name, tag = ref.name, ref.tag
    if ":" not in name_tag.rsplit("/", 1)[-1] and (digest or not default_tag):
        tag = None  # no tag given: none is made up beside a digest, or for `tags`
    if digest:
        parse_reference(f"{name}@{digest}")  # the digest's own check and message
    registry, repository = split_registry(name)
    if repository != repository.lower():
        raise BadInput(f"invalid image name {text!r}: repository names must be lowercase")
    return RemoteReference(registry, repository, tag, digest or None)
