"""A container mounted read-write: the overlay behaviours, one at a time, root and rootless.

tests/test_container_differential.py compares random operations with kernel
overlayfs; this file names the behaviours a user relies on, each in its own test, so
that a failure says which one broke: copy-up keeps the inode, owner, mode and xattrs;
hard links stay linked; deletes are whiteouts and a re-created directory is opaque;
lower files and directories can be renamed; everything survives umount and mount;
and what one process changes, the next one sees at once (no stale kernel cache,
although lower layers are cached for as long as the kernel wants).

Every step runs as the identity that mounted (the rootless user's mount is invisible
to root), through `run_ops_as` or small inline probes. Assumed, as in a read-only
mount: permissions are not checked for the user who mounted, so a rootless user can
write the image's root-owned files in its own container.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import fuse_mounts_under
from tests.support.fsops import (Append, Chmod, Chown, Link, Mkdir, Op, Rename, SetXattr,
                                 Symlink, Truncate, Unlink, Utime, WriteFile, run_ops_as)
from tests.support.oci import (directory, file, hardlink, make_layer, symlink, whiteout)
from tests.support.snapshot import assert_same_tree, snapshot_as

if TYPE_CHECKING:
    from conftest import Layerfs

IMAGE = "app:1"
OWNED = {"mode": 0o640, "uid": 1000, "gid": 1000, "xattrs": {"user.origin": b"lower"}}
# One lower file per way of triggering a copy-up, all owned by 1000, 0640, with an xattr.
COPY_UP_TRIGGERS: dict[str, Op] = {
    "cu/chmod": Chmod("cu/chmod", 0o600),
    "cu/append": Append("cu/append", b"appended\n"),
    "cu/truncate": Truncate("cu/truncate", 3),
    "cu/utime": Utime("cu/utime", 1600000000),
    "cu/setxattr": SetXattr("cu/setxattr", "user.added", b"new"),
    "cu/link": Link("cu/link", "cu/link-second-name"),
    "cu/rewrite": WriteFile("cu/rewrite", b"rewritten\n"),
}


def image_layers() -> list[bytes]:
    """Two layers, so that `data` is a directory merged across both."""
    base = [
        directory("etc"), file("etc/conf", b"conf v1\n", **OWNED), file("etc/other", b"other\n"),
        file("h1", b"linked\n"), hardlink("h2", "h1"),
        directory("tree"), directory("tree/sub"), file("tree/sub/deep", b"deep\n"),
        file("tree/top", b"top\n"), symlink("tree/link", "top"),
        directory("data", mode=0o750, uid=1000, gid=1000, xattrs={"user.dir": b"data"}),
        file("data/one", b"1\n"), directory("data/inner"), file("data/inner/two", b"2\n"),
        file("old", b"old\n"), file("gone", b"gone\n"),
        directory("cu"),
    ] + [file(path, f"{path} v1\n".encode(), **OWNED) for path in COPY_UP_TRIGGERS]
    top = [
        directory("data", mode=0o750, uid=1000, gid=1000, xattrs={"user.dir": b"data"}),
        file("data/three", b"3\n"), whiteout("gone"),
    ]
    return [make_layer(base, "gzip"), make_layer(top)]


@pytest.fixture
def container(lfs: Layerfs) -> str:
    """`lfs` with IMAGE imported and a container `box` created from it."""
    lfs.import_layers(image_layers(), IMAGE)
    lfs.run("create", "--name", "box", IMAGE)
    return "box"


def do(lfs: Layerfs, mountpoint: Path, *ops: Op) -> list[str]:
    """Apply `ops` as the identity; the result of each ("ok" or an errno name)."""
    return run_ops_as(lfs, list(ops), mountpoint)


_PROBE = r"""
import errno, json, os, stat, sys
out = {}
for p in sys.argv[1:]:
    try:
        st = os.lstat(p)
    except OSError as e:
        out[p] = {"error": errno.errorcode[e.errno]}
        continue
    info = {"ino": st.st_ino, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "size": st.st_size, "nlink": st.st_nlink,
            "mtime": int(st.st_mtime), "type": stat.S_IFMT(st.st_mode)}
    if not stat.S_ISLNK(st.st_mode):
        info["xattrs"] = {n: os.getxattr(p, n).hex() for n in sorted(os.listxattr(p))}
    if stat.S_ISREG(st.st_mode):
        with open(p, "rb") as f:
            info["data"] = f.read().hex()
    elif stat.S_ISDIR(st.st_mode):
        info["entries"] = sorted(os.listdir(p))
    elif stat.S_ISLNK(st.st_mode):
        info["target"] = os.readlink(p)
    out[p] = info
