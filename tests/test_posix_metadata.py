"""POSIX metadata as ext4 keeps it: times after every kind of change, and name lengths.

Each change runs on a layerfs runtime mount, on kernel overlayfs over the same
layers and on a plain ext4 copy of the image (all three noatime, which is what
layerfs documents), on an object still in the lower layer and on one made in the
container. What is compared is which of atime, mtime and ctime each change moved
on the object and on its directory (the values differ by the time it took), and
the exact values where the call gives them (utimensat). Names of 255 and 256
bytes go through every call that takes a name, and must give the same answer
(ENAMETOOLONG) on all three.

One case where layerfs does better than kernel overlayfs, by design: changing an
object that still lives in a lower layer moves the ctime of its directory on
overlayfs (copy-up creates it in the upper directory); on ext4 and layerfs the
directory is untouched.

Root only: kernel overlayfs needs it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.differential import IMAGE, Lowers, mount_container, plain_copy
from tests.support.kernel_overlay import RW_OPTIONS, mount_overlay_rw, umount
from tests.support.oci import directory, file, make_layer, write_oci_layout

if TYPE_CHECKING:
    from conftest import Layerfs

# Kernel timestamps come from a clock that ticks every few milliseconds: leave a gap.
TICK = 0.02


def layers() -> list[bytes]:
    return [make_layer([
        directory("d"), file("d/lower", b"lower data\n", xattrs={"user.k": b"v"}),
        file("d/other", b"other\n"), directory("e"), directory("d/sub"),
    ])]


@pytest.fixture
def mounts(tmp_path: Path, lfs_root: Layerfs) -> Iterator[Callable[[], Iterator[dict[str, Path]]]]:
    """A factory of fresh {"ext4", "kernel", "layerfs"} roots showing one image."""
    lowers = Lowers.extract(layers(), tmp_path)
    source = tmp_path / "src"
    write_oci_layout(source, lowers.layers)
    lfs_root.run("import", f"oci:{source}:latest", IMAGE, "-q")
    template = tmp_path / "plain"
    template.mkdir()
    plain_copy(lowers, template)

    @contextmanager
    def fresh() -> Iterator[dict[str, Path]]:
        name = lowers.example_name()
        base = tmp_path / f"kernel-{name}"
        upper, work, merged, plain = base / "upper", base / "work", base / "merged", base / "plain"
        for d in (upper, work, merged, plain):
            d.mkdir(parents=True)
        subprocess.run(["cp", "-a", f"{template}/.", str(plain)], check=True)
        subprocess.run(["mount", "--bind", str(plain), str(plain)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,noatime", str(plain)], check=True)
        mount_overlay_rw(lowers.dirs, upper, work, merged, RW_OPTIONS)
        subprocess.run(["mount", "-o", "remount,noatime", str(merged)], check=True)
        lfs_root.run("create", "--name", name, IMAGE)
        mountpoint = mount_container(lfs_root, name, "--allow-other")
        try:
            yield {"ext4": plain, "kernel": merged, "layerfs": mountpoint}
        finally:
            umount(merged)
            umount(plain)
            lfs_root.run("umount", str(mountpoint))
    yield fresh  # type: ignore[misc]


def times(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def moved(before: tuple[int, int, int], after: tuple[int, int, int]) -> str:
    """Which times changed, as "amc" letters ("-" for none)."""
    return "".join(letter for letter, b, a in zip("amc", before, after) if a != b) or "-"


def _touch(*args: str) -> Callable[[Path], None]:
    return lambda p: subprocess.run(["touch", *args, str(p)], check=True)


def _append(p: Path) -> None:
    with open(p, "ab") as f:
        f.write(b"more\n")


def _open_trunc(p: Path) -> None:
    os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))


def _read(p: Path) -> None:
    p.read_bytes()


# What each change does to the object it is given, and which times it sets exactly
# ("a", "m", "am") when it is a utimensat with explicit times.
CHANGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "chmod": (lambda p: os.chmod(p, 0o600), ""),
    "chown": (lambda p: os.chown(p, 1000, 1000), ""),
    "chown to the same ids (-1, -1)": (lambda p: os.chown(p, -1, -1), ""),
    "write": (_append, ""),
    "truncate": (lambda p: os.truncate(p, 3), ""),
    "open O_TRUNC": (_open_trunc, ""),
    "read (noatime)": (_read, ""),
    "setxattr": (lambda p: os.setxattr(p, "user.new", b"1"), ""),
    "removexattr": (lambda p: os.removexattr(p, "user.k"), ""),
    "utimensat both times": (lambda p: os.utime(p, ns=(1_000_000_000_123, 2_000_000_000_456)), "am"),
    "utimensat UTIME_NOW": (lambda p: os.utime(p, None), ""),
    "utimensat atime only": (_touch("-a", "-d", "@1000"), "a"),
    "utimensat mtime only": (_touch("-m", "-d", "@2000"), "m"),
    "touch -a (atime now, mtime omitted)": (_touch("-a"), ""),
    "link": (lambda p: os.link(p, p.parent.parent / "e" / "hardlink"), ""),
    "rename within the directory": (lambda p: os.rename(p, p.with_name("renamed")), ""),
    "rename onto another name": (lambda p: os.rename(p, p.with_name("other")), ""),
}


def _follow(name: str, target: Path) -> Path:
    """Where the changed object is found after the change."""
    if name.startswith("rename within"):
        return target.with_name("renamed")
    if name.startswith("rename onto"):
        return target.with_name("other")
    return target


@pytest.mark.parametrize("where", ["lower", "upper"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_times_after_each_change(mounts, change: str, where: str) -> None:  # noqa: ANN001
    """The object's and its directory's atime/mtime/ctime move as on ext4 (and on kernel
    overlayfs, but for its copy-up); utimensat sets exactly what it was given."""
    do, exact = CHANGES[change]
    seen = {}
    with mounts() as roots:
        for label, root in roots.items():
            target = root / "d" / "lower"
            if where == "upper":
                target = root / "d" / "made"
                target.write_bytes(b"made here\n")
                os.setxattr(target, "user.k", b"v")
            time.sleep(TICK)
            before, parent_before = times(target), times(target.parent)
            do(target)
            after = times(_follow(change, target))
            assert after[2] >= before[2], f"{label}: ctime went back"
            seen[label] = (moved(before, after), moved(parent_before, times(target.parent)),
                           [after["am".index(t)] for t in exact])
    assert seen["layerfs"] == seen["ext4"], seen
    assert seen["kernel"][0] == seen["ext4"][0] and seen["kernel"][2] == seen["ext4"][2], seen
    kernel_parent, ext4_parent = set(seen["kernel"][1]) - {"-"}, set(seen["ext4"][1]) - {"-"}
    copied_up = where == "lower" and change != "read (noatime)"
    assert kernel_parent in ([ext4_parent, ext4_parent | {"c"}] if copied_up else [ext4_parent]), seen


DIRECTORY_CHANGES: dict[str, Callable[[Path], None]] = {
    "create a file": lambda d: (d / "new").write_bytes(b""),
    "mkdir": lambda d: (d / "newdir").mkdir(),
    "symlink": lambda d: (d / "sym").symlink_to("lower"),
    "mkfifo": lambda d: os.mkfifo(d / "fifo"),
    "unlink": lambda d: (d / "other").unlink(),
    "rmdir": lambda d: (d / "sub").rmdir(),
    "link into it": lambda d: os.link(d / "lower", d / "x"),
    "rename out of it": lambda d: os.rename(d / "other", d.parent / "e" / "moved"),
    "chmod the directory": lambda d: os.chmod(d, 0o700),
    "listdir (noatime)": lambda d: os.listdir(d),
}


@pytest.mark.parametrize("change", sorted(DIRECTORY_CHANGES))
def test_directory_times_after_each_change(mounts, change: str) -> None:  # noqa: ANN001
    seen = {}
    with mounts() as roots:
        for label, root in roots.items():
            directory_path = root / "d"
            time.sleep(TICK)
            before = times(directory_path)
            DIRECTORY_CHANGES[change](directory_path)
            seen[label] = moved(before, times(directory_path))
    assert seen["layerfs"] == seen["ext4"] == seen["kernel"], seen


# Each leaves an object whose three times a remount must show exactly as they were.
REMOUNT_CASES: dict[str, Callable[[Path], None]] = {
    "chmod of a lower file": lambda d: os.chmod(d / "lower", 0o640),
    "explicit times in the past": lambda d: os.utime(d / "other", ns=(1_111_000_000_000, 2_222_000_000_000)),
    "a file made and written": lambda d: (d / "made").write_bytes(b"x"),
    "an mtime in the future on a written file":
        lambda d: ((d / "made").write_bytes(b"x"), os.utime(d / "made", ns=(4_000_000_000_000_000_000,) * 2)),
    "a write, then a chmod, of a lower file": lambda d: (_append(d / "lower"), os.chmod(d / "lower", 0o600)),
    "a chmod, then a write, of a lower file": lambda d: (os.chmod(d / "lower", 0o600), _append(d / "lower")),
    "a truncate of a lower file": lambda d: os.truncate(d / "other", 1),
}


@pytest.mark.parametrize("case", sorted(REMOUNT_CASES))
def test_times_survive_a_remount(lfs_root: Layerfs, case: str) -> None:
    """ctime and atime are journaled, and mtime is stamped on the data file too: a
    remount shows exactly the times the container left, and ctime never went back."""
    lfs_root.import_layers(layers(), IMAGE)
    lfs_root.run("create", "--name", "c", IMAGE)
    names = ("d", "d/lower", "d/other", "d/made")
    mountpoint = mount_container(lfs_root, "c", "--allow-other")
    before = {name: times(mountpoint / name) for name in names if (mountpoint / name).exists()}
    time.sleep(TICK)
    REMOUNT_CASES[case](mountpoint / "d")
    expected = {name: times(mountpoint / name) for name in names if (mountpoint / name).exists()}
    lfs_root.run("umount", str(mountpoint))
    assert all(expected[name][2] >= ctime for name, (_a, _m, ctime) in before.items())
    mountpoint = mount_container(lfs_root, "c", "--allow-other")
    try:
        assert {name: times(mountpoint / name) for name in expected} == expected
    finally:
        lfs_root.run("umount", str(mountpoint))


def _errno_of(call: Callable[[], object]) -> str:
    try:
        call()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "ok"


def _name_calls(root: Path, name: str) -> dict[str, Callable[[], object]]:
    """Every call that takes a name, with `name` as the name (in directory d)."""
    d = root / "d"
    return {
        "open O_CREAT": lambda: os.close(os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o644)),
        "mkdir": lambda: os.mkdir(d / f"{name[:-1]}D"),
        "mkfifo": lambda: os.mkfifo(d / f"{name[:-1]}F"),
        "symlink": lambda: os.symlink("lower", d / f"{name[:-1]}S"),
        "link": lambda: os.link(d / "lower", d / f"{name[:-1]}L"),
        "rename to": lambda: os.rename(d / "other", d / f"{name[:-1]}R"),
        "rename from": lambda: os.rename(d / f"{name[:-1]}R", d / "other"),
        "stat": lambda: os.lstat(d / name),
        "unlink": lambda: os.unlink(d / name),
        "rmdir": lambda: os.rmdir(d / f"{name[:-1]}D"),
        "setxattr name": lambda: os.setxattr(d / "lower", "user." + name[5:], b"v"),
        # PATH_MAX counts the final NUL: 4095 bytes fit, 4096 do not
        "symlink target": lambda: os.symlink("t" * (4095 + len(name) - 255), d / "longtarget"),
    }


@pytest.mark.parametrize("length", [255, 256])
def test_name_lengths_on_every_call(mounts, length: int) -> None:  # noqa: ANN001
    """255 bytes work and 256 give ENAMETOOLONG, on every call, as on kernel overlayfs
    (FUSE itself would let names up to 1024 bytes through)."""
    name = "n" * length
    seen: dict[str, dict[str, str]] = {}
    with mounts() as roots:
        for label, root in roots.items():
            seen[label] = {call: _errno_of(fn) for call, fn in _name_calls(root, name).items()}
    assert seen["layerfs"] == seen["kernel"] == seen["ext4"]
    if length > 255:
        assert seen["layerfs"]["open O_CREAT"] == "ENAMETOOLONG"
