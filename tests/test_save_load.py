"""`layerfs save` and `layerfs load`: archives that docker, podman and skopeo read and write.

Everything goes through the real CLI as root and as the unprivileged test user (the
`lfs` fixture); a "fresh store" is a second store of the same identity. Trees are
compared through `layerfs export` (the merged tree as one tar) and, for the main
round trip, through real mounts against the oracle's merge of the same layer bytes.
The peers are the real tools: skopeo (both directions), umoci, podman (root, with a
private vfs storage).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pty
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
import zlib
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs
from support.oci import (busybox_image_layers, directory, file, make_layer, write_docker_archive,
                         write_oci_layout)
from support.oracle import apply_layers
from support.snapshot import assert_same_tree, snapshot, snapshot_as
from support.terminal import run_with_terminal_stdout
from support.errors import one_line_error

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


# ---------------------------------------------------------------------------------------
# helpers


def fresh_store(lfs: Layerfs, name: str = "store2") -> Layerfs:
    """The same identity and scratch area, another (empty) store."""
    other = Layerfs(user=lfs.user, workdir=lfs.workdir)
    other.root = lfs.workdir / name
    return other


def import_image(lfs: Layerfs, layers: list[bytes], name: str) -> None:
    source = lfs.workdir / f"src-{uuid.uuid4().hex[:8]}"
    write_oci_layout(source, layers)
    lfs.give(source)
    lfs.run("import", f"oci:{source}", name, "-q")


def images(lfs: Layerfs) -> dict[str, dict]:
    """id -> the `images --json` record."""
    return {record["id"]: record for record in json.loads(lfs.run("images", "--json").stdout)}


def image_of(lfs: Layerfs, ref: str) -> dict:
    return json.loads(lfs.run("inspect", ref, "--json").stdout)


def export_bytes(lfs: Layerfs, ref: str) -> bytes:
    """The merged tree of `ref` as one tar (deterministic for the same layers)."""
    return lfs.sh([LAYERFS_BIN, "--root", str(lfs.root), "export", ref]).stdout


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def member_bytes(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return f.read()


def all_files(archive: Path) -> dict[str, bytes]:
    """Every regular file of a tar (symlinks and directories left out)."""
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    """A plain tar of `files`, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def app_layer(text: bytes) -> bytes:
    return make_layer([directory("srv"), file("srv/app.txt", text, mode=0o640, uid=33, gid=33)], "gzip")


@pytest.fixture
def busybox() -> list[bytes]:
    return busybox_image_layers()  # gzip, plain, zstd


# ---------------------------------------------------------------------------------------
# round trips


def test_docker_archive_round_trip_into_a_fresh_store(lfs: Layerfs, busybox: list[bytes]) -> None:
    """save -> load: the same image id, the same names, the same tree (mounted, against
    the oracle), and the layout docker save writes: uncompressed layers named by diff_id."""
    import_image(lfs, busybox, "bb:v1")
    lfs.run("tag", "bb:v1", "registry.example:5000/team/bb:prod")
    original = image_of(lfs, "bb:v1")
    archive = lfs.workdir / "bb.tar"
    proc = lfs.run("save", "bb:v1", "registry.example:5000/team/bb:prod", "-o", str(archive))
    assert proc.stdout == "" and "Traceback" not in proc.stderr

    found = members(archive)
    manifest = json.loads(member_bytes(archive, "manifest.json"))
    diff_ids = original["config"]["rootfs"]["diff_ids"]
    config_hex = original["id"].split(":")[1]
    assert manifest == [{"Config": f"{config_hex}.json",
                         "RepoTags": ["bb:v1", "registry.example:5000/team/bb:prod"],
                         "Layers": [f"{d.split(':')[1]}.tar" for d in diff_ids]}]
    assert sha256(member_bytes(archive, f"{config_hex}.json")) == original["id"]
    for diff_id in diff_ids:  # every layer uncompressed, whatever the store holds
        assert sha256(member_bytes(archive, f"{diff_id.split(':')[1]}.tar")) == diff_id
    repositories = json.loads(member_bytes(archive, "repositories"))
    assert set(repositories) == {"bb", "registry.example:5000/team/bb"}
    top = repositories["bb"]["v1"]
    assert found[f"{top}/layer.tar"].issym() and found[f"{top}/json"].isfile()

    fresh = fresh_store(lfs)
    proc = fresh.run("load", "-i", str(archive))
    assert proc.stdout.splitlines() == ["Loaded image: bb:v1",
                                        "Loaded image: registry.example:5000/team/bb:prod"]
    loaded = images(fresh)
    assert list(loaded) == [original["id"]]
    assert loaded[original["id"]]["names"] == ["bb:v1", "registry.example:5000/team/bb:prod"]
    assert export_bytes(fresh, "bb:v1") == export_bytes(lfs, "bb:v1")
    with fresh.mounted("registry.example:5000/team/bb:prod") as mp:
        assert_same_tree(apply_layers(busybox), snapshot_as(fresh, mp), ("oracle", "loaded"))


