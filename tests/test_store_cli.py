"""The image store through the CLI: import, images, inspect, tag, references, rmi, interop.

Every source image is built by tests/support/oci.py, so the test knows the exact
digests to expect. Checks read the store directly (it is an OCI layout by contract),
so a wrong answer cannot hide behind a CLI that agrees with itself. Everything runs
as root and rootless (`lfs`), since nothing here needs privilege.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import Layerfs
from support.oci import (ImageInfo, busybox_rootfs, chardev, decompress, directory, file,
                         hardlink, make_layer, sha256_digest, symlink, whiteout,
                         write_docker_archive, write_oci_archive, write_oci_layout)

ID = re.compile(r"sha256:[0-9a-f]{64}")
SHORT_ID = re.compile(r"[0-9a-f]{12}")

# ---------------------------------------------------------------------------------------
# helpers: tar contents and the store on disk
# ---------------------------------------------------------------------------------------


def tar_tree(tar_bytes: bytes, *, owners: bool = True) -> dict[str, tuple[Any, ...]]:
    """path -> (kind, permission bits, [uid, gid,] payload): a tar's content, however written.

    Member names are normalised ("./a/" -> "a") and hard links are resolved to the
    file they share, so two tars that a union filesystem would show identically
    compare equal even if one tool wrote them differently.
    """
    tree: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
        for m in tf:
            name = norm(m.name)
            if not name:
                continue
            if m.isreg():
                kind, payload = "file", tf.extractfile(m).read()  # type: ignore[union-attr]
            elif m.islnk():
                target = tree[norm(m.linkname)]
                tree[name] = target
                continue
            elif m.isdir():
                kind, payload = "dir", None
            elif m.issym():
                kind, payload = "symlink", m.linkname
            elif m.ischr() or m.isblk():
                kind, payload = ("chardev" if m.ischr() else "blockdev"), (m.devmajor, m.devminor)
            elif m.isfifo():
                kind, payload = "fifo", None
            else:
                raise AssertionError(f"unexpected tar member type {m.type!r} for {m.name}")
            owner = (m.uid, m.gid) if owners else ()
            tree[name] = (kind, m.mode & 0o7777, *owner, payload)
    return tree


def norm(name: str) -> str:
    """A tar member name without leading "./" or "/" and trailing "/"."""
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return "" if name == "." else name


def dir_tree(root: Path, *, owners: bool = True) -> dict[str, tuple[Any, ...]]:
    """The same view as tar_tree, read from a directory on disk."""
    tree: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            perm = st.st_mode & 0o7777
            owner = (st.st_uid, st.st_gid) if owners else ()
            if path.is_symlink():  # the mode of a symlink means nothing
                tree[rel] = ("symlink", 0, *owner, os.readlink(path))
            elif path.is_dir():
                tree[rel] = ("dir", perm, *owner, None)
            else:
                tree[rel] = ("file", perm, *owner, path.read_bytes())
    return tree


def without_symlink_modes(tree: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """Zero the permission bits of symlinks, as dir_tree does (tars usually say 0777)."""
    return {k: ("symlink", 0, *v[2:]) if v[0] == "symlink" else v for k, v in tree.items()}


def blob_path(store: Path, digest: str) -> Path:
    """Where an OCI layout keeps the blob with this digest."""
    algo, hexpart = digest.split(":", 1)
    return store / "blobs" / algo / hexpart


def blob_files(lfs: Layerfs) -> set[str]:
    """Names of all blobs in the store."""
    d = lfs.root / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def layer_dirs(lfs: Layerfs) -> set[str]:
    """Names of the unpacked layers in STORE/layers/ (hidden scratch entries aside)."""
    d = lfs.root / "layers"
    return {p.name for p in d.iterdir() if not p.name.startswith(".")} if d.exists() else set()


def source_blob_json(layout: Path, digest: str) -> dict[str, Any]:
    """A JSON blob (manifest, config) from a source OCI layout."""
    return json.loads(blob_path(layout, digest).read_bytes())


def archive_member(archive: Path, name: str) -> bytes:
    """One file from a (docker or OCI) archive, whatever "./" spelling it uses."""
    with tarfile.open(archive) as tf:
        for m in tf:
            if norm(m.name) == norm(name):
                return tf.extractfile(m).read()  # type: ignore[union-attr]
    raise AssertionError(f"{name} not in {archive}")


# ---------------------------------------------------------------------------------------
# helpers: the CLI
# ---------------------------------------------------------------------------------------


def import_image(lfs: Layerfs, source: str, name: str | None = None) -> str:
    """`layerfs import -q`: returns the image id, checking the documented output."""
    args = ["import", source] + ([name] if name else []) + ["-q"]
    out = lfs.run(*args).stdout
    assert ID.fullmatch(out.strip()), f"import -q printed {out!r}"
    return out.strip()


def images(lfs: Layerfs) -> list[dict[str, Any]]:
    """`layerfs images --json`, parsed."""
    return json.loads(lfs.run("images", "--json").stdout)


def image_by_id(lfs: Layerfs, image_id: str) -> dict[str, Any]:
    """The single `images --json` entry for an id."""
    found = [i for i in images(lfs) if i["id"] == image_id]
    assert len(found) == 1, f"{image_id} listed {len(found)} times"
    return found[0]


def inspect(lfs: Layerfs, ref: str) -> dict[str, Any]:
    """`layerfs inspect REF --json`, parsed."""
    return json.loads(lfs.run("inspect", ref, "--json").stdout)


def assert_clean_error(proc: Any, codes: tuple[int, ...]) -> None:
    """A failure as the contract describes it: right code, one error line, no traceback."""
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerfs: error: "), proc.stderr


def assert_image_intact(lfs: Layerfs, ref: str) -> dict[str, Any]:
    """Everything `inspect` reports is backed by blobs that hash to their names.

    Checks the chain an OCI tool walks: manifest blob -> config blob -> layer blobs,
    each layer's uncompressed digest equal to the config's diff_id and to `inspect`.
    Returns the inspect document.
    """
    info = inspect(lfs, ref)
    manifest_bytes = blob_path(lfs.root, info["digest"]).read_bytes()
    assert sha256_digest(manifest_bytes) == info["digest"]
    manifest = json.loads(manifest_bytes)
    assert manifest == info["manifest"]
    assert manifest["config"]["digest"] == info["id"]
    config_bytes = blob_path(lfs.root, info["id"]).read_bytes()
    assert sha256_digest(config_bytes) == info["id"]
    config = json.loads(config_bytes)
    assert config == info["config"]
    assert [d["digest"] for d in manifest["layers"]] == [l["digest"] for l in info["layers"]]
    assert config["rootfs"]["diff_ids"] == [l["diff_id"] for l in info["layers"]]
    for layer in info["layers"]:
        data = blob_path(lfs.root, layer["digest"]).read_bytes()
        assert sha256_digest(data) == layer["digest"]
        assert len(data) == layer["size"]
        assert sha256_digest(decompress(data)) == layer["diff_id"]
    return info


def stored_layer_tree(lfs: Layerfs, info: dict[str, Any], index: int = 0,
                      owners: bool = True) -> dict[str, tuple[Any, ...]]:
    """The content of one layer of an imported image, read from the store's blob."""
    data = blob_path(lfs.root, info["layers"][index]["digest"]).read_bytes()
    return tar_tree(decompress(data), owners=owners)


