"""`layerfs push` against a real distribution registry, checked with skopeo.

What layerfs pushes must be what skopeo then pulls, byte for byte (manifest and
blobs), and what the registry already has must not travel again: blobs present are
skipped after a HEAD, blobs seen in another repository are mounted (with one token
for both repositories), big blobs go up in chunks when asked. A committed
container pushes like any image. Root and rootless.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator

import pytest

from support.oci import directory, file, make_layer
from support.registry import (FaultProxy, Registry, TokenServer, get_blob, get_manifest, grant_at_most,
                              pull_with_skopeo, skopeo)

ALICE = ("alice", "wonderland")
USERS = dict([ALICE])
UPLOAD_START = r"^/v2/.+/blobs/uploads/$"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("layerfs: error:"), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _layers(seed: str, big: int = 0) -> list[bytes]:
    """Two gzip layers (the first shared by every seed) and one of this seed's own."""
    base = make_layer([directory("etc"), file("etc/os-release", b"ID=test\n")], "gzip")
    middle = make_layer([directory("app"), file("app/readme", b"shared middle\n")], "gzip")
    own = [directory("data"), file(f"data/{seed}.txt", f"seed {seed}\n".encode())]
    if big:
        own.append(file("data/big.bin", os.urandom(big)))
    return [base, middle, make_layer(own, "gzip")]


@pytest.fixture(scope="module")
def plain() -> Iterator[Registry]:
    with Registry() as registry:
        yield registry