print(json.dumps(out))
"""


def probe(lfs: Layerfs, mountpoint: Path, *paths: str) -> list[dict[str, Any]]:
    """lstat, xattrs and content (or entries, or target) of each path, read by a fresh
    process as the identity: {"error": "ENOENT"} for a missing one. `data` is bytes."""
    full = [str(mountpoint / p) if p else str(mountpoint) for p in paths]
    found = json.loads(lfs.sh([sys.executable, "-c", _PROBE, *full]).stdout)
    results = []
    for p in full:
        info = found[p]
        if "data" in info:
            info["data"] = bytes.fromhex(info["data"])
        if "xattrs" in info:
            info["xattrs"] = {k: bytes.fromhex(v) for k, v in info["xattrs"].items()}
        results.append(info)
    return results


def probe1(lfs: Layerfs, mountpoint: Path, path: str) -> dict[str, Any]:
    return probe(lfs, mountpoint, path)[0]


def without_ino(info: dict[str, Any]) -> dict[str, Any]:
    """For comparisons across a remount, where st_ino is a test of its own."""
    return {k: v for k, v in info.items() if k != "ino"}


def diff_json(lfs: Layerfs, name: str) -> dict[str, str]:
    """`layerfs diff NAME --json` as {path: kind}."""
    letters = {"added": "A", "modified": "C", "deleted": "D"}
    return {e["path"]: letters[e["kind"]] for e in json.loads(lfs.run("diff", name, "--json").stdout)}


# ---------------------------------------------------------------------------
# Copy-up


def test_copy_up_keeps_inode_owner_mode_and_xattrs(lfs: Layerfs, container: str) -> None:
    """Whatever triggers the copy-up, st_ino stays, and so do the attributes the change
    did not touch (a file that changes inode number breaks tar, rsync and hard links)."""
    paths = list(COPY_UP_TRIGGERS)
    with lfs.mounted(container) as mp:
        before = dict(zip(paths, probe(lfs, mp, *paths)))
        assert do(lfs, mp, *COPY_UP_TRIGGERS.values()) == ["ok"] * len(paths)
        after = dict(zip(paths, probe(lfs, mp, *paths)))
        second_name = probe1(lfs, mp, "cu/link-second-name")

    for path, op in COPY_UP_TRIGGERS.items():
        old, new = before[path], after[path]
        assert new["ino"] == old["ino"], f"{op}: st_ino changed"
        expected = dict(old)
        expected.update({
            "cu/chmod": {"mode": 0o600},
            "cu/append": {"data": old["data"] + b"appended\n", "size": old["size"] + 9},
            "cu/truncate": {"data": old["data"][:3], "size": 3},
            "cu/utime": {"mtime": 1600000000},
            "cu/setxattr": {"xattrs": {**old["xattrs"], "user.added": b"new"}},
            "cu/link": {"nlink": 2},
            "cu/rewrite": {"data": b"rewritten\n", "size": 10},
        }[path])
        if path in ("cu/append", "cu/truncate", "cu/rewrite"):
            assert new["mtime"] > old["mtime"], f"{op}: a write sets the mtime to now"
            expected["mtime"] = new["mtime"]
        assert new == expected, f"{op}: {old} -> {new}"
    assert second_name == after["cu/link"], "a hard link made to a lower file is one inode"


def test_copy_up_inode_survives_remount(lfs: Layerfs, container: str) -> None:
    """st_ino of a copied-up file, of a lower file and of a new file stays the same
    across umount and mount (overlayfs keeps it when layers share a filesystem)."""
    paths = ("etc/conf", "etc/other", "new-file")
    with lfs.mounted(container) as mp:
        assert do(lfs, mp, Append("etc/conf", b"x"), WriteFile("new-file", b"n")) == ["ok"] * 2
        first = [p["ino"] for p in probe(lfs, mp, *paths)]
    with lfs.mounted(container) as mp:
        assert [p["ino"] for p in probe(lfs, mp, *paths)] == first


def test_hardlink_pair_stays_linked_after_copy_up(lfs: Layerfs, container: str) -> None:
    """Writing one name of a lower hard-link pair changes both names: one inode, nlink 2.
    h2 is read first, so a kernel page cache kept from the lower file would show."""
    with lfs.mounted(container) as mp:
        h1, h2 = probe(lfs, mp, "h1", "h2")
        assert (h1["nlink"], h2["nlink"], h1["ino"]) == (2, 2, h2["ino"])
        assert do(lfs, mp, Append("h1", b"more\n")) == ["ok"]
        new1, new2 = probe(lfs, mp, "h1", "h2")
        assert new2["data"] == new1["data"] == b"linked\nmore\n"
        assert (new1["nlink"], new2["nlink"]) == (2, 2)
        assert new1["ino"] == new2["ino"] == h1["ino"]
        assert do(lfs, mp, Chmod("h2", 0o600)) == ["ok"]
        assert probe1(lfs, mp, "h1")["mode"] == 0o600
    with lfs.mounted(container) as mp:
        again1, again2 = probe(lfs, mp, "h1", "h2")
        assert again1["data"] == again2["data"] == b"linked\nmore\n"
        assert (again1["nlink"], again2["nlink"], again1["mode"]) == (2, 2, 0o600)
        assert do(lfs, mp, Unlink("h2")) == ["ok"]
        assert probe1(lfs, mp, "h1")["nlink"] == 1, "nlink counts the names still there"


# ---------------------------------------------------------------------------
# Deleting and re-creating


def test_unlink_of_a_lower_file(lfs: Layerfs, container: str) -> None:
    with lfs.mounted(container) as mp:
        assert "other" in probe1(lfs, mp, "etc")["entries"]  # listed (and cached) first
        assert do(lfs, mp, Unlink("etc/other")) == ["ok"]
        assert probe1(lfs, mp, "etc/other") == {"error": "ENOENT"}
        assert probe1(lfs, mp, "etc")["entries"] == ["conf"]
        assert lfs.sh(["ls", "-a", str(mp / "etc")]).stdout.decode().split() == \
            [".", "..", "conf"]
        assert diff_json(lfs, container).get("/etc/other") == "D"
        assert "D /etc/other" in lfs.run("diff", container).stdout.splitlines()
    with lfs.mounted(container) as mp:
        assert probe1(lfs, mp, "etc/other") == {"error": "ENOENT"}
        assert do(lfs, mp, WriteFile("etc/other", b"back\n")) == ["ok"]
        assert probe1(lfs, mp, "etc/other")["data"] == b"back\n"


def test_removed_lower_directory_comes_back_empty(lfs: Layerfs, container: str) -> None:
    """rm -rf of a lower directory, then mkdir of the same name: an empty (opaque)
    directory; none of the lower children may show through, now or after a remount."""
    with lfs.mounted(container) as mp:
        assert probe1(lfs, mp, "tree")["entries"] == ["link", "sub", "top"]
        lfs.sh(["rm", "-rf", str(mp / "tree")])
        assert probe1(lfs, mp, "tree") == {"error": "ENOENT"}
        assert do(lfs, mp, Mkdir("tree", 0o700)) == ["ok"]
        made = probe1(lfs, mp, "tree")
        assert (made["entries"], made["mode"]) == ([], 0o700)
        assert probe(lfs, mp, "tree/top", "tree/sub/deep") == [{"error": "ENOENT"}] * 2
        assert do(lfs, mp, Mkdir("tree/sub")) == ["ok"]
        assert probe1(lfs, mp, "tree/sub")["entries"] == []
    with lfs.mounted(container) as mp:
        assert probe1(lfs, mp, "tree")["entries"] == ["sub"]
        assert probe1(lfs, mp, "tree/sub")["entries"] == []


def test_symlink_over_a_whiteout(lfs: Layerfs, container: str) -> None:
    """Creating over a deleted lower name clears the whiteout (a fuse-overlayfs bug)."""
    with lfs.mounted(container) as mp:
        assert do(lfs, mp, Unlink("old"), Symlink("etc/conf", "old")) == ["ok", "ok"]
        assert probe1(lfs, mp, "old")["target"] == "etc/conf"
        root = probe1(lfs, mp, "")["entries"]
        assert root.count("old") == 1 and "gone" not in root
        # the same over a whiteout of a lower layer of the image itself
        assert do(lfs, mp, Symlink("old", "gone")) == ["ok"]
        assert probe1(lfs, mp, "gone")["target"] == "old"
    with lfs.mounted(container) as mp:
        assert [p.get("target") for p in probe(lfs, mp, "old", "gone")] == ["etc/conf", "old"]
        assert lfs.sh(["cat", str(mp / "old")]).stdout == b"conf v1\n"


# ---------------------------------------------------------------------------
# Renames


def test_rename_lower_file_over_lower_file(lfs: Layerfs, container: str) -> None:
    with lfs.mounted(container) as mp:
        conf = probe1(lfs, mp, "etc/conf")
        assert do(lfs, mp, Rename("etc/conf", "etc/other")) == ["ok"]
        moved = probe1(lfs, mp, "etc/other")
        assert probe1(lfs, mp, "etc/conf") == {"error": "ENOENT"}
        assert moved == conf, "rename keeps the inode, its content and attributes"
        assert probe1(lfs, mp, "etc")["entries"] == ["other"]
    with lfs.mounted(container) as mp:
        gone, again = probe(lfs, mp, "etc/conf", "etc/other")
        assert gone == {"error": "ENOENT"}
        assert without_ino(again) == without_ino(moved)


def test_rename_lower_directory(lfs: Layerfs, container: str) -> None:
    """layerfs renames a directory that lives in the lower layers (kernel overlayfs
    without redirect_dir, and fuse-overlayfs, answer EXDEV): the whole merged subtree
    moves, and the old name is free, with no lower child showing through."""
    with lfs.mounted(container) as mp:
        before = snapshot_as(lfs, mp)
        assert do(lfs, mp, Rename("data", "moved")) == ["ok"]
        after = snapshot_as(lfs, mp)
        assert "/data" not in after
        expected = {(p.replace("/data", "/moved", 1) if p == "/data" or p.startswith("/data/")
                     else p): node for p, node in before.items()}
        assert_same_tree(expected, after, ("renamed before", "renamed"))
        assert do(lfs, mp, Mkdir("data")) == ["ok"]
        assert probe1(lfs, mp, "data")["entries"] == []
        assert do(lfs, mp, WriteFile("moved/inner/added", b"added\n")) == ["ok"]
        final = snapshot_as(lfs, mp)
    with lfs.mounted(container) as mp:
        assert_same_tree(final, snapshot_as(lfs, mp), ("before umount", "mounted again"))


# ---------------------------------------------------------------------------
# Persistence, statfs, caches, ownership, bookkeeping


def test_changes_survive_umount_and_mount(lfs: Layerfs, container: str) -> None:
    with lfs.mounted(container) as mp:
        assert do(lfs, mp, WriteFile("new-file", b"fresh\n", 0o600), Append("etc/other", b"+\n"),
                  Mkdir("newdir"), WriteFile("newdir/f", b"inside\n"), Unlink("tree/top"),
                  Symlink("newdir/f", "newlink"), SetXattr("etc/other", "user.k", b"v")
                  ) == ["ok"] * 7
        tree = snapshot_as(lfs, mp)
    assert tree["/new-file"].mode == 0o600 and tree["/etc/other"].size == len(b"other\n+\n")
    with lfs.mounted(container) as mp:
        assert_same_tree(tree, snapshot_as(lfs, mp), ("before umount", "mounted again"))
        assert lfs.sh(["cat", str(mp / "newdir/f")]).stdout == b"inside\n"


_STATVFS = ("import json, os, sys; s = os.statvfs(sys.argv[1]); print(json.dumps("
            "{k: getattr(s, k) for k in dir(s) if k.startswith('f_')}))")


def test_statfs(lfs: Layerfs, container: str) -> None:
    """df and statvfs work on the mount, and report space to write in (tools such as
    package managers check it before writing)."""
    with lfs.mounted(container) as mp:
        fs = json.loads(lfs.sh([sys.executable, "-c", _STATVFS, str(mp)]).stdout)
        lfs.sh(["df", str(mp)])
    assert fs["f_bsize"] > 0 and fs["f_namemax"] >= 255, fs
    assert fs["f_blocks"] >= fs["f_bfree"] >= fs["f_bavail"] > 0, fs


def test_no_stale_attributes_listings_or_data(lfs: Layerfs, container: str) -> None:
    """Lower layers are cached by the kernel for as long as it likes; a change in the
    upper layer must be seen by the very next process all the same."""
    with lfs.mounted(container) as mp:
        conf = probe1(lfs, mp, "etc/conf")  # attributes, data and listing now cached
        probe1(lfs, mp, "etc")
        assert probe1(lfs, mp, "etc/new") == {"error": "ENOENT"}  # a negative entry

        assert do(lfs, mp, Append("etc/conf", b"+")) == ["ok"]
        grown = probe1(lfs, mp, "etc/conf")
        assert (grown["size"], grown["data"]) == (conf["size"] + 1, conf["data"] + b"+")

        same_size = bytes(reversed(grown["data"]))
        assert do(lfs, mp, WriteFile("etc/conf", same_size)) == ["ok"]
        assert probe1(lfs, mp, "etc/conf")["data"] == same_size

        assert do(lfs, mp, WriteFile("etc/new", b"n")) == ["ok"]
        assert probe1(lfs, mp, "etc")["entries"] == ["conf", "new", "other"]
        assert probe1(lfs, mp, "etc/new")["data"] == b"n"
        assert do(lfs, mp, Unlink("etc/other")) == ["ok"]
        assert probe1(lfs, mp, "etc")["entries"] == ["conf", "new"]
        assert do(lfs, mp, Rename("etc/new", "etc/renamed")) == ["ok"]
        assert probe1(lfs, mp, "etc")["entries"] == ["conf", "renamed"]
        assert do(lfs, mp, Chmod("etc/renamed", 0o700)) == ["ok"]
        assert probe1(lfs, mp, "etc/renamed")["mode"] == 0o700
        assert do(lfs, mp, Truncate("etc/renamed", 0)) == ["ok"]
        assert probe1(lfs, mp, "etc/renamed")["size"] == 0


def test_chown(lfs: Layerfs, container: str) -> None:
    """chown to any id works as root, and the owner is recorded. A rootless user
    outside a user namespace may be refused (EPERM); if layerfs allows it, the new
    owner must show."""
    with lfs.mounted(container) as mp:
        result = do(lfs, mp, Chown("etc/conf", 0, 0))
        after = probe1(lfs, mp, "etc/conf")
        if lfs.rootless:
            assert result[0] in ("ok", "EPERM"), result
        else:
            assert result == ["ok"]
            assert do(lfs, mp, Chown("etc/other", 1234, 5678)) == ["ok"]
            assert probe1(lfs, mp, "etc/other")["uid"] == 1234
        if result == ["ok"]:
            assert (after["uid"], after["gid"]) == (0, 0)
            assert after["data"] == b"conf v1\n" and after["mode"] == 0o640
    if result == ["ok"]:
        with lfs.mounted(container) as mp:
            assert probe1(lfs, mp, "etc/conf")["uid"] == 0


def test_rm_of_a_mounted_container_is_refused(lfs: Layerfs, container: str) -> None:
    with lfs.mounted(container) as mp:
        proc = lfs.run("rm", container, check=False)
        assert proc.returncode == 4, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("layerfs: error: "), proc.stderr
        assert probe1(lfs, mp, "etc/conf")["data"] == b"conf v1\n", "still mounted and served"
    assert [c["name"] for c in json.loads(lfs.run("ps", "-a", "--json").stdout)] == [container]
    lfs.run("rm", container)


def test_rm_force_of_a_busy_mounted_container(lfs: Layerfs, container: str) -> None:
    """rm -f takes a mounted container down even while a process sits inside the mount
    (as podman rm -f does for a running one): the mount goes, the layer goes, and the
    process inside gets an error instead of a daemon writing into a deleted layer."""
    with lfs.mounted(container) as mp:
        inside = subprocess.Popen(
            lfs.wrap(["sh", "-c", 'cd "$1" && echo inside && exec sleep 60', "sh", str(mp)]),
            env=lfs.env(), stdout=subprocess.PIPE)
        try:
            assert inside.stdout.readline() == b"inside\n"  # type: ignore[union-attr]
            busy = lfs.run("umount", str(mp), check=False)
            assert busy.returncode == 4, busy.stderr
            assert lfs.run("rm", "-f", container).stdout.split() == [container]
            assert str(mp) not in fuse_mounts_under(lfs.workdir)
        finally:
            inside.kill()
            inside.wait()
    assert json.loads(lfs.run("ps", "-a", "--json").stdout) == []
    assert json.loads(lfs.run("mounts", "--json").stdout) == []
    assert not any((lfs.root / "containers").iterdir())


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A system.posix_acl_access value: version 2, then (tag, perm, id) entries."""
    return (2).to_bytes(4, "little") + b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + uid.to_bytes(4, "little")
        for tag, perm, uid in entries)