# ---------------------------------------------------------------------------------------
# helpers: source images
# ---------------------------------------------------------------------------------------


def base_entries(marker: str) -> list[Any]:
    """A small bottom layer; `marker` makes otherwise equal images distinct."""
    return [
        directory("etc"),
        file("etc/hostname", f"{marker}\n".encode()),
        directory("bin"),
        file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755),
        symlink("bin/alias", "tool"),
    ]


def top_entries(marker: str) -> list[Any]:
    """A layer that changes, deletes and adds on top of base_entries."""
    return [
        directory("etc"),
        file("etc/hostname", f"{marker} on top\n".encode()),
        directory("bin"),
        whiteout("bin/alias"),
        directory("srv"),
        file("srv/data", bytes(range(256)) * 64, uid=1000, gid=1000),
    ]


def sample_layers(marker: str = "sample",
                  compressions: tuple[str, ...] = ("gzip", "gzip")) -> list[bytes]:
    """Two or three layers, compressed as asked."""
    entries = [base_entries(marker), top_entries(marker),
               [directory("opt"), file("opt/third", marker.encode() * 100)]]
    return [make_layer(e, compression=c) for e, c in zip(entries, compressions)]


def oci_source(lfs: Layerfs, dirname: str, layers: list[bytes],
               tag: str = "latest") -> tuple[Path, ImageInfo]:
    """Write (or add to) an OCI layout in the scratch area, readable by `lfs`'s user."""
    dest = lfs.workdir / dirname
    info = write_oci_layout(dest, layers, tag=tag)
    lfs.give(dest)
    return dest, info


# ---------------------------------------------------------------------------------------
# import, by transport
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressions", [("none", "none"), ("gzip", "gzip"), ("zstd", "zstd"),
                                          ("none", "gzip", "zstd")],
                         ids=["plain", "gzip", "zstd", "mixed"])