def test_save_by_a_short_docker_name_keeps_the_stored_name(lfs: Layerfs, busybox: list[bytes]) -> None:
    """A pulled image is stored as docker.io/library/NAME:TAG; `save NAME:TAG` finds it
    and writes the name it is stored under."""
    import_image(lfs, [busybox[0]], "docker.io/library/alpine:3")
    archive = lfs.workdir / "alpine.tar"
    lfs.run("save", "alpine:3", "-o", str(archive))
    assert json.loads(member_bytes(archive, "manifest.json"))[0]["RepoTags"] == ["docker.io/library/alpine:3"]
    assert fresh_store(lfs).run("load", "-i", str(archive)).stdout == "Loaded image: docker.io/library/alpine:3\n"


def test_save_by_id_has_no_names_and_pipes_work(lfs: Layerfs, busybox: list[bytes]) -> None:
    """By id, RepoTags is null as docker writes it, and the loaded image has no name.
    `save` to a pipe is the same archive as to a file; `load` from standard input, and
    of a gzip-compressed archive, loads it."""
    import_image(lfs, busybox, "bb:v1")
    image_id = image_of(lfs, "bb:v1")["id"]
    archive = lfs.workdir / "by-id.tar"
    lfs.run("save", image_id[7:19], "-o", str(archive))
    assert json.loads(member_bytes(archive, "manifest.json"))[0]["RepoTags"] is None
    assert json.loads(member_bytes(archive, "repositories")) == {}
    piped = lfs.sh([LAYERFS_BIN, "--root", str(lfs.root), "save", image_id[7:19]]).stdout
    assert piped == archive.read_bytes()
    piped = lfs.sh([LAYERFS_BIN, "--root", str(lfs.root), "save", image_id, "-o", "-"]).stdout
    assert piped == archive.read_bytes()

    fresh = fresh_store(lfs)
    proc = fresh.run("load", input=archive.read_bytes())
    assert proc.stdout.splitlines() == [f"Loaded image ID: {image_id}"]
    assert [r["names"] for r in images(fresh).values()] == [[]]

    named = lfs.workdir / "bb.tar.gz"
    named.write_bytes(gzip.compress(lfs.sh([LAYERFS_BIN, "--root", str(lfs.root), "save", "bb:v1"]).stdout))
    lfs.give(named)
    again = fresh_store(lfs, "store3")
    assert again.run("load", "-i", "-", input=named.read_bytes()).stdout == "Loaded image: bb:v1\n"
    assert again.run("load", "-i", str(named), "-q").stdout == "Loaded image: bb:v1\n"
    assert list(images(again)) == [image_id]
    # -i naming a pipe (bash's <(...)): read once, as it comes
    proc = again.sh(["bash", "-c", '"$0" --root "$1" load -i <(cat "$2")', LAYERFS_BIN, str(again.root),
                     str(archive)])
    assert proc.stdout.decode() == f"Loaded image ID: {image_id}\n"


