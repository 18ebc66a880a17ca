"""`layerfs pull`, `tags` and `inspect docker://` against real registries (issue 10).

Every registry here is Debian's `docker-registry` (the CNCF distribution server) on
127.0.0.1, filled by skopeo (or, for what skopeo would not push as it is, by raw
uploads); faults come from the `FaultProxy` in front of it. No mocks: the CLI runs as
root and as the unprivileged test user (the `lfs` fixture), and what it stored is
compared byte for byte with what the registry serves. Auth and TLS are in
test_registry_auth.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs
from layerfs.image.manifest import host_platform
from layerfs.registry.reference import parse_remote
from support.oci import (MT_CONFIG, MT_INDEX, MT_LAYER, MT_MANIFEST, ImageInfo, directory, file,
                         make_layer, write_oci_layout)
from support.registry import (MT_DOCKER_LIST, MT_DOCKER_MANIFEST, FaultProxy, Registry, descriptor,
                              get_blob, get_manifest, image_index, make_test_image, pseudo_random,
                              push_blob, push_layout, push_oci_with_skopeo, put_manifest, skopeo,
                              skopeo_copy)

HOST_OS, HOST_ARCH = host_platform()
OTHER_ARCH = "arm64" if HOST_ARCH != "arm64" else "amd64"


# ---------------------------------------------------------------------------
# Helpers


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pull(lfs: Layerfs, ref: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lfs.run("pull", "--tls-verify=false", *args, ref, check=check)


def one_error_line(proc: subprocess.CompletedProcess[str], code: int = 1, *needles: str) -> str:
    """The one line a failing command printed, after checking exit code and shape."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("layerfs: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def images(lfs: Layerfs) -> list[dict]:
    return json.loads(lfs.run("images", "--json").stdout)


def image_named(lfs: Layerfs, name: str) -> dict:
    found = [i for i in images(lfs) if name in i["names"]]
    assert len(found) == 1, (name, images(lfs))
    return found[0]


def store_blob(lfs: Layerfs, digest: str) -> bytes:
    return (lfs.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def tmp_leftovers(lfs: Layerfs) -> list[str]:
    tmp = lfs.root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def exported_files(lfs: Layerfs, ref: str) -> dict[str, bytes]:
    """The regular files of an image's merged tree, via `layerfs export`."""
    out = lfs.workdir / f"export-{os.urandom(4).hex()}.tar"
    lfs.run("export", ref, "-o", str(out))
    files = {}
    with tarfile.open(out) as tar:
        for member in tar:
            if member.isfile():
                files[member.name.removeprefix("./")] = tar.extractfile(member).read()  # type: ignore[union-attr]
    out.unlink()
    return files


def assert_stored_like_registry(lfs: Layerfs, target: Registry | FaultProxy, repo: str, ref: str,
                                name: str | None, creds: tuple[str, str] | None = None) -> dict:
    """The stored image's manifest, config and layer blobs are the registry's bytes, and
    its digest is the registry's manifest digest. Returns the `images --json` entry."""
    raw = get_manifest(target, repo, ref, creds)
    entry = image_named(lfs, name) if name else next(i for i in images(lfs) if i["digest"] == raw.digest)
    assert entry["digest"] == raw.digest
    assert store_blob(lfs, raw.digest) == raw.data
    manifest = json.loads(raw.data)
    assert entry["id"] == manifest["config"]["digest"]
    for desc in [manifest["config"], *manifest["layers"]]:
        assert store_blob(lfs, desc["digest"]) == get_blob(target, repo, desc["digest"], creds), desc
    return entry


@dataclass
class Pushed:
    """An image in a registry: where, and the bytes it was made of."""

    repo: str
    tag: str
    manifest: bytes
    config: bytes
    layers: list[bytes]
    files: dict[str, bytes]  # the merged tree's regular files

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [sha256(b) for b in self.layers]


def layer_of(seed: str, size: int = 0, compression: str = "gzip") -> tuple[bytes, dict[str, bytes]]:
    """A layer with one distinct small file (and a padding file of `size` random bytes)."""
    files = {f"{seed}/hello.txt": f"hello from {seed}\n".encode()}
    if size:
        files[f"{seed}/pad.bin"] = pseudo_random(seed, size)
    entries = [directory(seed)] + [file(path, data) for path, data in files.items()]
    return make_layer(entries, compression), files


def push_raw_image(target: Registry | FaultProxy, repo: str, tag: str,
                   layers: list[tuple[bytes, dict[str, bytes]]], *, arch: str = "amd64",
                   variant: str | None = None, env: list[str] | None = None) -> Pushed:
    """Upload layers, a config for `arch` and an OCI manifest as exact bytes."""
    blobs = [data for data, _ in layers]
    diff_ids = [sha256(_decompressed(b)) for b in blobs]
    config_doc = {"created": "2024-01-02T03:04:05Z", "architecture": arch, "os": "linux",
                  "config": {"Env": env or [f"ARCH={arch}"], "Labels": {"arch": arch}},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids},
                  "history": [{"created_by": f"layer {i}"} for i in range(len(blobs))]}
    if variant:
        config_doc["variant"] = variant
    config = json.dumps(config_doc, indent=1).encode()
    from support.oci import compression_of
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": descriptor(config, MT_CONFIG),
        "layers": [descriptor(b, MT_LAYER[compression_of(b)]) for b in blobs]}, indent=2).encode()
    for blob in [config, *blobs]:
        push_blob(target, repo, blob)
    assert put_manifest(target, repo, tag, manifest, MT_MANIFEST) == sha256(manifest)
    files: dict[str, bytes] = {}
    for _, f in layers:
        files.update(f)
    return Pushed(repo, tag, manifest, config, blobs, files)


