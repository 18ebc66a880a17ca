"""`run` and `create` pull what the store lacks, as docker and podman do (--pull)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import Layerfs
from support.oci import busybox_image_layers, write_oci_layout
from support.registry import Registry, push_oci_with_skopeo


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def busybox_ref(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    layout = tmp_path_factory.mktemp("bb") / "layout"
    write_oci_layout(layout, busybox_image_layers())
    ref = f"{registry.host}/tools/busybox:1"
    push_oci_with_skopeo(layout, ref)
    return ref


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("layerfs: error:") and "Traceback" not in stderr, stderr
    return lines[0]


def test_run_pulls_a_missing_image(lfs: Layerfs, busybox_ref: str) -> None:
    out = lfs.run("run", "--rm", "--tls-verify=false", busybox_ref, "cat", "/etc/motd")
    assert out.stdout == "welcome\n"
    assert [i for i in lfs.run("images", "-q").stdout.split()]  # it stays in the store
    again = lfs.run("run", "--rm", "--pull", "never", busybox_ref, "cat", "/etc/motd")
    assert again.stdout == "welcome\n"


def test_pull_never_and_failed_pulls_say_why(lfs: Layerfs, busybox_ref: str, registry: Registry) -> None:
    never = lfs.run("run", "--rm", "--pull", "never", busybox_ref, "true", check=False)
    assert never.returncode == 125 and "no image" in _one_error_line(never.stderr)
    missing = lfs.run("create", "--tls-verify=false", f"{registry.host}/tools/none:1", check=False)
    assert missing.returncode == 125
    line = _one_error_line(missing.stderr)
    assert "no image" in line and "pulling it failed too" in line and "not found" in line, line


def test_create_pull_always_follows_the_tag(lfs: Layerfs, busybox_ref: str) -> None:
    lfs.run("pull", "-q", "--tls-verify=false", busybox_ref)
    lfs.run("tag", busybox_ref, "local:copy")
    created = lfs.run("create", "--pull", "always", "--tls-verify=false", busybox_ref)
    assert len(created.stdout.strip()) == 64
    inspected = lfs.run("inspect", created.stdout.strip()).stdout
    assert busybox_ref in inspected
