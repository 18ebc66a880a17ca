"""One registry session: every request goes through `send`, which adds auth,
follows redirects without leaking credentials, and retries transient failures.

Connections are reused (httpx, HTTP/2 over TLS where the server offers it) and
the client is shared by the threads of a parallel pull. Redirects are followed
here, not by httpx, because blob GETs are routinely sent on to object storage or a
CDN: the Authorization header goes only to the registry's own host. Transient
failures (connection errors, 429, 5xx) are retried with exponential backoff,
honouring Retry-After; `cancel` makes every thread's next read or retry stop.
"""

from __future__ import annotations

import random
import re
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from layerfs.errors import LayerfsError, NotFound
from layerfs.registry import credentials
from layerfs.registry.auth import AuthError, Authenticator, parse_challenge
from layerfs.registry.credentials import Credentials
from layerfs.registry.reference import DOCKER_HUB, DOCKER_HUB_API
from layerfs.registry.tls import ssl_context

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 10
USER_AGENT = "layerfs/0.1 (OCI distribution client)"

Content = bytes | Callable[[], Iterable[bytes]] | None


class RegistryError(LayerfsError):
    """A registry that cannot be reached or that answered with an error."""


class Cancelled(BaseException):
    """Raised in worker threads once the pull or push they serve was interrupted."""


@dataclass(frozen=True)
class Access:
    """How to reach registries, as the command line says."""

    tls_verify: bool = True
    cert_dir: Path | None = None
    authfile: Path | None = None
    creds: Credentials | None = None   # --creds: overrides the stored login
    retries: int = 5
    backoff: float = 0.25              # seconds before the first retry; doubles after