@pytest.fixture
def proxy(plain: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(plain) as px:
        yield px


def _store_blob(lfs, digest: str) -> bytes:  # noqa: ANN001
    return (lfs.root / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _image(lfs, ref: str) -> dict:  # noqa: ANN001
    return json.loads(lfs.run("inspect", "--json", ref).stdout)


def test_push_then_skopeo_pulls_the_same_bytes(lfs, plain: Registry) -> None:  # noqa: ANN001
    lfs.import_layers(_layers("one"), "app:1")
    stored = _image(lfs, "app:1")
    dest = f"{plain.host}/push-{'user' if lfs.rootless else 'root'}/app:1"
    out = lfs.run("push", "--tls-verify=false", "app:1", dest)
    assert f"Pushed {dest} ({stored['digest']})" in out.stdout
    remote = get_manifest(plain, dest.split("/", 1)[1].rsplit(":", 1)[0], "1")
    assert remote.digest == stored["digest"]
    assert remote.data == _store_blob(lfs, stored["digest"])
    layout = lfs.mkdir("skopeo-copy")
    pull_with_skopeo(f"docker://{dest}", layout)
    for layer in stored["layers"]:
        hexpart = layer["digest"].split(":", 1)[1]
        assert (layout / "blobs" / "sha256" / hexpart).read_bytes() == _store_blob(lfs, layer["digest"])
    assert skopeo("inspect", "--tls-verify=false", f"docker://{dest}").returncode == 0


def test_blobs_the_repository_has_are_skipped(lfs, proxy: FaultProxy) -> None:  # noqa: ANN001
    lfs.import_layers(_layers("a"), "skip:a")
    lfs.import_layers(_layers("b"), "skip:b")
    repo = f"skip-{'user' if lfs.rootless else 'root'}"
    lfs.run("push", "--tls-verify=false", "skip:a", f"{proxy.host}/{repo}:a")
    proxy.reset_counts()
    out = lfs.run("push", "--tls-verify=false", "skip:b", f"{proxy.host}/{repo}:b")
    # two shared layers are skipped; the new layer and the new config are uploaded
    assert "2 blobs uploaded, 0 mounted, 2 already there" in out.stdout
    assert proxy.count("POST", regex=UPLOAD_START) == 2
    assert proxy.count("HEAD", regex=r"/blobs/sha256:") == 4
    again = lfs.run("push", "--tls-verify=false", "skip:b", f"{proxy.host}/{repo}:b")
    assert "0 blobs uploaded, 0 mounted, 4 already there" in again.stdout


def test_chunked_upload(lfs, proxy: FaultProxy) -> None:  # noqa: ANN001
    lfs.import_layers(_layers("chunky", big=12 << 20), "chunky:1")
    dest = f"{proxy.host}/chunky-{'user' if lfs.rootless else 'root'}:1"
    lfs.run("push", "--tls-verify=false", "--chunk-size", "5M", "chunky:1", dest)
    patches = [r for r in proxy.requests if r.method == "PATCH"]
    assert len(patches) == 3  # 12 MiB and a bit, in 5 MiB chunks
    stored = _image(lfs, "chunky:1")
    big = max(stored["layers"], key=lambda layer: layer["size"])
    assert get_blob(proxy, dest.split("/", 1)[1].split(":")[0], big["digest"]) == _store_blob(lfs, big["digest"])
    bad = lfs.run("push", "--tls-verify=false", "--chunk-size", "1K", "chunky:1", dest, check=False)
    assert bad.returncode == 2 and "at least 5M" in bad.stderr


def test_committed_container_pushes_and_pulls_back(lfs, plain: Registry) -> None:  # noqa: ANN001
    lfs.import_layers(_layers("base"), "cbase:1")
    lfs.run("create", "--name", "pushme", "cbase:1")
    mountpoint = lfs.mkdir("mnt-c")
    lfs.run("mount", "pushme", str(mountpoint))
    lfs.sh(["sh", "-c", f"echo changed > {mountpoint}/data/new.txt && rm {mountpoint}/etc/os-release"])
    lfs.run("umount", str(mountpoint))
    lfs.run("commit", "pushme", "committed:1")
    dest = f"{plain.host}/committed-{'user' if lfs.rootless else 'root'}:1"
    lfs.run("push", "--tls-verify=false", "committed:1", dest)
    other = type(lfs)(user=lfs.user, workdir=lfs.mkdir("second"))
    other.run("pull", "-q", "--tls-verify=false", dest)
    assert _image(other, dest)["digest"] == _image(lfs, "committed:1")["digest"]
    with other.mounted(dest) as root:  # read as its owner: a rootless mount admits only them
        assert other.sh(["cat", f"{root}/data/new.txt"]).stdout == b"changed\n"
        assert other.sh(["test", "-e", f"{root}/etc/os-release"], check=False).returncode == 1


def test_push_by_own_name_and_pull_round_trip(lfs, plain: Registry) -> None:  # noqa: ANN001
    name = f"{plain.host}/own-{'user' if lfs.rootless else 'root'}:v1"
    lfs.import_layers(_layers("own"), name)
    out = lfs.run("push", "-q", "--tls-verify=false", name)
    assert out.stdout.strip() == _image(lfs, name)["digest"]
    digestfile = lfs.workdir / "digest"
    lfs.run("push", "--tls-verify=false", "--digestfile", str(digestfile), name, f"docker://{name}")
    assert digestfile.read_text() == out.stdout.strip()


def test_push_errors_are_one_line(lfs, plain: Registry) -> None:  # noqa: ANN001
    unknown = lfs.run("push", "--tls-verify=false", "nosuch:1", f"{plain.host}/x:1", check=False)
    assert unknown.returncode == 3
    _one_error_line(unknown.stderr)
    lfs.import_layers(_layers("err"), "err:1")
    bad_ref = lfs.run("push", "--tls-verify=false", "err:1", f"{plain.host}/UPPER:1", check=False)
    assert bad_ref.returncode == 1 and "lowercase" in _one_error_line(bad_ref.stderr)
    tls = lfs.run("push", "err:1", f"{plain.host}/x:1", check=False)
    assert tls.returncode == 1 and "--tls-verify=false" in _one_error_line(tls.stderr)


# -- auth: htpasswd and the token flow --------------------------------------------------------


@pytest.fixture(scope="module")
def basic() -> Iterator[Registry]:
    with Registry(users=USERS) as registry:
        yield registry


def test_push_needs_credentials(lfs, basic: Registry) -> None:  # noqa: ANN001
    lfs.import_layers(_layers("auth"), "auth:1")
    dest = f"{basic.host}/auth-{'user' if lfs.rootless else 'root'}:1"
    anonymous = lfs.run("push", "--tls-verify=false", "auth:1", dest, check=False)
    assert anonymous.returncode == 1
    assert "layerfs login" in _one_error_line(anonymous.stderr)
    lfs.run("push", "--tls-verify=false", "--creds", ":".join(ALICE), "auth:1", dest)
    assert get_manifest(basic, dest.split("/", 1)[1].split(":")[0], "1", creds=ALICE).digest == \
        _image(lfs, "auth:1")["digest"]


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with TokenServer(USERS) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(tokens: TokenServer) -> Iterator[Registry]:
    with Registry(token_server=tokens) as registry:
        yield registry


def test_cross_repository_mount_asks_one_token_for_both(lfs, token_registry: Registry,  # noqa: ANN001
                                                        tokens: TokenServer) -> None:
    who = "user" if lfs.rootless else "root"
    lfs.import_layers(_layers("mount"), "mnt:1")
    creds = ["--creds", ":".join(ALICE)]
    lfs.run("push", "--tls-verify=false", *creds, "mnt:1", f"{token_registry.host}/src-{who}/app:1")
    tokens.reset()
    out = lfs.run("push", "--tls-verify=false", *creds, "mnt:1", f"{token_registry.host}/dst-{who}/app:1")
    assert "0 blobs uploaded, 4 mounted, 0 already there" in out.stdout
    both = [r for r in tokens.requests
            if sorted(r.scopes) == sorted([f"repository:dst-{who}/app:pull,push",
                                           f"repository:src-{who}/app:pull"])]
    assert both, [r.scopes for r in tokens.requests]
    assert get_manifest(token_registry, f"dst-{who}/app", "1", creds=ALICE).digest == _image(lfs, "mnt:1")["digest"]


def test_under_granted_push_fails_clearly(lfs, token_registry: Registry, tokens: TokenServer) -> None:  # noqa: ANN001
    lfs.import_layers(_layers("grant"), "grant:1")
    dest = f"{token_registry.host}/grant-{'user' if lfs.rootless else 'root'}:1"
    tokens.policy = grant_at_most("pull")
    try:
        refused = lfs.run("push", "--tls-verify=false", "--creds", ":".join(ALICE), "grant:1", dest,
                          check=False)
    finally:
        tokens.policy = grant_at_most("pull", "push")
    assert refused.returncode == 1
    line = _one_error_line(refused.stderr)
    assert "push" in line and re.search(r"grant|refused", line), line
