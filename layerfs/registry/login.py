"""Checking credentials before they are stored, whatever auth the registry wants."""

from __future__ import annotations

from dataclasses import replace

from layerfs.registry.auth import AuthError
from layerfs.registry.client import Access, Registry
from layerfs.registry.credentials import Credentials
from layerfs.registry.reference import DOCKER_HUB, DOCKER_HUB_API


def check_login(registry: str, creds: Credentials, access: Access) -> None:
    """Raise AuthError unless `creds` are accepted by `registry`: /v2/ must answer
    200 with them (Basic), or with a token its token server gave for them (Bearer)."""
    host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
    with Registry(host, "", replace(access, creds=creds)) as session:
        if session.auth.challenge is None:
            return  # the registry asks for nothing: any login works, as with docker
        response = session.send("GET", "/v2/", ())
        response.close()
        if response.status_code in (401, 403):
            raise AuthError(f"{registry} refused the user name or password of {creds.username!r}")
        if response.status_code != 200:
            raise session.fail(response, f"login to {registry}")
