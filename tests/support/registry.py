"""Registries for the registry-client tests: a real distribution server, a token server, a
fault-injecting proxy, and raw helpers that talk to them without layerfs.

Why these and not mocks: the client must interoperate with what users run, so the tests
drive Debian's `docker-registry` (CNCF distribution 2.8) itself, and prove every server
here against a second, independent client (skopeo). Only what a real registry cannot be
told to do (serve a wrong blob, drop a connection mid-blob, redirect to a CDN, fail
transiently, hide a tag, under-grant a token) is done by the small servers of this module.

- `CertAuthority`: a throw-away CA and server certificates (openssl CLI).
- `Registry`: `docker-registry serve` on 127.0.0.1:PORT; plain, htpasswd, TLS, token auth.
- `TokenServer`: the distribution bearer-token endpoint (JWT RS256 with x5c), with a
  grant policy the test controls and a record of every request.
- `FaultProxy`: a reverse proxy in front of a `Registry`, counting requests and injecting
  faults; blob redirects go to a second server on another host (127.0.0.2).
- skopeo helpers (`skopeo_copy`, `push_oci_with_skopeo`, `pull_with_skopeo`) and raw
  httpx helpers (`client`, `get_manifest`, `get_blob`, `push_blob`, `put_manifest`,
  `push_layout`, `image_index`, `make_test_image`).

Everything binds to loopback, lives under /tmp in world-readable directories (so the
unprivileged test user can read the CA), and is torn down by the context managers (and at
interpreter exit, should a test forget).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from support.oci import (MT_INDEX, MT_MANIFEST, ImageInfo, directory, file, make_layer,
                         read_oci_manifest, write_oci_layout)

DOCKER_REGISTRY = "/usr/bin/docker-registry"
SKOPEO = "/usr/bin/skopeo"
OPENSSL = "openssl"
HTPASSWD = "htpasswd"

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([MT_INDEX, MT_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST])

DEFAULT_SERVICE = "layerfs-test-registry"
DEFAULT_ISSUER = "layerfs-test-token-issuer"
REDIRECT_HOST = "127.0.0.2"  # another host than 127.0.0.1 (all of 127/8 is loopback on Linux)

Creds = tuple[str, str] | None

_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # running servers, stopped at exit


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        try:
            server.stop()
        except Exception:
            pass


def _mkdtemp(prefix: str) -> Path:
    """A fresh directory under /tmp that every user can read (pytest's tmp_path is root's)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for servers that cannot be told to bind port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(argv, capture_output=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv!r} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return proc


def live_server_logs(lines: int = 40) -> str:
    """The tail of every running registry's log: append it to an assertion message when a
    peer tool fails, since the registry usually says why (auth, digest, upload state)."""
    out = []
    for server in list(_LIVE):
        if isinstance(server, Registry):
            out.append(f"--- {server.host} log ({server.log_path}) ---\n{server.log_tail(lines)}")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Certificates


