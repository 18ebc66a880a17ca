"""Mounting images: what a layerfs mount shows must be exactly the merged image tree.

Every test runs through the real CLI (as README.md and `layerfs --help` describe it)
as root and as an unprivileged user (the `lfs` fixture). The tree seen through the
mount, walked as the identity that mounted it, must equal the oracle's tree for the
same layer bytes; as root it must also equal kernel overlayfs over those layers.
Images also come from umoci and skopeo, and the store must stay readable by both.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.cases import CASES, KERNEL_DIVERGENCES, many_layers
from tests.support.kernel_overlay import overlay_tree
from tests.support.oci import (SECRET, busybox_image_layers, busybox_rootfs, read_oci_layers,
                               read_oci_manifest, write_oci_layout)
from tests.support.oracle import apply_layers
from tests.support.snapshot import assert_same_tree, snapshot, snapshot_as

if TYPE_CHECKING:
    from conftest import Layerfs


def unique(lfs: Layerfs, prefix: str) -> Path:
    """A new path in the identity's scratch area (tests make several per identity)."""
    return lfs.workdir / f"{prefix}-{uuid.uuid4().hex[:8]}"


def scratch(lfs: Layerfs, prefix: str) -> Path:
    """A fresh directory owned by the identity."""
    return lfs.mkdir(unique(lfs, prefix).name)


def import_layers(lfs: Layerfs, layers: list[bytes], name: str = "case:latest") -> None:
    """Write `layers` as an OCI layout the identity owns and import it as `name`."""
    source = scratch(lfs, "src")
    write_oci_layout(source, layers)
    lfs.give(source)
    lfs.run("import", f"oci:{source}:latest", name)


def import_layout(lfs: Layerfs, layout: Path, ref: str, name: str) -> None:
    """Import an OCI layout some tool wrote as root, after handing it to the identity."""
    lfs.give(layout)
    lfs.run("import", f"oci:{layout}:{ref}", name)


def mounted_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4].encode().decode("unicode_escape") for line in f}


def assert_mount_shows(lfs: Layerfs, ref: str, layers: list[bytes]) -> None:
    with lfs.mounted(ref) as mountpoint:
        actual = snapshot_as(lfs, mountpoint)
    assert_same_tree(apply_layers(layers), actual, ("oracle", "layerfs"))


# ---------------------------------------------------------------------------
# The merged tree


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_mounts_as_oracle_says(lfs: Layerfs, case: str, tmp_path: Path) -> None:
    layers = CASES[case]
    import_layers(lfs, layers)
    with lfs.mounted("case") as mountpoint:
        actual = snapshot_as(lfs, mountpoint)
    assert_same_tree(apply_layers(layers), actual, ("oracle", "layerfs"))
    if not lfs.rootless and case not in KERNEL_DIVERGENCES:
        assert_same_tree(overlay_tree(layers, tmp_path), actual, ("kernel overlayfs", "layerfs"))


def test_busybox_image_mounts_as_oracle_says(lfs: Layerfs, tmp_path: Path) -> None:
    layers = busybox_image_layers()
    import_layers(lfs, layers, "busybox:latest")
    with lfs.mounted("busybox") as mountpoint:
        actual = snapshot_as(lfs, mountpoint)
    assert_same_tree(apply_layers(layers), actual, ("oracle", "layerfs"))
    if not lfs.rootless:
        assert_same_tree(overlay_tree(layers, tmp_path), actual, ("kernel overlayfs", "layerfs"))


def test_hundred_layer_image(lfs: Layerfs) -> None:
    layers = many_layers(100)
    import_layers(lfs, layers, "tall:latest")
    assert_mount_shows(lfs, "tall", layers)


# ---------------------------------------------------------------------------
# What ordinary tools show, rootless included


