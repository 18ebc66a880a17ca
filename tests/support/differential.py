"""The machinery of the differential suites: the same operations on a layerfs container
and on kernel overlayfs over the same layers, then every check that follows.

`check_example` runs one list of operations (tests/support/fsops.py) on a layerfs
container mount and on kernel overlayfs over the same layers with an empty upper
directory. Both must answer every operation alike (ok or the same errno) and end
with the same tree. Then the container must keep that tree across umount and mount,
`layerfs diff` must name every change, and `layerfs commit` must make an image that
shows the same tree through layerfs and through skopeo + umoci.

What is compared (snapshot.Node): type, mode, owner, xattrs for everything; for
non-directories also size, content, symlink target, nlink and hard-link groups, and
mtime, where a time set during the test (by a write, or a create) only has to be
"recent" on both sides, not the same second. st_ino, atime, ctime and directory
mtimes, sizes and nlink are never compared (tests/test_posix_metadata.py does times).

Root only: kernel overlayfs needs it, and so do the owners of the lower layers.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import strategies as st

from tests.support.fsops import (Op, Step, format_results, hidden_paths, operations, run_ops,
                                 run_ops_as, steps)
from tests.support.kernel_overlay import (RW_OPTIONS, layers_to_overlay_dirs, mount_overlay,
                                          mount_overlay_rw, umount)
from tests.support.oracle import apply_layers
from tests.support.snapshot import Node, assert_same_tree, snapshot, snapshot_as

if TYPE_CHECKING:
    from conftest import Layerfs

Runner = Callable[[Sequence[Op | Step], Path], list[str]]

RECENT = -1  # the mtime of a non-directory whose time was set while the test ran


# ---------------------------------------------------------------------------
# Set up once per stack, shared by every hypothesis example


@dataclass(repr=False)
class Lowers:
    """A stack's layers extracted for the kernel (read-only lower directories that every
    example reuses under a fresh upper), and what the operation strategy needs."""

    layers: list[bytes]
    dirs: list[Path]
    tree: dict[str, Node]  # the image as the oracle says (what diff compares with)
    scratch: Path
    counter: Iterator[int]

    @classmethod
    def extract(cls, layers: list[bytes], scratch: Path) -> Lowers:
        return cls(layers, layers_to_overlay_dirs(layers, scratch / "kernel-layers"),
                   apply_layers(layers), scratch, itertools.count())

    def paths(self) -> tuple[list[str], list[str]]:
        """(paths the image shows, paths a layer holds that an upper one hides), relative."""
        shown = sorted(p.lstrip("/") for p in self.tree if p != "/")
        return shown, hidden_paths([apply_layers([layer]) for layer in self.layers], self.tree)

    def operations(self) -> st.SearchStrategy[list[Op]]:
        shown, hidden = self.paths()
        return operations(shown, hidden_paths=hidden)

    def steps(self) -> st.SearchStrategy[list[Step]]:
        shown, hidden = self.paths()
        return steps(shown, hidden_paths=hidden)

    def __repr__(self) -> str:
        return f"Lowers({len(self.layers)} layers, {len(self.tree)} paths)"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # noqa: ANN001
        """Hypothesis prints a failing example's arguments; the layer bytes are noise."""
        printer.text(repr(self))

    def example_name(self) -> str:
        """A fresh name per example (hypothesis runs many on one fixture value)."""
        return f"c{next(self.counter)}"

    def run_kernel(self, ops: Sequence[Op | Step], name: str, runner: Runner = run_ops,
                   options: tuple[str, ...] = RW_OPTIONS) -> tuple[list[str], dict[str, Node]]:
        """The operations on kernel overlayfs over these lowers and a fresh upper."""
        base = self.scratch / f"kernel-{name}"
        upper, work, merged = base / "upper", base / "work", base / "merged"
        for d in (upper, work, merged):
            d.mkdir(parents=True)
        os.chmod(base, 0o755)  # every user of a multi-user run must reach the mount
        mount_overlay_rw(self.dirs, upper, work, merged, options)
        try:
            return runner(ops, merged), snapshot(merged)  # type: ignore[arg-type]
        finally:
            umount(merged)


@dataclass
class Stack:
    """The lowers, and the same layers imported into root's store as IMAGE."""

    lfs: Layerfs
    lowers: Lowers

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # noqa: ANN001
        printer.text(f"Stack({self.lfs.workdir}, {self.lowers!r})")


IMAGE = "lower:latest"
EXAMPLES = int(os.environ.get("LAYERFS_DIFFERENTIAL_EXAMPLES", "25"))


# ---------------------------------------------------------------------------
# Comparing trees


