"""Registry credentials in the files podman, skopeo and docker already use.

Lookup order is containers-auth.json(5)'s: --authfile, $REGISTRY_AUTH_FILE,
${XDG_RUNTIME_DIR}/containers/auth.json, ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json, then
docker's $DOCKER_CONFIG/config.json (~/.docker/config.json), so a `podman login` or
`docker login` made earlier is reused. `login` writes where podman does. Entries
are `{"auths": {KEY: {"auth": base64("user:password")}}}`; a KEY may be a host, a
host/namespace (the longest match wins) or docker's `https://index.docker.io/v1/`.
Credential helpers are not run: a registry listed under credHelpers fails with a
line saying so rather than silently going anonymous (a credsStore is ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerfs.errors import BadInput, LayerfsError
from layerfs.registry.reference import DOCKER_HUB, normalize_registry
from layerfs.store.layout import write_atomic


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def parse_creds(text: str) -> Credentials:
    """`--creds USER[:PASSWORD]` (skopeo's spelling)."""
    user, _, password = text.partition(":")
    if not user:
        raise BadInput("--creds needs USER[:PASSWORD]")
    return Credentials(user, password)


def _home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def _config_auth() -> Path:
    """$XDG_CONFIG_HOME/containers/auth.json (~/.config by default), where podman
    falls back to when $XDG_RUNTIME_DIR is missing."""
    config = os.environ.get("XDG_CONFIG_HOME")
    return (Path(config) if config else _home() / ".config") / "containers" / "auth.json"


def write_path(authfile: Path | None) -> Path:
    """Where `login` writes: the file asked for, else podman's default."""
    if authfile is not None:
        return authfile
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(os.environ["REGISTRY_AUTH_FILE"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "containers" / "auth.json"
    return _config_auth()


def read_paths(authfile: Path | None) -> list[Path]:
    """Every file looked in, first match wins; only the given one with --authfile."""
    if authfile is not None:
        return [authfile]
    paths = [write_path(None), _config_auth()]
    docker = Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG") else _home() / ".docker"
    paths.append(docker / "config.json")
    return list(dict.fromkeys(paths))


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes() or b"{}")
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise LayerfsError(f"cannot read credentials file {path}: permission denied") from None
    except ValueError as e:
        raise BadInput(f"credentials file {path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise BadInput(f"credentials file {path} has no valid \"auths\" object")
    return doc


def _key_host(key: str) -> tuple[str, str]:
    """(registry, namespace) an auths key stands for."""
    bare = re.sub(r"^[a-z]+://", "", key).rstrip("/")
    host, _, path = bare.partition("/")
    if path in ("v1", "v2"):
        path = ""
    return normalize_registry(host) if host else host, path


def _decode(entry: Any, key: str, path: Path) -> Credentials | None:
    if not isinstance(entry, dict) or not entry.get("auth"):
        return None
    try:
        user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, TypeError):
        raise BadInput(f"credentials file {path}: the entry for {key} is not base64 of user:password") from None
    return Credentials(user, password)


def lookup(registry: str, repository: str, authfile: Path | None) -> Credentials | None:
    """The stored credentials for REGISTRY/REPOSITORY, or None (anonymous)."""
    for path in read_paths(authfile):
        doc = _load(path)
        best: tuple[int, Credentials | None, str] | None = None
        for key, entry in doc.get("auths", {}).items():
            try:
                host, namespace = _key_host(key)
            except BadInput:
                continue
            if host != registry or (namespace and not f"{repository}/".startswith(f"{namespace}/")):
                continue
            if best is None or len(namespace) > best[0]:
                best = (len(namespace), _decode(entry, key, path), key)
        if best is not None and best[1] is not None:
            return best[1]
        if registry in (doc.get("credHelpers") or {}):
            raise LayerfsError(f"{path} keeps the credentials for {registry} in a credential helper, "
                               "which layerfs does not run: use `layerfs login` or --creds")
    return None


def store(registry: str, creds: Credentials, authfile: Path | None) -> Path:
    """Save a login (replacing an older one for the same registry); returns the file."""
    path = write_path(authfile)
    doc = _load(path)
    auths = doc.setdefault("auths", {})
    for key in [k for k in auths if _safe_host(k) == (registry, "")]:
        del auths[key]
    auths[registry] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)
    return path


def _safe_host(key: str) -> tuple[str, str] | None:
    try:
        return _key_host(key)
    except BadInput:
        return None


def remove(registry: str | None, authfile: Path | None) -> list[Path]:
    """Forget the login for `registry` (None: every login) in every file it is in;
    returns the files changed."""
    changed = []
    for path in read_paths(authfile):
        doc = _load(path)
        auths = doc.get("auths", {})
        doomed = list(auths) if registry is None else [k for k in auths if _safe_host(k) == (registry, "")]
        if doomed:
            for key in doomed:
                del auths[key]
            write_atomic(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)
            changed.append(path)
    return changed


def hub_key(registry: str) -> str:
    return "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