def test_import_oci_layout_keeps_digests(lfs: Layerfs, compressions: tuple[str, ...]) -> None:
    """An OCI import stores the source's manifest, config and layers byte for byte.

    That is what makes the store an OCI layout other tools trust: the digests a
    registry or skopeo computed stay valid, whatever the layer compression.
    """
    layers = sample_layers("oci", compressions)
    src, info = oci_source(lfs, "src", layers)
    out = lfs.run("import", f"oci:{src}", "app:v1").stdout
    assert out.strip() == f"Loaded image: app:v1 ({info.config_digest})"

    got = assert_image_intact(lfs, "app:v1")
    assert got["id"] == info.config_digest
    assert got["digest"] == info.manifest_digest
    assert got["names"] == ["app:v1"]
    source_manifest = source_blob_json(src, info.manifest_digest)
    assert got["manifest"] == source_manifest
    assert got["config"] == source_blob_json(src, info.config_digest)
    assert [l["digest"] for l in got["layers"]] == list(info.layer_digests)
    assert [l["diff_id"] for l in got["layers"]] == list(info.diff_ids)
    assert [l["media_type"] for l in got["layers"]] == [d["mediaType"] for d in source_manifest["layers"]]
    assert [l["size"] for l in got["layers"]] == [len(b) for b in layers]
    assert layer_dirs(lfs), "import left nothing in STORE/layers/"


def test_import_oci_tag_picks_one_of_several(lfs: Layerfs) -> None:
    """`oci:DIR:TAG` imports exactly the tagged image from a layout holding several."""
    infos = {tag: oci_source(lfs, "multi", sample_layers(tag), tag=tag)[1]
             for tag in ("v1", "v2", "v3")}
    src = lfs.workdir / "multi"
    assert len({i.config_digest for i in infos.values()}) == 3

    assert import_image(lfs, f"oci:{src}:v2", "app:two") == infos["v2"].config_digest
    assert [i["id"] for i in images(lfs)] == [infos["v2"].config_digest]
    assert inspect(lfs, "app:two")["digest"] == infos["v2"].manifest_digest


def test_import_oci_names_follow_the_ref(lfs: Layerfs) -> None:
    """Without NAME, a "name:tag" oci REF names the image; a bare tag leaves it untagged."""
    src, full = oci_source(lfs, "named", sample_layers("full"), tag="myapp:3.1")
    src, bare = oci_source(lfs, "named", sample_layers("bare"), tag="v1")

    assert import_image(lfs, f"oci:{src}:myapp:3.1") == full.config_digest
    assert import_image(lfs, f"oci:{src}:v1") == bare.config_digest
    assert image_by_id(lfs, full.config_digest)["names"] == ["myapp:3.1"]
    assert image_by_id(lfs, bare.config_digest)["names"] == []
    assert inspect(lfs, "myapp:3.1")["id"] == full.config_digest


@pytest.mark.parametrize("with_ref", [False, True], ids=["no-ref", "ref"])
def test_import_oci_archive(lfs: Layerfs, with_ref: bool) -> None:
    """`oci-archive:FILE[:REF]` imports the archived image with its digests unchanged."""
    archive = lfs.workdir / "image.tar"
    info = write_oci_archive(archive, sample_layers("archive", ("gzip", "zstd")), tag="v7")
    lfs.give(archive)

    source = f"oci-archive:{archive}" + (":v7" if with_ref else "")
    assert import_image(lfs, source, "arch:1") == info.config_digest
    got = assert_image_intact(lfs, "arch:1")
    assert got["digest"] == info.manifest_digest
    assert [l["digest"] for l in got["layers"]] == info.layer_digests
    assert got["names"] == ["arch:1"]


@pytest.mark.parametrize("new_layout", [False, True], ids=["classic", "docker25"])
def test_import_docker_archive(lfs: Layerfs, new_layout: bool) -> None:
    """`docker-archive:FILE` (both `docker save` layouts) keeps the config and RepoTags[0].

    The config blob is the image id, so it must be stored byte for byte (checked
    against the archive itself); the layers keep their uncompressed digests (diff_ids).
    """
    layers = sample_layers("docker", ("gzip", "zstd", "none"))
    archive = lfs.workdir / "docker.tar"
    info = write_docker_archive(archive, layers, repo_tag="test:latest", new_layout=new_layout)
    lfs.give(archive)
    saved = json.loads(archive_member(archive, "manifest.json"))
    assert sha256_digest(archive_member(archive, saved[0]["Config"])) == info.config_digest

    out = lfs.run("import", f"docker-archive:{archive}").stdout
    assert out.strip() == f"Loaded image: test:latest ({info.config_digest})"
    got = assert_image_intact(lfs, "test:latest")
    assert got["id"] == info.config_digest
    assert got["names"] == ["test:latest"]
    assert [l["diff_id"] for l in got["layers"]] == info.diff_ids


