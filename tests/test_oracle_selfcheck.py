"""The test support checks itself, with no layerfs involved.

The mount tests trust two things: the oracle's idea of a merged tree, and the images
the `oci` helpers write. Here the oracle is compared with three independent
implementations (kernel overlayfs, fuse-overlayfs, umoci's extractor) over every case,
a few rules are pinned by hand, and skopeo/umoci confirm the written images are valid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cases import CASES, KERNEL_DIVERGENCES, many_layers
from tests.support.kernel_overlay import overlay_tree
from tests.support.oci import (SECRET, busybox_image_layers, busybox_rootfs, compress, decompress,
                               directory, file, hardlink, make_layer, opaque, read_oci_layers,
                               read_oci_manifest, whiteout, write_docker_archive,
                               write_oci_archive, write_oci_layout)
from tests.support.oracle import apply_layers
from tests.support.snapshot import assert_same_tree, load_snapshot_json, snapshot, snapshot_command

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts, mknod)")


def _needs(program: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(program) is None, reason=f"{program} not installed")


def _without_nlink(tree: dict) -> dict:
    return {path: type(node)(**{**vars(node), "nlink": None}) for path, node in tree.items()}


# ---------------------------------------------------------------------------
# The oracle against independent implementations


@needs_root
@pytest.mark.parametrize("case", sorted(CASES) + ["many_layers"])
def test_oracle_matches_kernel_overlayfs(case: str, tmp_path: Path) -> None:
    layers = many_layers() if case == "many_layers" else CASES[case]
    expected, kernel = apply_layers(layers), overlay_tree(layers, tmp_path)
    if case in KERNEL_DIVERGENCES:
        # the divergence must be exactly the documented one, and must still exist
        assert_same_tree(_without_nlink(expected), _without_nlink(kernel), ("oracle", "kernel"))
        assert expected != kernel, f"kernel overlayfs no longer diverges: {KERNEL_DIVERGENCES[case]}"
    else:
        assert_same_tree(expected, kernel, ("oracle", "kernel"))


@needs_root
@_needs("fuse-overlayfs")
@pytest.mark.parametrize("case", sorted(CASES))
def test_oracle_matches_fuse_overlayfs(case: str, tmp_path: Path) -> None:
    layers = CASES[case]
    assert_same_tree(apply_layers(layers), overlay_tree(layers, tmp_path, "fuse-overlayfs"),
                     ("oracle", "fuse-overlayfs"))


@needs_root
@_needs("umoci")
@pytest.mark.parametrize("case", sorted(CASES))
def test_oracle_matches_umoci_unpack(case: str, tmp_path: Path) -> None:
    layers = [compress(decompress(layer), "gzip") for layer in CASES[case]]  # umoci 0.4: no zstd
    write_oci_layout(tmp_path / "layout", layers)
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path}/layout:latest",
                    str(tmp_path / "bundle")], check=True, capture_output=True)
    assert_same_tree(apply_layers(layers), snapshot(tmp_path / "bundle" / "rootfs"),
                     ("oracle", "umoci"))


# ---------------------------------------------------------------------------
# Rules pinned by hand, so the oracle is not only "whatever the kernel does"


def test_whiteout_hides_lower_only_and_opaque_applies_first() -> None:
    tree = apply_layers([
        make_layer([directory("d"), file("d/old"), file("gone"), file("sub-x")]),
        make_layer([directory("d"), file("d/new"), opaque("d"),  # marker after the entry
                    file("gone", b"same layer"), whiteout("gone")]),  # entry survives
    ])
    assert set(tree) == {"/", "/d", "/d/new", "/gone", "/sub-x"}
    assert tree["/gone"].size == len(b"same layer")


def test_dir_over_dir_takes_new_attributes_and_keeps_children() -> None:
    tree = apply_layers([
        make_layer([directory("d", mode=0o755, xattrs={"user.a": b"1"}), file("d/x")]),
        make_layer([directory("d", mode=0o700, uid=5, gid=6)]),
    ])
    assert (tree["/d"].mode, tree["/d"].uid, tree["/d"].gid, tree["/d"].xattrs) == (0o700, 5, 6, {})
    assert "/d/x" in tree


def test_replacing_a_directory_drops_its_subtree() -> None:
    tree = apply_layers([
        make_layer([directory("d"), file("d/x")]),
        make_layer([file("d", b"file now")]),
        make_layer([directory("d")]),
    ])
    assert set(tree) == {"/", "/d"} and tree["/d"].type == "dir"


def test_hardlinks_count_visible_names() -> None:
    tree = apply_layers([
        make_layer([file("a", b"x"), hardlink("b", "a"), hardlink("c", "a")]),
        make_layer([whiteout("c")]),
    ])
    assert [(tree[p].nlink, tree[p].link_group) for p in ("/a", "/b")] == [(2, "/a"), (2, "/a")]


def test_malformed_layers_are_rejected() -> None:
    with pytest.raises(ValueError):
        apply_layers([make_layer([file("../escape")])])
    with pytest.raises(ValueError):
        apply_layers([make_layer([hardlink("b", "missing")])])


# ---------------------------------------------------------------------------
# The image writers produce what real tools accept


@_needs("skopeo")
def test_written_images_are_valid_for_skopeo(tmp_path: Path) -> None:
    layers = busybox_image_layers()
    layout = write_oci_layout(tmp_path / "layout", layers, tag="name:tag")
    archive = write_oci_archive(tmp_path / "oci.tar", layers)
    docker_old = write_docker_archive(tmp_path / "old.tar", layers)
    docker_new = write_docker_archive(tmp_path / "new.tar", layers, new_layout=True)
    for ref, info in [(f"oci:{tmp_path}/layout:name:tag", layout),
                      (f"oci-archive:{tmp_path}/oci.tar:latest", archive),
                      (f"docker-archive:{tmp_path}/old.tar", docker_old),
                      (f"docker-archive:{tmp_path}/new.tar", docker_new)]:
        out = subprocess.run(["skopeo", "inspect", "--config", ref], check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out)["rootfs"]["diff_ids"] == info.diff_ids, ref


@_needs("skopeo")
def test_skopeo_zstd_copy_keeps_the_tree(tmp_path: Path) -> None:
    layers = busybox_image_layers(("none", "none", "none"))
    write_oci_layout(tmp_path / "plain", layers)
    subprocess.run(["skopeo", "copy", "--dest-compress-format", "zstd",
                    f"oci:{tmp_path}/plain:latest", f"oci:{tmp_path}/zstd:latest"],
                   check=True, capture_output=True)
    media_types = {d["mediaType"] for d in read_oci_manifest(tmp_path / "zstd")["layers"]}
    assert media_types == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert_same_tree(apply_layers(layers), apply_layers(read_oci_layers(tmp_path / "zstd")))


def test_layout_tags_replace_and_accumulate(tmp_path: Path) -> None:
    first = write_oci_layout(tmp_path, [make_layer([file("a")])], tag="v1")
    second = write_oci_layout(tmp_path, [make_layer([file("b")])], tag="v1")
    write_oci_layout(tmp_path, [make_layer([file("c")])], tag="other:v2")
    index = json.loads((tmp_path / "index.json").read_text())
    tags = {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"]
            for d in index["manifests"]}
    assert tags.keys() == {"v1", "other:v2"} and tags["v1"] == second.manifest_digest
    assert first.manifest_digest not in tags.values()


@needs_root
def test_busybox_rootfs_has_the_awkward_bits(tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path / "rootfs")
    assert os.readlink(root / "bin/sh") == "busybox"
    assert (root / "usr/bin/suid-hello").stat().st_mode & 0o7777 == 0o4755
    assert (root / "root").stat().st_mode & 0o7777 == 0o700
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "etc/secret").read_bytes() == SECRET
    assert subprocess.run([str(root / "bin/sh"), "-c", "echo ok"], capture_output=True,
                          text=True).stdout == "ok\n"


def test_snapshot_command_round_trips(tmp_path: Path) -> None:
    """The JSON path (used to walk a mount as another user) loses nothing, odd names included."""
    (tmp_path / os.fsdecode(b"caf\xe9")).write_bytes(b"x")
    (tmp_path / "new\nline").write_bytes(b"y")
    os.link(tmp_path / "new\nline", tmp_path / "link")
    os.setxattr(tmp_path / "link", "user.bin", b"\x00\xff")
    out = subprocess.run(snapshot_command(tmp_path), check=True, capture_output=True).stdout
    assert load_snapshot_json(out) == snapshot(tmp_path)
