"""The registry test servers (tests/support/registry.py) checked with peer clients only:
skopeo and raw httpx, never the layerfs client. If these pass, a failing registry-client
test points at the client, not at the harness.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.oci import MT_INDEX, MT_MANIFEST, ImageInfo, read_oci_layers, read_oci_manifest
from support.registry import (MT_DOCKER_LIST, REDIRECT_HOST, FaultProxy, Registry, TokenServer,
                              client, default_policy, descriptor, get_blob, get_manifest,
                              grant_at_most, image_index, jwt_claims, jwt_header,
                              make_test_image, pull_with_skopeo, push_blob, push_layout,
                              push_oci_with_skopeo, put_manifest, skopeo)

ALICE = ("alice", "wonderland")
USERS = dict([ALICE])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(f"/tmp/layerfs-regsupport-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def image(workdir: Path) -> tuple[Path, ImageInfo]:
    """A 2-layer image whose first layer is ~256 KiB (bigger than one read, for cuts)."""
    layout = workdir / "image"
    return layout, make_test_image(layout, layer_bytes=256 * 1024)


@pytest.fixture(scope="module")
def plain() -> Iterator[Registry]:
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def basic() -> Iterator[Registry]:
    with Registry(users=USERS) as reg:
        yield reg


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with TokenServer(USERS) as ts:
        yield ts


@pytest.fixture
def token_server(tokens: TokenServer) -> Iterator[TokenServer]:
    """The module's token server with a clean record and the default policy again after."""
    tokens.reset()
    yield tokens
    tokens.policy = default_policy
    tokens.expires_in = 300


@pytest.fixture(scope="module")
def token_registry(tokens: TokenServer) -> Iterator[Registry]:
    with Registry(token_server=tokens) as reg:
        yield reg


@pytest.fixture(scope="module")
def pushed_basic(basic: Registry, image: tuple[Path, ImageInfo]) -> str:
    """The image pushed by skopeo to the htpasswd registry as app:v1 (shared by proxy tests)."""
    push_oci_with_skopeo(f"oci:{image[0]}:latest", f"docker://{basic.host}/app:v1", creds=ALICE)
    return "app"


@pytest.fixture
def proxy(basic: Registry, pushed_basic: str) -> Iterator[FaultProxy]:
    with FaultProxy(basic) as px:
        yield px


def out_dir(workdir: Path, name: str) -> Path:
    path = workdir / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def assert_same_image(layout: Path, pulled: Path) -> None:
    """Byte-identical manifest and layers between two OCI layouts."""
    assert read_oci_manifest(pulled) == read_oci_manifest(layout)
    assert read_oci_layers(pulled) == read_oci_layers(layout)


def manifest_bytes(layout: Path, info: ImageInfo) -> bytes:
    assert info.manifest_digest
    return (layout / "blobs" / info.manifest_digest.replace(":", "/")).read_bytes()


# ---------------------------------------------------------------------------
# Registry variants


def test_plain_round_trip(plain: Registry, image: tuple[Path, ImageInfo], workdir: Path) -> None:
    layout, info = image
    push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{plain.host}/rt/app:v1")
    raw = get_manifest(plain, "rt/app", "v1")
    assert raw.data == manifest_bytes(layout, info)
    assert raw.digest == info.manifest_digest and raw.media_type == MT_MANIFEST
    assert get_blob(plain, "rt/app", info.layer_digests[1]) == read_oci_layers(layout)[1]
    pulled = out_dir(workdir, "plain-pulled")
    pull_with_skopeo(f"docker://{plain.host}/rt/app:v1", pulled)
    assert_same_image(layout, pulled)
    assert plain.log_path.exists() and "PUT /v2/rt/app/manifests/v1" in plain.log_tail(200)
    assert stat.S_IMODE(plain.storage_dir.stat().st_mode) == 0o755