def test_several_images_in_one_archive_share_a_layer(lfs: Layerfs, busybox: list[bytes]) -> None:
    """Two images on one base: one manifest.json entry each, the base written once; a
    load gives both back with their names. The same image twice by two names is one entry."""
    base = busybox[0]
    import_image(lfs, [base, app_layer(b"one\n")], "app:one")
    import_image(lfs, [base, app_layer(b"two\n")], "app:two")
    lfs.run("tag", "app:two", "app:latest")
    archive = lfs.workdir / "apps.tar"
    lfs.run("save", "app:one", "app:two", "app", "-o", str(archive), "-q")

    manifest = json.loads(member_bytes(archive, "manifest.json"))
    assert [e["RepoTags"] for e in manifest] == [["app:one"], ["app:two", "app:latest"]]
    assert manifest[0]["Layers"][0] == manifest[1]["Layers"][0]
    assert manifest[0]["Layers"][1] != manifest[1]["Layers"][1]
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers()]
    assert names.count(manifest[0]["Layers"][0]) == 1
    assert len([n for n in names if n.endswith(".tar") and "/" not in n]) == 3

    fresh = fresh_store(lfs)
    proc = fresh.run("load", "-i", str(archive))
    assert proc.stdout.splitlines() == ["Loaded image: app:one", "Loaded image: app:two",
                                        "Loaded image: app:latest"]
    assert {i: r["names"] for i, r in images(fresh).items()} == \
        {i: r["names"] for i, r in images(lfs).items()}
    for ref in ("app:one", "app:two"):
        assert export_bytes(fresh, ref) == export_bytes(lfs, ref)


def test_oci_archive_round_trip_keeps_every_blob(lfs: Layerfs, busybox: list[bytes]) -> None:
    """--format oci-archive: the stored manifest, config and compressed layers byte for
    byte (so the manifest digest stays), one index entry per name, annotated as skopeo,
    podman and containerd read it; a load gives the same image (same digest) back."""
    import_image(lfs, busybox, "bb:v1")
    lfs.run("tag", "bb:v1", "bb:v2")
    original = image_of(lfs, "bb:v1")
    archive = lfs.workdir / "bb.oci.tar"
    lfs.run("save", "--format", "oci-archive", "bb:v1", "bb:v2", "-o", str(archive))

    files = all_files(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert [e["digest"] for e in index["manifests"]] == [original["digest"]] * 2
    assert [e["annotations"] for e in index["manifests"]] == [
        {REF_NAME: "bb:v1", CONTAINERD_NAME: "bb:v1"}, {REF_NAME: "bb:v2", CONTAINERD_NAME: "bb:v2"}]
    blobs = {name: data for name, data in files.items() if name.startswith("blobs/sha256/")}
    store_blobs = lfs.root / "blobs" / "sha256"
    for name, data in blobs.items():
        assert sha256(data) == "sha256:" + name.rsplit("/", 1)[1]
        assert data == (store_blobs / name.rsplit("/", 1)[1]).read_bytes()
    layer_digests = [layer["digest"] for layer in original["manifest"]["layers"]]
    assert set(blobs) == {f"blobs/sha256/{d.split(':')[1]}"
                          for d in [original["digest"], original["id"], *layer_digests]}
    assert [blobs[f"blobs/sha256/{d.split(':')[1]}"] for d in layer_digests] == busybox

    fresh = fresh_store(lfs)
    assert fresh.run("load", "-i", str(archive)).stdout.splitlines() == \
        ["Loaded image: bb:v1", "Loaded image: bb:v2"]
    [loaded] = images(fresh).values()
    assert (loaded["id"], loaded["digest"], loaded["names"]) == \
        (original["id"], original["digest"], ["bb:v1", "bb:v2"])
    assert export_bytes(fresh, "bb:v2") == export_bytes(lfs, "bb:v1")
    for digest in layer_digests:  # still byte for byte in the new store
        name = digest.split(":")[1]
        assert (fresh.root / "blobs" / "sha256" / name).read_bytes() == (store_blobs / name).read_bytes()


def test_load_reads_docker_save_archives_old_and_new(lfs: Layerfs, busybox: list[bytes]) -> None:
    """`docker save` as Docker wrote it before 25 (per-layer directories) and since (also
    an OCI layout, manifest.json pointing into blobs/): manifest.json is what counts."""
    for new_layout in (False, True):
        archive = lfs.workdir / f"docker-{new_layout}.tar"
        info = write_docker_archive(archive, busybox, "docker.io/library/bb:saved", new_layout=new_layout)
        lfs.give(archive)
        fresh = fresh_store(lfs, f"store-{new_layout}")
        assert fresh.run("load", "-i", str(archive)).stdout == "Loaded image: docker.io/library/bb:saved\n"
        assert list(images(fresh)) == [info.config_digest]


# ---------------------------------------------------------------------------------------
# peers: skopeo, umoci, podman


def test_skopeo_reads_saved_archives(lfs: Layerfs) -> None:
    """`skopeo copy docker-archive:FILE` and `oci-archive:FILE:NAME:TAG` of saved files,
    to OCI layouts: importing those gives the same layers and tree, and umoci unpacks
    them to the tree the oracle gives (umoci 0.4 reads no zstd: gzip and plain layers)."""
    layers = busybox_image_layers(("gzip", "none", "gzip"))
    import_image(lfs, layers, "bb:v1")
    original = image_of(lfs, "bb:v1")
    docker, oci = lfs.workdir / "bb.tar", lfs.workdir / "bb.oci.tar"
    lfs.run("save", "bb:v1", "-o", str(docker))
    lfs.run("save", "bb:v1", "--format", "oci-archive", "-o", str(oci))
    copies = {"docker": (f"docker-archive:{docker}", lfs.workdir / "from-docker"),
              "oci": (f"oci-archive:{oci}:bb:v1", lfs.workdir / "from-oci")}
    for kind, (source, layout) in copies.items():
        lfs.sh(["skopeo", "copy", "-q", source, f"oci:{layout}:tag"])
        lfs.run("import", f"oci:{layout}:tag", f"copy:{kind}", "-q")
        # (docker -> OCI, skopeo re-marshals the config and gzips the layers: a new id)
        copied = image_of(lfs, f"copy:{kind}")
        assert copied["config"]["rootfs"] == original["config"]["rootfs"]
        assert export_bytes(lfs, f"copy:{kind}") == export_bytes(lfs, "bb:v1")
        bundle = lfs.workdir / f"bundle-{kind}"  # umoci as root, as test_mount does
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:tag", str(bundle)], check=True,
                       capture_output=True)
        assert_same_tree(apply_layers(layers), snapshot(bundle / "rootfs"),
                         ("oracle", f"umoci unpack of skopeo's copy of the {kind} archive"))
    # out of the oci-archive skopeo keeps the config (it gzips the plain layer and so
    # writes a new manifest): the same image id
    assert image_of(lfs, "copy:oci")["id"] == original["id"]