def test_import_dir_rootfs(lfs: Layerfs) -> None:
    """`dir:ROOTFS` becomes a one-layer image holding exactly the directory's tree:
    content, modes, symlinks, hard links, and (for root, who can read them) owners.
    A rootless import's owners are left open: the user owns the files on disk."""
    rootfs = busybox_rootfs(lfs.workdir / "rootfs")
    lfs.give(rootfs)

    import_image(lfs, f"dir:{rootfs}", "bb:dir")
    got = assert_image_intact(lfs, "bb:dir")
    assert len(got["layers"]) == 1
    owners = not lfs.rootless
    stored = without_symlink_modes(stored_layer_tree(lfs, got, owners=owners))
    assert stored == dir_tree(rootfs, owners=owners)


def rootfs_with_unreadable_parts(lfs: Layerfs) -> Path:
    """A rootfs made by root that the test user can read only in part: a 0600 file with
    a second (hard) name, a 0700 directory, and a directory it may list but not enter."""
    rootfs = lfs.workdir / "partly-readable"
    for path in ("etc", "private", "listable"):
        (rootfs / path).mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("visible\n")
    (rootfs / "etc" / "shadow").write_text("root:*:19000::::::\n")
    (rootfs / "etc" / "shadow").chmod(0o600)
    os.link(rootfs / "etc" / "shadow", rootfs / "etc" / "shadow-again")
    (rootfs / "private" / "key").write_text("secret\n")
    (rootfs / "private").chmod(0o700)
    (rootfs / "listable" / "inside").write_text("cannot stat me\n")
    (rootfs / "listable").chmod(0o744)
    os.chmod(rootfs, 0o755)
    return rootfs


UNREADABLE = ["etc/shadow", "etc/shadow-again", "listable/inside", "private"]


def test_import_dir_refuses_what_it_cannot_read(lfs_user: Layerfs) -> None:
    """An unreadable path fails a `dir:` import with one line naming it, changing
    nothing, instead of leaving it out of the image unnoticed."""
    rootfs = rootfs_with_unreadable_parts(lfs_user)
    src, _ = oci_source(lfs_user, "src", sample_layers("seed"))
    import_image(lfs_user, f"oci:{src}", "seed:1")
    before = lfs_user.store_snapshot()
    proc = lfs_user.run("import", f"dir:{rootfs}", "partial:1", check=False)
    assert_clean_error(proc, (1,))
    assert str(rootfs / "etc" / "shadow") in proc.stderr and "--skip-unreadable" in proc.stderr
    assert lfs_user.store_snapshot() == before


def test_import_dir_skip_unreadable(lfs_user: Layerfs) -> None:
    """--skip-unreadable imports the rest and lists every path it left out, one line each."""
    rootfs = rootfs_with_unreadable_parts(lfs_user)
    proc = lfs_user.run("import", "--skip-unreadable", f"dir:{rootfs}", "partial:1")
    assert proc.stdout.startswith("Loaded image: partial:1 ")
    assert sorted(proc.stderr.splitlines()) == [
        f"layerfs: skipped (permission denied): {rootfs / path}" for path in UNREADABLE]
    stored = stored_layer_tree(lfs_user, assert_image_intact(lfs_user, "partial:1"))
    assert sorted(stored) == ["etc", "etc/hostname", "listable"]
    assert stored["etc/hostname"][-1] == b"visible\n"


def test_skip_unreadable_is_for_dir_sources(lfs: Layerfs) -> None:
    """Other sources cannot leave anything out: the option is refused for them."""
    src, _ = oci_source(lfs, "src", sample_layers("other"))
    before = lfs.store_snapshot()
    assert_clean_error(lfs.run("import", "--skip-unreadable", f"oci:{src}", "x:1", check=False), (1,))
    assert lfs.store_snapshot() == before