def test_registry_serves_ranges(plain: Registry, image: tuple[Path, ImageInfo]) -> None:
    """distribution answers `Range: bytes=N-` on blob GETs with a 206: resume is possible."""
    layout, info = image
    push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{plain.host}/range/app:v1")
    blob = read_oci_layers(layout)[0]
    with httpx.Client() as c:
        r = c.get(f"{plain.url}/v2/range/app/blobs/{info.layer_digests[0]}",
                  headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-{len(blob) - 1}/{len(blob)}"
    assert r.content == blob[1000:]


def test_htpasswd(basic: Registry, image: tuple[Path, ImageInfo], workdir: Path) -> None:
    layout, info = image
    wrong = push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{basic.host}/ht/app:v1",
                                 creds=("alice", "wrong"), check=False)
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()
    push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{basic.host}/ht/app:v1", creds=ALICE)
    anonymous = pull_with_skopeo(f"docker://{basic.host}/ht/app:v1", out_dir(workdir, "ht-anon"),
                                 check=False)
    assert anonymous.returncode != 0
    pulled = out_dir(workdir, "ht-pulled")
    pull_with_skopeo(f"docker://{basic.host}/ht/app:v1", pulled, creds=ALICE)
    assert_same_image(layout, pulled)
    with httpx.Client() as c:
        r = c.get(f"{basic.url}/v2/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic ")
    assert get_manifest(basic, "ht/app", "v1", creds=ALICE).digest == info.manifest_digest


def test_tls_with_cert_dir(image: tuple[Path, ImageInfo], workdir: Path) -> None:
    layout, info = image
    with Registry(tls=True) as reg:
        assert reg.url.startswith("https://127.0.0.1:") and reg.ca_dir is not None
        assert sorted(os.listdir(reg.ca_dir)) == ["ca.crt"]
        refused = push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{reg.host}/tls/app:v1",
                                       tls_verify=True, check=False)
        assert refused.returncode != 0 and "x509" in refused.stderr
        push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{reg.host}/tls/app:v1",
                             tls_verify=True, cert_dir=reg.ca_dir)
        pulled = out_dir(workdir, "tls-pulled")
        pull_with_skopeo(f"docker://{reg.host}/tls/app:v1", pulled, tls_verify=True,
                         cert_dir=reg.ca_dir)
        assert_same_image(layout, pulled)
        assert get_manifest(reg, "tls/app", "v1").digest == info.manifest_digest  # verify=CA
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{reg.url}/v2/")
        # a TLS proxy (and its redirect host) with certificates from the same CA
        with FaultProxy(reg, tls=True) as px:
            px.redirect_blobs()
            assert px.url.startswith("https://") and px.ca_dir == reg.ca_dir
            via_proxy = out_dir(workdir, "tls-proxy-pulled")
            pull_with_skopeo(f"docker://{px.host}/tls/app:v1", via_proxy, tls_verify=True,
                             cert_dir=px.ca_dir)
            assert_same_image(layout, via_proxy)
            assert len(px.redirect_requests) == 3
            assert all(r.status == 200 for r in px.redirect_requests)
        # the unprivileged test user can read the CA through every directory on the way
        try:
            pwd.getpwnam("layerfs-test")
        except KeyError:
            return
        read = subprocess.run(["runuser", "-u", "layerfs-test", "--", "cat", str(reg.ca_dir / "ca.crt")],
                              capture_output=True)
        assert read.returncode == 0 and b"BEGIN CERTIFICATE" in read.stdout


# ---------------------------------------------------------------------------
# Token auth


def test_token_anonymous_pull_and_push_with_creds(token_registry: Registry, token_server: TokenServer,
                                                  image: tuple[Path, ImageInfo], workdir: Path) -> None:
    layout, info = image
    anonymous_push = push_oci_with_skopeo(f"oci:{layout}:latest",
                                          f"docker://{token_registry.host}/tok/app:v1", check=False)
    assert anonymous_push.returncode != 0
    push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{token_registry.host}/tok/app:v1",
                         creds=ALICE)
    alice = [r for r in token_server.requests if r.user == "alice"]
    assert alice and all(r.status == 200 for r in alice)
    assert "repository:tok/app:pull,push" in alice[0].scopes
    assert "repository:tok/app:pull,push" in alice[0].granted_scopes()

    token_server.reset()
    pulled = out_dir(workdir, "tok-pulled")
    pull_with_skopeo(f"docker://{token_registry.host}/tok/app:v1", pulled)
    assert_same_image(layout, pulled)
    assert token_server.requests and all(r.user is None for r in token_server.requests)
    assert token_server.requests[0].granted_scopes() == ["repository:tok/app:pull"]

    # the token itself, as the spec describes it
    token = token_server.requests[0].token
    assert token is not None
    header, claims = jwt_header(token), jwt_claims(token)
    assert header["alg"] == "RS256" and len(header["x5c"]) == 1
    assert claims["iss"] == token_server.issuer and claims["aud"] == token_server.service
    assert claims["sub"] == "" and claims["exp"] - claims["iat"] == token_server.expires_in
    assert {"nbf", "jti"} <= claims.keys()
    assert claims["access"] == [{"type": "repository", "name": "tok/app", "actions": ["pull"]}]