def error_detail(response: httpx.Response) -> str:
    """The distribution error body's first message, if it has one."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, AttributeError, IndexError, TypeError, httpx.ResponseNotRead):
        return ""


class Registry:
    """A session with one registry host, for one repository's credentials."""

    def __init__(self, host: str, repository: str, access: Access,
                 cancel: threading.Event | None = None) -> None:
        self.host = host
        self.access = access
        self.cancel = cancel or threading.Event()
        verify: ssl.SSLContext = ssl_context(host, access.tls_verify, access.cert_dir)
        self.http = httpx.Client(
            http2=True, verify=verify, follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(60.0, connect=15.0), headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        creds = access.creds or credentials.lookup(host_key(host), repository, access.authfile)
        self.auth = Authenticator(self.http, host, creds)
        self.base = f"https://{host}"
        self._ping()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the first contact: scheme and auth ------------------------------------------

    def _ping(self) -> None:
        """GET /v2/ as every client does first: it says whether the host speaks the
        API, over which scheme (plain HTTP only with --tls-verify=false), and which
        auth it wants."""
        try:
            response = self._send_once("GET", "/v2/", None, {}, None, False)
        except httpx.TransportError as e:
            if _tls_failure(e) and self.access.tls_verify:
                raise self._unreachable(e) from None
            if isinstance(e, httpx.ConnectError) and not _tls_failure(e):
                raise self._unreachable(e) from None  # refused, no route: a retry will not help
            if _tls_failure(e):
                self.base = f"http://{self.host}"
            response = self._retrying("GET", "/v2/", (), {}, None, False, auth=False)
        response.close()
        if response.status_code == 401:
            self.auth.challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if self.auth.challenge is None:
                raise AuthError(f"{self.host} wants an authentication scheme layerfs does not speak: "
                                f"{response.headers.get('www-authenticate', '(none named)')}")
        elif response.status_code == 404:
            raise RegistryError(f"{self.host} does not serve the registry API (/v2/ answered 404)")
        elif response.status_code >= 400:
            raise RegistryError(f"{self.host} answered /v2/ with HTTP {response.status_code}")

    def _unreachable(self, e: Exception) -> RegistryError:
        if "WRONG_VERSION_NUMBER" in _chain_text(e):
            return RegistryError(f"{self.host} answers in plain HTTP, not HTTPS: give --tls-verify=false "
                                 "to use it (for a registry you trust on your own network)")
        hint = ""
        if _tls_failure(e):
            hint = (" (TLS failed: a self-signed registry needs its CA in --cert-dir, or "
                    "--tls-verify=false)")
        return RegistryError(f"cannot reach registry {self.host}: {_reason(e)}{hint}")

    # -- requests -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path.lstrip("/")) if not path.startswith("http") else path

    def send(self, method: str, path: str, scopes: tuple[str, ...], *,
             headers: dict[str, str] | None = None, content: Content = None,
             stream: bool = False) -> httpx.Response:
        """One API request with auth, redirects and retries; the caller checks the status
        (and closes a streamed response)."""
        return self._retrying(method, path, scopes, headers or {}, content, stream, auth=True)

    def _retrying(self, method: str, path: str, scopes: tuple[str, ...], headers: dict[str, str],
                  content: Content, stream: bool, auth: bool) -> httpx.Response:
        attempt = 0
        while True:
            self.check_cancel()
            retry_after = None
            try:
                response = (self._authorized(method, path, scopes, headers, content, stream) if auth
                            else self._send_once(method, path, None, headers, content, stream))
            except httpx.TransportError as e:
                if attempt >= self.access.retries:
                    raise self._unreachable(e) from None
            else:
                if response.status_code not in RETRY_STATUS or attempt >= self.access.retries:
                    return response
                retry_after = response.headers.get("retry-after")
                response.close()
            self.pause(attempt, retry_after)
            attempt += 1

    def pause(self, attempt: int, retry_after: str | None = None) -> None:
        """Sleep before retry number `attempt` (0-based), waking early on cancel."""
        delay = self.access.backoff * (2 ** attempt) * (1 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = min(max(delay, float(retry_after)), 30.0)
        if self.cancel.wait(delay):
            raise Cancelled()

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def _authorized(self, method: str, path: str, scopes: tuple[str, ...], headers: dict[str, str],
                    content: Content, stream: bool) -> httpx.Response:
        response = self._send_once(method, path, self.auth.header(scopes), headers, content, stream)
        if response.status_code != 401:
            return response
        response.close()
        challenge = parse_challenge(response.headers.get("www-authenticate", ""))
        if challenge is not None:
            self.auth.challenge = challenge
        return self._send_once(method, path, self.auth.header(scopes, fresh=True), headers, content, stream)

    def _send_once(self, method: str, path: str, authorization: str | None, headers: dict[str, str],
                   content: Content, stream: bool) -> httpx.Response:
        """One request and its redirects. Authorization goes to the registry's own
        scheme://host:port only: a hop to any other origin is sent without it."""
        url = self.url(path)
        origin = _origin(self.url("/"))
        for _ in range(MAX_REDIRECTS + 1):
            hop = dict(headers)
            if authorization and _origin(url) == origin:
                hop["Authorization"] = authorization
            body = content() if callable(content) else content
            request = self.http.build_request(method, url, headers=hop, content=body)
            response = self.http.send(request, stream=stream)
            if response.status_code not in REDIRECTS or "location" not in response.headers:
                return response
            response.close()
            url = urljoin(url, response.headers["location"])
            if response.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host}: too many redirects for {path}")

    # -- answers ------------------------------------------------------------------------

    def fail(self, response: httpx.Response, what: str, scopes: tuple[str, ...] = ()) -> LayerfsError:
        """The one-line error for an unexpected answer about `what`."""
        try:
            response.read()
        except (httpx.HTTPError, httpx.StreamError):
            pass
        detail = error_detail(response)
        status = response.status_code
        if status == 404:
            return NotFound(f"{what}: not found in {self.host}" + (f" ({detail[2:]})" if detail else ""))
        if status in (401, 403):
            wanted = scopes[-1] if scopes else _scope_of(response)
            if wanted and self.auth.under_granted(wanted):
                _, name, actions = wanted.split(":", 2)
                who = f"{self.auth.creds.username!r}" if self.auth.creds else "anonymous users"
                hint = (f"; run `layerfs login {self.host}` or give --creds" if self.auth.creds is None
                        else "")
                return AuthError(f"{what}: the token server of {self.host} did not grant {who} "
                                 f"{actions} access to {name}{hint}")
            if self.auth.creds is None:
                return AuthError(f"{what}: {self.host} refused anonymous access (HTTP {status}{detail}); "
                                 f"run `layerfs login {self.host}` or give --creds")
            return AuthError(f"{what}: {self.host} refused {self.auth.creds.username!r} "
                             f"(HTTP {status}{detail})")
        return RegistryError(f"{what}: {self.host} answered HTTP {status}{detail}")


_API_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")


def _scope_of(response: httpx.Response) -> str | None:
    """The scope distribution checks for the request answered: pull to read, pull,push
    to write (callers that do not say which scope they asked for)."""
    try:
        request = response.request
    except RuntimeError:  # a response made up without a request
        return None
    match = _API_PATH.match(request.url.path)
    if match is None:
        return None
    actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
    return f"repository:{match['name']}:{actions}"


def host_key(host: str) -> str:
    """The name credentials are stored under for an API host."""
    return DOCKER_HUB if host == DOCKER_HUB_API else host


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _chain_text(e: BaseException) -> str:
    """The messages of an exception and of what caused it (httpx wraps ssl's errors)."""
    texts = []
    seen: BaseException | None = e
    while seen is not None and len(texts) < 10:
        texts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " | ".join(texts)


def _tls_failure(e: BaseException) -> bool:
    text = _chain_text(e)
    return "SSL" in text or "CERTIFICATE" in text.upper()


def _reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]


def parse_json_body(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RegistryError(f"{what}: the registry sent a body that is not JSON") from None
