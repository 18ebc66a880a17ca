"""Runtime mounts inside a rootless user namespace (`layerfs unshare`), as the test user.

With a subordinate range (podman's layout: 0 is the user, 1..65536 its subordinate
ids), the namespace's root makes a runtime mount of a container; processes running
as 0, 33 and 1000 inside get what ext4 would give each of them; owners are the ids
as seen inside, after a remount and in the committed image (umoci shows them too).
With a single-id map, other owners show as the overflow id and cannot be written,
and nothing is corrupted.

Each scenario is one shell script run inside `layerfs unshare`, printing one line
per check ("label: ok" or "label: <error>"); the test compares the lines.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import LAYERFS_BIN
from layerfs.union.mounts import daemon_alive
from tests.support.differential import umoci_tree
from tests.support.oci import directory, file, make_layer
from tests.support.snapshot import snapshot_as

if TYPE_CHECKING:
    from conftest import Layerfs

IMAGE = "ns:latest"

# Runs a command as uid:gid inside the namespace and prints "LABEL: ok" or the error.
PRELUDE = r"""
set -u
check() { label="$1"; shift; if out=$("$@" 2>&1); then echo "$label: ok"; else echo "$label: ${out##*: }"; fi; }
as() { ids="$1"; shift; setpriv --reuid="${ids%:*}" --regid="${ids#*:}" --clear-groups "$@"; }
"""


def image_layers() -> list[bytes]:
    return [make_layer([
        directory("srv"),
        directory("srv/www", mode=0o750, uid=33, gid=33),
        file("srv/www/index.html", b"<h1>hi</h1>\n", mode=0o640, uid=33, gid=33),
        directory("home"),
        directory("home/user", mode=0o700, uid=1000, gid=1000),
        file("home/user/notes", b"mine\n", mode=0o600, uid=1000, gid=1000),
        directory("tmp", mode=0o1777),
        file("etc-file", b"root's\n", mode=0o644),
        file("pub-33", b"33's, readable by all\n", mode=0o644, uid=33, gid=33),
    ])]


@pytest.fixture
def container(lfs_user: Layerfs) -> Layerfs:
    lfs_user.import_layers(image_layers(), IMAGE)
    lfs_user.run("create", "--name", "c1", IMAGE)
    return lfs_user


def unshare(lfs: Layerfs, script: str, *options: str) -> list[str]:
    """Run `script` (sh) as root of the user's namespace, with `L` for this store's
    layerfs and `$M` an empty mount point; its output lines."""
    mountpoint = lfs.workdir / "mnt"
    if not mountpoint.exists():
        lfs.mkdir("mnt")
    layerfs = f"{LAYERFS_BIN} --root {lfs.root}"
    proc = lfs.run("unshare", *options, "sh", "-c",
                   PRELUDE + f'L() {{ {layerfs} "$@"; }}\nM={mountpoint}\n' + script)
    return proc.stdout.splitlines()


def test_users_inside_get_what_ext4_gives_them(container: Layerfs) -> None:
    lines = unshare(container, r"""