def test_token_response_and_bad_credentials(token_registry: Registry, token_server: TokenServer,
                                            image: tuple[Path, ImageInfo]) -> None:
    with httpx.Client() as c:
        challenge = c.get(f"{token_registry.url}/v2/").headers["www-authenticate"]
        assert challenge.startswith(f'Bearer realm="{token_server.realm}"')
        ok = c.get(token_server.realm, params=[("service", token_server.service),
                                                ("scope", "repository:a:pull"),
                                                ("scope", "repository:b:pull,push")], auth=ALICE)
        bad = c.get(token_server.realm, params={"service": token_server.service}, auth=("alice", "x"))
        oauth = c.post(token_server.realm, data={
            "grant_type": "password", "username": ALICE[0], "password": ALICE[1],
            "service": token_server.service, "scope": "repository:a:pull", "access_type": "offline",
            "client_id": "tests"})
    assert ok.status_code == 200
    answer = ok.json()
    assert answer["token"] == answer["access_token"]
    assert answer["expires_in"] == 300 and answer["issued_at"].endswith("Z")
    assert token_server.requests[0].scopes == ["repository:a:pull", "repository:b:pull,push"]
    assert token_server.requests[0].granted_scopes() == ["repository:a:pull",
                                                         "repository:b:pull,push"]
    assert bad.status_code == 401 and token_server.requests[1].status == 401
    assert oauth.status_code == 200 and "refresh_token" in oauth.json()
    wrong = push_oci_with_skopeo(f"oci:{image[0]}:latest", f"docker://{token_registry.host}/bad/app:v1",
                                 creds=("alice", "x"), check=False)
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "unauthorized" in wrong.stderr.lower()


def test_token_under_granted_push_is_refused(token_registry: Registry, token_server: TokenServer,
                                             image: tuple[Path, ImageInfo]) -> None:
    layout, _ = image
    token_server.policy = grant_at_most("pull", users=("alice",))
    refused = push_oci_with_skopeo(f"oci:{layout}:latest",
                                   f"docker://{token_registry.host}/under/app:v1", creds=ALICE,
                                   check=False)
    assert refused.returncode != 0
    asked = [r for r in token_server.requests if r.user == "alice"]
    assert asked and "repository:under/app:pull,push" in asked[0].scopes
    assert asked[0].granted_scopes()[0] == "repository:under/app:pull"
    # the real registry, not the harness, refuses: same token, raw upload start
    with client(token_registry, ALICE) as c:
        r = c.post("/v2/under/app/blobs/uploads/")
    assert r.status_code == 401
    assert "insufficient scope" in token_registry.log_tail(30)

    token_server.policy = grant_at_most()  # nothing at all
    with client(token_registry, ALICE) as c:
        assert c.get("/v2/tok/app/tags/list").status_code == 401
    assert token_server.requests[-1].granted == []


def test_token_mount_asks_both_scopes_in_one_request(token_registry: Registry,
                                                     token_server: TokenServer) -> None:
    data = b"a blob to mount across repositories\n"
    push_blob(token_registry, "mount/src", data, creds=ALICE)
    token_server.reset()
    push_blob(token_registry, "mount/dst", data, creds=ALICE, mount_from="mount/src")
    token_requests = [r for r in token_server.requests if r.status == 200]
    assert len(token_requests) == 1
    assert set(token_requests[0].scopes) == {"repository:mount/dst:pull,push",
                                             "repository:mount/src:pull"}
    assert get_blob(token_registry, "mount/dst", sha256(data)) == data