_SET_ACL = r"""
import os, stat, sys
path, value = sys.argv[1], bytes.fromhex(sys.argv[2])
os.setxattr(path, "system.posix_acl_access", value)
print(oct(stat.S_IMODE(os.lstat(path).st_mode)), " ".join(sorted(os.listxattr(path))))
"""


def test_posix_acl_is_stored_as_on_ext4(lfs: Layerfs, container: str) -> None:
    """cp -a and tar --acls set an access ACL on every file; one that only restates the
    mode becomes the mode (no xattr, as ext4 stores it), or every copied file would
    carry an ACL into diff and commit. An extended ACL is kept, with the mask as the
    group bits of the mode."""
    minimal = _acl((0x01, 6, 0xFFFFFFFF), (0x04, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))
    extended = _acl((0x01, 7, 0xFFFFFFFF), (0x02, 6, 1234), (0x04, 4, 0xFFFFFFFF),
                    (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF))
    with lfs.mounted(container) as mp:
        def set_acl(path: str, value: bytes) -> list[str]:
            return lfs.sh([sys.executable, "-c", _SET_ACL, str(mp / path), value.hex()]
                          ).stdout.decode().split()

        # new files, so that the rootless user owns them (the kernel lets only the owner set an ACL)
        assert do(lfs, mp, WriteFile("one", b"1", 0o600), WriteFile("two", b"2", 0o600)) == ["ok"] * 2
        assert set_acl("one", minimal) == ["0o640"]
        assert set_acl("two", extended) == ["0o764", "system.posix_acl_access"]
        assert set_acl("two", minimal) == ["0o640"]
        bad = lfs.sh([sys.executable, "-c", _SET_ACL, str(mp / "one"), "0200"], check=False)
        assert bad.returncode != 0 and b"Invalid argument" in bad.stderr
    assert diff_json(lfs, container) == {"/one": "A", "/two": "A"}
    with lfs.mounted(container) as mp:
        assert probe(lfs, mp, "one", "two") == [
            {**probe1(lfs, mp, name), "mode": 0o640, "xattrs": {}} for name in ("one", "two")]