TARBALL_ENTRIES = [
    directory("usr"), directory("usr/bin"),
    file("usr/bin/su", b"\x7fELF pretend", mode=0o4755),
    hardlink("usr/bin/su-again", "usr/bin/su"),
    symlink("usr/bin/sudo", "su"),
    directory("dev"), chardev("dev/null", 1, 3),
    directory("home"), directory("home/user", uid=1000, gid=1000),
    file("home/user/notes", b"hello\n" * 1000, mode=0o600, uid=1000, gid=1000),
]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_import_tarball(lfs: Layerfs, compression: str) -> None:
    """`tar:FILE` makes a one-layer image whose content is the tarball's, owners and
    device numbers included (a rootless import keeps them as data, not as disk state)."""
    tarball = lfs.workdir / f"rootfs.tar.{compression}"
    data = make_layer(TARBALL_ENTRIES, compression=compression)
    tarball.write_bytes(data)
    lfs.give(tarball)

    import_image(lfs, f"tar:{tarball}", "tb:1")
    got = assert_image_intact(lfs, "tb:1")
    assert len(got["layers"]) == 1
    assert stored_layer_tree(lfs, got) == tar_tree(decompress(data))


# ---------------------------------------------------------------------------------------
# images, inspect, tag
# ---------------------------------------------------------------------------------------


def test_images_outputs(lfs: Layerfs) -> None:
    """`images` as a table, as JSON and as bare ids all describe the same store."""
    src, named = oci_source(lfs, "src", sample_layers("named"), tag="a")
    src, untagged = oci_source(lfs, "src", sample_layers("untagged"), tag="b")
    import_image(lfs, f"oci:{src}:a", "app:v1")
    lfs.run("tag", "app:v1", "other:latest")
    import_image(lfs, f"oci:{src}:b")
    short_named = named.config_digest[7:19]
    short_untagged = untagged.config_digest[7:19]

    listing = {i["id"]: i for i in images(lfs)}
    assert set(listing) == {named.config_digest, untagged.config_digest}
    assert sorted(listing[named.config_digest]["names"]) == ["app:v1", "other:latest"]
    assert listing[untagged.config_digest]["names"] == []
    for image_id, info in ((named.config_digest, named), (untagged.config_digest, untagged)):
        entry = listing[image_id]
        assert entry["digest"] == info.manifest_digest
        assert isinstance(entry["size"], int) and entry["size"] > 0
        assert isinstance(entry["created"], str)

    table = lfs.run("images").stdout.splitlines()
    header = table[0]
    for column in ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"):
        assert column in header, header
    rows = [line.split() for line in table[1:]]
    assert any({"app", "v1", short_named} <= set(r) for r in rows), table
    assert any({"other", "latest", short_named} <= set(r) for r in rows), table
    assert any(short_untagged in r for r in rows), table

    quiet = lfs.run("images", "-q").stdout.split()
    assert all(SHORT_ID.fullmatch(line) for line in quiet), quiet
    assert set(quiet) == {short_named, short_untagged}


def test_inspect_reports_the_image(lfs: Layerfs) -> None:
    """`inspect` without --json is for people but still names the image id."""
    src, info = oci_source(lfs, "src", sample_layers("human"))
    import_image(lfs, f"oci:{src}", "app:v1")
    out = lfs.run("inspect", "app:v1").stdout
    assert info.config_digest[7:19] in out, out


def test_tag_adds_a_name_not_a_copy(lfs: Layerfs) -> None:
    """`tag SRC DST` makes DST resolve to the same image and writes no new blob or layer."""
    src, info = oci_source(lfs, "src", sample_layers("tag"))
    import_image(lfs, f"oci:{src}", "app:v1")
    blobs, layers = blob_files(lfs), layer_dirs(lfs)

    lfs.run("tag", "app:v1", "copy:v9")
    lfs.run("tag", "copy:v9", "bare")
    assert inspect(lfs, "copy:v9")["id"] == info.config_digest
    assert inspect(lfs, "bare:latest")["id"] == info.config_digest
    assert sorted(inspect(lfs, "app:v1")["names"]) == ["app:v1", "bare:latest", "copy:v9"]
    assert len(images(lfs)) == 1
    assert (blob_files(lfs), layer_dirs(lfs)) == (blobs, layers)


AMBIGUOUS_NAMES = ["sha256:abcd", "sha256", "sha256:latest", "a" * 64, "0123456789" * 6 + "abcd:v1"]


@pytest.mark.parametrize("name", AMBIGUOUS_NAMES)
def test_names_that_read_as_digests_or_ids_are_refused(lfs: Layerfs, name: str) -> None:
    """As docker refuses them: a repository "sha256", or one of 64 hex digits, would be
    taken for a digest or an image id. tag, import and commit refuse them alike."""
    src, _ = oci_source(lfs, "src", sample_layers("ambiguous"))
    import_image(lfs, f"oci:{src}", "app:v1")
    lfs.run("create", "--name", "box", "app:v1")
    before = lfs.store_snapshot()
    for args in (["tag", "app:v1", name], ["import", f"oci:{src}", name], ["commit", "box", name]):
        assert_clean_error(lfs.run(*args, check=False), (1,))
        assert lfs.store_snapshot() == before, args
    assert [i["names"] for i in images(lfs)] == [["app:v1"]]