def test_tools_see_image_owners_modes_and_content(lfs: Layerfs) -> None:
    """Root-owned, setuid and 0600 files show as in the image, and the user who mounted
    the image can read everything in it (it is their image)."""
    import_layers(lfs, busybox_image_layers(), "busybox:latest")
    with lfs.mounted("busybox") as mp:
        listing = lfs.sh(["ls", "-ln", str(mp / "usr/bin/suid-hello")]).stdout.decode().split()
        assert listing[0] == "-rwsr-xr-x" and listing[2:4] == ["0", "0"]
        stat_out = lfs.sh(["stat", "-c", "%u %g %a", str(mp / "root"), str(mp / "tmp"),
                           str(mp / "etc/secret")]).stdout.decode().splitlines()
        assert stat_out == ["0 0 700", "0 0 1777", "0 0 600"]
        assert lfs.sh(["cat", str(mp / "etc/secret")]).stdout == SECRET
        lfs.sh(["ls", str(mp / "root")])  # a 0700 root directory, listed by its mounter
        readlink = lfs.sh(["readlink", str(mp / "bin/sh")]).stdout.decode().strip()
        assert readlink == "busybox"


def test_getfattr_shows_xattrs(lfs: Layerfs) -> None:
    import_layers(lfs, CASES["xattrs"])
    with lfs.mounted("case") as mp:
        out = lfs.sh(["getfattr", "-d", "-e", "hex", str(mp / "binary"), str(mp / "d")])
    text = out.stdout.decode()
    assert "user.bin=0x00ff010a807a65726f" in text
    assert "user.dir=0x" + b"on a directory".hex() in text


def test_devices_show_their_numbers(lfs: Layerfs) -> None:
    import_layers(lfs, CASES["devices"])
    with lfs.mounted("case") as mp:
        out = lfs.sh(["stat", "-c", "%F %t:%T", str(mp / "dev/null"), str(mp / "dev/sda"),
                      str(mp / "dev/nvme0n1"), str(mp / "dev/fifo")]).stdout.decode()
    assert out.splitlines() == ["character special file 1:3", "block special file 8:0",
                                "block special file 103:11170", "fifo 0:0"]


# ---------------------------------------------------------------------------
# Mount bookkeeping


def test_mounts_lists_mount_and_umount_removes_it(lfs: Layerfs) -> None:
    import_layers(lfs, CASES["basic"])
    mountpoint = scratch(lfs, "mnt")
    lfs.run("mount", "case", str(mountpoint))
    try:
        assert str(mountpoint) in mounted_points()
        entries = json.loads(lfs.run("mounts", "--json").stdout)
        mine = [e for e in entries if e["mountpoint"] == str(mountpoint)]
        assert len(mine) == 1, entries
        assert {"mountpoint", "image", "id", "pid"} <= mine[0].keys()
        assert isinstance(mine[0]["pid"], int)
    finally:
        umount = lfs.run("umount", str(mountpoint), check=False)
    assert umount.returncode == 0, umount.stderr
    assert str(mountpoint) not in mounted_points()
    remaining = json.loads(lfs.run("mounts", "--json").stdout)
    assert all(e["mountpoint"] != str(mountpoint) for e in remaining)
    assert list(mountpoint.iterdir()) == []


def test_mount_names_what_the_user_gave_and_refuses_a_full_directory(lfs: Layerfs) -> None:
    """`mount case DIR` says "case" (not the image's first name, "case:latest"); an id
    prefix is shown as the image's name. A directory with something in it is refused
    (exit 1, nothing mounted), as its files would be hidden."""
    import_layers(lfs, CASES["basic"])
    mountpoint = scratch(lfs, "mnt")
    done = lfs.run("mount", "case", str(mountpoint))
    assert done.stdout.startswith(f"Mounted case at {mountpoint} (read-only, browse")
    lfs.run("umount", str(mountpoint))
    image_id = json.loads(lfs.run("images", "--json").stdout)[0]["id"]
    lfs.run("mount", image_id[7:19], str(mountpoint))
    assert json.loads(lfs.run("mounts", "--json").stdout)[0]["image"] == "case:latest"
    lfs.run("umount", str(mountpoint))
    lfs.sh(["touch", str(mountpoint / "kept")])
    refused = lfs.run("mount", "case", str(mountpoint), check=False)
    assert refused.returncode == 1 and "not empty" in refused.stderr and refused.stderr.count("\n") == 1
    assert str(mountpoint) not in mounted_points()