class CertAuthority:
    """A test CA and the server certificates it issues, made with the openssl CLI (the
    venv has no `cryptography`, and none is added for tests).

    `ca_dir` is laid out as a containers certs.d directory (only `ca.crt` in it), so the
    same path works as skopeo's `--cert-dir` and layerfs's `--cert-dir`."""

    def __init__(self, directory: Path | None = None, name: str = "layerfs test CA") -> None:
        self.dir = Path(directory) if directory else _mkdtemp("layerfs-ca-")
        self.ca_dir = self.dir / "certs.d"
        self.ca_dir.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.ca_dir, 0o755)
        self.cert = self.ca_dir / "ca.crt"
        self.key = self.dir / "ca.key"
        _run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "30",
              "-subj", f"/CN={name}",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        os.chmod(self.cert, 0o644)

    def issue(self, name: str = "server", ips: tuple[str, ...] = ("127.0.0.1", REDIRECT_HOST),
              dns: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path]:
        """A server certificate and key (paths) for these addresses, signed by this CA.
        The default covers the registry, the proxy and the redirect server."""
        cert, key, csr = (self.dir / f"{name}.crt", self.dir / f"{name}.key", self.dir / f"{name}.csr")
        ext = self.dir / f"{name}.ext"
        san = ",".join([f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns])
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n")
        _run([OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ips[0] if ips else dns[0]}"])
        _run([OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
              "-CAserial", str(self.dir / "ca.srl"), "-CAcreateserial", "-out", str(cert),
              "-days", "30", "-sha256", "-extfile", str(ext)])
        os.chmod(cert, 0o644)
        return cert, key

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (for httpx `verify=`)."""
        return ssl.create_default_context(cafile=str(self.cert))

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# The registry itself


class Registry:
    """A real distribution registry (`docker-registry serve`) on 127.0.0.1 at a free port,
    with its own storage directory and config, stopped on exit.

    Variants by argument: plain HTTP (default); `users={"alice": "pw"}` for htpasswd basic
    auth; `tls=True` for HTTPS with a certificate from `ca` (a new `CertAuthority` if not
    given; `ca_dir` is then the --cert-dir); `token_server=TokenServer(...)` for bearer
    token auth trusting that server's signing certificate. Deleting is enabled, as the
    push tests may delete manifests and blobs.

        with Registry(users={"alice": "pw"}) as reg:
            push_oci_with_skopeo("oci:/tmp/img:latest", f"docker://{reg.host}/app:v1",
                                 creds=("alice", "pw"))
    """

    def __init__(self, *, users: dict[str, str] | None = None, tls: bool = False,
                 ca: CertAuthority | None = None, token_server: TokenServer | None = None,
                 extra_config: dict[str, Any] | None = None) -> None:
        if users and token_server:
            raise ValueError("htpasswd and token auth are exclusive: give the users to the TokenServer")
        self.users = dict(users or {})
        self.tls = tls
        self.ca = ca if ca is not None or not tls else CertAuthority()
        self._own_ca = ca is None and tls
        self.token_server = token_server
        self.extra_config = extra_config or {}
        self.workdir = _mkdtemp("layerfs-registry-")
        self.storage_dir = self.workdir / "storage"
        self.storage_dir.mkdir(mode=0o755)
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses

    @property
    def host(self) -> str:
        """"127.0.0.1:PORT", the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def ca_dir(self) -> Path | None:
        """A certs.d directory holding `ca.crt` (skopeo/layerfs `--cert-dir`), TLS only."""
        return self.ca.ca_dir if self.ca else None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx `verify=` to talk to this registry."""
        return self.ca.ssl_context() if self.tls and self.ca else True

    @property
    def auth(self) -> str:
        return "token" if self.token_server else "htpasswd" if self.users else "none"

    def blob_path(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes (the redirect server
        of `FaultProxy` serves from here, as a CDN would serve from the storage bucket)."""
        algorithm, hexdigest = digest.split(":", 1)
        return (self.storage_dir / "docker/registry/v2/blobs" / algorithm / hexdigest[:2]
                / hexdigest / "data")

    # -- lifecycle

    def _config(self) -> dict[str, Any]:
        http_cfg: dict[str, Any] = {"addr": self.host, "secret": secrets.token_hex(16),
                                    "headers": {"X-Content-Type-Options": ["nosniff"]}}
        if self.tls:
            assert self.ca is not None
            cert, key = self.ca.issue(f"registry-{uuid.uuid4().hex[:8]}")
            http_cfg["tls"] = {"certificate": str(cert), "key": str(key)}
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage_dir)},
                        "delete": {"enabled": True}, "cache": {"blobdescriptor": "inmemory"},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": http_cfg,
        }
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            lines = [_run([HTPASSWD, "-Bbn", user, password]).stdout.decode().strip()
                     for user, password in self.users.items()]
            htpasswd.write_text("\n".join(lines) + "\n")
            config["auth"] = {"htpasswd": {"realm": "layerfs-test", "path": str(htpasswd)}}
        elif self.token_server:
            ts = self.token_server
            config["auth"] = {"token": {"realm": ts.realm, "service": ts.service,
                                        "issuer": ts.issuer, "rootcertbundle": str(ts.cert_path)}}
        _deep_update(config, self.extra_config)
        return config

    def start(self) -> Registry:
        """Start the server and wait until `/v2/` answers (200, or 401 when auth is on)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        for attempt in range(5):
            self.port = free_port()
            # JSON is YAML: no YAML writer needed
            self.config_path.write_text(json.dumps(self._config(), indent=2))
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            _LIVE.add(self)
            if self._wait_ready():
                return self
            self._kill()
            if "address already in use" not in self.log_tail(20):
                break
        raise RuntimeError(f"docker-registry did not start:\n{self.log_tail(60)}")

    def _wait_ready(self, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=self.verify, timeout=2) as c:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                try:
                    if c.get(f"{self.url}/v2/").status_code in (200, 401):
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Kill the server and remove its storage (and its CA, if it made one)."""
        self._kill()
        _LIVE.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._own_ca and self.ca:
            self.ca.cleanup()

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the registry's log, for assertion messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, creds: Creds = None) -> httpx.Client:
        """A raw httpx client for this registry that answers its auth challenges."""
        return client(self, creds)


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


# ---------------------------------------------------------------------------
# Threaded HTTP servers (shared by the token server, the proxy and the redirect server)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: Any = None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a length or is chunked
    timeout = 60  # idle keep-alive connections do not pin threads forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # tests assert on records instead
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner

    def send_simple(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                    content_type: str = "application/json") -> None:
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self) -> Iterator[bytes]:
        """The request body as it arrives (Content-Length or chunked), never buffered whole."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        raise ConnectionError("client closed mid-chunk")
                    remaining -= len(chunk)
                    yield chunk
                self.rfile.readline(3)  # CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    raise ConnectionError("client closed mid-body")
                remaining -= len(chunk)
                yield chunk

    def has_body(self) -> bool:
        return ("chunked" in self.headers.get("Transfer-Encoding", "").lower()
                or int(self.headers.get("Content-Length") or 0) > 0)

    def drain_body(self) -> None:
        for _ in self.read_body():
            pass

    def cut(self) -> None:
        """Drop the connection now, as a failing network would."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True


def _serve(handler: type[_Handler], owner: Any, host: str,
           tls: tuple[Path, Path] | None = None) -> tuple[_Server, threading.Thread]:
    server = _Server((host, 0), handler)
    server.owner = owner
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        # the handshake happens in the handler thread, so one slow client blocks no other
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True, name=f"{type(owner).__name__}@{host}")
    thread.start()
    return server, thread


# ---------------------------------------------------------------------------
# The token server


@dataclass(frozen=True)
class Scope:
    """One requested scope, `type:name:actions` (e.g. repository:library/app:pull,push)."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        # the name may hold ':' (a registry:catalog:* scope has none, a repository one with a
        # port never reaches here), so type is up to the first ':' and actions after the last
        type_, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        return cls(type_, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


# user (None: anonymous), scope -> the actions granted (a subset of scope.actions, or not)
Policy = Callable[[str | None, Scope], list[str] | tuple[str, ...]]


def default_policy(user: str | None, scope: Scope) -> list[str]:
    """Anonymous: pull only; a user who logged in: everything asked. Like a public registry."""
    if user is None:
        return [a for a in scope.actions if a == "pull"]
    return list(scope.actions)


def grant_at_most(*actions: str, users: tuple[str, ...] | None = None) -> Policy:
    """A policy that silently grants at most `actions` (to `users`, or to everyone), the
    rest as `default_policy`: `grant_at_most("pull")` under-grants a push; `grant_at_most()`
    grants nothing."""
    def policy(user: str | None, scope: Scope) -> list[str]:
        granted = default_policy(user, scope)
        if users is None or user in users:
            granted = [a for a in granted if a in actions]
        return granted
    return policy


@dataclass
class TokenRequest:
    """What one request to the token server asked and got, for tests to assert on."""

    method: str
    user: str | None  # None: anonymous (or rejected credentials, see status)
    service: str | None
    scopes: list[str]  # as sent, in order, one entry per scope parameter
    granted: list[dict[str, Any]]  # the JWT's access claim
    status: int
    offline_token: bool = False
    grant_type: str | None = None  # POST (OAuth2) requests only
    expires_in: int | None = None
    token: str | None = None
    time: float = field(default_factory=time.time)

    def granted_scopes(self) -> list[str]:
        return [f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in self.granted]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (tests look at what was granted)."""
    return json.loads(_b64url_decode(token.split(".")[1]))


