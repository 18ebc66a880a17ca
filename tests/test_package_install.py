"""A real package install inside a container: dpkg, a maintainer script that adds a
system user and hands it a directory, that user writing there, then commit and run
the new image, owners as they were set inside. Root and rootless (where every id the
script picks must map to a subordinate id, and chown goes through the runtime mount)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from conftest import Layerfs
from support.debian import build_deb, debian_layer
from support.oci import write_oci_layout

POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
    useradd --system --no-create-home --home-dir /var/lib/svcdemo --shell /usr/sbin/nologin svcdemo
    mkdir -p /var/lib/svcdemo
    chown svcdemo:svcdemo /var/lib/svcdemo
    chmod 0750 /var/lib/svcdemo
fi
"""


@pytest.fixture(scope="module")
def layer() -> bytes:
    return debian_layer()


@pytest.fixture
def debian(lfs: Layerfs, layer: bytes) -> Iterator[Layerfs]:
    source = lfs.workdir / f"src-{uuid.uuid4().hex[:8]}"
    write_oci_layout(source, [layer], config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                              "Cmd": ["/bin/sh"]})
    lfs.give(source)
    lfs.run("import", f"oci:{source}", "debian:mini", "-q")
    yield lfs
    for container in json.loads(lfs.run("ps", "-a", "--json").stdout):
        lfs.run("rm", "-f", container["id"], check=False)


def test_dpkg_install_adds_a_user_that_owns_its_directory(debian: Layerfs) -> None:
    packages = debian.mkdir("packages")
    build_deb(packages, "svcdemo", POSTINST, {"/usr/share/svcdemo/README": b"installed by dpkg\n"})
    debian.give(packages)
    debian.run("run", "-d", "--name", "box", "-v", f"{packages}:/packages:ro", "debian:mini", "sleep", "600")
    installed = debian.run("exec", "box", "dpkg", "-i", "/packages/svcdemo.deb", check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert debian.run("exec", "box", "dpkg-query", "-W", "-f=${Status}", "svcdemo").stdout == "install ok installed"
    uid = debian.run("exec", "box", "id", "-u", "svcdemo").stdout.strip()
    assert 100 <= int(uid) < 1000, "a system user"
    debian.run("exec", "-u", "svcdemo", "box", "sh", "-c", "echo written > /var/lib/svcdemo/data")
    denied = debian.run("exec", "-u", "nobody", "box", "sh", "-c", "ls /var/lib/svcdemo", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    debian.run("stop", "-t", "1", "box")
    changes = debian.run("diff", "box").stdout.split()
    assert {"/var/lib/svcdemo", "/var/lib/svcdemo/data", "/usr/share/svcdemo/README"} <= set(changes)
    debian.run("commit", "box", "debian:svcdemo")
    owners = debian.run("run", "--rm", "debian:svcdemo", "stat", "-c", "%U:%G %a %n",
                        "/var/lib/svcdemo", "/var/lib/svcdemo/data", "/usr/share/svcdemo/README").stdout
    assert owners.splitlines() == ["svcdemo:svcdemo 750 /var/lib/svcdemo", "svcdemo:svcdemo 644 /var/lib/svcdemo/data",
                                   "root:root 644 /usr/share/svcdemo/README"]
    again = debian.run("run", "--rm", "-u", "svcdemo", "debian:svcdemo", "cat", "/var/lib/svcdemo/data").stdout
    assert again == "written\n"