# ---------------------------------------------------------------------------
# Interop: images other tools wrote, and other tools reading the store


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def test_umoci_built_image(lfs: Layerfs, tmp_path: Path) -> None:
    """Built with umoci as root: a busybox rootfs, then a layer that deletes, adds and
    recreates (umoci writes explicit whiteouts and gzip layers)."""
    layout, bundle = unique(lfs, "umoci-layout"), tmp_path / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:latest")
    umoci("unpack", "--image", f"{layout}:latest", str(bundle))
    rootfs = busybox_rootfs(bundle / "rootfs")
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:latest", str(bundle))
    (rootfs / "bin/false").unlink()
    (rootfs / "etc/motd").write_text("built by umoci\n")
    subprocess.run(["rm", "-r", str(rootfs / "home/user")], check=True)
    (rootfs / "home/user").mkdir()
    (rootfs / "root").chmod(0o750)
    umoci("repack", "--image", f"{layout}:latest", str(bundle))
    umoci("config", "--image", f"{layout}:latest", "--config.cmd", "/bin/sh")

    layers = read_oci_layers(layout, "latest")
    assert len(layers) == 2
    import_layout(lfs, layout, "latest", "umoci:latest")
    assert_mount_shows(lfs, "umoci", layers)


@pytest.mark.parametrize("destination", ["oci-zstd", "oci-gzip", "oci-archive", "docker-archive"])
def test_skopeo_written_image(lfs: Layerfs, destination: str, tmp_path: Path) -> None:
    """skopeo converts an image (recompressing, or to an archive); layerfs imports it."""
    layers = busybox_image_layers(("none", "none", "none"))
    write_oci_layout(tmp_path / "plain", layers)
    out = scratch(lfs, "skopeo")
    target, source = {
        "oci-zstd": (["--dest-compress-format", "zstd", f"oci:{out}/layout:latest"],
                     f"oci:{out}/layout:latest"),
        "oci-gzip": (["--dest-compress-format", "gzip", f"oci:{out}/layout:latest"],
                     f"oci:{out}/layout:latest"),
        "oci-archive": ([f"oci-archive:{out}/image.tar:latest"], f"oci-archive:{out}/image.tar"),
        "docker-archive": ([f"docker-archive:{out}/image.tar:skopeo/image:v1"],
                           f"docker-archive:{out}/image.tar"),
    }[destination]
    subprocess.run(["skopeo", "copy", f"oci:{tmp_path}/plain:latest", *target], check=True,
                   capture_output=True)
    if destination == "oci-zstd":
        media_types = {d["mediaType"] for d in read_oci_manifest(out / "layout")["layers"]}
        assert media_types == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    lfs.give(out)
    lfs.run("import", source, "converted:latest")
    assert_mount_shows(lfs, "converted", layers)


def test_store_is_readable_by_skopeo(lfs: Layerfs) -> None:
    layers = busybox_image_layers()
    import_layers(lfs, layers, "busybox:v1")
    inspect = json.loads(lfs.run("inspect", "busybox:v1", "--json").stdout)
    store_ref = f"oci:{lfs.root}:busybox:v1"
    seen = json.loads(lfs.sh(["skopeo", "inspect", store_ref]).stdout)
    assert seen["Digest"] == inspect["digest"]
    assert seen["Layers"] == [layer["digest"] for layer in inspect["layers"]]
    copy = unique(lfs, "copy")
    lfs.sh(["skopeo", "copy", store_ref, f"oci:{copy}:out"])
    assert_same_tree(apply_layers(layers), apply_layers(read_oci_layers(copy, "out")),
                     ("imported", "copied out by skopeo"))


def test_store_is_readable_by_umoci(lfs: Layerfs, tmp_path: Path) -> None:
    layers = busybox_image_layers(("gzip", "none", "gzip"))  # umoci 0.4 cannot read zstd
    import_layers(lfs, layers, "busybox:v1")
    history = json.loads(lfs.sh(["umoci", "stat", "--json", "--image",
                                 f"{lfs.root}:busybox:v1"]).stdout)["history"]
    assert len(history) == len(layers)
    umoci("unpack", "--image", f"{lfs.root}:busybox:v1", str(tmp_path / "bundle"))
    assert_same_tree(apply_layers(layers), snapshot(tmp_path / "bundle" / "rootfs"),
                     ("imported", "unpacked by umoci"))
