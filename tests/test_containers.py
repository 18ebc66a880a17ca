"""Containers and volumes through the CLI, as root and rootless.

What is tested here is the bookkeeping a user relies on before any container runs:
a container pins its image (rmi refuses, or with --force leaves the image unnamed),
names are unique, ids resolve by prefix, and volumes live on after every container.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import Layerfs
from support.oci import directory, file, make_layer, write_oci_layout

IMAGE = "base:1"


def assert_one_error(proc, code: int) -> None:  # noqa: ANN001 - CompletedProcess[str]
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerfs: error: "), proc.stderr


@pytest.fixture
def seeded(lfs: Layerfs) -> Layerfs:
    """`lfs` with a small image imported as base:1."""
    src = lfs.workdir / "src"
    write_oci_layout(src, [make_layer([directory("etc"), file("etc/hello", b"hi\n")], "gzip")])
    lfs.give(src)
    lfs.run("import", f"oci:{src}", IMAGE, "-q")
    return lfs


def containers(lfs: Layerfs) -> list[dict]:
    return json.loads(lfs.run("ps", "-a", "--json").stdout)


def image_entries(lfs: Layerfs) -> list[dict]:
    return json.loads(lfs.run("images", "--json").stdout)


def test_create_list_remove(seeded: Layerfs) -> None:
    cid = seeded.run("create", "--name", "web", IMAGE).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    other = seeded.run("create", IMAGE).stdout.strip()
    listed = containers(seeded)
    assert [c["id"] for c in listed] == [other, cid], "newest first"
    web = next(c for c in listed if c["id"] == cid)
    image = image_entries(seeded)[0]
    assert (web["name"], web["image"], web["image_ref"], web["status"], web["size"]) == \
        ("web", image["id"], IMAGE, "created", 0)
    assert next(c for c in listed if c["id"] == other)["name"] == f"base-{other[:6]}"
    assert seeded.run("ps", "--json").stdout.strip() == "[]", "nothing is mounted or running"
    assert cid[:12] in seeded.run("ps", "-a").stdout
    assert seeded.run("ps", "-a", "-q").stdout.split() == [c["id"][:12] for c in listed]

    assert seeded.run("rm", "web").stdout.strip() == "web"
    assert seeded.run("rm", other[:8]).stdout.strip() == f"base-{other[:6]}"
    assert containers(seeded) == []
    assert not any((seeded.root / "containers").iterdir())


def test_create_refuses_bad_names_and_unknown_images(seeded: Layerfs) -> None:
    seeded.run("create", "--name", "db", IMAGE)
    before = seeded.store_snapshot()
    # create fails as docker's does: 125 for whatever is not the container's own
    assert_one_error(seeded.run("create", "--name", "db", IMAGE, check=False), 125)
    assert_one_error(seeded.run("create", "--name", "bad name", IMAGE, check=False), 125)
    assert_one_error(seeded.run("create", "nosuch:image", check=False), 125)
    assert seeded.store_snapshot() == before
    assert len(containers(seeded)) == 1


def test_rm_unknown_or_ambiguous(seeded: Layerfs) -> None:
    assert_one_error(seeded.run("rm", "nosuch", check=False), 3)
    ids = [seeded.run("create", IMAGE).stdout.strip() for _ in range(20)]
    shared = next((a[0] for a in ids if sum(b[0] == a[0] for b in ids) > 1), None)
    if shared is not None:  # 20 random ids share a first digit almost surely
        assert_one_error(seeded.run("rm", shared, check=False), 1)
    assert len(containers(seeded)) == 20


def test_rmi_keeps_an_image_a_container_uses(seeded: Layerfs) -> None:
    seeded.run("create", "--name", "app", IMAGE)
    image = image_entries(seeded)[0]
    before = seeded.store_snapshot()
    assert_one_error(seeded.run("rmi", IMAGE, check=False), 4)
    assert seeded.store_snapshot() == before

    # --force removes only the names; the container keeps its image, blobs and layers.
    out = seeded.run("rmi", "--force", IMAGE).stdout
    assert f"Untagged: {IMAGE}" in out and "Deleted" not in out
    remaining = image_entries(seeded)
    assert [(i["id"], i["names"]) for i in remaining] == [(image["id"], [])]
    assert seeded.store_snapshot().keys() >= {k for k in before if k.startswith(("blobs", "layers"))}
    assert "<none>" in seeded.run("images").stdout

    # Once the container is gone, the image can go, and its space is reclaimed.
    seeded.run("rm", "app")
    seeded.run("rmi", image["id"][7:19])
    assert image_entries(seeded) == []
    assert not any((seeded.root / "blobs" / "sha256").iterdir())
    assert not any((seeded.root / "layers").iterdir())


def test_volumes(seeded: Layerfs) -> None:
    assert seeded.run("volume", "create", "data", "--label", "team=db").stdout.strip() == "data"
    anonymous = seeded.run("volume", "create").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", anonymous)
    assert sorted(seeded.run("volume", "ls", "-q").stdout.split()) == sorted(["data", anonymous])
    listed = {v["name"]: v for v in json.loads(seeded.run("volume", "ls", "--json").stdout)}
    assert listed["data"]["labels"] == {"team": "db"} and listed["data"]["driver"] == "local"
    [inspected] = json.loads(seeded.run("volume", "inspect", "data").stdout)
    assert inspected == listed["data"]
    data_dir = Path(inspected["mountpoint"])
    assert data_dir.is_dir() and data_dir.stat().st_uid == seeded.root.stat().st_uid

    assert_one_error(seeded.run("volume", "create", "data", check=False), 1)
    assert_one_error(seeded.run("volume", "inspect", "nosuch", check=False), 3)
    assert_one_error(seeded.run("volume", "rm", "nosuch", check=False), 3)
    assert_one_error(seeded.run("volume", "create", "bad/name", check=False), 1)

    seeded.run("volume", "rm", anonymous)
    assert seeded.run("volume", "ls", "-q").stdout.split() == ["data"]


def test_volume_outlives_containers(seeded: Layerfs) -> None:
    """Removing every container leaves volumes and their data alone."""
    seeded.run("volume", "create", "keep")
    [volume] = json.loads(seeded.run("volume", "inspect", "keep").stdout)
    seeded.sh(["sh", "-c", f"echo precious > {volume['mountpoint']}/file"])
    for name in ("one", "two"):
        seeded.run("create", "--name", name, IMAGE)
    seeded.run("rm", "one", "two")
    assert Path(volume["mountpoint"], "file").read_text() == "precious\n"
    assert seeded.run("volume", "ls", "-q").stdout.split() == ["keep"]