def test_load_what_skopeo_wrote(lfs: Layerfs) -> None:
    """`skopeo copy oci:... docker-archive:FILE:name:tag` (skopeo 1.9 has no zstd for
    docker archives) loads under skopeo's full name, with the tree of the source."""
    layers = busybox_image_layers(("gzip", "none", "gzip"))
    source = lfs.workdir / "src"
    info = write_oci_layout(source, layers, tag="v1")
    lfs.give(source)
    archive = lfs.workdir / "skopeo.tar"
    lfs.sh(["skopeo", "copy", "-q", f"oci:{source}:v1", f"docker-archive:{archive}:myname:t1"])
    proc = lfs.run("load", "-i", str(archive))
    assert proc.stdout == "Loaded image: docker.io/library/myname:t1\n"
    assert list(images(lfs)) == [info.config_digest]
    lfs.run("import", f"oci:{source}:v1", "direct:v1", "-q")
    assert export_bytes(lfs, "docker.io/library/myname:t1") == export_bytes(lfs, "direct:v1")
    # and skopeo's oci-archive, named by its full ref.name
    both = lfs.workdir / "skopeo.oci.tar"
    lfs.sh(["skopeo", "copy", "-q", f"oci:{source}:v1", f"oci-archive:{both}:example.org/app:v1"])
    fresh = fresh_store(lfs)
    assert fresh.run("load", "-i", str(both)).stdout == "Loaded image: example.org/app:v1\n"
    assert list(images(fresh)) == [info.config_digest]
    assert export_bytes(fresh, "example.org/app:v1") == export_bytes(lfs, "direct:v1")