L mount c1 "$M" >/dev/null
L mounts --json | grep -q '"kind": "runtime"' && echo "listed as runtime: ok"
stat -c 'owners: %u:%g %n' "$M/srv/www/index.html" "$M/home/user/notes"
check "33 reads its page" as 33:33 cat "$M/srv/www/index.html"
check "1000 reads the page" as 1000:1000 cat "$M/srv/www/index.html"
check "33 writes its page" as 33:33 sh -c "echo more >> '$M/srv/www/index.html'"
check "33 creates in its dir" as 33:33 touch "$M/srv/www/new"
check "1000 creates in 33's dir" as 1000:1000 touch "$M/srv/www/x"
check "1000 reads its notes" as 1000:1000 cat "$M/home/user/notes"
check "33 reads 1000's notes" as 33:33 cat "$M/home/user/notes"
check "0 reads 1000's notes" cat "$M/home/user/notes"
check "1000 chowns to 33" as 1000:1000 chown 33 "$M/home/user/notes"
check "0 chowns to 33" chown 33:33 "$M/etc-file"
as 1000:1000 touch "$M/tmp/t"
check "33 deletes 1000's file in /tmp" as 33:33 rm -f "$M/tmp/t"
check "1000 writes root's file" as 1000:1000 sh -c "echo x >> '$M/etc-file'"
cp /usr/bin/id "$M/suid-id" && chmod 4755 "$M/suid-id"
echo "1000 runs a setuid-root id: euid $(as 1000:1000 "$M/suid-id" -u)"
stat -c 'setuid bit: %A' "$M/suid-id"
L umount "$M"
L mount c1 "$M" >/dev/null
stat -c 'after remount: %u:%g %n' "$M/srv/www/new" "$M/etc-file" "$M/srv/www/index.html"
""")
    mp = container.workdir / "mnt"
    assert lines == [
        "listed as runtime: ok",
        f"owners: 33:33 {mp}/srv/www/index.html",
        f"owners: 1000:1000 {mp}/home/user/notes",
        "33 reads its page: ok",
        "1000 reads the page: Permission denied",
        "33 writes its page: ok",
        "33 creates in its dir: ok",
        "1000 creates in 33's dir: Permission denied",
        "1000 reads its notes: ok",
        "33 reads 1000's notes: Permission denied",
        "0 reads 1000's notes: ok",
        "1000 chowns to 33: Operation not permitted",
        "0 chowns to 33: ok",
        "33 deletes 1000's file in /tmp: Operation not permitted",
        "1000 writes root's file: Permission denied",
        "1000 runs a setuid-root id: euid 0",
        "setuid bit: -rwsr-xr-x",
        f"after remount: 33:33 {mp}/srv/www/new",
        f"after remount: 33:33 {mp}/etc-file",
        f"after remount: 33:33 {mp}/srv/www/index.html",
    ], "\n".join(lines)


def test_commit_writes_the_ids_seen_inside(container: Layerfs) -> None:
    """Owners recorded inside are the image's ids, not host (subordinate) ids."""
    unshare(container, r"""
L mount c1 "$M" >/dev/null
as 33:33 touch "$M/srv/www/made-by-33"
chown 1000:1000 "$M/etc-file"
mkdir "$M/by-root"
L umount "$M"
""")
    entries = {e["path"]: e["kind"] for e in json.loads(container.run("diff", "c1", "--json").stdout)}
    assert entries == {"/srv/www/made-by-33": "added", "/etc-file": "modified", "/by-root": "added"}
    container.run("commit", "c1", "ns:committed")
    with container.mounted("ns:committed") as mp:
        tree = snapshot_as(container, mp)
    assert (tree["/srv/www/made-by-33"].uid, tree["/srv/www/made-by-33"].gid) == (33, 33)
    assert (tree["/etc-file"].uid, tree["/by-root"].uid) == (1000, 0)
    unpacked = umoci_tree(container, "ns:committed", container.workdir / "umoci")
    assert (unpacked["/srv/www/made-by-33"].uid, unpacked["/etc-file"].uid, unpacked["/by-root"].uid) == (33, 1000, 0)


def test_single_id_map_shows_overflow_ids_and_corrupts_nothing(container: Layerfs) -> None:
    lines = unshare(container, r"""
L mount c1 "$M" >/dev/null
stat -c 'owners: %u:%g %n' "$M/srv/www" "$M/pub-33" "$M/etc-file"
check "root reads a file of an unmapped owner" cat "$M/pub-33"
check "root writes a file of an unmapped owner" sh -c "echo x >> '$M/pub-33'"
check "root chowns a file of an unmapped owner" chown 0 "$M/pub-33"
check "root enters a private directory of an unmapped owner" ls "$M/srv/www"
check "root creates in /tmp" touch "$M/tmp/new"
check "root writes its own file" sh -c "echo x >> '$M/etc-file'"
L umount "$M"
""", "--single-id")
    mp = container.workdir / "mnt"
    assert lines == [
        f"owners: 65534:65534 {mp}/srv/www",
        f"owners: 65534:65534 {mp}/pub-33",
        f"owners: 0:0 {mp}/etc-file",
        "root reads a file of an unmapped owner: ok",
        "root writes a file of an unmapped owner: Permission denied",
        # the kernel's answer for an inode whose owner the namespace cannot name
        "root chowns a file of an unmapped owner: Value too large for defined data type",
        "root enters a private directory of an unmapped owner: Permission denied",
        "root creates in /tmp: ok",
        "root writes its own file: ok",
    ], "\n".join(lines)
    # Nothing the namespace could not see was touched; what root made is root's.
    with container.mounted("c1") as mp:
        tree = snapshot_as(container, mp)
    assert (tree["/pub-33"].uid, tree["/pub-33"].gid, tree["/pub-33"].size) == (33, 33, 22)
    assert (tree["/tmp/new"].uid, tree["/tmp/new"].gid) == (0, 0)