def comparable(tree: dict[str, Node], since: float) -> dict[str, Node]:
    """`tree` with every non-directory mtime set at or after `since` replaced by RECENT:
    two implementations doing the same write a second apart are still equal, while a
    copy-up that loses the old mtime, or a write that keeps it, is not."""
    cutoff = int(since) - 1
    return {path: replace(node, mtime=RECENT) if node.mtime is not None and node.mtime >= cutoff
            else node for path, node in tree.items()}


_METADATA = ("mode", "uid", "gid", "xattrs")  # what a directory itself carries
_CONTENT = tuple(f.name for f in fields(Node) if f.name not in ("type", "nlink", "link_group"))


def changed(before: Node, after: Node) -> bool:
    """Did the object at one path change in a way `layerfs diff` must report as C?
    nlink and hard-link groups are left out: linking a name elsewhere is no change of
    this one (docker lists such a file only because it was copied up)."""
    names = _METADATA if before.type == "dir" else _CONTENT
    return any(getattr(before, n) != getattr(after, n) for n in names)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _is_dir(node: Node | None) -> bool:
    return node is not None and node.type == "dir"


def diff_problems(entries: list[dict], lower: dict[str, Node],
                  final: dict[str, Node]) -> list[str]:
    """What is wrong with `layerfs diff --json` output for a container whose image shows
    `lower` and whose mount shows `final`. Docker's rules:

    - every path of `final` that `lower` lacks is A (children of new directories too);
    - every path of `lower` that `final` lacks is D when its parent is still a
      directory (children of a deleted directory may be listed too, as D);
    - a path in both, same type, whose own attributes or content changed is C; a
      directory whose children changed may or may not be C (not checked);
    - a path whose type changed is listed, as C or A (or D and A);
    - and nothing is listed with a kind its state contradicts."""
    kinds: dict[str, set[str]] = {}
    for entry in entries:
        kinds.setdefault(entry["path"], set()).add(entry["kind"])
    problems = []
    for path, listed in sorted(kinds.items()):
        before, after = lower.get(path), final.get(path)
        type_changed = before is not None and after is not None and before.type != after.type
        if not listed <= {"A", "C", "D"}:
            problems.append(f"{path}: unknown kind in {sorted(listed)}")
        if "A" in listed and (after is None or (before is not None and not type_changed)):
            problems.append(f"{path}: listed A, but lower={before and before.type} "
                            f"final={after and after.type}")
        if "D" in listed and (before is None or (after is not None and not type_changed)):
            problems.append(f"{path}: listed D, but lower={before and before.type} "
                            f"final={after and after.type}")
        if "C" in listed and (before is None or after is None):
            problems.append(f"{path}: listed C, but lower={before and before.type} "
                            f"final={after and after.type}")
    for path in sorted(final.keys() | lower.keys()):
        if path == "/":
            continue
        before, after = lower.get(path), final.get(path)
        listed = kinds.get(path, set())
        if before is None:
            if "A" not in listed:
                problems.append(f"{path}: added ({after.type}), not listed as A: {sorted(listed)}")
        elif after is None:
            if _is_dir(final.get(_parent(path))) and "D" not in listed:
                problems.append(f"{path}: deleted ({before.type}), not listed as D: "
                                f"{sorted(listed)}")
        elif before.type != after.type:
            if not listed & {"A", "C"}:
                problems.append(f"{path}: {before.type} became {after.type}, listed "
                                f"{sorted(listed)}")
        elif changed(before, after) and "C" not in listed:
            problems.append(f"{path}: changed ({after.type}), not listed as C: {sorted(listed)}")
    return problems


def naive_diff(lower: dict[str, Node], final: dict[str, Node]) -> list[dict]:
    """The diff `diff_problems` accepts, computed from the two trees (docker's naive
    differ): used to check the checker, in the oracle self-test below."""
    entries = []
    for path in sorted(lower.keys() | final.keys()):
        before, after = lower.get(path), final.get(path)
        if path == "/":
            continue
        if before is None:
            entries.append({"path": path, "kind": "A"})
        elif after is None:
            if _is_dir(final.get(_parent(path))):
                entries.append({"path": path, "kind": "D"})
        elif before.type != after.type or changed(before, after):
            entries.append({"path": path, "kind": "C"})
    return entries


# ---------------------------------------------------------------------------
# One example




def mount_container(lfs: Layerfs, ref: str, *options: str) -> Path:
    """`layerfs mount [OPTIONS] REF MP` on a fresh mount point; returns the mount point."""
    mountpoint = lfs.mkdir(f"mnt-{uuid.uuid4().hex[:8]}")
    lfs.run("mount", *options, ref, str(mountpoint))
    return mountpoint