def jwt_header(token: str) -> dict[str, Any]:
    return json.loads(_b64url_decode(token.split(".")[0]))


class _TokenHandler(_Handler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            return self.send_simple(404, b'{"error":"not found"}')
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self.owner._answer(self, "GET", query.get("service", [None])[0], query.get("scope", []),
                           self._basic_user(), query.get("offline_token", ["false"])[0] == "true")

    def do_POST(self) -> None:
        """The OAuth2 variant (docs/spec/auth/oauth.md): password and refresh_token grants."""
        url = urllib.parse.urlsplit(self.path)
        body = b"".join(self.read_body())
        if url.path != "/token":
            return self.send_simple(404, b'{"error":"not found"}')
        form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        get = lambda k: form.get(k, [None])[0]  # noqa: E731
        grant_type = get("grant_type")
        scopes = (get("scope") or "").split()
        if grant_type == "password":
            user: str | None | bool = self.owner._check(get("username"), get("password"))
        elif grant_type == "refresh_token":
            user = self.owner._refresh_tokens.get(get("refresh_token"), False)
        else:
            user = False
        self.owner._answer(self, "POST", get("service"), scopes, user,
                           grant_type == "password" and get("access_type") == "offline",
                           grant_type=grant_type)

    def _basic_user(self) -> str | None | bool:
        """None: anonymous; False: bad credentials; else the user name."""
        header = self.headers.get("Authorization")
        if not header:
            return None
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return self.owner._check(user, password)


_SIGNING_PAIR: tuple[Path, Path] | None = None


def _signing_pair() -> tuple[Path, Path]:
    """One RSA key and self-signed certificate per test process: RSA key generation takes
    up to a second on a loaded machine, and nothing depends on servers having distinct keys."""
    global _SIGNING_PAIR
    if _SIGNING_PAIR is None:
        workdir = _mkdtemp("layerfs-token-key-")
        atexit.register(shutil.rmtree, workdir, True)
        key, cert = workdir / "signing.key", workdir / "signing.crt"
        _run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
              "-out", str(cert), "-days", "30", "-subj", "/CN=layerfs test token signer"])
        _SIGNING_PAIR = key, cert
    return _SIGNING_PAIR


class TokenServer:
    """The distribution bearer-token endpoint (docs/spec/auth/token.md), plain HTTP on
    127.0.0.1 (only clients reach the realm; the registry trusts the signing certificate).

    `GET /token?service=S&scope=A&scope=B` anonymously or with Basic credentials from
    `users`, and the OAuth2 `POST /token` form. Tokens are JWTs signed RS256 by a fresh key;
    the header carries the certificate in `x5c`, and that certificate (`cert_path`) is the
    registry's rootcertbundle.

    Knobs, settable while running: `policy` (see `default_policy`, `grant_at_most`),
    `expires_in` (seconds; also the exp claim, to test refresh; distribution itself accepts
    a token up to 60 s past exp), `allow_anonymous`. `requests` records every request."""

    def __init__(self, users: dict[str, str] | None = None, *, policy: Policy = default_policy,
                 expires_in: int = 300, service: str = DEFAULT_SERVICE,
                 issuer: str = DEFAULT_ISSUER, allow_anonymous: bool = True) -> None:
        self.users = dict(users or {})
        self.policy = policy
        self.expires_in = expires_in
        self.service = service
        self.issuer = issuer
        self.allow_anonymous = allow_anonymous
        self.requests: list[TokenRequest] = []
        self._refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.workdir = _mkdtemp("layerfs-tokens-")
        self.key_path, self.cert_path = self.workdir / "signing.key", self.workdir / "signing.crt"
        key, cert = _signing_pair()
        shutil.copyfile(key, self.key_path)
        shutil.copyfile(cert, self.cert_path)
        os.chmod(self.cert_path, 0o644)
        pem = self.cert_path.read_text()
        self._x5c = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
        self.port = 0
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def start(self) -> TokenServer:
        self._server, _ = _serve(_TokenHandler, self, "127.0.0.1")
        self.port = self._server.server_address[1]
        _LIVE.add(self)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        _LIVE.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget the recorded requests (between steps of a test)."""
        with self._lock:
            self.requests.clear()

    # -- tokens

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (RS256, x5c header) of `claims`: also usable to forge odd tokens."""
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = _run([OPENSSL, "dgst", "-sha256", "-sign", str(self.key_path)],
                         input=signing_input.encode()).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def make_token(self, user: str | None, access: list[dict[str, Any]],
                   expires_in: int | None = None) -> str:
        now = int(time.time())
        lifetime = self.expires_in if expires_in is None else expires_in
        return self.sign({"iss": self.issuer, "sub": user or "", "aud": self.service,
                          "exp": now + lifetime, "nbf": now - 5, "iat": now,
                          "jti": secrets.token_hex(12), "access": access})

    def _check(self, user: str | None, password: str | None) -> str | bool:
        return user if user is not None and self.users.get(user) == password else False

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for text in scopes:
            scope = Scope.parse(text)
            granted = [a for a in self.policy(user, scope)]
            if granted:  # a resource with nothing granted is left out of the claim
                access.append({"type": scope.type, "name": scope.name, "actions": granted})
        return access

    def _answer(self, handler: _Handler, method: str, service: str | None, scopes: list[str],
                user: str | None | bool, offline: bool, grant_type: str | None = None) -> None:
        record = TokenRequest(method, None, service, list(scopes), [], 401, offline, grant_type)
        headers: dict[str, str] = {}
        if user is False or (user is None and not self.allow_anonymous):
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                           "message": "authentication required"
                                           if user is None else "invalid credentials"}]})
            headers["WWW-Authenticate"] = 'Basic realm="layerfs-test-tokens"'
        elif service is not None and service != self.service:
            record.user, record.status = user or None, 400
            body = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]})
        else:
            assert user is not True
            record.user = user
            record.granted = self._grant(user, scopes)
            record.expires_in = self.expires_in
            token = record.token = self.make_token(user, record.granted)
            issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            answer: dict[str, Any] = {"token": token, "access_token": token,
                                      "expires_in": self.expires_in, "issued_at": issued}
            if method == "POST":
                answer.pop("token")
                answer["scope"] = " ".join(scopes)
            if offline and user:
                refresh = secrets.token_urlsafe(24)
                with self._lock:
                    self._refresh_tokens[refresh] = user
                answer["refresh_token"] = refresh
            record.status = 200
            body = json.dumps(answer)
        with self._lock:  # recorded before the client can see the answer and act on it
            self.requests.append(record)
        handler.send_simple(record.status, body.encode(), headers)