def test_unshare_says_what_it_does(lfs_user: Layerfs) -> None:
    """Exit status of the command, 127 for a missing one; the map of podman's layout."""
    assert lfs_user.run("unshare", "sh", "-c", "exit 7", check=False).returncode == 7
    missing = lfs_user.run("unshare", "no-such-command", check=False)
    assert missing.returncode == 127 and "command not found" in missing.stderr
    start, count = _subordinate_range(lfs_user)
    inside = lfs_user.run("unshare", "--", "cat", "/proc/self/uid_map").stdout.split()
    assert inside == ["0", str(_uid(lfs_user)), "1", "1", str(start), str(count)]
    single = lfs_user.run("unshare", "--single-id", "cat", "/proc/self/uid_map").stdout.split()
    assert single == ["0", str(_uid(lfs_user)), "1"]


def _subordinate_range(lfs: Layerfs) -> tuple[int, int]:
    """The test user's range in /etc/subuid (scripts/test adds one)."""
    with open("/etc/subuid") as f:
        for line in f:
            name, start, count = line.strip().split(":")
            if name == lfs.user:
                return int(start), int(count)
    raise AssertionError(f"{lfs.user} has no range in /etc/subuid: run scripts/test")


def _uid(lfs: Layerfs) -> int:
    return pwd.getpwnam(lfs.user).pw_uid  # type: ignore[arg-type]


def test_root_is_told_to_run_the_command_directly(lfs_root: Layerfs) -> None:
    done = lfs_root.run("unshare", "true", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1


def test_the_host_sees_a_namespace_mount_and_leaves_it_alone(container: Layerfs) -> None:
    """While a session lives, the host lists its mount, refuses to unmount it there, and
    `rm -f` stops its daemon in its own namespace."""
    mountpoint = container.workdir / "mnt"
    container.mkdir("mnt")
    session = subprocess.Popen(container.wrap([LAYERFS_BIN, "--root", str(container.root), "unshare", "sh", "-c",
                                              f"{LAYERFS_BIN} --root {container.root} mount c1 {mountpoint} >/dev/null "
                                              "&& echo up && exec sleep 30"]),
                               stdout=subprocess.PIPE, env=container.env(), text=True, start_new_session=True)
    try:
        assert session.stdout.readline().strip() == "up"  # type: ignore[union-attr]
        listed = container.run("mounts").stdout
        assert f"{mountpoint} (in another mount namespace)" in listed and "runtime" in listed
        refused = container.run("umount", str(mountpoint), check=False)
        assert refused.returncode == 3 and "another mount namespace" in refused.stderr
        container.run("rm", "-f", "c1")
        assert json.loads(container.run("mounts", "--json").stdout) == []
    finally:
        os.killpg(session.pid, signal.SIGKILL)
        session.wait()


def test_a_killed_session_leaves_a_mount_the_host_can_stop(container: Layerfs) -> None:
    """`unshare` killed with SIGKILL cannot detach its mounts; once nothing but their
    daemons is left in the namespace, the host's `umount` stops them."""
    mountpoint = container.workdir / "mnt"
    container.mkdir("mnt")
    session = subprocess.Popen(container.wrap([LAYERFS_BIN, "--root", str(container.root), "unshare", "sh", "-c",
                                              f"{LAYERFS_BIN} --root {container.root} mount c1 {mountpoint} >/dev/null "
                                              "&& echo up && sleep 1"]),
                               stdout=subprocess.PIPE, env=container.env(), text=True)
    assert session.stdout.readline().strip() == "up"  # type: ignore[union-attr]
    unshare_pid = _unshare_process(session.pid)
    os.kill(unshare_pid, signal.SIGKILL)
    session.wait()
    time.sleep(1.5)  # the orphaned shell finishes its sleep: only the daemon is left in there
    [record] = json.loads(container.run("mounts", "--json").stdout)
    container.run("umount", str(mountpoint))
    assert not daemon_alive(record["pid"]) and json.loads(container.run("mounts", "--json").stdout) == []


def _unshare_process(pid: int) -> int:
    """The `layerfs unshare` process: `pid` itself, or the child runuser started."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return next((c for c in children if Path(f"/proc/{c}/cmdline").read_bytes().startswith(
        os.fsencode(sys.executable))), pid)


def test_mounts_of_a_namespace_are_gone_with_it(container: Layerfs) -> None:
    """When the session ends, its mounts are detached and their daemons stopped."""
    lines = unshare(container, 'L mount c1 "$M" >/dev/null\nL mounts --json\n')
    pids = [entry["pid"] for entry in json.loads("\n".join(lines))]
    assert len(pids) == 1
    assert json.loads(container.run("mounts", "--json").stdout) == []
    assert not daemon_alive(pids[0])  # a zombie waiting for the host's init to reap it is done