def test_names_near_the_ambiguous_ones_are_fine(lfs: Layerfs) -> None:
    """The control: only those exact shapes are refused."""
    src, _ = oci_source(lfs, "src", sample_layers("near"))
    import_image(lfs, f"oci:{src}", "app:v1")
    near = ["sha256x:1", "my/sha256:1", "a" * 63, "a" * 65, "sha512:abcd"]
    for name in near:
        lfs.run("tag", "app:v1", name)
    assert sorted(images(lfs)[0]["names"]) == sorted(["app:v1", *(n if ":" in n else f"{n}:latest" for n in near)])


# ---------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------


def test_reference_forms(lfs: Layerfs) -> None:
    """Every documented REF form resolves to the one image; a bare name means :latest."""
    src, info = oci_source(lfs, "src", sample_layers("refs"))
    import_image(lfs, f"oci:{src}", "app")
    assert inspect(lfs, "app:latest")["names"] == ["app:latest"]

    config_hex = info.config_digest.split(":", 1)[1]
    for ref in ("app", "app:latest", f"app@{info.manifest_digest}", info.config_digest,
                config_hex, config_hex[:12], config_hex[:5]):
        got = inspect(lfs, ref)
        assert (got["id"], got["digest"]) == (info.config_digest, info.manifest_digest), ref


def images_sharing_a_prefix(lfs: Layerfs) -> tuple[Path, str, str, str, str]:
    """Add small images to one layout until two config ids share their first two hex digits.

    Returns (layout, tag A, tag B, id A, id B). Needs ~20 images on average; digests
    are deterministic, so this is as reproducible as the image builder.
    """
    seen: dict[str, tuple[str, str]] = {}
    src = lfs.workdir / "many"
    for i in range(300):
        tag = f"t{i}"
        info = write_oci_layout(src, [make_layer([file("n", str(i).encode())])], tag=tag)
        prefix = info.config_digest[7:9]
        if prefix in seen:
            lfs.give(src)
            other_tag, other_id = seen[prefix]
            return src, other_tag, tag, other_id, info.config_digest
        seen[prefix] = (tag, info.config_digest)
    raise AssertionError("no shared id prefix in 300 images")


def test_id_prefix_must_be_unique(lfs: Layerfs) -> None:
    """An id prefix two images share is refused; one more digit makes it resolve."""
    src, tag_a, tag_b, id_a, id_b = images_sharing_a_prefix(lfs)
    import_image(lfs, f"oci:{src}:{tag_a}", "amb:a")
    import_image(lfs, f"oci:{src}:{tag_b}", "amb:b")
    hex_a, hex_b = id_a[7:], id_b[7:]
    common = os.path.commonprefix([hex_a, hex_b])
    assert len(common) >= 2

    proc = lfs.run("inspect", common, "--json", check=False)
    # The contract has no code of its own for "ambiguous": bad input (1) or not found (3).
    assert_clean_error(proc, (1, 3))
    assert inspect(lfs, hex_a[:len(common) + 1])["id"] == id_a
    assert inspect(lfs, hex_b[:len(common) + 1])["id"] == id_b


# ---------------------------------------------------------------------------------------
# rmi and reclaiming space
# ---------------------------------------------------------------------------------------


def test_rmi_reclaims_only_what_no_other_image_uses(lfs: Layerfs) -> None:
    """Removing an image frees its own blobs and unpacked layers, never shared ones."""
    shared = make_layer(base_entries("shared"), compression="gzip")
    src, info_a = oci_source(lfs, "src", [shared, make_layer(top_entries("a"), "gzip")], tag="a")
    src, info_b = oci_source(lfs, "src", [shared, make_layer(top_entries("b"), "gzip")], tag="b")
    assert info_a.layer_digests[0] == info_b.layer_digests[0]

    import_image(lfs, f"oci:{src}:b", "img:b")
    blobs_b, layers_b = blob_files(lfs), layer_dirs(lfs)
    assert layers_b, "import left nothing in STORE/layers/"
    import_image(lfs, f"oci:{src}:a", "img:a")
    assert blob_files(lfs) > blobs_b
    assert layer_dirs(lfs) > layers_b

    lfs.run("rmi", "img:a")
    assert blob_files(lfs) == blobs_b
    assert layer_dirs(lfs) == layers_b
    assert [i["id"] for i in images(lfs)] == [info_b.config_digest]
    assert_image_intact(lfs, "img:b")

    lfs.run("rmi", "img:b")
    assert images(lfs) == []
    assert blob_files(lfs) == set()
    assert layer_dirs(lfs) == set()


