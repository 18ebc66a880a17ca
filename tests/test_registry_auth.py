"""Registry auth and TLS for `layerfs pull`, `login`, `logout` (issue 10).

htpasswd basic auth, TLS from a test CA and the bearer-token flow, each against a real
distribution server (Debian's `docker-registry`) and the token server and fault proxy
of tests/support/registry.py; the CLI runs as root and as the unprivileged test user.
Credentials files are always named (--authfile, REGISTRY_AUTH_FILE): the tests never
read or write a real user's logins.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs
from support.registry import (FaultProxy, Registry, TokenServer, default_policy, grant_at_most,
                              make_test_image, push_oci_with_skopeo, skopeo)
from test_registry_pull import (Pushed, assert_stored_like_registry, images, one_error_line,
                                pushed_from_layout)

ALICE = ("alice", "wonderland")
USERS = dict([ALICE])


def pull(lfs: Layerfs, ref: str, *args: str, check: bool = True,
         tls_verify: str = "false") -> subprocess.CompletedProcess[str]:
    return lfs.run("pull", f"--tls-verify={tls_verify}", "-q", *args, ref, check=check)


def run_env(lfs: Layerfs, env: dict[str, str | None], *args: str, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """`layerfs --root STORE ARGS` as lfs's identity with these environment variables
    set (None: unset)."""
    settings = [f"{k}={v}" for k, v in env.items() if v is not None]
    unset = [arg for k, v in env.items() if v is None for arg in ("-u", k)]
    proc = lfs.sh(["env", *unset, *settings, LAYERFS_BIN, "--root", str(lfs.root), *args],
                  check=check, input=input)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


def auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_authfile(lfs: Layerfs, name: str, doc: dict) -> Path:
    path = lfs.workdir / name
    path.write_text(json.dumps(doc, indent="\t"))
    os.chmod(path, 0o600)
    lfs.give(path)
    return path


def read_auths(path: Path) -> dict:
    return json.loads(path.read_text()).get("auths", {})


# ---------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(f"/tmp/layerfs-regauth-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def layout(work: Path) -> tuple[Path, object]:
    path = work / "image"
    return path, make_test_image(path, seed="auth", layer_bytes=64 * 1024)


def _push(layout: tuple[Path, object], host: str, dest: str, **kw: object) -> Pushed:
    push_oci_with_skopeo(f"oci:{layout[0]}:latest", f"docker://{host}/{dest}", **kw)  # type: ignore[arg-type]
    repo, tag = dest.rsplit(":", 1)
    return pushed_from_layout(repo, tag, layout[0], layout[1])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def basic() -> Iterator[Registry]:
    with Registry(users=USERS) as reg:
        yield reg


@pytest.fixture(scope="module")
def basic_app(basic: Registry, layout: tuple[Path, object]) -> Pushed:
    return _push(layout, basic.host, "private/app:v1", creds=ALICE)


@pytest.fixture(scope="module")
def basic_proxy_server(basic: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(basic) as px:
        yield px


@pytest.fixture
def basic_proxy(basic_proxy_server: FaultProxy) -> Iterator[FaultProxy]:
    basic_proxy_server.reset()
    yield basic_proxy_server
    basic_proxy_server.reset()


@pytest.fixture(scope="module")
def tls() -> Iterator[Registry]:
    with Registry(tls=True, users=USERS) as reg:
        yield reg


@pytest.fixture(scope="module")
def tls_app(tls: Registry, layout: tuple[Path, object]) -> Pushed:
    return _push(layout, tls.host, "secure/app:v1", creds=ALICE, tls_verify=True, cert_dir=tls.ca_dir)


def private_policy(user: str | None, scope: object) -> list[str]:
    """Anonymous: pull on everything but private/*; alice: everything."""
    granted = default_policy(user, scope)  # type: ignore[arg-type]
    if user is None and scope.name.startswith("private/"):  # type: ignore[attr-defined]
        return []
    return granted


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with TokenServer(USERS) as ts:
        yield ts


@pytest.fixture(scope="module")
def token_registry(tokens: TokenServer) -> Iterator[Registry]:
    with Registry(token_server=tokens) as reg:
        yield reg


@pytest.fixture(scope="module")
def token_apps(token_registry: Registry, layout: tuple[Path, object]) -> tuple[Pushed, Pushed]:
    """pub/app:v1 (anonymous pull allowed) and private/app:v1 (alice only, once the
    token server's policy is `private_policy`)."""
    return (_push(layout, token_registry.host, "pub/app:v1", creds=ALICE),
            _push(layout, token_registry.host, "private/app:v1", creds=ALICE))


@pytest.fixture
def token_server(tokens: TokenServer) -> Iterator[TokenServer]:
    """The module's token server, private/* closed to anonymous users, records cleared;
    defaults again after."""
    tokens.reset()
    tokens.policy = private_policy
    yield tokens
    tokens.policy = default_policy
    tokens.expires_in = 300


@pytest.fixture(scope="module")
def token_proxy_server(token_registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(token_registry) as px:
        yield px


@pytest.fixture
def token_proxy(token_proxy_server: FaultProxy, token_server: TokenServer) -> Iterator[FaultProxy]:
    token_proxy_server.reset()
    yield token_proxy_server
    token_proxy_server.reset()


# ---------------------------------------------------------------------------
# htpasswd: login, logout, stored and given credentials


def test_no_credentials_says_to_log_in(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    empty = write_authfile(lfs, "empty.json", {})
    before = lfs.store_snapshot()
    failed = pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(empty), check=False)
    one_error_line(failed, 1, "layerfs login", basic.host)
    for cmd in (["tags", f"docker://{basic.host}/private/app"],
                ["inspect", f"docker://{basic.host}/private/app:v1"]):
        one_error_line(lfs.run(cmd[0], "--tls-verify=false", "--authfile", str(empty), cmd[1],
                               check=False), 1, "layerfs login")
    assert lfs.store_snapshot() == before


def test_login_wrong_password_stores_nothing(lfs: Layerfs, basic: Registry) -> None:
    authfile = lfs.workdir / "auth.json"
    failed = lfs.run("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice",
                     "-p", "wrong", basic.host, check=False)
    one_error_line(failed, 1, "alice")
    assert not authfile.exists()
    # an existing file keeps its other logins, unchanged
    kept = write_authfile(lfs, "kept.json", {"auths": {"other.example:5000": auth_entry("bob", "x")}})
    content = kept.read_bytes()
    failed = lfs.run("login", "--tls-verify=false", "--authfile", str(kept), "-u", "alice",
                     "--password-stdin", basic.host, input=b"wrong\n", check=False)
    one_error_line(failed, 1)
    assert kept.read_bytes() == content
    unknown = lfs.run("login", "--tls-verify=false", "--authfile", str(kept), "-u", "mallory",
                      "-p", "wonderland", basic.host, check=False)
    one_error_line(unknown, 1)


def test_login_pull_logout(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    authfile = lfs.workdir / "auth.json"
    done = lfs.run("login", "--tls-verify=false", "--authfile", str(authfile), "-u", ALICE[0],
                   "-p", ALICE[1], basic.host)
    assert "Login Succeeded" in done.stdout
    assert read_auths(authfile) == {basic.host: auth_entry(*ALICE)}  # podman's format
    assert authfile.stat().st_mode & 0o077 == 0
    assert lfs.run("login", "--get-login", "--authfile", str(authfile), basic.host).stdout.strip() == "alice"
    # skopeo (containers/image, as podman) reads what layerfs login wrote
    inspected = skopeo("inspect", "--tls-verify=false", "--authfile", str(authfile),
                       f"docker://{basic.host}/private/app:v1")
    assert json.loads(inspected.stdout)["Digest"] == basic_app.digest

    pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(authfile))
    entry = assert_stored_like_registry(lfs, basic, "private/app", "v1", f"{basic.host}/private/app:v1",
                                        creds=ALICE)
    assert entry["digest"] == basic_app.digest and entry["names"] == [f"{basic.host}/private/app:v1"]
    tags = json.loads(lfs.run("tags", "--json", "--tls-verify=false", "--authfile", str(authfile),
                              f"docker://{basic.host}/private/app").stdout)
    assert tags["Tags"] == ["v1"]

    out = lfs.run("logout", "--authfile", str(authfile), basic.host)
    assert basic.host in out.stdout
    assert read_auths(authfile) == {}
    one_error_line(lfs.run("login", "--get-login", "--authfile", str(authfile), basic.host,
                           check=False), 1, "not logged in")
    one_error_line(lfs.run("logout", "--authfile", str(authfile), basic.host, check=False), 1,
                   "not logged in")
    one_error_line(pull(lfs, f"{basic.host}/private/app:v2", "--authfile", str(authfile),
                        check=False), 1, "layerfs login")


def test_password_stdin_and_logout_all(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    authfile = write_authfile(lfs, "auth.json", {"auths": {"other.example:5000": auth_entry("bob", "x")},
                                                 "credHelpers": {}})
    lfs.run("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice",
            "--password-stdin", basic.host, input=b"wonderland\n")
    auths = read_auths(authfile)
    assert auths[basic.host] == auth_entry(*ALICE) and "other.example:5000" in auths
    assert "credHelpers" in json.loads(authfile.read_text())  # other keys are kept
    pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(authfile))
    lfs.run("logout", "--all", "--authfile", str(authfile))
    assert read_auths(authfile) == {}
    proc = lfs.run("logout", "--authfile", str(authfile), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("key", ["HOST", "http://HOST", "https://HOST/v2/", "HOST/private"])
def test_podman_auth_file(lfs: Layerfs, basic: Registry, basic_app: Pushed, key: str) -> None:
    """An auth.json as podman writes it (or as users edit it), by --authfile and by
    REGISTRY_AUTH_FILE; a namespace key applies to the repositories below it only."""
    key = key.replace("HOST", basic.host)
    authfile = write_authfile(lfs, "podman-auth.json", {"auths": {key: auth_entry(*ALICE)}})
    pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(authfile))
    assert [i["digest"] for i in images(lfs)] == [basic_app.digest]
    if key.endswith("/private"):
        other = pull(lfs, f"{basic.host}/public/app:v1", "--authfile", str(authfile), check=False)
        one_error_line(other, 1, "layerfs login")
    shutil.rmtree(lfs.root)
    run_env(lfs, {"REGISTRY_AUTH_FILE": str(authfile)}, "pull", "--tls-verify=false", "-q",
            f"{basic.host}/private/app:v1")
    assert [i["digest"] for i in images(lfs)] == [basic_app.digest]


def test_skopeo_login_file_is_reused(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    """A file `skopeo login` (containers/image: podman's code) wrote, used by layerfs; and
    REGISTRY_AUTH_FILE is where layerfs login writes and logout removes."""
    authfile = lfs.workdir / "skopeo-auth.json"
    skopeo("login", "--tls-verify=false", "--authfile", str(authfile), "-u", ALICE[0], "-p", ALICE[1],
           basic.host)
    lfs.give(authfile)
    pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(authfile))
    env = {"REGISTRY_AUTH_FILE": str(lfs.workdir / "env-auth.json")}
    run_env(lfs, env, "login", "--tls-verify=false", "-u", ALICE[0], "--password-stdin", basic.host,
            input=b"wonderland\n")
    assert read_auths(lfs.workdir / "env-auth.json") == {basic.host: auth_entry(*ALICE)}
    assert run_env(lfs, env, "login", "--get-login", basic.host).stdout.strip() == "alice"
    run_env(lfs, env, "logout", basic.host)
    assert read_auths(lfs.workdir / "env-auth.json") == {}


def test_docker_config_json(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    """A `docker login` made earlier ($DOCKER_CONFIG/config.json) is reused."""
    docker_dir = lfs.mkdir("docker-config")
    write_authfile(lfs, "docker-config/config.json",
                   {"auths": {f"https://{basic.host}": auth_entry(*ALICE)}, "credsStore": ""})
    env = {"DOCKER_CONFIG": str(docker_dir), "REGISTRY_AUTH_FILE": str(lfs.workdir / "none.json")}
    run_env(lfs, env, "pull", "--tls-verify=false", "-q", f"{basic.host}/private/app:v1")
    assert [i["digest"] for i in images(lfs)] == [basic_app.digest]


def test_default_auth_file_locations(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    """Without --authfile or REGISTRY_AUTH_FILE, login writes where podman does:
    $XDG_RUNTIME_DIR/containers/auth.json, else ~/.config/containers/auth.json; pull
    finds it there. HOME points into the scratch area: no real login is touched."""
    home = lfs.mkdir("home")
    runtime = lfs.mkdir("run")
    env: dict[str, str | None] = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
                                  "XDG_CONFIG_HOME": None, "REGISTRY_AUTH_FILE": None,
                                  "DOCKER_CONFIG": None}
    done = run_env(lfs, env, "login", "--tls-verify=false", "-u", "alice", "-p", "wonderland", basic.host)
    assert str(runtime / "containers" / "auth.json") in done.stdout
    assert read_auths(runtime / "containers" / "auth.json") == {basic.host: auth_entry(*ALICE)}
    run_env(lfs, env, "pull", "--tls-verify=false", "-q", f"{basic.host}/private/app:v1")
    run_env(lfs, env, "logout", basic.host)
    env["XDG_RUNTIME_DIR"] = None
    run_env(lfs, env, "login", "--tls-verify=false", "-u", "alice", "-p", "wonderland", basic.host)
    assert read_auths(home / ".config" / "containers" / "auth.json") == {basic.host: auth_entry(*ALICE)}
    shutil.rmtree(lfs.root)
    run_env(lfs, env, "pull", "--tls-verify=false", "-q", f"{basic.host}/private/app:v1")
    assert [i["digest"] for i in images(lfs)] == [basic_app.digest]
    # $XDG_CONFIG_HOME moves ~/.config, as for podman
    env["XDG_CONFIG_HOME"] = str(lfs.mkdir("xdg-config"))
    run_env(lfs, env, "login", "--tls-verify=false", "-u", "alice", "-p", "wonderland", basic.host)
    assert read_auths(lfs.workdir / "xdg-config" / "containers" / "auth.json") == {
        basic.host: auth_entry(*ALICE)}


def test_creds_option(lfs: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    empty = write_authfile(lfs, "empty.json", {})
    before = lfs.store_snapshot()
    wrong = pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(empty), "--creds",
                 "alice:wrong", check=False)
    one_error_line(wrong, 1, "alice")
    assert lfs.store_snapshot() == before
    # --creds wins over a stored login (here a stale one)
    stale = write_authfile(lfs, "stale.json", {"auths": {basic.host: auth_entry("alice", "old")}})
    one_error_line(pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(stale), check=False), 1)
    pull(lfs, f"{basic.host}/private/app:v1", "--authfile", str(stale), "--creds", "alice:wonderland")
    assert [i["digest"] for i in images(lfs)] == [basic_app.digest]
    one_error_line(pull(lfs, f"{basic.host}/private/app:v1", "--creds", ":pw", check=False), 1, "--creds")


def test_bad_auth_file(lfs_root: Layerfs, basic: Registry, basic_app: Pushed) -> None:
    broken = lfs_root.workdir / "broken.json"
    broken.write_text("{not json")
    one_error_line(pull(lfs_root, f"{basic.host}/private/app:v1", "--authfile", str(broken),
                        check=False), 1, str(broken))
    helper = write_authfile(lfs_root, "helper.json", {"credHelpers": {basic.host: "secretservice"}})
    one_error_line(pull(lfs_root, f"{basic.host}/private/app:v1", "--authfile", str(helper),
                        check=False), 1, "credential helper")


def test_redirect_drops_basic_credentials(lfs: Layerfs, basic_proxy: FaultProxy, basic_app: Pushed) -> None:
    """Blob GETs sent on to another host (a CDN): followed, and the password stays home."""
    basic_proxy.redirect_blobs()
    pull(lfs, f"{basic_proxy.host}/private/app:v1", "--creds", "alice:wonderland")
    redirected = basic_proxy.redirect_requests
    assert len(redirected) == 3  # two layers and the config
    assert all(r.status == 200 and r.authorization is None for r in redirected)
    served = [r for r in basic_proxy.requests if r.fault == "redirect"]
    assert len(served) == 3 and all((r.authorization or "").startswith("Basic ") for r in served)
    entry = images(lfs)[0]
    assert entry["digest"] == basic_app.digest


# ---------------------------------------------------------------------------
# TLS


def test_tls_with_cert_dir(lfs: Layerfs, tls: Registry, tls_app: Pushed) -> None:
    assert tls.ca_dir is not None
    ref = f"{tls.host}/secure/app:v1"
    pull(lfs, ref, "--cert-dir", str(tls.ca_dir), "--creds", "alice:wonderland", tls_verify="true")
    assert [i["digest"] for i in images(lfs)] == [tls_app.digest]
    authfile = lfs.workdir / "auth.json"
    lfs.run("login", "--cert-dir", str(tls.ca_dir), "--authfile", str(authfile), "-u", "alice",
            "-p", "wonderland", tls.host)
    tags = json.loads(lfs.run("tags", "--json", "--cert-dir", str(tls.ca_dir), "--authfile", str(authfile),
                              f"docker://{tls.host}/secure/app").stdout)
    assert tags["Tags"] == ["v1"]


def test_tls_certs_d_of_the_user(lfs_user: Layerfs, tls: Registry, tls_app: Pushed) -> None:
    """A CA in ~/.config/containers/certs.d/HOST:PORT/ (containers-certs.d(5), rootless)
    is trusted without --cert-dir. HOME points into the scratch area."""
    assert tls.ca_dir is not None
    home = lfs_user.mkdir("home")
    certs = home / ".config" / "containers" / "certs.d" / tls.host
    certs.mkdir(parents=True)
    shutil.copy(tls.ca_dir / "ca.crt", certs / "ca.crt")
    lfs_user.give(home)
    run_env(lfs_user, {"HOME": str(home)}, "pull", "-q", "--creds", "alice:wonderland",
            f"{tls.host}/secure/app:v1")
    assert [i["digest"] for i in images(lfs_user)] == [tls_app.digest]


def test_tls_without_cert_dir_fails(lfs: Layerfs, tls: Registry, tls_app: Pushed) -> None:
    ref = f"{tls.host}/secure/app:v1"
    before = lfs.store_snapshot()
    for proc in (pull(lfs, ref, "--creds", "alice:wonderland", tls_verify="true", check=False),
                 lfs.run("pull", ref, check=False),  # the default is to verify
                 lfs.run("login", "--authfile", str(lfs.workdir / "a.json"), "-u", "alice", "-p",
                         "wonderland", tls.host, check=False)):
        one_error_line(proc, 1, "--tls-verify", "--cert-dir", tls.host)
    assert lfs.store_snapshot() == before
    assert not (lfs.workdir / "a.json").exists()
    # an empty --cert-dir is no better; a missing one is named
    other = lfs.workdir / "other-ca"
    other.mkdir()
    lfs.give(other)
    one_error_line(pull(lfs, ref, "--cert-dir", str(other), tls_verify="true", check=False), 1,
                   "--cert-dir")
    one_error_line(pull(lfs, ref, "--cert-dir", str(lfs.workdir / "nope"), tls_verify="true",
                        check=False), 1, "nope")
    # --tls-verify=false: no verification at all
    pull(lfs, ref, "--creds", "alice:wonderland")
    assert [i["digest"] for i in images(lfs)] == [tls_app.digest]


# ---------------------------------------------------------------------------
# Bearer tokens


def test_token_anonymous_pull(lfs: Layerfs, token_registry: Registry, token_server: TokenServer,
                              token_apps: tuple[Pushed, Pushed]) -> None:
    empty = write_authfile(lfs, "empty.json", {})
    pull(lfs, f"{token_registry.host}/pub/app:v1", "--authfile", str(empty))
    assert [i["digest"] for i in images(lfs)] == [token_apps[0].digest]
    asked = [r for r in token_server.requests if r.status == 200]
    assert asked and all(r.user is None for r in asked)
    assert {s for r in asked for s in r.scopes} == {"repository:pub/app:pull"}
    assert len(asked) == 1  # one token for the whole pull
    denied = pull(lfs, f"{token_registry.host}/private/app:v1", "--authfile", str(empty), check=False)
    one_error_line(denied, 1, "layerfs login")


def test_token_login_and_private_pull(lfs: Layerfs, token_registry: Registry, token_server: TokenServer,
                                      token_apps: tuple[Pushed, Pushed]) -> None:
    authfile = lfs.workdir / "auth.json"
    wrong = lfs.run("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice",
                    "-p", "wrong", token_registry.host, check=False)
    one_error_line(wrong, 1, "alice")
    assert not authfile.exists()
    lfs.run("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice", "-p",
            "wonderland", token_registry.host)
    token_server.reset()
    pull(lfs, f"{token_registry.host}/private/app:v1", "--authfile", str(authfile))
    assert [i["digest"] for i in images(lfs)] == [token_apps[1].digest]
    asked = [r for r in token_server.requests if r.status == 200]
    assert asked and all(r.user == "alice" for r in asked)
    assert "repository:private/app:pull" in asked[0].granted_scopes()


def test_token_under_granted(lfs: Layerfs, token_registry: Registry, token_server: TokenServer,
                             token_apps: tuple[Pushed, Pushed]) -> None:
    """A token server that silently grants nothing: one line saying so, not a bare 401."""
    token_server.policy = grant_at_most()
    before = lfs.store_snapshot()
    for creds in ((), ("--creds", "alice:wonderland")):
        failed = pull(lfs, f"{token_registry.host}/pub/app:v1", *creds, check=False)
        line = one_error_line(failed, 1, "did not grant", "pull access to pub/app")
        assert ("anonymous" in line) == (not creds), line
    assert token_server.requests and all(r.granted == [] for r in token_server.requests if r.status == 200)
    assert lfs.store_snapshot() == before


def test_token_refresh(lfs: Layerfs, token_proxy: FaultProxy, token_server: TokenServer,
                       token_apps: tuple[Pushed, Pushed]) -> None:
    """A token that lives 2 s and a pull that takes longer (a blob answered 503 with
    Retry-After: 3): the client gets a new token before the old one lapses, so the
    proxy, strict about exp, never sees an expired one."""
    token_server.expires_in = 2
    token_proxy.strict_token_expiry()
    layer = token_apps[0].layer_digests[0]
    token_proxy.fail_next(1, 503, path=f"/blobs/{layer}", retry_after="3")
    pull(lfs, f"{token_proxy.host}/pub/app:v1", "--authfile", str(write_authfile(lfs, "e.json", {})))
    assert [i["digest"] for i in images(lfs)] == [token_apps[0].digest]
    issued = [r for r in token_server.requests if r.status == 200]
    assert len(issued) >= 2
    assert [r.fault for r in token_proxy.requests].count("expired") == 0
    assert token_proxy.blob_gets(layer) == 1


def test_token_refused_early_is_renewed_on_401(lfs_root: Layerfs, token_proxy: FaultProxy,
                                               token_server: TokenServer,
                                               token_apps: tuple[Pushed, Pushed]) -> None:
    """A token the registry refuses before the client expected (its exp says 1 s while
    expires_in says 300 s, as with skewed clocks) is replaced on the 401 challenge, and
    the pull goes on."""
    def short_lived(user: str | None, access: list, expires_in: int | None = None) -> str:
        return TokenServer.make_token(token_server, user, access, expires_in=1)

    token_server.make_token = short_lived  # type: ignore[method-assign]
    try:
        token_proxy.strict_token_expiry()
        layer = token_apps[0].layer_digests[0]
        token_proxy.fail_next(1, 503, path=f"/blobs/{layer}", retry_after="2")
        pull(lfs_root, f"{token_proxy.host}/pub/app:v1")
    finally:
        del token_server.make_token  # type: ignore[method-assign]
    assert [i["digest"] for i in images(lfs_root)] == [token_apps[0].digest]
    assert [r.fault for r in token_proxy.requests].count("expired") >= 1
    assert len([r for r in token_server.requests if r.status == 200]) >= 2


def test_token_redirect_drops_authorization(lfs: Layerfs, token_proxy: FaultProxy,
                                            token_server: TokenServer,
                                            token_apps: tuple[Pushed, Pushed]) -> None:
    token_proxy.redirect_blobs()
    pull(lfs, f"{token_proxy.host}/private/app:v1", "--creds", "alice:wonderland")
    assert [i["digest"] for i in images(lfs)] == [token_apps[1].digest]
    redirected = token_proxy.redirect_requests
    assert len(redirected) == 3 and all(r.status == 200 for r in redirected)
    assert all(r.authorization is None for r in redirected)
    served = [r for r in token_proxy.requests if r.fault == "redirect"]
    assert len(served) == 3 and all((r.authorization or "").startswith("Bearer ") for r in served)
