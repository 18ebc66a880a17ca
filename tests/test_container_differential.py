"""A container's writable mount against kernel overlayfs, with random operations.

The same list of operations (tests/support/fsops.py) runs on a layerfs container mount
and on kernel overlayfs over the same layers with an empty upper directory; see
tests/support/differential.py for everything that is then checked (answers, trees,
remount, diff, commit through layerfs and through skopeo + umoci).

The kernel runs with redirect_dir=on and index=on (kernel_overlay.RW_OPTIONS): then it
renames lower directories instead of answering EXDEV, and keeps lower hard links
linked across copy-up, which are both what layerfs does. So directory renames are part
of the random operations, and there is no divergence left to excuse: the last test
checks that this kernel answers every operation exactly as a plain directory holding
the merged image does, so what layerfs is held to is plain POSIX behaviour.

Root only: kernel overlayfs needs it, and so do the owners of the lower layers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.cases import CASES
from tests.support.differential import (EXAMPLES, IMAGE, Lowers, Stack, check_example, comparable,
                                        diff_problems, naive_diff, plain_copy)
from tests.support.fsops import format_results, run_ops
from tests.support.oci import (directory, file, hardlink, make_layer, opaque, symlink, whiteout,
                               write_oci_layout)
from tests.support.snapshot import assert_same_tree, snapshot

if TYPE_CHECKING:
    from conftest import Layerfs


def mixed_stack() -> list[bytes]:
    """Two layers with one of everything an operation can meet: plain, setuid, owned and
    xattr'd files, a hard-link pair, symlinks (relative only: the operations follow
    them), nested and owned directories, a whiteout, an opaque directory and a directory
    merged across both layers. No devices or fifos: opening them for writing would reach
    a host device or block."""
    base = make_layer([
        file("a", b"a lower\n", xattrs={"user.x": b"lower-a"}),
        file("b", b"b lower\n", mode=0o4755),
        file("h1", b"linked\n", mode=0o640, uid=1000, gid=1000), hardlink("h2", "h1"),
        symlink("s", "a"), symlink("sd", "dir1"), symlink("dangling", "nonexistent"),
        directory("dir1"), file("dir1/x", b"x v1\n"), directory("dir1/sub"),
        file("dir1/sub/z", b"z\n"),
        directory("dir2", mode=0o750, uid=1000, gid=1000, xattrs={"user.d": b"dir2"}),
        file("dir2/y", b"y\n", mode=0o600, uid=1000, gid=1000),
        directory("empty"),
        file("gone", b"deleted in the layer above\n"),
        directory("opq"), file("opq/old", b"hidden by the opaque marker above\n"),
    ])
    top = make_layer([
        directory("dir1"), file("dir1/x", b"x v2\n"), file("dir1/y", b"y from the top\n"),
        whiteout("gone"),
        directory("opq"), opaque("opq"), file("opq/new", b"new\n"),
        directory("dir3"), file("dir3/w", b"w\n", mtime=1650000000),
        file("c", b"c from the top layer\n", uid=65534, gid=65534),
    ], "gzip")
    return [base, top]


STACKS: dict[str, list[bytes]] = {
    "mixed": mixed_stack(),
    "whiteout_then_recreate": CASES["whiteout_then_recreate"],
    "hardlinks": CASES["hardlinks"],
}


@pytest.fixture(params=sorted(STACKS))
def lowers(request: pytest.FixtureRequest, tmp_path: Path) -> Lowers:
    """Function-scoped on purpose: hypothesis runs the test body many times with one
    fixture value, so each stack is extracted once per test."""
    return Lowers.extract(STACKS[request.param], tmp_path)


@pytest.fixture
def stack(lowers: Lowers, lfs_root: Layerfs) -> Stack:
    source = lowers.scratch / "src"
    write_oci_layout(source, lowers.layers)
    lfs_root.run("import", f"oci:{source}:latest", IMAGE, "-q")
    return Stack(lfs_root, lowers)


_SHARED_FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=_SHARED_FIXTURES)
@given(data=st.data())
def test_operations_match_kernel_overlayfs(stack: Stack, data: st.DataObject) -> None:
    """Random operations on a container: same answers and tree as kernel overlayfs, kept
    across remounts, reported by diff, and carried into a committed image."""
    check_example(stack, data.draw(stack.lowers.operations(), label="ops"))


# ---------------------------------------------------------------------------
# The oracle itself


@settings(max_examples=100, deadline=None, suppress_health_check=_SHARED_FIXTURES)
@given(data=st.data())
def test_kernel_oracle_behaves_like_a_plain_directory(lowers: Lowers,
                                                      data: st.DataObject) -> None:
    """The harness, without layerfs: kernel overlayfs with RW_OPTIONS answers the
    operations exactly as a plain ext4/tmpfs copy of the merged image does. So the
    differential test asks of layerfs plain POSIX behaviour, no overlay quirk (a
    kernel without redirect_dir would answer EXDEV; without index, copy-up would break
    hard links)."""
    if os.geteuid() != 0:
        pytest.skip("kernel overlayfs needs root")
    ops = data.draw(lowers.operations(), label="ops")
    name = lowers.example_name()
    plain = lowers.scratch / f"plain-{name}"
    plain.mkdir()
    plain_copy(lowers, plain)
    assert_same_tree(lowers.tree, snapshot(plain), ("oracle", "plain copy"))
    started = time.time()
    kernel_results, kernel_tree = lowers.run_kernel(ops, name)
    plain_results = run_ops(ops, plain)
    assert kernel_results == plain_results, format_results(
        ops, ("kernel", kernel_results), ("plain", plain_results))
    assert_same_tree(comparable(plain_tree := snapshot(plain), started),
                     comparable(kernel_tree, started), ("plain directory", "kernel overlayfs"))
    assert not diff_problems(naive_diff(lowers.tree, plain_tree), lowers.tree, plain_tree)