# ---------------------------------------------------------------------------
# The fault proxy

_BLOB_RE = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[A-Za-z0-9_+.-]+:[A-Fa-f0-9]+)$")
_MANIFEST_RE = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_TAGS_RE = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_FLIP = bytes(b ^ 0xFF for b in range(256))  # bytes.translate table: every bit flipped
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "trailers", "transfer-encoding", "upgrade", "host", "expect"}


@dataclass
class ProxyRequest:
    """One request the proxy (or its redirect server) answered."""

    method: str
    path: str  # without the query
    query: str
    headers: dict[str, str]  # as received, names lower-cased
    status: int = 0
    fault: str | None = None  # "corrupt", "cut", "redirect", "fail", "hidden", "expired"
    body_bytes: int = 0  # response body bytes actually sent

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _Cut:
    after_bytes: int
    times: int


class _ProxyHandler(_Handler):
    def do_GET(self) -> None:
        self.owner._handle(self)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class _RedirectHandler(_Handler):
    def do_GET(self) -> None:
        self.owner._serve_redirected(self)

    do_HEAD = do_GET


class FaultProxy:
    """A reverse proxy in front of a `Registry` that counts requests and injects faults.

    Every method, header (Authorization, Range, ...) and body is forwarded, streamed both
    ways; upload `Location`s are rewritten to point at the proxy. Use `proxy.host` in image
    references instead of the registry's. Faults (all thread-safe, settable while running):

    - `corrupt_blob(digest)`: that blob's bytes are served XOR 0xFF (same length, so only the
      digest check catches it; consistent across Range requests);
    - `cut_blob(digest, after_bytes, times=1)`: the first `times` GETs of that blob send the
      headers and `after_bytes` body bytes, then drop the connection; later GETs behave,
      so a client resuming with `Range: bytes=N-` gets the 206 from the registry;
    - `redirect_blobs(True)`: blob GETs the registry would answer 200 get a 307 to a second
      server on `127.0.0.2` (another host), which serves the bytes from the registry's
      storage given the signed URL only, and records each request's headers in
      `redirect_requests` (assert `r.authorization is None`);
    - `fail_next(n, status=503, method=, path=)`: the next n matching requests are answered
      with `status` (and `Retry-After` if given) without reaching the registry;
    - `hide_tag(repo, tag)`: that tag's manifest answers 404 MANIFEST_UNKNOWN (after the
      registry has authorized the request) and leaves the tags list;
    - `strict_token_expiry(True)`: a Bearer token past its `exp` gets 401 + challenge
      (distribution allows 60 s of leeway, too long for refresh tests).

    `requests` records everything; `count(method, path)`, `blob_gets(digest)` and
    `manifest_gets(repo)` answer the usual questions; `reset()` clears records and faults.
    """

    def __init__(self, registry: Registry, *, tls: bool = False,
                 redirect_host: str = REDIRECT_HOST) -> None:
        self.registry = registry
        self.tls = tls
        self.redirect_host = redirect_host
        self.requests: list[ProxyRequest] = []
        self.redirect_requests: list[ProxyRequest] = []
        self._lock = threading.Lock()
        self._corrupt: set[str] = set()
        self._cuts: dict[str, _Cut] = {}
        self._redirect = False
        self._fail: list[tuple[int, int, str | None, re.Pattern[str] | None, str | None]] = []
        self._hidden: set[tuple[str, str]] = set()
        self._strict_expiry = False
        self._signature = secrets.token_urlsafe(16)
        self._server: _Server | None = None
        self._redirect_server: _Server | None = None
        self._upstream: httpx.Client | None = None
        self.port = 0
        self.redirect_port = 0

    # -- addresses

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def redirect_url(self) -> str:
        return f"{self.scheme}://{self.redirect_host}:{self.redirect_port}"

    @property
    def ca_dir(self) -> Path | None:
        return self.registry.ca_dir if self.tls else None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return self.registry.verify if self.tls else True

    # -- lifecycle

    def start(self) -> FaultProxy:
        tls_files = None
        if self.tls:
            if not self.registry.ca:
                raise ValueError("a TLS proxy needs a TLS registry (its CA issues the certificate)")
            tls_files = self.registry.ca.issue(f"proxy-{uuid.uuid4().hex[:8]}")
        self._upstream = httpx.Client(verify=self.registry.verify, follow_redirects=False,
                                      timeout=httpx.Timeout(120, connect=10),
                                      limits=httpx.Limits(max_connections=64,
                                                          max_keepalive_connections=32))
        for name in ("Accept", "Accept-Encoding", "User-Agent"):  # forward the client's own
            del self._upstream.headers[name]
        self._server, _ = _serve(_ProxyHandler, self, "127.0.0.1", tls_files)
        self.port = self._server.server_address[1]
        self._redirect_server, _ = _serve(_RedirectHandler, self, self.redirect_host, tls_files)
        self.redirect_port = self._redirect_server.server_address[1]
        _LIVE.add(self)
        return self

    def stop(self) -> None:
        for server in (self._server, self._redirect_server):
            if server:
                server.shutdown()
                server.server_close()
        self._server = self._redirect_server = None
        if self._upstream:
            self._upstream.close()
            self._upstream = None
        _LIVE.discard(self)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault knobs

    def corrupt_blob(self, digest: str, enabled: bool = True) -> None:
        """Serve different bytes (same length) for this blob, on the proxy and redirect server."""
        with self._lock:
            (self._corrupt.add if enabled else self._corrupt.discard)(digest)

    def cut_blob(self, digest: str, after_bytes: int, times: int = 1) -> None:
        """Drop the connection after `after_bytes` body bytes, for the next `times` GETs."""
        with self._lock:
            self._cuts[digest] = _Cut(after_bytes, times)

    def redirect_blobs(self, enabled: bool = True) -> None:
        """Answer authorized blob GETs with a 307 to the redirect server (another host)."""
        with self._lock:
            self._redirect = enabled

    def fail_next(self, n: int, status: int = 503, *, method: str | None = None,
                  path: str | None = None, retry_after: str | None = None) -> None:
        """The next `n` requests matching `method` and the regex `path` (searched in the
        path, e.g. r"/blobs/sha256:") get `status` without reaching the registry."""
        with self._lock:
            self._fail.append((n, status, method, re.compile(path) if path else None, retry_after))

    def hide_tag(self, repo: str, tag: str, hidden: bool = True) -> None:
        """Make `repo:tag` answer 404 MANIFEST_UNKNOWN and drop it from the tags list."""
        with self._lock:
            (self._hidden.add if hidden else self._hidden.discard)((repo, tag))

    def strict_token_expiry(self, enabled: bool = True) -> None:
        """Refuse Bearer tokens past their exp claim with 401 (no leeway)."""
        with self._lock:
            self._strict_expiry = enabled

    def clear_faults(self) -> None:
        with self._lock:
            self._corrupt.clear()
            self._cuts.clear()
            self._redirect = False
            self._fail.clear()
            self._hidden.clear()
            self._strict_expiry = False

    def reset(self) -> None:
        """Clear the records and every fault."""
        self.clear_faults()
        self.reset_counts()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.redirect_requests.clear()

    # -- records

    def count(self, method: str | None = None, path: str | None = None, *,
              regex: str | None = None) -> int:
        """Requests with this method (None: any) and exact path, or path matching `regex`."""
        with self._lock:
            records = list(self.requests)
        return sum(1 for r in records
                   if (method is None or r.method == method)
                   and (path is None or r.path == path)
                   and (regex is None or re.search(regex, r.path)))

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests per (method, path)."""
        out: dict[tuple[str, str], int] = {}
        with self._lock:
            for r in self.requests:
                out[(r.method, r.path)] = out.get((r.method, r.path), 0) + 1
        return out

    def blob_gets(self, digest: str | None = None, *, served_only: bool = True) -> int:
        """GETs of one blob (or of any blob), uploads excluded. `served_only`: only those
        that got bytes or a redirect (2xx/3xx), not the 401 before credentials."""
        with self._lock:
            records = list(self.requests)
        return sum(1 for r in records if r.method == "GET" and (m := _BLOB_RE.match(r.path))
                   and (digest is None or m["digest"] == digest)
                   and (not served_only or 200 <= r.status < 400))

    def manifest_gets(self, repo: str | None = None, *, served_only: bool = True) -> int:
        """GETs of manifests (of one repository, or any), as `blob_gets`."""
        with self._lock:
            records = list(self.requests)
        return sum(1 for r in records if r.method == "GET" and (m := _MANIFEST_RE.match(r.path))
                   and (repo is None or m["name"] == repo)
                   and (not served_only or 200 <= r.status < 400))

    # -- request handling

    def _take_failure(self, method: str, path: str) -> tuple[int, str | None] | None:
        with self._lock:
            for i, (n, status, want_method, pattern, retry_after) in enumerate(self._fail):
                if (want_method is None or want_method == method) and (
                        pattern is None or pattern.search(path)):
                    if n <= 1:
                        del self._fail[i]
                    else:
                        self._fail[i] = (n - 1, status, want_method, pattern, retry_after)
                    return status, retry_after
        return None

    def _body_faults(self, digest: str | None) -> tuple[bool, int | None]:
        """(corrupt, cut after N bytes or None) for one blob GET that is about to send a body."""
        if digest is None:
            return False, None
        with self._lock:
            corrupt = digest in self._corrupt
            cut = self._cuts.get(digest)
            cut_after = None
            if cut and cut.times > 0:
                cut.times -= 1
                cut_after = cut.after_bytes
        return corrupt, cut_after

    def _token_expired(self, authorization: str | None) -> bool:
        if not self._strict_expiry or not authorization or not authorization.startswith("Bearer "):
            return False
        try:
            return jwt_claims(authorization[7:])["exp"] <= time.time()
        except (ValueError, KeyError, IndexError):
            return False

    def _record(self, handler: _Handler, target: list[ProxyRequest]) -> ProxyRequest:
        url = urllib.parse.urlsplit(handler.path)
        record = ProxyRequest(handler.command, url.path, url.query,
                              {k.lower(): v for k, v in handler.headers.items()})
        with self._lock:
            target.append(record)
        return record

    def _handle(self, h: _Handler) -> None:
        record = self._record(h, self.requests)
        path, method = record.path, record.method
        blob = _BLOB_RE.match(path)
        manifest = _MANIFEST_RE.match(path)
        failure = self._take_failure(method, path)
        if failure:
            status, retry_after = failure
            h.drain_body()
            record.status, record.fault = status, "fail"
            body = json.dumps({"errors": [{"code": "UNAVAILABLE",
                                           "message": f"injected fault {status}"}]}).encode()
            return h.send_simple(status, body, {"Retry-After": retry_after} if retry_after else {})
        if self._token_expired(record.authorization):
            h.drain_body()
            record.status, record.fault = 401, "expired"
            ts = self.registry.token_server
            challenge = 'Bearer error="invalid_token"'
            if ts:
                challenge = f'Bearer realm="{ts.realm}",service="{ts.service}"'
                repo = re.match(r"^/v2/(.+)/(blobs|manifests|tags)/", path)
                if repo:  # the scope distribution would name for this request
                    actions = "pull" if method in ("GET", "HEAD") else "pull,push"
                    challenge += f',scope="repository:{repo[1]}:{actions}"'
                challenge += ',error="invalid_token"'
            return h.send_simple(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}',
                                 {"WWW-Authenticate": challenge})

        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP]
        content = h.read_body() if h.has_body() else None
        if content is None and method in ("PUT", "POST", "PATCH"):
            content = iter([b""])  # keep an explicit Content-Length: 0
        assert self._upstream is not None
        upstream_url = self.registry.url + h.path
        try:
            request = self._upstream.build_request(method, upstream_url, headers=headers,
                                                   content=content)
            response = self._upstream.send(request, stream=True)
        except httpx.HTTPError as e:
            record.status = 502
            return h.send_simple(502, json.dumps({"errors": [{"code": "UNAVAILABLE",
                                                              "message": str(e)}]}).encode())
        try:
            with self._lock:
                redirect, hidden = self._redirect, set(self._hidden)
            if blob and method == "GET" and redirect and response.status_code in (200, 206):
                record.status, record.fault = 307, "redirect"
                location = (f"{self.redirect_url}/blobs/{blob['digest']}"
                            f"?sig={self._signature}&repo={urllib.parse.quote(blob['name'])}")
                return h.send_simple(307, b"", {"Location": location})
            if (manifest and method in ("GET", "HEAD") and response.status_code == 200
                    and (manifest["name"], manifest["ref"]) in hidden):
                record.status, record.fault = 404, "hidden"
                return h.send_simple(404, json.dumps({"errors": [{
                    "code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                    "detail": {"Tag": manifest["ref"]}}]}).encode())
            tags = _TAGS_RE.match(path)
            if tags and method == "GET" and response.status_code == 200 and hidden:
                listing = json.loads(response.read())
                listing["tags"] = [t for t in listing.get("tags") or []
                                   if (tags["name"], t) not in hidden]
                record.status = 200
                return h.send_simple(200, json.dumps(listing).encode())
            corrupt, cut_after = (self._body_faults(blob["digest"])
                                  if blob and method == "GET" and response.status_code in (200, 206)
                                  else (False, None))
            self._relay(h, record, response, corrupt, cut_after)
        finally:
            response.close()

    def _relay(self, h: _Handler, record: ProxyRequest, response: httpx.Response,
               corrupt: bool, cut_after: int | None) -> None:
        record.status = response.status_code
        record.fault = "cut" if cut_after is not None else "corrupt" if corrupt else None
        h.send_response_only(response.status_code, response.reason_phrase)
        length = response.headers.get("content-length")
        no_body = h.command == "HEAD" or response.status_code in (204, 304) or (
            100 <= response.status_code < 200)
        for name, value in response.headers.multi_items():
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                continue
            if lname == "location" and value.startswith(self.registry.url):
                value = self.url + value[len(self.registry.url):]
            h.send_header(name, value)
        chunked = length is None and not no_body
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if no_body:
            return
        self._send_body(h, record, response.iter_raw(1 << 16), corrupt, cut_after, chunked)

    def _send_body(self, h: _Handler, record: ProxyRequest, chunks: Iterator[bytes],
                   corrupt: bool, cut_after: int | None, chunked: bool = False) -> None:
        try:
            for chunk in chunks:
                if corrupt:
                    chunk = chunk.translate(_FLIP)
                if cut_after is not None and record.body_bytes + len(chunk) >= cut_after:
                    chunk = chunk[:cut_after - record.body_bytes]
                    record.body_bytes += len(chunk)  # counted first: tests read it right after
                    if chunk:
                        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    return h.cut()
                record.body_bytes += len(chunk)
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if cut_after is not None:
                return h.cut()  # asked to cut beyond the end: drop before the terminator
            if chunked:
                h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    # -- the redirect server (a CDN on another host)

    def _serve_redirected(self, h: _Handler) -> None:
        record = self._record(h, self.redirect_requests)
        query = urllib.parse.parse_qs(record.query)
        m = re.match(r"^/blobs/(?P<digest>[A-Za-z0-9_+.-]+:[A-Fa-f0-9]+)$", record.path)
        if not m or query.get("sig", [None])[0] != self._signature:
            record.status = 403
            return h.send_simple(403, b"<Error><Code>AccessDenied</Code></Error>",
                                 content_type="application/xml")
        path = self.registry.blob_path(m["digest"])
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            record.status = 404
            return h.send_simple(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                 content_type="application/xml")
        start, end, status = 0, size - 1, 200
        range_header = h.headers.get("Range")
        if range_header:
            rm = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if not rm or int(rm[1]) >= size:
                record.status = 416
                return h.send_simple(416, b"", {"Content-Range": f"bytes */{size}"})
            start, end, status = int(rm[1]), min(int(rm[2]) if rm[2] else size - 1, size - 1), 206
        record.status = status
        h.send_response_only(status)
        h.send_header("Date", h.date_time_string())
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{m["digest"]}"')
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if h.command == "HEAD":
            return
        corrupt, cut_after = self._body_faults(m["digest"])
        record.fault = "cut" if cut_after is not None else "corrupt" if corrupt else None

        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                f.seek(start)
                remaining = end - start + 1
                while remaining:
                    chunk = f.read(min(remaining, 1 << 16))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    yield chunk
        self._send_body(h, record, chunks(), corrupt, cut_after)


# ---------------------------------------------------------------------------
# skopeo, the peer client


def _creds_arg(creds: Creds) -> str | None:
    return f"{creds[0]}:{creds[1]}" if creds else None


def skopeo(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run skopeo with no ambient logins (an empty auth file) and an accept-all policy.
    With `check`, a failure raises AssertionError with skopeo's stderr and the registry logs."""
    with tempfile.TemporaryDirectory(prefix="layerfs-skopeo-") as tmp:
        authfile = Path(tmp) / "auth.json"
        authfile.write_text("{}")
        env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
        env.update(REGISTRY_AUTH_FILE=str(authfile), DOCKER_CONFIG=tmp, TMPDIR=tmp)
        proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} exited {proc.returncode}\n"
                             f"stderr: {proc.stderr}\n{live_server_logs()}")
    return proc


