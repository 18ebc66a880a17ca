"""Inspection references (REF@N, transports imported once), `layerfs export`, and
browsing history with `layerfs mount REF@N` and `layerfs mount --layer N`.

Everything goes through the real CLI as root and as the unprivileged test user (the
`lfs` fixture), on real mounts that are unmounted after each block. Trees seen through
a mount are compared with the oracle's merge of the same layer bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs, fuse_mounts_under
from support.oci import (DEFAULT_MTIME, ImageInfo, blockdev, busybox_image_layers, chardev,
                         directory, fifo, file, hardlink, make_layer, opaque, symlink, whiteout,
                         write_docker_archive, write_oci_archive, write_oci_layout)
from support.oracle import apply_layers
from support.snapshot import Node, assert_same_tree, snapshot_as
from support.terminal import run_with_terminal_stdout
from support.errors import one_line_error

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
RANGE_OF_THREE = "from 1 (the base) to 3"


def special_layer() -> bytes:
    """What busybox lacks: devices, a fifo, a directory with an xattr and odd owner/mode,
    and one inode with names in three directories, the first of them sorting after the
    others (a tar writer must still write each directory once, before its names)."""
    return make_layer([
        directory("dev"),
        chardev("dev/null", 1, 3),
        blockdev("dev/loop0", 7, 0, uid=0, gid=6),
        fifo("dev/initctl", mode=0o600),
        directory("srv", mode=0o2750, uid=33, gid=33, xattrs={"user.role": b"web\x00\xff"}),
        directory("zz", mode=0o700, uid=5, gid=6),
        file("zz/orig", b"one inode, three names\n", mode=0o640, uid=5, gid=6,
             xattrs={"user.tag": b"x"}),
        directory("aa"),
        hardlink("aa/link", "zz/orig"),
        hardlink("srv/link", "zz/orig"),
        symlink("srv/up", "../zz/orig"),
        file("srv/empty", b"", mode=0o4711, uid=33, gid=33, mtime=DEFAULT_MTIME + 7),
    ])


def import_image(lfs: Layerfs, layers: list[bytes], name: str) -> ImageInfo:
    source = lfs.workdir / f"src-{uuid.uuid4().hex[:8]}"
    info = write_oci_layout(source, layers)
    lfs.give(source)
    lfs.run("import", f"oci:{source}", name, "-q")
    return info


def image_count(lfs: Layerfs) -> int:
    return len(json.loads(lfs.run("images", "--json").stdout))


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def export_bytes(lfs: Layerfs, *args: str) -> bytes:
    """`layerfs export ARGS` to standard output (a pipe), as bytes."""
    return lfs.sh([LAYERFS_BIN, "--root", str(lfs.root), "export", *args]).stdout


@contextmanager
def mounted(lfs: Layerfs, *args: str) -> Iterator[Path]:
    """`layerfs mount ARGS MP` on a fresh directory; unmounted after the block."""
    mountpoint = lfs.mkdir(f"mnt-{uuid.uuid4().hex[:8]}")
    lfs.run("mount", *args, str(mountpoint))
    try:
        yield mountpoint
    finally:
        if str(mountpoint) in fuse_mounts_under(lfs.workdir):
            lfs.run("umount", str(mountpoint))


def mount_label(lfs: Layerfs, mountpoint: Path) -> str:
    records = json.loads(lfs.run("mounts", "--json").stdout)
    return next(r["image"] for r in records if r["mountpoint"] == str(mountpoint))


@pytest.fixture
def busybox() -> list[bytes]:
    return busybox_image_layers()


# ---------------------------------------------------------------------------------------
# REF@N and digests


def test_image_argument_resolves_ref_at_n(lfs_root: Layerfs, busybox: list[bytes]) -> None:
    """image_argument itself: REF@N cuts the layer chain, digests stay digests, labels say
    what was given."""
    from layerfs.cli.references import image_argument
    from layerfs.errors import BadInput
    from layerfs.store.layout import Store

    info = import_image(lfs_root, busybox, "bb:v1")
    store = Store(lfs_root.root)
    full = image_argument(store, "bb:v1")
    assert full.upto is None and full.diff_ids == info.diff_ids and full.label == "bb:v1"
    at2 = image_argument(store, "bb:v1@2")
    assert at2.upto == 2 and at2.diff_ids == info.diff_ids[:2] and at2.label == "bb:v1@2"
    assert at2.image.id == full.image.id
    short = info.config_digest.split(":")[1][:10]
    by_id = image_argument(store, f"{short}@1")
    assert by_id.diff_ids == info.diff_ids[:1] and by_id.label == "bb:v1@1"  # an id: the first name
    by_digest = image_argument(store, f"bb@{info.manifest_digest}")
    assert by_digest.upto is None and by_digest.diff_ids == info.diff_ids
    by_digest_at = image_argument(store, f"bb@{info.manifest_digest}@3")
    assert by_digest_at.upto == 3 and by_digest_at.diff_ids == info.diff_ids
    assert by_digest_at.layer(2)[1] == info.diff_ids[1]
    for wrong in ("bb:v1@0", "bb:v1@4", "@2"):
        with pytest.raises(BadInput):
            image_argument(store, wrong)
    with pytest.raises(BadInput, match=r"from 1 \(the base\) to 2"):
        at2.layer(3)  # the layers in view are the first two


def test_layer_numbers_out_of_range_fail_in_one_line(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:latest")
    out = lfs.workdir / "out.tar"
    for ref in ("bb@0", "bb@4", "bb:latest@99"):
        one_line_error(lfs.run("export", ref, "-o", str(out), check=False), 1, RANGE_OF_THREE)
    one_line_error(lfs.run("export", "bb", "--layer", "4", "-o", str(out), check=False), 1,
                   RANGE_OF_THREE)
    one_line_error(lfs.run("export", "bb@2", "--layer", "3", "-o", str(out), check=False), 1,
                   "from 1 (the base) to 2")
    assert not out.exists()
    proc = lfs.run("export", "bb", "--layer", "x", check=False)
    assert proc.returncode == 2 and "layer number" in proc.stderr
    mountpoint = lfs.mkdir("mnt-range")
    one_line_error(lfs.run("mount", "bb@4", str(mountpoint), check=False), 1, RANGE_OF_THREE)
    one_line_error(lfs.run("mount", "--layer", "0", "bb", str(mountpoint), check=False), 1,
                   RANGE_OF_THREE)
    assert str(mountpoint) not in fuse_mounts_under(lfs.workdir)


def test_name_at_digest_is_a_digest_not_a_layer(lfs: Layerfs, busybox: list[bytes]) -> None:
    info = import_image(lfs, busybox, "bb:latest")
    out = lfs.workdir / "base.tar"
    lfs.run("export", f"bb@{info.manifest_digest}", "--layer", "1", "-o", str(out))
    assert sha256_file(out) == info.diff_ids[0]
    with mounted(lfs, f"bb@{info.manifest_digest}") as mp:
        assert_same_tree(apply_layers(busybox), snapshot_as(lfs, mp), ("oracle", "layerfs"))
    with mounted(lfs, f"bb@{info.manifest_digest}@2") as mp:
        assert_same_tree(apply_layers(busybox[:2]), snapshot_as(lfs, mp), ("oracle", "layerfs"))
        assert mount_label(lfs, mp) == "bb:latest@2"


# ---------------------------------------------------------------------------------------
# Transport references


def _source(lfs: Layerfs, transport: str, layers: list[bytes]) -> tuple[str, ImageInfo, str | None]:
    """(REF, what was written, the name the image gets) for a source of `transport`."""
    where = lfs.workdir / f"{transport}-{uuid.uuid4().hex[:6]}"
    if transport == "oci":
        info, ref, name = write_oci_layout(where, layers, tag="v1"), f"oci:{where}:v1", None
    elif transport == "oci-archive":
        info, ref, name = write_oci_archive(where, layers, tag="arch:v2"), f"oci-archive:{where}:arch:v2", "arch:v2"
    elif transport == "docker-archive":
        info, ref, name = write_docker_archive(where, layers, repo_tag="dock:3"), f"docker-archive:{where}", "dock:3"
    else:  # a Docker 25+ archive, which is an OCI layout too
        info = write_docker_archive(where, layers, repo_tag="new:4", new_layout=True)
        ref, name = f"docker-archive:{where}:new:4", "new:4"
    lfs.give(where)
    return ref, info, name


@pytest.mark.parametrize("transport", ["oci", "oci-archive", "docker-archive", "docker-archive-25"])
def test_transport_ref_is_imported_once(lfs: Layerfs, busybox: list[bytes], transport: str) -> None:
    ref, info, name = _source(lfs, transport, busybox)
    out = lfs.workdir / "layer1.tar"
    proc = lfs.run("export", ref, "--layer", "1", "-o", str(out))
    short = info.config_digest.removeprefix("sha256:")[:12]
    assert proc.stderr.splitlines() == [f"layerfs: importing {ref} into the store" + (
        f" as {name}" if name else f" without a name, as image {short} (`layerfs tag {short} NAME` names it)")], \
        proc.stderr
    assert sha256_file(out) == info.diff_ids[0]
    images = json.loads(lfs.run("images", "--json").stdout)
    assert [i["id"] for i in images] == [info.config_digest]
    assert images[0]["names"] == ([name] if name else [])
    # Used again: found in the store, nothing imported and nothing said.
    proc = lfs.run("export", ref, "--layer", "3", "-o", str(out))
    assert proc.stderr == "" and sha256_file(out) == info.diff_ids[2]
    with mounted(lfs, f"{ref}@2") as mp:
        assert_same_tree(apply_layers(busybox[:2]), snapshot_as(lfs, mp), ("oracle", "layerfs"))
        assert mount_label(lfs, mp) == f"{ref}@2"
    assert image_count(lfs) == 1


def test_transport_ref_of_an_image_already_imported_says_nothing(lfs: Layerfs,
                                                                 busybox: list[bytes]) -> None:
    """The same image imported earlier by `layerfs import` (another manifest, same config:
    a docker archive) is found by its config digest."""
    info = import_image(lfs, busybox, "bb:latest")
    ref, _, _ = _source(lfs, "docker-archive", busybox)
    proc = lfs.run("export", ref, "--layer", "2", "-o", str(lfs.workdir / "l2.tar"))
    assert proc.stderr == ""
    assert sha256_file(lfs.workdir / "l2.tar") == info.diff_ids[1]
    assert image_count(lfs) == 1


def test_transport_import_never_moves_a_name(lfs: Layerfs, busybox: list[bytes]) -> None:
    """A source whose name already names another image is imported without a name."""
    other = import_image(lfs, [special_layer()], "dock:3")
    ref, info, _ = _source(lfs, "docker-archive", busybox)
    proc = lfs.run("export", ref, "--layer", "1", "-o", str(lfs.workdir / "l1.tar"))
    short = info.config_digest.removeprefix("sha256:")[:12]
    assert proc.stderr.splitlines() == [f"layerfs: importing {ref} into the store without a "
                                        f"name (dock:3 names another image), as image {short} "
                                        f"(`layerfs tag {short} NAME` names it)"]
    images = {i["id"]: i["names"] for i in json.loads(lfs.run("images", "--json").stdout)}
    assert images == {other.config_digest: ["dock:3"], info.config_digest: []}


@pytest.mark.parametrize("transport", ["dir", "tar"])
def test_dir_and_tar_sources_are_refused(lfs: Layerfs, transport: str) -> None:
    tree = lfs.mkdir("rootfs")
    (tree / "hello").write_text("hi\n")
    tarball = lfs.workdir / "rootfs.tar"
    tarball.write_bytes(make_layer([file("hello", b"hi\n")]))
    lfs.give(tarball)
    ref = f"dir:{tree}" if transport == "dir" else f"tar:{tarball}"
    out = lfs.workdir / "out.tar"
    one_line_error(lfs.run("export", ref, "-o", str(out), check=False), 1, "layerfs import")
    mountpoint = lfs.mkdir("mnt-refused")
    one_line_error(lfs.run("mount", ref, str(mountpoint), check=False), 1, "layerfs import")
    assert not out.exists() and image_count(lfs) == 0


def test_unknown_transport_path_fails_in_one_line(lfs: Layerfs) -> None:
    missing = lfs.workdir / "no-such-layout"
    one_line_error(lfs.run("export", f"oci:{missing}", "-o", str(lfs.workdir / "x"), check=False),
                   3, str(missing))


# ---------------------------------------------------------------------------------------
# export


def test_export_layer_is_the_layer_tar(lfs: Layerfs, busybox: list[bytes]) -> None:
    """Each layer (gzip, plain, zstd in the store) comes out uncompressed: its diff_id."""
    info = import_image(lfs, busybox, "bb:latest")
    for number, diff_id in enumerate(info.diff_ids, 1):
        out = lfs.workdir / f"layer{number}.tar"
        lfs.run("export", "bb", "--layer", str(number), "-o", str(out))
        assert sha256_file(out) == diff_id
        assert "sha256:" + hashlib.sha256(export_bytes(lfs, "bb", "--layer", str(number))).hexdigest() \
            == diff_id
    out = lfs.workdir / "layer2.tar"
    lfs.run("export", "bb@3", "--layer", "2", "-o", str(out))  # replaces the file
    assert sha256_file(out) == info.diff_ids[1]


def test_flattened_export_reimports_as_the_same_tree(lfs: Layerfs, busybox: list[bytes]) -> None:
    """Every path, owner, mode, time, xattr, device and hard link survives export and a
    `layerfs import tar:` of the result, for the whole image and for REF@N."""
    layers = [*busybox, special_layer()]
    import_image(lfs, layers, "full:latest")
    flat = lfs.workdir / "flat.tar"
    lfs.run("export", "full", "-o", str(flat))
    assert export_bytes(lfs, "full") == flat.read_bytes()  # to a pipe: the same bytes
    lfs.run("import", f"tar:{flat}", "flat:1", "-q")
    with mounted(lfs, "full") as original, mounted(lfs, "flat:1") as again:
        expected = snapshot_as(lfs, original)
        assert_same_tree(expected, snapshot_as(lfs, again), ("image", "exported and imported"))
    assert_same_tree(apply_layers(layers), expected, ("oracle", "layerfs"))
    assert expected["/aa/link"].nlink == 3 and expected["/dev/loop0"].rdev == (7, 0)

    lfs.run("export", "full@2", "-o", str(flat))
    lfs.run("import", f"tar:{flat}", "flat:2", "-q")
    with mounted(lfs, "flat:2") as again:
        assert_same_tree(apply_layers(layers[:2]), snapshot_as(lfs, again), ("oracle", "layerfs"))


def test_export_to_a_directory_or_missing_directory_fails(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:latest")
    target = lfs.mkdir("a-directory")
    one_line_error(lfs.run("export", "bb", "-o", str(target), check=False), 1, "is a directory")
    assert os.listdir(target) == []
    missing = lfs.workdir / "no-such-dir" / "out.tar"
    one_line_error(lfs.run("export", "bb", "-o", str(missing), check=False), 3, "does not exist")
    assert not missing.parent.exists()


def test_export_to_an_unwritable_place_fails_leaving_nothing(lfs: Layerfs, busybox: list[bytes]) -> None:
    """The test user: a directory root owns. Root: a read-only filesystem."""
    import_image(lfs, busybox, "bb:latest")
    place = lfs.workdir / "closed"
    place.mkdir(mode=0o755)  # root's
    if not lfs.rootless:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(place)], check=True)
    try:
        why = "permission denied" if lfs.rootless else "read-only file system"
        one_line_error(lfs.run("export", "bb", "-o", str(place / "out.tar"), check=False), 1,
                       "cannot write", why)
        assert os.listdir(place) == []
    finally:
        if not lfs.rootless:
            subprocess.run(["umount", str(place)], check=True)


def test_failed_export_leaves_no_file_and_keeps_the_old_one(lfs: Layerfs, busybox: list[bytes]) -> None:
    """A layer whose stored blob went bad fails the export after writing all of it: the
    temporary file goes, and a file already at FILE stays as it was."""
    info = import_image(lfs, busybox, "bb:latest")
    blob = lfs.root / "blobs" / "sha256" / info.layer_digests[1].split(":")[1]  # the plain tar
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside table.bin: still a tar, no longer the layer
    blob.write_bytes(bytes(data))
    out_dir = lfs.mkdir("out")
    out = out_dir / "layer.tar"
    one_line_error(lfs.run("export", "bb", "--layer", "2", "-o", str(out), check=False), 1,
                   "does not match its digest")
    assert os.listdir(out_dir) == []
    out.write_bytes(b"the old export\n")
    lfs.give(out)
    lfs.run("export", "bb", "--layer", "2", "-o", str(out), check=False)
    assert out.read_bytes() == b"the old export\n" and os.listdir(out_dir) == ["layer.tar"]


@pytest.mark.parametrize("output", [[], ["-o", "-"]])
def test_export_refuses_to_write_a_tar_to_a_terminal(lfs: Layerfs, busybox: list[bytes],
                                                     output: list[str]) -> None:
    import_image(lfs, busybox, "bb:latest")
    proc, shown = run_with_terminal_stdout(lfs, "export", "bb", *output)
    one_line_error(proc, 1, "terminal")
    assert shown == b""


def test_export_help_explains_its_options(lfs_root: Layerfs) -> None:
    text = lfs_root.run("export", "--help").stdout
    for option in ("--layer", "-o", "--output", "REF@N", "oci-archive:"):
        assert option in text
    text = lfs_root.run("mount", "--help").stdout
    for words in ("--layer", "REF@N", ".wh..wh..opq", ".wh.NAME"):
        assert words in text


# ---------------------------------------------------------------------------------------
# Browsing history with mount


def test_mount_ref_at_n_shows_the_older_tree(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:latest")
    for number in (1, 2, 3):
        with mounted(lfs, f"bb@{number}") as mp:
            assert_same_tree(apply_layers(busybox[:number]), snapshot_as(lfs, mp),
                             ("oracle", "layerfs"))
            assert mount_label(lfs, mp) == f"bb@{number}"
    with mounted(lfs, "bb@1") as mp:
        assert lfs.sh(["touch", str(mp / "new")], check=False).returncode != 0  # read-only


def _marker_free(tree: dict[str, Node], markers: list[str]) -> dict[str, Node]:
    """`tree` without `markers`, which must be empty regular files."""
    rest = dict(tree)
    for path in markers:
        node = rest.pop(path, None)
        assert node is not None, f"{path} is not shown"
        assert (node.type, node.size, node.sha256, node.nlink) == ("file", 0, EMPTY_SHA256, 1), node
    return rest


def test_mount_layer_shows_what_the_layer_holds(lfs: Layerfs, busybox: list[bytes]) -> None:
    """Layer 2 deletes /bin/false and makes /home/user opaque; layer 3 deletes two files.
    Each is shown alone, its whiteouts as the files its tar holds."""
    import_image(lfs, busybox, "bb:latest")
    markers = {2: ["/bin/.wh.false", "/home/user/.wh..wh..opq"],
               3: ["/var/log/.wh.app.log", "/usr/bin/.wh.sgid-hello"]}
    for number, paths in markers.items():
        with mounted(lfs, "--layer", str(number), "bb") as mp:
            shown = snapshot_as(lfs, mp)
            assert mount_label(lfs, mp) == f"bb layer {number}"
            assert lfs.sh(["touch", str(mp / "new")], check=False).returncode != 0  # read-only
        # What is left is the layer as if unpacked on nothing (its whiteouts hide nothing).
        assert_same_tree(apply_layers([busybox[number - 1]]), _marker_free(shown, paths),
                         ("the layer alone", "layerfs --layer"))
        assert "/bin/busybox" not in shown
    with mounted(lfs, "--layer", "1", "bb") as mp:
        assert_same_tree(apply_layers(busybox[:1]), snapshot_as(lfs, mp), ("oracle", "layerfs"))


def test_mount_layer_shows_an_opaque_root_and_deleted_directories(lfs: Layerfs) -> None:
    base = make_layer([directory("etc"), file("etc/a", b"a\n"), directory("var"),
                       directory("var/cache"), file("var/cache/x", b"x\n")])
    top = make_layer([opaque(""), whiteout("var/cache"), directory("etc"), file("etc/b", b"b\n")])
    import_image(lfs, [base, top], "op:latest")
    with mounted(lfs, "--layer", "2", "op@2") as mp:
        shown = snapshot_as(lfs, mp)
    assert_same_tree(apply_layers([top]), _marker_free(shown, ["/.wh..wh..opq", "/var/.wh.cache"]),
                     ("the layer alone", "layerfs --layer"))
    with mounted(lfs, "op") as mp:  # and the image itself: the opaque root hid all of the base
        image = snapshot_as(lfs, mp)
    assert "/etc/a" not in image and "/etc/b" in image
    assert_same_tree(apply_layers([base, top]), image, ("oracle", "layerfs"))


def test_mount_layer_of_a_container_is_refused(lfs: Layerfs, busybox: list[bytes]) -> None:
    import_image(lfs, busybox, "bb:latest")
    lfs.run("create", "--name", "web", "bb")
    mountpoint = lfs.mkdir("mnt-web")
    one_line_error(lfs.run("mount", "--layer", "1", "web", str(mountpoint), check=False), 1,
                   "is a container")
    assert str(mountpoint) not in fuse_mounts_under(lfs.workdir)