def _decompressed(blob: bytes) -> bytes:
    from support.oci import decompress
    return decompress(blob)


def pushed_from_layout(repo: str, tag: str, layout: Path, info: ImageInfo) -> Pushed:
    blob = lambda d: (layout / "blobs" / d.replace(":", "/")).read_bytes()  # noqa: E731
    assert info.manifest_digest
    return Pushed(repo, tag, blob(info.manifest_digest), blob(info.config_digest),
                  [blob(d) for d in info.layer_digests], {})


def layerfs_pid(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The pid of the layerfs process itself (under runuser for the test user): its
    command line is `python -S .../layerfs ...` (the script's interpreter line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in [proc.pid, *_children(proc.pid)]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"/layerfs") for part in cmdline[:3]) and b"runuser" not in cmdline[0]:
                return pid
        time.sleep(0.01)
    raise AssertionError("the layerfs process did not show up")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def wait_for(predicate, timeout: float = 20, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------------------
# Registries and images (module-scoped: started and filled once)


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(f"/tmp/layerfs-regpull-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def plain() -> Iterator[Registry]:
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def app(plain: Registry, work: Path) -> Pushed:
    """A 2-layer gzip image pushed by skopeo as app:v1, app:latest and team/app:v2."""
    layout = work / "app"
    info = make_test_image(layout, seed="app")
    for dest in ("app:v1", "app:latest", "team/app:v2"):
        push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{plain.host}/{dest}")
    pushed = pushed_from_layout("app", "v1", layout, info)
    pushed.files = {f"layer{i}/hello.txt": f"seed app layer {i}\n".encode() for i in range(2)}
    return pushed


@pytest.fixture(scope="module")
def big(plain: Registry, work: Path) -> Pushed:
    """An image whose first layer is ~1.5 MiB of incompressible bytes (cuts, signals)."""
    layout = work / "big"
    info = make_test_image(layout, seed="big", layer_bytes=1536 * 1024)
    push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{plain.host}/big:v1")
    return pushed_from_layout("big", "v1", layout, info)


@pytest.fixture(scope="module")
def proxy_server(plain: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(plain) as px:
        yield px


@pytest.fixture
def proxy(proxy_server: FaultProxy) -> Iterator[FaultProxy]:
    """The module's fault proxy with no faults and no records, and none left after."""
    proxy_server.reset()
    yield proxy_server
    proxy_server.reset()


# ---------------------------------------------------------------------------
# Pull what skopeo pushed


def test_pull_what_skopeo_pushed(lfs: Layerfs, plain: Registry, app: Pushed) -> None:
    done = pull(lfs, f"{plain.host}/app:v1")
    entry = assert_stored_like_registry(lfs, plain, "app", "v1", f"{plain.host}/app:v1")
    assert entry["digest"] == app.digest  # skopeo --preserve-digests: the layout's manifest
    assert done.stdout.strip() == f"Pulled image: {plain.host}/app:v1 ({entry['id']})"
    assert "Traceback" not in done.stderr
    assert exported_files(lfs, f"{plain.host}/app:v1") == app.files
    with lfs.mounted(f"{plain.host}/app:v1") as mnt:
        # a browse mount is for its owner only: read it as that user
        assert lfs.sh(["cat", str(mnt / "layer1" / "hello.txt")]).stdout == app.files["layer1/hello.txt"]
        assert lfs.sh(["ls", str(mnt)]).stdout.split() == [b"layer0", b"layer1"]
    # skopeo reads the store (an OCI layout) and finds the registry's image
    inspected = json.loads(skopeo("inspect", f"oci:{lfs.root}:{plain.host}/app:v1").stdout)
    assert inspected["Digest"] == app.digest
    # a second pull of the same image adds nothing to the store
    before = lfs.store_snapshot()
    again = pull(lfs, f"{plain.host}/app:v1", "-q")
    assert again.stdout.strip() == entry["id"]
    assert lfs.store_snapshot().keys() == before.keys()


def test_pull_docker_v2_manifest(lfs: Layerfs, plain: Registry, work: Path, app: Pushed) -> None:
    """An image skopeo converted to Docker's schema 2 (docker media types throughout)."""
    skopeo_copy(f"oci:{work / 'app'}:latest", f"docker://{plain.host}/dockerfmt:v1",
                extra=("--format", "v2s2"))
    raw = get_manifest(plain, "dockerfmt", "v1")
    assert raw.media_type == MT_DOCKER_MANIFEST
    pull(lfs, f"{plain.host}/dockerfmt:v1", "-q")
    assert_stored_like_registry(lfs, plain, "dockerfmt", "v1", f"{plain.host}/dockerfmt:v1")
    index = json.loads((lfs.root / "index.json").read_text())
    assert [m["mediaType"] for m in index["manifests"]] == [MT_DOCKER_MANIFEST]
    assert exported_files(lfs, f"{plain.host}/dockerfmt:v1") == app.files


def test_tag_moves_to_the_new_image(lfs_root: Layerfs, plain: Registry, app: Pushed,
                                    mixed: Pushed) -> None:
    """A tag re-pushed with another image: the next pull moves the local name, and the
    old image stays, unnamed (docker's dangling <none>), until rmi removes it and its blobs."""
    for source in (app, mixed):
        manifest = get_manifest(plain, source.repo, source.tag)
        for blob in (source.config, *source.layers):
            push_blob(plain, "moving", blob)
        put_manifest(plain, "moving", "v1", manifest.data, manifest.media_type)
        pull(lfs_root, f"{plain.host}/moving:v1", "-q")
        assert image_named(lfs_root, f"{plain.host}/moving:v1")["digest"] == source.digest
    named = {i["digest"]: i["names"] for i in images(lfs_root)}
    assert named[mixed.digest] == [f"{plain.host}/moving:v1"] and named[app.digest] == []
    listed = lfs_root.run("images").stdout
    assert "<none>" in listed, listed
    lfs_root.run("rmi", sha256(app.config))
    assert app.digest not in {i["digest"] for i in images(lfs_root)}
    assert not (lfs_root.root / "blobs" / "sha256" / app.digest[7:]).exists()


def test_concurrent_pulls(lfs_root: Layerfs, plain: Registry, mixed: Pushed, app: Pushed) -> None:
    """Three pulls into one store at once (one image twice, and another): all succeed."""
    argv = [LAYERFS_BIN, "--root", str(lfs_root.root), "pull", "--tls-verify=false", "-q"]
    procs = [subprocess.Popen([*argv, ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for ref in (f"{plain.host}/mixed:v1", f"{plain.host}/mixed:v1", f"{plain.host}/app:v1")]
    results = [(p.wait(60), p.stderr.read().decode()) for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert_stored_like_registry(lfs_root, plain, "mixed", "v1", f"{plain.host}/mixed:v1")
    assert_stored_like_registry(lfs_root, plain, "app", "v1", f"{plain.host}/app:v1")
    assert tmp_leftovers(lfs_root) == []


def test_name_normalization(lfs: Layerfs, plain: Registry, app: Pushed) -> None:
    """HOST:PORT/NAME (no tag) is :latest; a nested name keeps its path; docker:// too."""
    pull(lfs, f"{plain.host}/app", "-q")
    pull(lfs, f"docker://{plain.host}/team/app:v2", "-q")
    names = {n for i in images(lfs) for n in i["names"]}
    assert names == {f"{plain.host}/app:latest", f"{plain.host}/team/app:v2"}
    assert image_named(lfs, f"{plain.host}/app:latest")["digest"] == app.digest
    # the short forms resolve to the same stored image
    assert lfs.run("inspect", "--json", f"{plain.host}/app").returncode == 0


def test_pull_by_digest(lfs: Layerfs, plain: Registry, app: Pushed) -> None:
    """NAME@sha256 pulls the manifest by digest and names nothing; NAME:TAG@sha256 is
    stored under NAME:TAG (the digest decides what is pulled)."""
    done = pull(lfs, f"{plain.host}/app@{app.digest}")
    listed = images(lfs)
    assert [i["digest"] for i in listed] == [app.digest] and listed[0]["names"] == []
    assert f"{plain.host}/app@{app.digest}" in done.stdout
    assert store_blob(lfs, app.digest) == app.manifest

    pull(lfs, f"{plain.host}/app:pinned@{app.digest}", "-q")  # no such tag: the digest decides
    assert image_named(lfs, f"{plain.host}/app:pinned")["digest"] == app.digest
    assert lfs.run("inspect", "--json", f"{plain.host}/app@{app.digest}").returncode == 0

    unknown = "sha256:" + "0" * 64
    missing = pull(lfs, f"{plain.host}/app@{unknown}", check=False)
    one_error_line(missing, 3, "not found")


@pytest.mark.parametrize("text, expected", [
    ("alpine", ("docker.io", "library/alpine", "latest", None, "docker.io/library/alpine:latest")),
    ("user/app:1", ("docker.io", "user/app", "1", None, "docker.io/user/app:1")),
    ("docker.io/alpine:3", ("docker.io", "library/alpine", "3", None, "docker.io/library/alpine:3")),
    ("index.docker.io/library/alpine", ("docker.io", "library/alpine", "latest", None,
                                        "docker.io/library/alpine:latest")),
    ("localhost/app", ("localhost", "app", "latest", None, "localhost/app:latest")),
    ("127.0.0.1:5000/team/app:v2", ("127.0.0.1:5000", "team/app", "v2", None,
                                     "127.0.0.1:5000/team/app:v2")),
    ("quay.io/a/b@sha256:" + "a" * 64, ("quay.io", "a/b", None, "sha256:" + "a" * 64, None)),
    ("h:1/a:t@sha256:" + "b" * 64, ("h:1", "a", "t", "sha256:" + "b" * 64, "h:1/a:t")),
])
def test_reference_forms(text: str, expected: tuple) -> None:
    """Docker's normalization, for the forms no local registry can show (Docker Hub)."""
    ref = parse_remote(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.local_name) == expected
    assert ref.api_host == ("registry-1.docker.io" if ref.registry == "docker.io" else ref.registry)


@pytest.mark.parametrize("text", ["", "docker://", "Foo/App", "app@sha256:abc", "a b"])
def test_bad_references(lfs_root: Layerfs, text: str) -> None:
    one_error_line(pull(lfs_root, text, check=False), 1)


# ---------------------------------------------------------------------------
# Manifest lists / OCI indexes, compression


@pytest.fixture(scope="module")
def multi(plain: Registry) -> dict[str, Pushed | bytes]:
    """multi:host, multi:other (single images), multi:oci and multi:docker (an OCI index
    and a docker manifest list over both), multi:nohost (an index without this host)."""
    host = push_raw_image(plain, "multi", "host", [layer_of("host-base"), layer_of("host-top")],
                          arch=HOST_ARCH)
    other = push_raw_image(plain, "multi", "other", [layer_of("other-base")], arch=OTHER_ARCH,
                           variant="v8" if OTHER_ARCH == "arm64" else None)
    s390x = push_raw_image(plain, "multi", "s390x", [layer_of("s390x-base")], arch="s390x")
    other_plat = {"os": "linux", "architecture": OTHER_ARCH}
    if OTHER_ARCH == "arm64":
        other_plat["variant"] = "v8"
    entries = [descriptor(host.manifest, MT_MANIFEST, {"os": "linux", "architecture": HOST_ARCH}),
               descriptor(other.manifest, MT_MANIFEST, other_plat),
               # buildkit's attestation entry: never a candidate
               descriptor(s390x.manifest, MT_MANIFEST, {"os": "unknown", "architecture": "unknown"})]
    out: dict[str, Pushed | bytes] = {"host": host, "other": other, "s390x": s390x}
    for tag, media_type in (("oci", MT_INDEX), ("docker", MT_DOCKER_LIST)):
        data = image_index(entries, media_type)
        put_manifest(plain, "multi", tag, data, media_type)
        out[tag] = data
    nohost = image_index([entries[1], descriptor(s390x.manifest, MT_MANIFEST,
                                                 {"os": "linux", "architecture": "s390x"})])
    put_manifest(plain, "multi", "nohost", nohost, MT_INDEX)
    out["nohost"] = nohost
    return out


def other_platform() -> str:
    return f"linux/{OTHER_ARCH}" + ("/v8" if OTHER_ARCH == "arm64" else "")


def test_index_host_platform_by_default(lfs: Layerfs, plain: Registry, multi: dict) -> None:
    """From an OCI index and from a docker manifest list, this host's image (the
    attestation entry of platform unknown/unknown is never a candidate)."""
    host = multi["host"]
    for tag in ("oci", "docker"):
        pull(lfs, f"{plain.host}/multi:{tag}", "-q")
        entry = image_named(lfs, f"{plain.host}/multi:{tag}")
        assert entry["digest"] == host.digest  # the platform's manifest, as podman stores it
    assert store_blob(lfs, host.digest) == host.manifest
    for digest, data in zip(host.layer_digests, host.layers):
        assert store_blob(lfs, digest) == data
    assert exported_files(lfs, f"{plain.host}/multi:oci") == host.files


def test_index_by_digest(lfs_root: Layerfs, plain: Registry, multi: dict) -> None:
    index_digest = sha256(multi["oci"])
    pull(lfs_root, f"{plain.host}/multi@{index_digest}", "-q")
    assert [i["digest"] for i in images(lfs_root)] == [multi["host"].digest]
    pull(lfs_root, f"{plain.host}/multi:pinned@{index_digest}", "--platform", other_platform(), "-q")
    assert image_named(lfs_root, f"{plain.host}/multi:pinned")["digest"] == multi["other"].digest


def test_index_platform_option(lfs: Layerfs, plain: Registry, multi: dict) -> None:
    other = multi["other"]
    pull(lfs, f"{plain.host}/multi:oci", "--platform", other_platform(), "-q")
    entry = image_named(lfs, f"{plain.host}/multi:oci")
    assert entry["digest"] == other.digest and entry["id"] == sha256(other.config)
    assert exported_files(lfs, f"{plain.host}/multi:oci") == other.files
    # OS/ARCH without the variant still matches the one entry of that architecture
    pull(lfs, f"{plain.host}/multi:docker", "--platform", f"linux/{OTHER_ARCH}", "-q")
    assert image_named(lfs, f"{plain.host}/multi:docker")["digest"] == other.digest


def test_index_without_host_platform(lfs: Layerfs, plain: Registry, multi: dict) -> None:
    before = lfs.store_snapshot()
    failed = pull(lfs, f"{plain.host}/multi:nohost", check=False)
    line = one_error_line(failed, 1, f"linux/{HOST_ARCH}", other_platform(), "linux/s390x",
                          "--platform")
    assert "unknown" not in line
    assert lfs.store_snapshot() == before
    bad = pull(lfs, f"{plain.host}/multi:oci", "--platform", "windows/amd64", check=False)
    one_error_line(bad, 1, "windows/amd64", f"linux/{HOST_ARCH}", other_platform())
    one_error_line(pull(lfs, f"{plain.host}/multi:oci", "--platform", "linux", check=False), 1,
                   "OS/ARCH")


def test_single_image_platform_mismatch(lfs_root: Layerfs, plain: Registry, multi: dict) -> None:
    one_error_line(pull(lfs_root, f"{plain.host}/multi:s390x", "--platform", f"linux/{HOST_ARCH}",
                        check=False), 1, "s390x")
    pull(lfs_root, f"{plain.host}/multi:s390x", "--platform", "linux/s390x", "-q")


@pytest.fixture(scope="module")
def mixed(plain: Registry, work: Path) -> Pushed:
    """One image with an uncompressed, a gzip and a zstd layer (pushed byte for byte)."""
    layers = [layer_of("plain-tar", compression="none"), layer_of("gzip-tar", 300_000, "gzip"),
              layer_of("zstd-tar", 300_000, "zstd")]
    layout = work / "mixed"
    info = write_oci_layout(layout, [data for data, _ in layers])
    push_layout(plain, "mixed", "v1", layout)
    pushed = pushed_from_layout("mixed", "v1", layout, info)
    for _, f in layers:
        pushed.files.update(f)
    return pushed


def test_gzip_zstd_and_plain_layers(lfs: Layerfs, plain: Registry, mixed: Pushed) -> None:
    manifest = json.loads(mixed.manifest)
    assert [d["mediaType"] for d in manifest["layers"]] == [MT_LAYER[c] for c in ("none", "gzip", "zstd")]
    pull(lfs, f"{plain.host}/mixed:v1", "-q")
    assert_stored_like_registry(lfs, plain, "mixed", "v1", f"{plain.host}/mixed:v1")
    assert exported_files(lfs, f"{plain.host}/mixed:v1") == mixed.files
    # the uncompressed tars are the diff_ids the config claims
    config = json.loads(mixed.config)
    for n, diff_id in enumerate(config["rootfs"]["diff_ids"], 1):
        out = lfs.workdir / f"layer{n}.tar"
        lfs.run("export", f"{plain.host}/mixed:v1", "--layer", str(n), "-o", str(out))
        assert sha256(out.read_bytes()) == diff_id


# ---------------------------------------------------------------------------
# Shared layers, parallel downloads


@pytest.fixture(scope="module")
def shared(plain: Registry, work: Path) -> tuple[Pushed, Pushed]:
    """Two images pushed by skopeo: first [L1, L2], second [L1, L2, L3] in another repository."""
    l1, l2, l3 = (layer_of(s, 50_000)[0] for s in ("shared-1", "shared-2", "shared-3"))
    out = []
    for repo, layers in (("base", [l1, l2]), ("derived/app", [l1, l2, l3])):
        layout = work / repo.replace("/", "-")
        info = write_oci_layout(layout, layers)
        for dirpath, _, names in os.walk(layout):
            os.chmod(dirpath, 0o755)
            for name in names:
                os.chmod(os.path.join(dirpath, name), 0o644)
        push_oci_with_skopeo(f"oci:{layout}:latest", f"docker://{plain.host}/{repo}:v1")
        out.append(pushed_from_layout(repo, "v1", layout, info))
    return out[0], out[1]


def test_shared_layers_download_once(lfs: Layerfs, proxy: FaultProxy,
                                     shared: tuple[Pushed, Pushed]) -> None:
    first, second = shared
    pull(lfs, f"{proxy.host}/base:v1", "-q")
    assert all(proxy.blob_gets(d) == 1 for d in first.layer_digests)
    proxy.reset_counts()
    pull(lfs, f"{proxy.host}/derived/app:v1", "-q", "-j", "2")
    l1, l2, l3 = second.layer_digests
    assert (proxy.blob_gets(l1), proxy.blob_gets(l2), proxy.blob_gets(l3)) == (0, 0, 1)
    assert proxy.blob_gets() == 2  # the new layer and the config, nothing else
    assert_stored_like_registry(lfs, proxy, "derived/app", "v1", f"{proxy.host}/derived/app:v1")
    # the stored blobs are shared, not copied per image
    assert len([i for i in images(lfs)]) == 2


def test_parallel_jobs_option(lfs_root: Layerfs, plain: Registry, mixed: Pushed) -> None:
    pull(lfs_root, f"{plain.host}/mixed:v1", "-j", "1", "-q")
    assert_stored_like_registry(lfs_root, plain, "mixed", "v1", f"{plain.host}/mixed:v1")
    for bad in ("0", "x", "65"):
        proc = pull(lfs_root, f"{plain.host}/mixed:v1", "-j", bad, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------
# Faults: corrupt blobs, cuts, transient errors, missing tags


def test_corrupt_blob_is_refused(lfs: Layerfs, proxy: FaultProxy, app: Pushed, mixed: Pushed) -> None:
    """A registry serving other bytes than the digest: one line, exit 1, the store as it
    was, nothing left in tmp/; the same pull works once the registry behaves."""
    pull(lfs, f"{proxy.host}/app:v1", "-q")  # a store with something in it already
    before = lfs.store_snapshot()
    for bad in [*mixed.layer_digests, sha256(mixed.config)]:
        proxy.clear_faults()
        proxy.corrupt_blob(bad)
        line = one_error_line(pull(lfs, f"{proxy.host}/mixed:v1", check=False), 1)
        assert bad[7:19] in line or "config" in line, line
        assert lfs.store_snapshot() == before, bad
        assert tmp_leftovers(lfs) == []
        assert not (lfs.root / "blobs" / "sha256" / bad[7:]).exists()
    assert "digest" in line, line  # the config: "does not match its digest"
    proxy.clear_faults()
    pull(lfs, f"{proxy.host}/mixed:v1", "-q")
    assert_stored_like_registry(lfs, proxy, "mixed", "v1", f"{proxy.host}/mixed:v1")


@pytest.mark.parametrize("index", [0, 1, 2], ids=["tar", "gzip", "zstd"])
def test_corrupt_layer_is_a_digest_error(lfs_root: Layerfs, proxy: FaultProxy, mixed: Pushed,
                                         index: int) -> None:
    bad = mixed.layer_digests[index]
    proxy.corrupt_blob(bad)
    line = one_error_line(pull(lfs_root, f"{proxy.host}/mixed:v1", check=False), 1)
    assert "digest" in line and bad in line, line  # the cause, not what the bytes looked like


def test_cut_mid_blob_resumes_with_range(lfs: Layerfs, proxy: FaultProxy, big: Pushed) -> None:
    digest = big.layer_digests[0]
    proxy.cut_blob(digest, 200_000, times=2)
    pull(lfs, f"{proxy.host}/big:v1", "-q")
    gets = [r for r in proxy.requests if r.method == "GET" and r.path.endswith(digest)]
    assert [r.fault for r in gets][:2] == ["cut", "cut"] and gets[-1].fault is None
    ranges = [r.headers.get("range") for r in gets]
    assert ranges[0] is None
    offsets = [int(m[1]) for r in ranges[1:] if r and (m := re.fullmatch(r"bytes=(\d+)-", r))]
    assert len(offsets) == len(gets) - 1 and offsets[0] > 0, ranges
    assert all(r.status == 206 for r in gets[1:])
    assert sum(r.body_bytes for r in gets) == len(big.layers[0])  # nothing fetched twice
    assert_stored_like_registry(lfs, proxy, "big", "v1", f"{proxy.host}/big:v1")


def test_transient_errors_are_retried(lfs_root: Layerfs, proxy: FaultProxy, app: Pushed) -> None:
    proxy.fail_next(2, 503, path="/manifests/")
    proxy.fail_next(1, 502, path=f"/blobs/{app.layer_digests[0]}")
    proxy.fail_next(1, 429, path=f"/blobs/{app.layer_digests[1]}", retry_after="1")
    proxy.fail_next(1, 500, path="^/v2/$")
    proxy.cut_blob(sha256(app.config), 0)  # headers, then nothing: a retry from byte 0
    pull(lfs_root, f"{proxy.host}/app:v1", "-q")
    assert [r.fault for r in proxy.requests].count("fail") == 5
    assert [r.fault for r in proxy.requests].count("cut") == 1
    assert_stored_like_registry(lfs_root, proxy, "app", "v1", f"{proxy.host}/app:v1")


def test_persistent_errors_give_up(lfs_root: Layerfs, proxy: FaultProxy, app: Pushed) -> None:
    """A registry that keeps failing: after the retries, one line naming the status."""
    proxy.fail_next(100, 500, path="/blobs/")
    started = time.monotonic()
    failed = pull(lfs_root, f"{proxy.host}/app:v1", check=False)
    one_error_line(failed, 1, "500")
    assert time.monotonic() - started < 30
    assert 2 <= [r.fault for r in proxy.requests].count("fail") <= 20
    assert tmp_leftovers(lfs_root) == []


def test_missing_tag_and_repository(lfs: Layerfs, plain: Registry, proxy: FaultProxy, app: Pushed) -> None:
    before = lfs.store_snapshot()
    one_error_line(pull(lfs, f"{plain.host}/app:nope", check=False), 3, "app:nope", "not found")
    one_error_line(pull(lfs, f"{plain.host}/nobody/here:v1", check=False), 3, "not found")
    proxy.hide_tag("app", "v1")
    one_error_line(pull(lfs, f"{proxy.host}/app:v1", check=False), 3, "not found")
    assert lfs.store_snapshot() == before


# ---------------------------------------------------------------------------
# Interrupted pulls


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_pull(lfs: Layerfs, proxy: FaultProxy, app: Pushed, big: Pushed,
                         signum: int) -> None:
    """A pull stopped mid-blob exits 130 with one line, leaves the store as it was and
    nothing in tmp/; the next pull works."""
    pull(lfs, f"{proxy.host}/app:v1", "-q")
    before = lfs.store_snapshot()
    digest = big.layer_digests[0]
    # every GET of the big layer breaks off after 64 KiB: the pull is stuck mid-blob
    # (downloading, or waiting to resume) for longer than the test waits
    proxy.cut_blob(digest, 64 * 1024, times=1000)
    argv = lfs.wrap([LAYERFS_BIN, "--root", str(lfs.root), "pull", "--tls-verify=false",
                     f"{proxy.host}/big:v1"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lfs.env(),
                            cwd=lfs.workdir)
    try:
        pid = layerfs_pid(proc)
        wait_for(lambda: any(r.fault == "cut" and r.path.endswith(digest) for r in proxy.requests),
                 what="a cut blob download")
        staged = [p for p in (lfs.root / "tmp").rglob("*") if p.is_file()]
        os.kill(pid, signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout.decode(), stderr.decode())
    one_error_line(result, 130, "interrupted")
    assert staged, "the pull had staged nothing in tmp/ yet: not mid-blob"
    assert lfs.store_snapshot() == before
    assert tmp_leftovers(lfs) == []
    proxy.clear_faults()
    pull(lfs, f"{proxy.host}/big:v1", "-q")
    assert_stored_like_registry(lfs, proxy, "big", "v1", f"{proxy.host}/big:v1")


# ---------------------------------------------------------------------------
# tags and inspect docker://


def test_tags(lfs_root: Layerfs, plain: Registry, proxy: FaultProxy, app: Pushed) -> None:
    listed = json.loads(lfs_root.run("tags", "--json", "--tls-verify=false", f"docker://{plain.host}/app").stdout)
    peer = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{plain.host}/app").stdout)
    assert listed == {"Repository": f"{plain.host}/app", "Tags": peer["Tags"]}
    assert sorted(listed["Tags"]) == ["latest", "v1"]
    text = lfs_root.run("tags", "--tls-verify=false", f"docker://{plain.host}/team/app").stdout
    assert text.splitlines() == ["v2"]
    proxy.hide_tag("app", "v1")
    via_proxy = json.loads(lfs_root.run("tags", "--json", "--tls-verify=false",
                                   f"docker://{proxy.host}/app").stdout)
    assert via_proxy["Tags"] == ["latest"]
    one_error_line(lfs_root.run("tags", "--tls-verify=false", f"docker://{plain.host}/nobody", check=False),
                   3, "not found")
    one_error_line(lfs_root.run("tags", "--tls-verify=false", f"docker://{plain.host}/app:v1", check=False), 1)
    one_error_line(lfs_root.run("tags", "--tls-verify=false", f"{plain.host}/app", check=False), 1, "docker://")


SKOPEO_FIELDS = ("Name", "Digest", "RepoTags", "Created", "DockerVersion", "Labels",
                 "Architecture", "Os", "Layers", "Env")


def test_inspect_remote(lfs: Layerfs, plain: Registry, app: Pushed, multi: dict) -> None:
    ours = json.loads(lfs.run("inspect", "--tls-verify=false", f"docker://{plain.host}/app:v1").stdout)
    theirs = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{plain.host}/app:v1").stdout)
    for key in SKOPEO_FIELDS:
        assert ours[key] == theirs[key], key
    manifest = json.loads(app.manifest)
    assert ours["Digest"] == app.digest
    assert ours["LayersData"] == [{"MIMEType": d["mediaType"], "Digest": d["digest"], "Size": d["size"],
                                   "Annotations": None} for d in manifest["layers"]]
    # an index: skopeo's answer for this host, the index's digest
    ours = json.loads(lfs.run("inspect", "--tls-verify=false", f"docker://{plain.host}/multi:oci").stdout)
    theirs = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{plain.host}/multi:oci").stdout)
    for key in SKOPEO_FIELDS:
        assert ours[key] == theirs[key], key
    assert ours["Digest"] == sha256(multi["oci"]) and ours["Architecture"] == HOST_ARCH
    other = json.loads(lfs.run("inspect", "--tls-verify=false", "--platform", other_platform(),
                               f"docker://{plain.host}/multi:oci").stdout)
    assert other["Architecture"] == OTHER_ARCH and other["Layers"] == multi["other"].layer_digests
    assert other["Env"] == [f"ARCH={OTHER_ARCH}"] and other["Labels"] == {"arch": OTHER_ARCH}
    assert images(lfs) == []  # nothing was pulled


def test_inspect_remote_raw_and_config(lfs_root: Layerfs, plain: Registry, app: Pushed, multi: dict) -> None:
    for ref, expected in (("app:v1", app.manifest), (f"app@{app.digest}", app.manifest),
                          ("multi:oci", multi["oci"]), ("multi:docker", multi["docker"])):
        proc = lfs_root.sh([LAYERFS_BIN, "--root", str(lfs_root.root), "inspect", "--raw", "--tls-verify=false",
                       f"docker://{plain.host}/{ref}"])
        assert proc.stdout == expected == get_manifest(plain, ref.split("@")[0].split(":")[0],
                                                       ref.split("@")[1] if "@" in ref
                                                       else ref.split(":")[1]).data, ref
    config = json.loads(lfs_root.run("inspect", "--config", "--tls-verify=false",
                                f"docker://{plain.host}/app:v1").stdout)
    assert config == json.loads(app.config)
    other = json.loads(lfs_root.run("inspect", "--config", "--tls-verify=false", "--platform", other_platform(),
                               f"docker://{plain.host}/multi:docker").stdout)
    assert other == json.loads(multi["other"].config)
    one_error_line(lfs_root.run("inspect", "--tls-verify=false", f"docker://{plain.host}/app:nope",
                           check=False), 3, "not found")
    one_error_line(lfs_root.run("inspect", "--tls-verify=false", f"docker://{plain.host}/multi:nohost",
                           check=False), 1, f"linux/{HOST_ARCH}", "linux/s390x")