def test_rmi_removes_one_name_of_many(lfs: Layerfs) -> None:
    """rmi of one of two names only drops the name; the image goes with its last name."""
    src, info = oci_source(lfs, "src", sample_layers("names"))
    import_image(lfs, f"oci:{src}", "app:v1")
    lfs.run("tag", "app:v1", "app:v2")
    lfs.run("tag", "app:v1", "app:v3")
    blobs, layers = blob_files(lfs), layer_dirs(lfs)

    lfs.run("rmi", "app:v1")
    assert sorted(image_by_id(lfs, info.config_digest)["names"]) == ["app:v2", "app:v3"]
    assert (blob_files(lfs), layer_dirs(lfs)) == (blobs, layers)
    assert_clean_error(lfs.run("inspect", "app:v1", check=False), (3,))
    assert_image_intact(lfs, "app:v2")

    lfs.run("rmi", "app:v2", "app:v3")
    assert images(lfs) == []
    assert blob_files(lfs) == set()


def untagged_and_deleted(proc: Any) -> list[str]:
    """rmi's report on stdout, one line each."""
    return proc.stdout.splitlines()


def one_image_two_names(lfs: Layerfs, marker: str) -> ImageInfo:
    """app:v1 and app:v2 naming one imported image."""
    src, info = oci_source(lfs, "src", sample_layers(marker))
    import_image(lfs, f"oci:{src}", "app:v1")
    lfs.run("tag", "app:v1", "app:v2")
    return info


def test_rmi_by_id_of_an_image_with_several_names(lfs: Layerfs) -> None:
    """An id means the image and every name of it: refused (exit 1) unless -f, so one
    command never drops names nobody typed; with -f all go and the image is deleted."""
    info = one_image_two_names(lfs, "by-id")
    before = lfs.store_snapshot()
    for ref in (info.config_digest, info.config_digest[7:19], f"app@{info.manifest_digest}"):
        assert_clean_error(lfs.run("rmi", ref, check=False), (1,))
        assert lfs.store_snapshot() == before
    proc = lfs.run("rmi", "-f", info.config_digest[7:19])
    assert untagged_and_deleted(proc) == ["Untagged: app:v1", "Untagged: app:v2", f"Deleted: {info.config_digest}"]
    assert images(lfs) == [] and blob_files(lfs) == set()


def test_rmi_of_several_references_is_all_or_nothing(lfs: Layerfs) -> None:
    """One unknown reference among several: exit 3, and no name is removed."""
    info = one_image_two_names(lfs, "all-or-nothing")
    before = lfs.store_snapshot()
    proc = lfs.run("rmi", "app:v1", "nosuch:1", check=False)
    assert_clean_error(proc, (3,))
    assert proc.stdout == ""
    assert lfs.store_snapshot() == before
    assert untagged_and_deleted(lfs.run("rmi", "app:v1", "app:v2")) == [
        "Untagged: app:v1", "Untagged: app:v2", f"Deleted: {info.config_digest}"]
    assert images(lfs) == []


def test_rmi_and_a_container(lfs: Layerfs) -> None:
    """Untagging a name the image has more of is always fine; its last name is refused
    (exit 4, naming the container) unless -f, which untags it and keeps the image,
    unnamed, for the container. -f of one name untags only that name."""
    info = one_image_two_names(lfs, "container")
    lfs.run("tag", "app:v1", "app:v3")
    lfs.run("create", "--name", "c1", "app:v1")
    blobs, layers = blob_files(lfs), layer_dirs(lfs)

    assert untagged_and_deleted(lfs.run("rmi", "app:v3")) == ["Untagged: app:v3"]
    assert untagged_and_deleted(lfs.run("rmi", "-f", "app:v2")) == ["Untagged: app:v2"]
    assert image_by_id(lfs, info.config_digest)["names"] == ["app:v1"]
    before = lfs.store_snapshot()
    proc = lfs.run("rmi", "app:v1", check=False)
    assert_clean_error(proc, (4,))
    assert "c1" in proc.stderr
    assert lfs.store_snapshot() == before

    proc = lfs.run("rmi", "-f", "app:v1")
    assert untagged_and_deleted(proc) == ["Untagged: app:v1"]
    assert "c1" in proc.stderr
    assert image_by_id(lfs, info.config_digest)["names"] == []
    assert (blob_files(lfs), layer_dirs(lfs)) == (blobs, layers)

    lfs.run("rm", "c1")
    assert untagged_and_deleted(lfs.run("rmi", info.config_digest[7:19])) == [f"Deleted: {info.config_digest}"]
    assert images(lfs) == [] and blob_files(lfs) == set() and layer_dirs(lfs) == set()