def test_token_expiry(token_registry: Registry, token_server: TokenServer, pushed_token: str) -> None:
    token_server.expires_in = 2  # exp is whole seconds: at least 1 s of real lifetime
    with FaultProxy(token_registry) as px:
        px.strict_token_expiry()
        with client(px) as c:  # anonymous; ChallengeAuth reuses its token until a 401
            assert c.get("/v2/tok/app/tags/list").status_code == 200
            first = token_server.requests[-1]
            assert first.expires_in == 2 and c.get("/v2/tok/app/tags/list").status_code == 200
            time.sleep(2.1)
            stale = c.auth._authorization  # type: ignore[attr-defined]
            # the stale token is still good for distribution (60 s leeway), not for the proxy
            direct = httpx.get(f"{token_registry.url}/v2/tok/app/tags/list",
                               headers={"Authorization": stale})
            assert direct.status_code == 200
            assert c.get("/v2/tok/app/tags/list").status_code == 200  # re-challenged
        assert [r.fault for r in px.requests].count("expired") == 1
        assert len([r for r in token_server.requests if r.status == 200]) >= 2


@pytest.fixture(scope="module")
def pushed_token(token_registry: Registry, tokens: TokenServer, image: tuple[Path, ImageInfo]) -> str:
    push_oci_with_skopeo(f"oci:{image[0]}:latest", f"docker://{token_registry.host}/tok/app:v1",
                         creds=ALICE)
    return "tok/app"


# ---------------------------------------------------------------------------
# The fault proxy


def test_proxy_forwards_push_and_pull_and_counts(basic: Registry, image: tuple[Path, ImageInfo],
                                                 workdir: Path) -> None:
    layout, info = image
    with FaultProxy(basic) as px:
        push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{px.host}/px/app:v1", creds=ALICE)
        uploads = px.count("PATCH", regex=r"^/v2/px/app/blobs/uploads/.") + px.count(
            "PUT", regex=r"^/v2/px/app/blobs/uploads/.")
        assert uploads >= 2 * 3  # every upload Location pointed back at the proxy
        assert px.count("PUT", "/v2/px/app/manifests/v1") == 1
        assert get_manifest(basic, "px/app", "v1", creds=ALICE).digest == info.manifest_digest

        px.reset_counts()
        pulled = out_dir(workdir, "px-pulled")
        pull_with_skopeo(f"docker://{px.host}/px/app:v1", pulled, creds=ALICE)
        assert_same_image(layout, pulled)
        for digest in [*info.layer_digests, info.config_digest]:
            assert px.blob_gets(digest) == 1
        assert px.counts()[("GET", f"/v2/px/app/blobs/{info.layer_digests[0]}")] == 1
        px.reset_counts()
        pull_with_skopeo(f"docker://{px.host}/px/app:v1", pulled, creds=ALICE)
        assert sum(px.blob_gets(d) for d in info.layer_digests) == 0  # layers reused
        assert px.manifest_gets("px/app") == 1


def test_proxy_corrupt_blob(proxy: FaultProxy, pushed_basic: str, image: tuple[Path, ImageInfo],
                            workdir: Path) -> None:
    layout, info = image
    digest = info.layer_digests[0]
    proxy.corrupt_blob(digest)
    failed = pull_with_skopeo(f"docker://{proxy.host}/app:v1", out_dir(workdir, "corrupt"),
                              creds=ALICE, check=False)
    assert failed.returncode != 0 and "Digest did not match" in failed.stderr
    served = get_blob(proxy, "app", digest, creds=ALICE)
    original = read_oci_layers(layout)[0]
    assert len(served) == len(original) and served != original and sha256(served) != digest
    ranged = get_blob(proxy, "app", digest, creds=ALICE, headers={"Range": "bytes=100-"})
    assert ranged == served[100:]  # consistent corruption across ranges
    proxy.corrupt_blob(digest, False)
    assert get_blob(proxy, "app", digest, creds=ALICE) == original