def layerfs_tree(lfs: Layerfs, ref: str) -> dict[str, Node]:
    """Mount REF (a container, or an image), snapshot it, unmount it."""
    mountpoint = mount_container(lfs, ref)
    try:
        return snapshot_as(lfs, mountpoint)
    finally:
        lfs.run("umount", str(mountpoint), check=False)


def umoci_tree(lfs: Layerfs, image: str, workdir: Path) -> dict[str, Node]:
    """The committed image copied out of the store by skopeo (recompressed to gzip:
    umoci 0.4 reads no zstd) and unpacked by umoci: what other OCI tools see."""
    workdir.mkdir()
    out, bundle = workdir / "copy", workdir / "bundle"
    tool(["skopeo", "copy", "--dest-compress-format", "gzip", f"oci:{lfs.root}:{image}",
          f"oci:{out}:x"])
    tool(["umoci", "unpack", "--image", f"{out}:x", str(bundle)])
    return snapshot(bundle / "rootfs")


def tool(argv: list[str]) -> None:
    """Run another OCI tool; its own error message is the failure's message."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr.strip()}"


def as_tar_tools_see_it(tree: dict[str, Node]) -> dict[str, Node]:
    """What survives any tar tool: no mtimes (umoci rounds them), and no empty-valued
    xattrs: a PAX record with an empty value means "unset" (POSIX pax; Go's
    archive/tar, hence umoci and skopeo, drop it), so an empty xattr cannot travel
    through a layer tar to them."""
    return {path: replace(node, mtime=None,
                          xattrs={k: v for k, v in node.xattrs.items() if v})
            for path, node in tree.items()}


def check_example(stack: Stack, ops: Sequence[Op | Step], runner: Runner | None = None,
                  mount_args: tuple[str, ...] = ()) -> None:
    """Run `ops` on kernel overlayfs and on a container mount (`layerfs mount
    *mount_args`), then check answers, trees, remount, diff and commit. `runner`
    applies them on both (root's process; the default runs them as the stack's
    identity)."""
    lfs, lowers = stack.lfs, stack.lowers
    name = lowers.example_name()
    listing = "\n".join(f"  {op}" for op in ops)
    lfs.run("create", "--name", name, IMAGE)

    started = time.time()
    kernel_results, kernel_tree = lowers.run_kernel(ops, name, runner or run_ops)
    mountpoint = mount_container(lfs, name, *mount_args)
    try:
        if runner is None:
            layerfs_results = run_ops_as(lfs, ops, mountpoint)  # type: ignore[arg-type]
        else:
            layerfs_results = runner(ops, mountpoint)
        live_tree = snapshot_as(lfs, mountpoint)
    finally:
        lfs.run("umount", str(mountpoint), check=False)

    assert kernel_results == layerfs_results, (
        "operations answered differently:\n"
        + format_results(ops, ("kernel", kernel_results), ("layerfs", layerfs_results)))
    try:
        assert_same_tree(comparable(kernel_tree, started), comparable(live_tree, started),
                         ("kernel overlayfs", "layerfs"))
    except AssertionError as e:
        raise AssertionError(f"after:\n{listing}\n{e}") from None

    # Persistence: the upper layer alone, mounted again, shows the same tree.
    assert_same_tree(live_tree, layerfs_tree(lfs, name), ("before umount", "mounted again"))

    letters = {"added": "A", "modified": "C", "deleted": "D"}  # --json words, docker's letters here
    entries = [dict(e, kind=letters.get(e["kind"], e["kind"]))
               for e in json.loads(lfs.run("diff", name, "--json").stdout)]
    problems = diff_problems(entries, lowers.tree, live_tree)
    assert not problems, (f"layerfs diff after:\n{listing}\n" + "\n".join(problems)
                          + f"\nlisted: {entries}")

    image = f"snap-{name}:v1"
    image_id = lfs.run("commit", name, image, "-m", "differential").stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id), image_id
    assert_same_tree(live_tree, layerfs_tree(lfs, image), ("container", "committed image"))
    unpacked = umoci_tree(lfs, image, lowers.scratch / f"umoci-{name}")
    assert_same_tree(as_tar_tools_see_it(live_tree), as_tar_tools_see_it(unpacked),
                     ("container", "committed, unpacked by umoci"))


def plain_copy(lowers: Lowers, dest: Path) -> None:
    """The merged image as a plain directory: `cp -a` out of a read-only kernel mount
    (owners, modes, times, xattrs and hard links kept)."""
    merged = lowers.scratch / "plain-source"
    merged.mkdir(exist_ok=True)
    mount_overlay(lowers.dirs, merged)
    try:
        subprocess.run(["cp", "-a", "--preserve=all", f"{merged}/.", str(dest)], check=True,
                       capture_output=True)
    finally:
        umount(merged)