def skopeo_copy(src: str, dest: str, *, src_creds: Creds = None, dest_creds: Creds = None,
                tls_verify: bool = False, cert_dir: Path | str | None = None,
                extra: tuple[str, ...] = (), check: bool = True) -> subprocess.CompletedProcess[str]:
    """`skopeo copy SRC DEST`; TLS and creds options go to whichever side is docker://."""
    args = ["copy", "--retry-times", "0"]
    for side, ref, creds in (("src", src, src_creds), ("dest", dest, dest_creds)):
        if not ref.startswith("docker://"):
            continue
        args.append(f"--{side}-tls-verify={'true' if tls_verify else 'false'}")
        if cert_dir:
            args += [f"--{side}-cert-dir", str(cert_dir)]
        if creds:
            args += [f"--{side}-creds", _creds_arg(creds) or ""]
        else:
            args.append(f"--{side}-no-creds")
    return skopeo(*args, *extra, src, dest, check=check)


def push_oci_with_skopeo(oci_dir_ref: str | Path, dest_ref: str, creds: Creds = None,
                         tls_verify: bool = False, cert_dir: Path | str | None = None,
                         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Push an OCI layout ("oci:/dir:tag", or a Path holding one image) to "docker://...",
    byte for byte (--preserve-digests: no recompression, no manifest rewrite)."""
    src = oci_dir_ref if isinstance(oci_dir_ref, str) else f"oci:{oci_dir_ref}"
    if not dest_ref.startswith("docker://"):
        dest_ref = "docker://" + dest_ref
    return skopeo_copy(src, dest_ref, dest_creds=creds, tls_verify=tls_verify, cert_dir=cert_dir,
                       extra=("--preserve-digests",), check=check)


def pull_with_skopeo(src_ref: str, oci_dir_ref: str | Path, creds: Creds = None,
                     tls_verify: bool = False, cert_dir: Path | str | None = None,
                     check: bool = True) -> subprocess.CompletedProcess[str]:
    """Copy "docker://..." into an OCI layout ("oci:/dir:tag" or a Path, tag "latest")."""
    dest = oci_dir_ref if isinstance(oci_dir_ref, str) else f"oci:{oci_dir_ref}:latest"
    if not src_ref.startswith("docker://"):
        src_ref = "docker://" + src_ref
    return skopeo_copy(src_ref, dest, src_creds=creds, tls_verify=tls_verify, cert_dir=cert_dir,
                       extra=("--preserve-digests",), check=check)


# ---------------------------------------------------------------------------
# Raw HTTP helpers (no layerfs client involved)


class Target(Protocol):
    """A `Registry` or a `FaultProxy`: anything with a base URL and a way to verify it."""

    @property
    def url(self) -> str: ...

    @property
    def verify(self) -> ssl.SSLContext | bool: ...


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class ChallengeAuth(httpx.Auth):
    """Answer a registry's 401 like a client: Basic with `creds`, or Bearer from the realm
    (anonymously without creds). `extra_scopes` are asked in the same token request, e.g.
    `repository:src:pull` for a cross-repository mount. The last token is reused until a
    401 asks for another. A test harness, not a model of the layerfs client."""

    # False: a final response must stay streamable (a cut blob shows as a cut, not as an
    # error inside the auth flow); the flow reads the small 401 and token bodies itself
    requires_response_body = False

    def __init__(self, creds: Creds = None, extra_scopes: tuple[str, ...] = ()) -> None:
        self.creds = creds
        self.extra_scopes = extra_scopes
        self._authorization: str | None = None
        self.token_responses: list[dict[str, Any]] = []

    def _basic(self) -> str:
        assert self.creds
        return "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if self._authorization:
            request.headers["Authorization"] = self._authorization
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return
        response.read()
        scheme, params = _parse_challenge(response.headers["www-authenticate"])
        if scheme == "basic":
            if not self.creds:
                return
            self._authorization = self._basic()
        elif scheme == "bearer":
            query: list[tuple[str, str]] = []
            if "service" in params:
                query.append(("service", params["service"]))
            for scope in [*params.get("scope", "").split(" "), *self.extra_scopes]:
                if scope:
                    query.append(("scope", scope))
            token_request = httpx.Request("GET", params["realm"], params=query)
            if self.creds:
                token_request.headers["Authorization"] = self._basic()
            token_response = yield token_request
            token_response.read()
            if token_response.status_code != 200:
                return
            answer = token_response.json()
            self.token_responses.append(answer)
            self._authorization = "Bearer " + (answer.get("token") or answer["access_token"])
        else:
            return
        request.headers["Authorization"] = self._authorization
        yield request


def client(target: Target, creds: Creds = None, extra_scopes: tuple[str, ...] = ()) -> httpx.Client:
    """A raw httpx client with base_url = target, answering auth challenges (`ChallengeAuth`);
    redirects are not followed, so tests see them."""
    return httpx.Client(base_url=target.url, verify=target.verify, timeout=30,
                        auth=ChallengeAuth(creds, extra_scopes), follow_redirects=False)


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 300:
        response.read()
        raise AssertionError(f"{what}: HTTP {response.status_code} {response.text[:500]}\n"
                             f"{live_server_logs(15)}")
    return response


@dataclass
class RawManifest:
    data: bytes
    media_type: str
    digest: str  # Docker-Content-Digest, or computed from data


def get_manifest(target: Target, repo: str, ref: str, creds: Creds = None,
                 accept: str = MANIFEST_ACCEPT) -> RawManifest:
    """A manifest's exact bytes, media type and digest as the registry serves them."""
    with client(target, creds) as c:
        r = _check(c.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept}),
                   f"GET manifest {repo}:{ref}")
    digest = r.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(r.content).hexdigest()
    return RawManifest(r.content, r.headers.get("content-type", "").split(";")[0], digest)


