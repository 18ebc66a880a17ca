"""Registry authentication: Basic, and the bearer token flow of the distribution spec.

A registry answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`;
the client asks the realm for a token covering every scope it needs in one request
(cross-repository mounts need pull on the source and push,pull on the target in the
same token), anonymously or with Basic credentials, and sends it as `Bearer`. Tokens
are kept per set of scopes until shortly before `expires_in` (60 s when absent). A
token server grants silently less than asked for; when the token is a JWT its
`access` claim says what was granted, which `granted` checks, so that a push refused
for want of rights fails with that reason rather than as a bare 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from layerfs.errors import LayerfsError
from layerfs.registry.credentials import Credentials

DEFAULT_EXPIRY = 60.0
_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class AuthError(LayerfsError):
    """The registry or its token server refused us."""


def scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


@dataclass(frozen=True)
class Challenge:
    scheme: str                  # "basic" or "bearer"
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first Basic or Bearer challenge of a WWW-Authenticate header."""
    match = re.match(r"\s*(\w+)\s*(.*)", header or "")
    if not match or match.group(1).lower() not in ("basic", "bearer"):
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(match.group(2))}
    return Challenge(match.group(1).lower(), params)


def _jwt_access(token: str) -> list[dict[str, Any]] | None:
    """The `access` claim of a JWT, or None when the token is opaque."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    access = claims.get("access") if isinstance(claims, dict) else None
    return access if isinstance(access, list) else None


def _grants(access: list[dict[str, Any]], wanted: str) -> bool:
    """Does a JWT `access` claim cover the scope `wanted` (type:name:actions)?"""
    kind, rest = wanted.split(":", 1)
    name, _, actions = rest.rpartition(":")
    have = {a for entry in access if isinstance(entry, dict)
            and entry.get("type") == kind and entry.get("name") == name
            for a in (entry.get("actions") or [])}
    return set(actions.split(",")) <= have or "*" in have


@dataclass
class _Token:
    value: str
    renew_at: float
    access: list[dict[str, Any]] | None


@dataclass
class Authenticator:
    """What one registry wants, and the tokens it gave; shared by a client's threads."""

    http: httpx.Client
    host: str
    creds: Credentials | None
    challenge: Challenge | None = None
    _tokens: dict[frozenset[str], _Token] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def header(self, scopes: tuple[str, ...], fresh: bool = False) -> str | None:
        """The Authorization value for a request needing `scopes` (None: anonymous)."""
        if self.challenge is None:
            return None
        if self.challenge.scheme == "basic":
            if self.creds is None:
                raise AuthError(f"{self.host} needs a login: run `layerfs login {self.host}` or give --creds")
            return self.creds.basic()
        return "Bearer " + self._token(frozenset(scopes), fresh).value

    def granted(self, scopes: tuple[str, ...], wanted: str) -> bool | None:
        """Did the token for `scopes` grant the scope `wanted`? None: cannot tell."""
        if self.challenge is None or self.challenge.scheme != "bearer":
            return None
        token = self._token(frozenset(scopes), False)
        return None if token.access is None else _grants(token.access, wanted)

    def under_granted(self, wanted: str) -> bool:
        """Was a token asked for `wanted`'s repository given without those actions?
        Only tokens already held are looked at (nothing is fetched): this explains a
        401 after the fact, so that the error says what the server withheld."""
        if self.challenge is None or self.challenge.scheme != "bearer":
            return False
        prefix = wanted.rsplit(":", 1)[0] + ":"
        with self._lock:
            held = [t for key, t in self._tokens.items() if any(s.startswith(prefix) for s in key)]
        return any(t.access is not None and not _grants(t.access, wanted) for t in held)

    def _token(self, scopes: frozenset[str], fresh: bool) -> _Token:
        with self._lock:
            token = self._tokens.get(scopes)
            if token is None or fresh or time.monotonic() >= token.renew_at:
                token = self._tokens[scopes] = self._fetch(scopes)
            return token

    def _fetch(self, scopes: frozenset[str]) -> _Token:
        assert self.challenge is not None
        realm = self.challenge.params.get("realm")
        if not realm:
            raise AuthError(f"{self.host} asked for a bearer token but named no realm to get it from")
        params: list[tuple[str, str]] = []
        if self.challenge.params.get("service"):
            params.append(("service", self.challenge.params["service"]))
        params += [("scope", s) for s in sorted(scopes)]
        headers = {"Authorization": self.creds.basic()} if self.creds else {}
        try:
            response = self.http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise AuthError(f"cannot reach the token server {realm} of {self.host}: {e}") from None
        if response.status_code in (401, 403):
            who = f"the credentials of {self.creds.username!r}" if self.creds else "anonymous access"
            raise AuthError(f"the token server of {self.host} refused {who} (HTTP {response.status_code}); "
                            f"check `layerfs login {self.host}`")
        if response.status_code != 200:
            raise AuthError(f"the token server of {self.host} answered HTTP {response.status_code}")
        try:
            doc = response.json()
            value = doc.get("token") or doc.get("access_token")
            expires = float(doc.get("expires_in") or DEFAULT_EXPIRY)
        except (ValueError, AttributeError, TypeError):
            raise AuthError(f"the token server of {self.host} sent no valid token") from None
        if not isinstance(value, str) or not value:
            raise AuthError(f"the token server of {self.host} sent no token")
        # renew a little before it lapses: a tenth of its life, at least a second early
        renew = time.monotonic() + max(expires - max(expires / 10, 1.0), 0.0)
        return _Token(value, renew, _jwt_access(value))