def test_commit_refuses_a_path_beyond_path_max(lfs: Layerfs, container: str) -> None:
    """The kernel lets a tree grow past PATH_MAX through relative paths; no tar tool could
    unpack such an entry, so commit refuses it in one line and makes no image."""
    with lfs.mounted(container) as mp:
        deep = "import os\nos.chdir(%r)\nfor _ in range(20):\n    os.mkdir('d' * 250)\n    os.chdir('d' * 250)\n" \
               "open('f', 'w').write('deep')\n" % str(mp)
        lfs.sh([sys.executable, "-c", deep])
    done = lfs.run("commit", container, "deep:v1", check=False)
    assert done.returncode == 1 and "PATH_MAX" in done.stderr and done.stderr.count("\n") == 1
    assert "deep:v1" not in lfs.run("images").stdout


@pytest.mark.parametrize("length", [251, 252, 255])
def test_a_long_name_deleted_in_a_container_commits(lfs: Layerfs, length: int) -> None:
    """A lower file named with up to NAME_MAX bytes, deleted in a container: the commit's
    whiteout is longer than NAME_MAX (".wh." + name), and still imports and unpacks."""
    name = "n" * length
    lfs.import_layers([make_layer([file(name, b"long\n"), file("keep", b"k\n")])], "long:v1")
    lfs.run("create", "--name", "lc", "long:v1")
    with lfs.mounted("lc") as mp:
        lfs.sh(["rm", str(mp / name)])
    lfs.run("commit", "lc", "long:v2")
    with lfs.mounted("long:v2") as mp:
        assert lfs.sh(["ls", "-A", str(mp)]).stdout.split() == [b"keep"]