def test_rmi_force_by_id_keeps_an_image_a_container_uses(lfs: Layerfs) -> None:
    """-f by id removes every name; a container's image then stays, unnamed, and rmi says so."""
    info = one_image_two_names(lfs, "force-id")
    lfs.run("create", "--name", "keeper", "app:v1")
    assert_clean_error(lfs.run("rmi", info.config_digest, check=False), (1,))
    proc = lfs.run("rmi", "-f", info.config_digest)
    assert untagged_and_deleted(proc) == ["Untagged: app:v1", "Untagged: app:v2"]
    assert "kept" in proc.stderr and "keeper" in proc.stderr
    assert [(i["id"], i["names"]) for i in images(lfs)] == [(info.config_digest, [])]
    assert_image_intact(lfs, info.config_digest)


def test_rmi_and_a_mounted_image(lfs: Layerfs) -> None:
    """The same rules for a mounted image: an extra name goes; the last is refused
    (exit 4, naming the mount point) unless -f keeps the image for the mount, which
    goes on serving it; after umount the unnamed image can be removed."""
    info = one_image_two_names(lfs, "mounted")
    with lfs.mounted("app:v1") as mountpoint:
        assert untagged_and_deleted(lfs.run("rmi", "app:v2")) == ["Untagged: app:v2"]
        before = lfs.store_snapshot()
        proc = lfs.run("rmi", "app:v1", check=False)
        assert_clean_error(proc, (4,))
        assert str(mountpoint) in proc.stderr
        assert lfs.store_snapshot() == before
        assert untagged_and_deleted(lfs.run("rmi", "-f", "app:v1")) == ["Untagged: app:v1"]
        assert image_by_id(lfs, info.config_digest)["names"] == []
        assert lfs.sh(["cat", str(mountpoint / "etc/hostname")]).stdout == b"mounted on top\n"
    lfs.run("rmi", info.config_digest)
    assert images(lfs) == [] and blob_files(lfs) == set()


# ---------------------------------------------------------------------------------------
# idempotence and interop
# ---------------------------------------------------------------------------------------


def snapshot_without_index(lfs: Layerfs) -> dict[str, tuple[int, int]]:
    """The store snapshot minus index.json, which a no-op import may rewrite in place."""
    return {k: v for k, v in lfs.store_snapshot().items() if os.path.normpath(k) != "index.json"}


def test_reimport_is_idempotent(lfs: Layerfs) -> None:
    """Importing an image that is already there rewrites nothing but, at most, index.json;
    importing it under a second name only adds the name."""
    src, info = oci_source(lfs, "src", sample_layers("again", ("gzip", "zstd")))
    assert import_image(lfs, f"oci:{src}", "app:v1") == info.config_digest
    first = snapshot_without_index(lfs)
    index = json.loads((lfs.root / "index.json").read_bytes())

    assert import_image(lfs, f"oci:{src}", "app:v1") == info.config_digest
    assert json.loads((lfs.root / "index.json").read_bytes()) == index
    assert snapshot_without_index(lfs) == first

    out = lfs.run("import", f"oci:{src}", "app:v2").stdout
    assert out.strip() == f"Loaded image: app:v2 ({info.config_digest})"
    assert snapshot_without_index(lfs) == first
    assert sorted(image_by_id(lfs, info.config_digest)["names"]) == ["app:v1", "app:v2"]


def test_store_is_an_oci_layout_for_skopeo(lfs: Layerfs) -> None:
    """skopeo reads the store as `oci:STORE:name:tag` and copies out of it; the copy
    imports back as the same image."""
    src, info = oci_source(lfs, "src", sample_layers("skopeo", ("gzip", "zstd")))
    import_image(lfs, f"oci:{src}", "app:v1")

    seen = json.loads(lfs.sh(["skopeo", "inspect", f"oci:{lfs.root}:app:v1"]).stdout)
    assert seen["Digest"] == info.manifest_digest
    assert seen["Layers"] == list(info.layer_digests)

    other = lfs.workdir / "other"
    lfs.sh(["skopeo", "--insecure-policy", "copy", f"oci:{lfs.root}:app:v1", f"oci:{other}:x"])
    copied = json.loads((other / "index.json").read_bytes())["manifests"]
    assert [m["digest"] for m in copied] == [info.manifest_digest]

    assert import_image(lfs, f"oci:{other}:x", "back:x") == info.config_digest
    assert sorted(inspect(lfs, "back:x")["names"]) == ["app:v1", "back:x"]
    assert_image_intact(lfs, "back:x")