def get_blob(target: Target, repo: str, digest: str, creds: Creds = None,
             headers: dict[str, str] | None = None) -> bytes:
    """A blob's bytes, following a redirect as a plain client would (without credentials)."""
    with client(target, creds) as c:
        r = c.get(f"/v2/{repo}/blobs/{digest}", headers=headers or {})
        if r.status_code in (301, 302, 303, 307, 308):
            with httpx.Client(verify=target.verify, timeout=30) as plain:
                r = plain.get(r.headers["location"], headers=headers or {})
        return _check(r, f"GET blob {repo}@{digest}").content


def push_blob(target: Target, repo: str, data: bytes, creds: Creds = None,
              mount_from: str | None = None) -> str:
    """Upload a blob monolithically (POST then PUT ?digest=); with `mount_from`, try a
    cross-repository mount first. Returns the digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    scopes = (f"repository:{mount_from}:pull",) if mount_from else ()
    with client(target, creds, scopes) as c:
        params = {"mount": digest, "from": mount_from} if mount_from else {}
        r = _check(c.post(f"/v2/{repo}/blobs/uploads/", params=params), f"POST upload {repo}")
        if r.status_code == 201:
            return digest
        location = r.headers["location"]
        sep = "&" if "?" in location else "?"
        _check(c.put(f"{location}{sep}digest={digest}", content=data,
                     headers={"Content-Type": "application/octet-stream"}), f"PUT blob {repo}")
    return digest


def put_manifest(target: Target, repo: str, ref: str, data: bytes, media_type: str,
                 creds: Creds = None) -> str:
    """Upload a manifest (an image index, a docker manifest list, ...) as these exact bytes.
    Returns the digest the registry computed."""
    with client(target, creds) as c:
        r = _check(c.put(f"/v2/{repo}/manifests/{ref}", content=data,
                         headers={"Content-Type": media_type}), f"PUT manifest {repo}:{ref}")
    return r.headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(data).hexdigest()


def push_layout(target: Target, repo: str, tag: str, layout: Path, ref: str = "latest",
                creds: Creds = None) -> str:
    """Push one image of an OCI layout blob by blob and manifest last, byte for byte
    (for layers skopeo would not pass as they are). Returns the manifest digest."""
    layout = Path(layout)
    manifest = read_oci_manifest(layout, ref)
    for desc in [manifest["config"], *manifest["layers"]]:
        push_blob(target, repo, (layout / "blobs" / desc["digest"].replace(":", "/")).read_bytes(),
                  creds)
    index = json.loads((layout / "index.json").read_text())
    desc = next(d for d in index["manifests"]
                if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref)
    data = (layout / "blobs" / desc["digest"].replace(":", "/")).read_bytes()
    return put_manifest(target, repo, tag, data, manifest.get("mediaType", MT_MANIFEST), creds)


def descriptor(data: bytes, media_type: str, platform: dict[str, str] | None = None) -> dict[str, Any]:
    """An OCI descriptor of `data` (with a platform, for an index entry)."""
    desc: dict[str, Any] = {"mediaType": media_type,
                            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                            "size": len(data)}
    if platform:
        desc["platform"] = platform
    return desc


def image_index(manifests: list[dict[str, Any]], media_type: str = MT_INDEX) -> bytes:
    """The bytes of an OCI image index (or, with MT_DOCKER_LIST, a docker manifest list) of
    these descriptors; upload with `put_manifest(..., media_type)`."""
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests},
                      indent=2).encode()


def make_test_image(dest: Path, tag: str = "latest", seed: str = "a", layers: int = 2,
                    compression: str = "gzip", layer_bytes: int = 0,
                    config: dict[str, Any] | None = None) -> ImageInfo:
    """A small image with `layers` distinct layers (distinct per `seed`) added to the OCI
    layout at `dest` (made world-readable), via `support.oci.write_oci_layout`.
    `layer_bytes` pads each layer with that many pseudo-random bytes (for cut/resume tests
    that need a blob bigger than one read)."""
    blobs = []
    for i in range(layers):
        entries = [directory(f"layer{i}"),
                   file(f"layer{i}/hello.txt", f"seed {seed} layer {i}\n".encode())]
        if layer_bytes:
            entries.append(file(f"layer{i}/blob.bin", pseudo_random(f"{seed}/{i}", layer_bytes)))
        blobs.append(make_layer(entries, compression))
    info = write_oci_layout(Path(dest), blobs, tag=tag, config=config)
    for dirpath, _, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return info


def pseudo_random(seed: str, size: int) -> bytes:
    """Incompressible, reproducible bytes (so a layer's compressed size is about `size`)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])