def test_proxy_cut_then_range_resume(proxy: FaultProxy, pushed_basic: str,
                                     image: tuple[Path, ImageInfo]) -> None:
    layout, info = image
    digest, original = info.layer_digests[0], read_oci_layers(layout)[0]
    proxy.cut_blob(digest, 1000, times=2)
    with client(proxy, ALICE) as c:
        for _ in range(2):
            received = bytearray()
            with pytest.raises(httpx.RemoteProtocolError):
                with c.stream("GET", f"/v2/app/blobs/{digest}") as r:
                    assert r.status_code == 200
                    assert int(r.headers["content-length"]) == len(original)
                    for chunk in r.iter_raw():
                        received += chunk
            assert bytes(received) == original[:1000]
        resumed = c.get(f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={len(received)}-"})
        assert resumed.status_code == 206
        assert resumed.headers["content-range"] == f"bytes 1000-{len(original) - 1}/{len(original)}"
        assert bytes(received) + resumed.content == original
        assert c.get(f"/v2/app/blobs/{digest}").content == original
    faults = [r.fault for r in proxy.requests if r.path.endswith(digest) and r.method == "GET"]
    assert faults.count("cut") == 2 and faults[-2:] == [None, None]


def test_proxy_redirect_drops_credentials(proxy: FaultProxy, pushed_basic: str,
                                          image: tuple[Path, ImageInfo], workdir: Path) -> None:
    layout, info = image
    digest, original = info.layer_digests[0], read_oci_layers(layout)[0]
    proxy.redirect_blobs()
    with client(proxy) as anonymous:  # no credentials: the registry's 401, not a redirect
        assert anonymous.get(f"/v2/app/blobs/{digest}").status_code == 401
    with client(proxy, ALICE) as c:
        r = c.get(f"/v2/app/blobs/{digest}")
        assert r.status_code == 307
        location = r.headers["location"]
        assert location.startswith(f"http://{REDIRECT_HOST}:")
        sent_auth = r.request.headers["authorization"]
    # a client that strips credentials (httpx does across hosts), and one that leaks them
    with httpx.Client(follow_redirects=True) as follower:
        followed = follower.get(f"{proxy.url}/v2/app/blobs/{digest}",
                                headers={"Authorization": sent_auth})
    assert followed.content == original and followed.history[0].status_code == 307
    leaky = httpx.get(location, headers={"Authorization": sent_auth, "Range": "bytes=10-19"})
    assert leaky.status_code == 206 and leaky.content == original[10:20]
    assert [r.authorization for r in proxy.redirect_requests] == [None, sent_auth]
    assert httpx.get(location.split("?")[0]).status_code == 403  # the signed URL is the credential

    proxy.reset_counts()
    pulled = out_dir(workdir, "redirected")
    pull_with_skopeo(f"docker://{proxy.host}/app:v1", pulled, creds=ALICE)
    assert_same_image(layout, pulled)
    assert len(proxy.redirect_requests) == 3  # 2 layers + config
    assert all(r.authorization is None and r.status == 200 for r in proxy.redirect_requests)
    assert all(r.headers["host"].startswith(REDIRECT_HOST) for r in proxy.redirect_requests)


def test_proxy_fail_next(proxy: FaultProxy, pushed_basic: str) -> None:
    proxy.fail_next(2, 503, path="/manifests/", retry_after="1")
    with client(proxy, ALICE) as c:
        accept = {"Accept": MT_MANIFEST}
        first = c.get("/v2/app/manifests/v1", headers=accept)
        assert first.status_code == 503 and first.headers["retry-after"] == "1"
        assert first.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert c.get("/v2/app/tags/list").status_code == 200  # not matched: passes
        assert c.get("/v2/app/manifests/v1", headers=accept).status_code == 503
        assert c.get("/v2/app/manifests/v1", headers=accept).status_code == 200
        proxy.fail_next(1, 500, method="PATCH")
        uploads = c.post("/v2/app/blobs/uploads/")
        assert uploads.status_code == 202
        patch = c.patch(uploads.headers["location"], content=b"x" * 100_000)
        assert patch.status_code == 500  # the body was drained: the connection stays usable
        assert c.get("/v2/app/tags/list").status_code == 200
    assert [r.fault for r in proxy.requests].count("fail") == 3


def test_proxy_hide_tag(proxy: FaultProxy, pushed_basic: str) -> None:
    push_blob(proxy, "app", b"unrelated\n", creds=ALICE)  # a request that must not be hidden
    proxy.hide_tag("app", "v1")
    with client(proxy, ALICE) as c:
        r = c.get("/v2/app/manifests/v1", headers={"Accept": MT_MANIFEST})
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert "v1" not in (c.get("/v2/app/tags/list").json()["tags"] or [])
    with client(proxy) as anonymous:  # auth still comes first
        assert anonymous.get("/v2/app/manifests/v1").status_code == 401
    inspect = skopeo("inspect", "--tls-verify=false", "--creds", "alice:wonderland",
                     f"docker://{proxy.host}/app:v1", check=False)
    assert inspect.returncode != 0 and "manifest unknown" in inspect.stderr.lower()


def test_proxy_concurrent_blob_gets(proxy: FaultProxy, pushed_basic: str,
                                    image: tuple[Path, ImageInfo]) -> None:
    layout, info = image
    blobs = dict(zip(info.layer_digests, read_oci_layers(layout)))
    results: list[bool] = []

    def fetch(digest: str) -> None:
        results.append(get_blob(proxy, "app", digest, creds=ALICE) == blobs[digest])

    threads = [threading.Thread(target=fetch, args=(d,)) for d in list(blobs) * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [True] * 12
    assert sum(proxy.blob_gets(d) for d in blobs) == 12


# ---------------------------------------------------------------------------
# Raw helpers: manifest lists, byte-exact pushes


def test_image_index_and_zstd_layers(plain: Registry, workdir: Path) -> None:
    """A hand-made index over an amd64 and an arm64 image (zstd layers, pushed raw),
    read back byte-exact by httpx and by skopeo, which picks the asked platform."""
    amd64_dir, arm64_dir = workdir / "idx-amd64", workdir / "idx-arm64"
    amd64 = make_test_image(amd64_dir, seed="amd64", compression="zstd")
    arm64 = make_test_image(arm64_dir, seed="arm64", layers=1, compression="zstd",
                            config={"Env": ["ARCH=arm64"]})
    assert push_layout(plain, "multi/app", "amd64", amd64_dir) == amd64.manifest_digest
    assert push_layout(plain, "multi/app", "arm64", arm64_dir) == arm64.manifest_digest
    entries = [descriptor(manifest_bytes(amd64_dir, amd64), MT_MANIFEST,
                          {"os": "linux", "architecture": "amd64"}),
               descriptor(manifest_bytes(arm64_dir, arm64), MT_MANIFEST,
                          {"os": "linux", "architecture": "arm64", "variant": "v8"})]
    for media_type, tag in ((MT_INDEX, "oci"), (MT_DOCKER_LIST, "docker")):
        data = image_index(entries, media_type)
        assert put_manifest(plain, "multi/app", tag, data, media_type) == sha256(data)
        raw = get_manifest(plain, "multi/app", tag)
        assert raw.data == data and raw.media_type == media_type
        assert skopeo("inspect", "--raw", "--tls-verify=false",
                      f"docker://{plain.host}/multi/app:{tag}").stdout.encode() == data
    pulled = out_dir(workdir, "idx-pulled")
    pull_with_skopeo(f"docker://{plain.host}/multi/app:oci", f"oci:{pulled}:latest")
    assert read_oci_layers(pulled) == read_oci_layers(amd64_dir)
    arm_pulled = out_dir(workdir, "idx-arm-pulled")
    skopeo("--override-arch", "arm64", "--override-variant", "v8", "copy", "--src-tls-verify=false",
           "--preserve-digests", f"docker://{plain.host}/multi/app:oci", f"oci:{arm_pulled}:latest")
    assert read_oci_manifest(arm_pulled) == read_oci_manifest(arm64_dir)
    assert json.loads(get_blob(plain, "multi/app", arm64.config_digest))["config"] == {
        "Env": ["ARCH=arm64"]}


def test_basic_header_shape() -> None:
    """ChallengeAuth sends standard Basic credentials (guards the helpers, not a server)."""
    token = base64.b64encode(b"alice:wonderland").decode()
    request = httpx.Request("GET", "http://127.0.0.1/v2/")
    from support.registry import ChallengeAuth
    flow = ChallengeAuth(ALICE).auth_flow(request)
    next(flow)
    challenged = httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'}, request=request)
    retried = flow.send(challenged)
    assert retried.headers["authorization"] == f"Basic {token}"
