"""Image references as users type them: `name[:tag]`, `name@sha256:...`, or an image id.

The grammar is the distribution spec's: lowercase path components separated by
"/", optionally after a registry host[:port]; a tag of up to 128 word characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerfs.errors import BadInput

DEFAULT_TAG = "latest"
DIGEST_ALGORITHM = "sha256"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?/)?"
_NAME = re.compile(rf"^{_HOST}{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def split_registry(name: str) -> tuple[str, str]:
    """(registry, repository) of a name without tag or digest, docker's way."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry = DOCKER_HUB if first.lower() in HUB_ALIASES else first
        repository = rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def docker_normalized(name: str) -> str:
    """NAME as docker spells it in full: alpine is docker.io/library/alpine."""
    registry, repository = split_registry(name)
    return f"{registry}/{repository}"


@dataclass(frozen=True)
class Reference:
    """A parsed `name:tag` or `name@digest`."""

    name: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or DEFAULT_TAG}"


def parse_reference(text: str) -> Reference:
    """Parse `name[:tag]` or `name@sha256:...`; a missing tag means `latest`."""
    if "@" in text:
        name, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise BadInput(f"invalid reference {text!r}: expected name@sha256:<64 hex digits>")
        _check_name(name, text)
        return Reference(name, digest=digest)
    name, tag = text, DEFAULT_TAG
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = text[: len(text) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
        if not _TAG.match(tag):
            raise BadInput(f"invalid tag {tag!r} in {text!r}: letters, digits, '_', '.', '-' only")
    _check_name(name, text)
    return Reference(name, tag=tag)


def _check_name(name: str, text: str) -> None:
    if not _NAME.match(name) or len(name) > 255:
        raise BadInput(f"invalid image name {text!r}: use lowercase letters, digits, '.', '_', '-' and '/'")


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def is_id_prefix(text: str) -> bool:
    """Could `text` be an abbreviated image id (a prefix of the config digest's hex)?"""
    return bool(_HEX.match(text.removeprefix("sha256:")))


def is_full_id(text: str) -> bool:
    """Is `text` a whole image id without its algorithm (64 lowercase hex digits)?"""
    return bool(_FULL_ID.match(text))