@pytest.mark.parametrize("archive_format", ["docker-archive", "oci-archive"])
def test_podman_loads_saved_archives(lfs_root: Layerfs, busybox: list[bytes], archive_format: str) -> None:
    """`podman load -i FILE` (a private vfs storage) of both formats: the image is listed
    under its name with layerfs's image id. (podman 4 loads one image per oci-archive.)"""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    lfs = lfs_root
    import_image(lfs, busybox, "bb:v1")
    image_id = image_of(lfs, "bb:v1")["id"]
    archive = lfs.workdir / f"bb.{archive_format}.tar"
    lfs.run("save", "--format", archive_format, "bb:v1", "-o", str(archive))
    podman = ["podman", "--root", str(lfs.workdir / "podman-root"), "--runroot",
              str(lfs.workdir / "podman-run"), "--storage-driver", "vfs"]
    proc = lfs.sh([*podman, "load", "-i", str(archive)], timeout=300)
    assert "bb:v1" in proc.stdout.decode(), proc.stdout
    listed = lfs.sh([*podman, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
    rows = [line.split() for line in listed.stdout.decode().splitlines()]
    assert any(name.endswith("/bb:v1") or name == "bb:v1" for name, _ in rows), rows
    assert {image_id.removeprefix("sha256:")} == {i.removeprefix("sha256:") for _, i in rows}


# ---------------------------------------------------------------------------------------
# bad archives: one line, store unchanged


def _saved_files(lfs: Layerfs, layers: list[bytes], *more: list[bytes],
                 archive_format: str = "docker-archive") -> dict[str, bytes]:
    """A saved archive's regular files, from a scratch store of its own."""
    maker = fresh_store(lfs, f"maker-{archive_format}")
    import_image(maker, layers, "bad:one")
    refs = ["bad:one"]
    for number, extra in enumerate(more, 2):
        import_image(maker, extra, f"bad:n{number}")
        refs.append(f"bad:n{number}")
    out = lfs.workdir / f"made-{archive_format}.tar"
    maker.run("save", "--format", archive_format, *refs, "-o", str(out))
    files = all_files(out)
    shutil.rmtree(maker.root)
    out.unlink()
    return files


def _flip_inside_payload(layer_tar: bytes) -> bytes:
    """Change one byte of the first file's contents: still a tar, not the layer."""
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
        first = next(m for m in tar.getmembers() if m.isfile() and m.size > 0)
        offset = first.offset_data
    data = bytearray(layer_tar)
    data[offset] ^= 0xFF
    return bytes(data)


def test_bad_archives_fail_in_one_line_and_change_nothing(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:v1")  # the store has something to keep
    good = _saved_files(lfs, [busybox[0], app_layer(b"good\n")])
    manifest = json.loads(good["manifest.json"])
    [entry] = manifest
    app_tar = entry["Layers"][1]
    second = _saved_files(lfs, [busybox[0], app_layer(b"first\n")], [busybox[0], app_layer(b"second\n")])
    second_entry = json.loads(second["manifest.json"])[1]
    oci = _saved_files(lfs, [busybox[0], app_layer(b"oci\n")], archive_format="oci-archive")
    oci_manifest = json.loads(oci["blobs/sha256/" + json.loads(oci["index.json"])["manifests"][0]["digest"][7:]])
    oci_layer = "blobs/sha256/" + oci_manifest["layers"][1]["digest"][7:]
    regzipped = gzip.compress(gzip.decompress(oci[oci_layer]), mtime=12345)  # same tar, other digest

    cases: dict[str, tuple[dict[str, bytes] | bytes, int, list[str]]] = {
        "not-a-tar": (b"this is not an archive\n" * 100, 1, ["not a readable tar archive"]),
        "empty": (b"", 1, ["not a readable tar archive"]),
        "cut-short": (None, 1, ["not a readable tar archive"]),  # type: ignore[dict-item]
        "neither": ({"hello.txt": b"hi\n"}, 1, ["neither a docker-archive", "oci-archive"]),
        "bad-manifest-json": (dict(good, **{"manifest.json": b"[{"}), 1, ["manifest.json is not valid JSON"]),
        "missing-layer": ({k: v for k, v in good.items() if k != app_tar}, 1, [app_tar, "missing"]),
        "wrong-layer": (dict(good, **{app_tar: _flip_inside_payload(good[app_tar])}), 1,
                        ["does not match its digest"]),
        # the second image is bad: the first must not be loaded either
        "second-image-bad": (dict(second, **{second_entry["Layers"][1]:
                                             _flip_inside_payload(second[second_entry["Layers"][1]])}),
                             1, ["does not match its digest"]),
        "bad-name": (dict(good, **{"manifest.json": json.dumps([dict(entry, RepoTags=["Bad Name:x"])]).encode()}),
                     1, ["Bad Name:x"]),
        "oci-missing-blob": ({k: v for k, v in oci.items() if k != oci_layer}, 1, ["missing"]),
        "oci-wrong-blob": (dict(oci, **{oci_layer: regzipped}), 1, ["does not match its digest"]),
    }
    before = lfs.store_snapshot()
    names_before = images(lfs)
    for case, (content, code, words) in cases.items():
        path = lfs.workdir / f"{case}.tar"
        if case == "cut-short":
            full = write_tar(lfs.workdir / "full.tar", good)
            path.write_bytes(full.read_bytes()[:len(full.read_bytes()) // 2])
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_tar(path, content)
        lfs.give(path)
        one_line_error(lfs.run("load", "-i", str(path), check=False), code, *words)
        assert lfs.store_snapshot() == before, case
        assert images(lfs) == names_before, case
        one_line_error(lfs.run("load", "-q", check=False, input=path.read_bytes()), code, *words)
        assert lfs.store_snapshot() == before, f"{case} from standard input"

    missing = lfs.workdir / "no-such.tar"
    one_line_error(lfs.run("load", "-i", str(missing), check=False), 3, "does not exist")
    one_line_error(lfs.run("load", "-i", str(lfs.workdir), check=False), 1, "is a directory")
    assert lfs.store_snapshot() == before


# ---------------------------------------------------------------------------------------
# save's refusals


def test_save_of_an_unknown_ref_fails_with_nothing_written(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:v1")
    out_dir = lfs.mkdir("out")
    out = out_dir / "x.tar"
    one_line_error(lfs.run("save", "nosuch:v1", "-o", str(out), check=False), 3, "nosuch:v1")
    one_line_error(lfs.run("save", "bb:v1", "sha256:" + "0" * 64, "-o", str(out), check=False), 3,
                   "sha256:" + "0" * 64)
    assert os.listdir(out_dir) == []
    proc = lfs.run("save", "bb:v1", "--format", "tar", "-o", str(out), check=False)
    assert proc.returncode == 2 and "--format" in proc.stderr and os.listdir(out_dir) == []


def test_save_into_a_missing_directory_fails(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:v1")
    missing = lfs.workdir / "no-such-dir" / "out.tar"
    one_line_error(lfs.run("save", "bb:v1", "-o", str(missing), check=False), 3, "does not exist")
    assert not missing.parent.exists()
    one_line_error(lfs.run("save", "bb:v1", "-o", str(lfs.workdir), check=False), 1, "is a directory")


@pytest.mark.parametrize("output", [[], ["-o", "-"]])
def test_save_refuses_to_write_to_a_terminal(lfs: Layerfs, busybox: list[bytes], output: list[str]) -> None:
    import_image(lfs, busybox, "bb:v1")
    proc, shown = run_with_terminal_stdout(lfs, "save", "bb:v1", *output)
    one_line_error(proc, 1, "terminal")
    assert shown == b""


def test_load_refuses_a_terminal_as_input(lfs: Layerfs) -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(lfs.wrap([LAYERFS_BIN, "--root", str(lfs.root), "load"]),
                              stdin=terminal, capture_output=True, env=lfs.env(),
                              cwd=lfs.workdir, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                               proc.stderr.decode()), 1, "-i FILE")


@pytest.mark.parametrize("archive_format", ["docker-archive", "oci-archive"])
def test_failed_save_leaves_no_file_and_keeps_the_old_one(lfs: Layerfs, busybox: list[bytes],
                                                          archive_format: str) -> None:
    """A stored layer that went bad fails the save once it is read: the temporary file
    goes, and a file already at FILE stays as it was."""
    import_image(lfs, busybox, "bb:v1")
    digest = image_of(lfs, "bb:v1")["manifest"]["layers"][1]["digest"]  # the plain tar
    blob = lfs.root / "blobs" / "sha256" / digest.split(":")[1]
    blob.write_bytes(_flip_inside_payload(blob.read_bytes()))
    out_dir = lfs.mkdir(f"out-{archive_format}")
    out = out_dir / "bb.tar"
    one_line_error(lfs.run("save", "--format", archive_format, "bb:v1", "-o", str(out), check=False), 1,
                   "does not match its digest")
    assert os.listdir(out_dir) == []
    out.write_bytes(b"the old archive\n")
    lfs.give(out)
    lfs.run("save", "--format", archive_format, "bb:v1", "-o", str(out), check=False)
    assert out.read_bytes() == b"the old archive\n" and os.listdir(out_dir) == ["bb.tar"]


def test_save_and_load_help_explain_their_options(lfs_root: Layerfs) -> None:
    text = lfs_root.run("save", "--help").stdout
    for words in ("-o", "--output", "--format", "docker-archive", "oci-archive", "-q", "terminal",
                  "REF"):
        assert words in text, words
    text = lfs_root.run("load", "--help").stdout
    for words in ("-i", "--input", "standard input", "-q", "Loaded image", "docker-archive",
                  "oci-archive"):
        assert words in text, words


def zeros_layer(size: int) -> bytes:
    """A gzip layer holding one file of `size` zero bytes, built as a stream: a layer
    that is small in the store and slow to save (it is written uncompressed)."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    gz = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [gz.compress(info.tobuf(tarfile.PAX_FORMAT))]
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        out.append(gz.compress(chunk))
    out.append(gz.compress(bytes(2 * tarfile.BLOCKSIZE + (-size) % tarfile.RECORDSIZE)))
    out.append(gz.flush())
    return b"".join(out)


def layerfs_pid(lfs: Layerfs, proc: subprocess.Popen) -> int:
    """The layerfs process itself: runuser's child for the test user."""
    if not lfs.rootless:
        return proc.pid
    for _ in range(500):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("runuser started no layerfs")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_save_leaves_no_file(lfs: Layerfs, signum: int) -> None:
    """Ctrl-C (or SIGTERM) while the archive is being written: exit 130 in one line,
    the temporary file beside FILE removed, an old FILE kept as it was."""
    import_image(lfs, [zeros_layer(512 << 20)], "zeros:v1")
    out_dir = lfs.mkdir(f"out-{signum}")
    out = out_dir / "zeros.tar"
    out.write_bytes(b"the old archive\n")
    lfs.give(out)
    argv = lfs.wrap([LAYERFS_BIN, "--root", str(lfs.root), "save", "zeros:v1", "-o", str(out)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lfs.env(),
                            cwd=lfs.workdir)
    try:
        pid = layerfs_pid(lfs, proc)
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".tmp-") and p.stat().st_size > (1 << 20) for p in out_dir.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "save ended before it was stopped"
            time.sleep(0.005)
        os.kill(pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    one_line_error(subprocess.CompletedProcess(argv, proc.returncode, stdout.decode(), stderr.decode()),
                   130, "interrupted")
    assert os.listdir(out_dir) == ["zeros.tar"] and out.read_bytes() == b"the old archive\n"


def test_save_and_load_refuse_a_directory_that_is_no_store(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:v1")
    archive = lfs.workdir / "bb.tar"
    lfs.run("save", "bb:v1", "-o", str(archive))
    other = lfs.mkdir("documents")
    (other / "letter.txt").write_text("dear store,\n")
    lfs.give(other)
    for args in (["save", "bb:v1", "-o", str(lfs.workdir / "x.tar")], ["load", "-i", str(archive)]):
        proc = lfs.sh([LAYERFS_BIN, "--root", str(other), *args], check=False)
        one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                                   proc.stderr.decode()), 1, "is not a layerfs store")
        assert sorted(os.listdir(other)) == ["letter.txt"]
    assert not (lfs.workdir / "x.tar").exists()
