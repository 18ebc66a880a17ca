"""A mounted container under faults and at the edges: a killed daemon, a full disk,
hostile names, a huge directory, shared memory maps. Root and rootless, real mounts.

tests/test_container_mount.py names the everyday overlay behaviours; this file is
about what must hold when things go wrong or get large:

- the FUSE daemon is SIGKILLed while a program writes: everything that program saw
  fsync'd is there after umount and mount, a lower file being copied up is either
  untouched or complete, and the writable layer holds no leftovers;
- the disk of the writable layer fills up during a copy-up (or a write): the caller
  gets ENOSPC, the file keeps its old content and the mount keeps serving;
- names are bytes (newlines, invalid UTF-8, tabs, leading dashes) from the mount
  through the journal, `diff` and `commit` into a new image;
- one directory holds 100,000 entries (LAYERFS_SKIP_SLOW=1 skips it);
- MAP_SHARED writes reach the file, and a memory map never shows stale data.

Everything inside a mount runs as the identity that mounted (a rootless mount is
invisible to root), through small `python -c` scripts that need only the standard
library. The test itself (root) reads the container's writable layer directly, and
kills the daemon, whose pid `layerfs mounts --json` gives.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.fsops import Append, Mkdir, Unlink, WriteFile
from tests.support.oci import file, make_layer, write_oci_layout
from tests.support.snapshot import assert_same_tree, snapshot_as
from tests.test_container_mount import diff_json, do, image_layers, probe1

from conftest import LAYERFS_BIN

if TYPE_CHECKING:
    from conftest import Layerfs

IMAGE = "faults:1"
# A lower file big enough that its copy-up takes a while (and overflows a 1 MiB disk).
BIG = random.Random(20240601).randbytes(4 << 20)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
APPENDED = b"appended by the writer\n"
SKIP_SLOW = pytest.mark.skipif(os.environ.get("LAYERFS_SKIP_SLOW") == "1",
                               reason="LAYERFS_SKIP_SLOW=1")


@functools.lru_cache(maxsize=1)
def layers() -> tuple[bytes, ...]:
    """The two layers of tests.test_container_mount plus one holding `big`."""
    return (*image_layers(), make_layer([file("big", BIG, mode=0o644)]))


@dataclass
class Box:
    """A container made from IMAGE: its name and its writable layer on disk."""

    name: str
    id: str
    upper: Path


def make_box(lfs: Layerfs, name: str = "box") -> Box:
    source = lfs.workdir / "src"
    write_oci_layout(source, list(layers()))
    lfs.give(source)
    lfs.run("import", f"oci:{source}", IMAGE, "-q")
    container_id = lfs.run("create", "--name", name, IMAGE).stdout.strip()
    upper = lfs.root / "containers" / container_id / "upper"
    assert upper.is_dir(), f"no writable layer at {upper}"
    return Box(name, container_id, upper)


# ---------------------------------------------------------------------------
# Helpers


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.005) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def process_running(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaps does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def daemon_pid(lfs: Layerfs, mountpoint: Path) -> int:
    """The pid of the daemon serving `mountpoint`, from `layerfs mounts --json`."""
    records = json.loads(lfs.run("mounts", "--json").stdout)
    pids = [r["pid"] for r in records if r["mountpoint"] == str(mountpoint)]
    assert len(pids) == 1, f"no single mount record for {mountpoint}: {records}"
    return pids[0]


def mount_at(lfs: Layerfs, ref: str) -> Path:
    mountpoint = lfs.mkdir(f"mnt-{uuid.uuid4().hex[:8]}")
    lfs.run("mount", ref, str(mountpoint))
    return mountpoint


def listing(path: Path) -> set[str]:
    return set(os.listdir(path)) if path.is_dir() else set()


def layerfs_bytes(lfs: Layerfs, *args: str) -> bytes:
    """`layerfs --root STORE ARGS...` as the identity; stdout as raw bytes."""
    return lfs.sh([LAYERFS_BIN, "--root", str(lfs.root), *args]).stdout


def run_py(lfs: Layerfs, script: str, *args: str, input: bytes | None = None,
           timeout: float = 300) -> Any:
    """Run a `python -c` script as the identity; its stdout parsed as JSON."""
    proc = lfs.sh([sys.executable, "-c", script, *args], input=input, timeout=timeout)
    return json.loads(proc.stdout)


_SCAN = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        full = os.path.join(dirpath, name)
        st = os.lstat(full)
        info = {"ino": st.st_ino, "size": st.st_size,
                "type": "dir" if stat.S_ISDIR(st.st_mode) else
                        "file" if stat.S_ISREG(st.st_mode) else "other"}
        if stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                info["sha256"] = hashlib.sha256(f.read()).hexdigest()
        out[os.path.relpath(full, root)] = info
print(json.dumps(out))
"""


def scan(lfs: Layerfs, mountpoint: Path) -> dict[str, dict[str, Any]]:
    """Every path below the mount (relative) -> type, st_ino, size, sha256 of files."""
    return run_py(lfs, _SCAN, str(mountpoint))


_SHA = r"""
import hashlib, json, sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
print(json.dumps([len(data), hashlib.sha256(data).hexdigest()]))
"""


def digest(lfs: Layerfs, path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, read with read(2) by a fresh process as the identity."""
    size, sha = run_py(lfs, _SHA, str(path))
    return size, sha


def sha(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# 1. The daemon killed under write load


_WRITER = r"""
import errno, hashlib, os, sys
mp, log, big, appended = sys.argv[1], sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

def note(*words):
    os.write(logfd, (" ".join(words) + "\n").encode())
    os.fsync(logfd)

def put(path, data):
    fd = os.open(os.path.join(mp, path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)

def content(name, i):
    return (name + "\n").encode() * (1 + (i * 37) % 3000)

def put_noted(path, i):
    data = content(path, i)
    put(path, data)
    note("file", path, str(len(data)), hashlib.sha256(data).hexdigest())
    return data

note("start")
i = 0
try:
    while True:
        put_noted(f"w{i}", i)
        if i == 5:  # append to the big lower file: a copy-up of a few MiB
            note("appending", big)
            fd = os.open(os.path.join(mp, big), os.O_WRONLY | os.O_APPEND)
            os.write(fd, appended)
            os.fsync(fd)
            os.close(fd)
            note("appended", big)
        if i % 3 == 0:  # write a temporary name, rename into place
            data = content(f"r{i}", i)
            put(f"t{i}", data)
            os.rename(os.path.join(mp, f"t{i}"), os.path.join(mp, f"r{i}"))
            note("file", f"r{i}", str(len(data)), hashlib.sha256(data).hexdigest())
        if i % 5 == 0:
            os.mkdir(os.path.join(mp, f"d{i}"))
            note("dir", f"d{i}")
            put_noted(f"d{i}/inner", i)
        if i % 7 == 6:
            os.unlink(os.path.join(mp, f"w{i - 1}"))
            note("gone", f"w{i - 1}")
        if i % 11 == 10:  # replace a file by renaming over it: its old data must go
            data = content("over", i)
            put(f"o{i}", data)
            os.rename(os.path.join(mp, f"o{i}"), os.path.join(mp, "over"))
            note("file", "over", str(len(data)), hashlib.sha256(data).hexdigest())
        i += 1
except OSError as e:
    note("error", errno.errorcode.get(e.errno, str(e.errno)))
    sys.exit(3)
"""


def read_log(path: Path) -> list[list[str]]:
    """The writer's progress log, one list of words per complete line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.split("\n")[:-1]]


def expected_from_log(lines: list[list[str]]) -> tuple[dict[str, tuple[int, str]], set[str],
                                                        set[str], bool]:
    """(files that must exist -> (size, sha256), directories, names that must be gone,
    whether the append to `big` completed), replaying the log in order."""
    present: dict[str, tuple[int, str]] = {}
    dirs: set[str] = set()
    gone: set[str] = set()
    appended = False
    for words in lines:
        if words[0] == "file":
            present[words[1]] = (int(words[2]), words[3])
            gone.discard(words[1])
        elif words[0] == "dir":
            dirs.add(words[1])
        elif words[0] == "gone":
            present.pop(words[1], None)
            gone.add(words[1])
        elif words[0] == "appended":
            appended = True
    return present, dirs, gone, appended


def wait_for_moment(moment: str, log: Path, work: Path, writer: subprocess.Popen[bytes]) -> str:
    """Block until the writer reaches `moment`; describe where it was."""
    def writer_alive() -> None:
        if writer.poll() is not None:
            _, err = writer.communicate()
            raise AssertionError(f"the writer stopped on its own ({writer.returncode}): "
                                 f"{err.decode(errors='replace')} log: {read_log(log)[-3:]}")

    def count(kind: str) -> int:
        writer_alive()
        return sum(1 for words in read_log(log) if words[0] == kind)

    if moment == "copy-up":
        # A copy-up is staged in work/, then renamed into files/; nothing else uses
        # work/, so the first entry there is the big file's copy in progress: kill then.
        # (A busy poll: the window lasts about a millisecond.)
        deadline = time.monotonic() + 30
        spins = 0
        while not os.listdir(work):
            spins += 1
            if spins % 5000 == 0:
                if count("appended"):
                    return "copy-up already finished (missed the staging window)"
                if time.monotonic() > deadline:
                    raise AssertionError("no copy-up seen in work/ within 30 s")
        return "copy-up staged in work/"
    if moment == "early":
        wait_until(lambda: count("file") >= 20, 30, "20 files")
        return "after 20 files"
    started = time.monotonic()
    wait_until(lambda: count("file") >= 1000 or time.monotonic() - started > 1.0, 60,
               "1 s of writing")
    return f"after {count('file')} files"


@pytest.mark.parametrize("moment", ["copy-up", "early", "late"])
def test_daemon_killed_under_write_load(lfs: Layerfs, moment: str) -> None:
    """SIGKILL of the daemon while a program creates, fsyncs, renames, deletes and copies
    up (an OOM kill, a crash). The program must get an error, not hang; `layerfs umount`
    must clear the dead mount; after mounting again every change the program saw
    fsync'd is there in full, the big lower file is old or old+appended (never cut),
    the writable layer has no data for names that do not exist and an empty work/,
    and `diff` agrees with what the mount shows."""
    box = make_box(lfs)
    log = lfs.workdir / f"progress-{moment}.log"
    mp = mount_at(lfs, box.name)
    writer: subprocess.Popen[bytes] | None = None
    all_cpus = os.sched_getaffinity(0)
    try:
        base_root = set(probe1(lfs, mp, "")["entries"])
        pid = daemon_pid(lfs, mp)
        assert process_running(pid)
        if moment == "copy-up" and len(os.sched_getaffinity(0)) > 1:
            # The daemon copies on one CPU, the test polls on another (see wait_for_moment).
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(pid, {cpus[-1]})
            os.sched_setaffinity(0, set(cpus[:-1]))
        writer = subprocess.Popen(
            lfs.wrap([sys.executable, "-c", _WRITER, str(mp), str(log), "big", APPENDED.hex()]),
            env=lfs.env(), cwd=lfs.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        where = wait_for_moment(moment, log, box.upper / "work", writer)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_running(pid), 10, f"daemon {pid} to die")
        staged_at_kill = sorted(listing(box.upper / "work"))

        try:
            _, err = writer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.communicate()
            raise AssertionError("the writer hung on the dead mount instead of failing") from None
        last = read_log(log)[-1]
        assert writer.returncode == 3 and last[0] == "error", \
            (writer.returncode, last, err.decode(errors="replace"))
        assert last[1] in ("ENOTCONN", "ECONNABORTED"), f"the writer saw {last}"
        dead = lfs.sh(["stat", str(mp)], check=False)
        assert dead.returncode != 0 and b"not connected" in dead.stderr, dead.stderr

        gone_mount = lfs.run("umount", str(mp), check=False)
        assert gone_mount.returncode == 0, \
            f"`layerfs umount` of a dead daemon's mount failed: {gone_mount.stderr}"
        assert str(mp) not in (line.split()[4] for line in Path("/proc/self/mountinfo")
                               .read_text().splitlines())
        assert json.loads(lfs.run("mounts", "--json").stdout) == [], "a stale mount record"
    finally:
        os.sched_setaffinity(0, all_cpus)
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.communicate()

    present, dirs, gone, appended = expected_from_log(read_log(log))
    print(f"[{lfs.user or 'root'} {moment}] killed {where}; work/ then held {staged_at_kill}; "
          f"{len(present)} files logged, big appended: {appended}")
    assert len(present) >= 6 or moment == "copy-up", "the writer barely started"

    with lfs.mounted(box.name) as mp2:
        tree = scan(lfs, mp2)
        work_after = listing(box.upper / "work")
        data_files = listing(box.upper / "files")
        # the mount is usable again
        assert do(lfs, mp2, WriteFile("after-crash", b"alive\n")) == ["ok"]
        assert probe1(lfs, mp2, "after-crash")["data"] == b"alive\n"
        assert do(lfs, mp2, Unlink("after-crash")) == ["ok"]

    lost = {p: want for p, want in present.items()
            if p not in tree or (tree[p].get("size"), tree[p].get("sha256")) != want}
    assert not lost, "fsync'd files lost or damaged: " + \
        ", ".join(f"{p}: want {w}, got {tree.get(p)}" for p, w in sorted(lost.items())[:10])
    assert not [d for d in dirs if tree.get(d, {}).get("type") != "dir"], "directories lost"
    assert not [p for p in gone if p in tree], "deleted names came back"

    big = tree["big"]
    states = {sha(BIG): "original", sha(BIG + APPENDED): "appended"}
    state = states.get((big["size"], big["sha256"]))
    assert state is not None, f"big is damaged: {big['size']} bytes (the original has {len(BIG)})"
    if appended:
        assert state == "appended", "an fsync'd append to a copied-up file was lost"

    assert work_after == set(), f"work/ not cleaned at mount: {work_after}"
    inodes = {str(info["ino"]) for info in tree.values() if info["type"] == "file"}
    stray = data_files - inodes
    assert not stray, f"files/ holds data of no existing file: {sorted(stray)[:10]}"
    missing = {p for p in present if str(tree[p]["ino"]) not in data_files}
    assert not missing, f"created files without a data file in files/: {sorted(missing)[:10]}"
    served = {str(info["ino"]): info["sha256"] for info in tree.values() if info["type"] == "file"}
    unlike = [name for name in data_files if served[name] !=
              hashlib.sha256((box.upper / "files" / name).read_bytes()).hexdigest()]
    assert not unlike, f"files/ data differs from what the mount serves: {unlike[:10]}"

    changes = diff_json(lfs, box.name)
    top_added = {p for p, kind in changes.items() if kind == "A" and p.count("/") == 1}
    shown = {"/" + p for p in tree if "/" not in p} - {"/" + n for n in base_root}
    assert top_added == shown, (sorted(top_added ^ shown)[:10], "diff disagrees with the mount")
    for p in present:
        assert changes.get("/" + p) == "A" or changes.get("/" + p.split("/")[0]) == "A", p
    if state == "appended":
        assert changes.get("/big") == "C"


# ---------------------------------------------------------------------------
# 2. A full disk


@contextmanager
def small_disk_at(path: Path, size: str) -> Iterator[None]:
    """Put `path` on a tmpfs of `size` (its contents copied over) for the duration."""
    saved = Path(tempfile.mkdtemp(prefix="upper-saved-", dir="/tmp"))
    try:
        shutil.copytree(path, saved, symlinks=True, dirs_exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(path)], check=True, capture_output=True)
        try:
            shutil.copytree(saved, path, symlinks=True, dirs_exist_ok=True)
            yield
        finally:
            if subprocess.run(["umount", str(path)], check=False, capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
    finally:
        shutil.rmtree(saved, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_full_during_copy_up(lfs_root: Layerfs) -> None:
    """The writable layer's disk (1 MiB) cannot take a copy-up of the 4 MiB lower file.
    The append must fail with ENOSPC (a program can tell a full disk from an I/O
    error: EIO would be a bug), the file keeps its old content, the partial copy is
    removed (or the disk stays full for good), the daemon keeps serving, and after
    umount and mount the tree is the same and `diff` does not list the file."""
    lfs = lfs_root
    box = make_box(lfs)
    with small_disk_at(box.upper, "1m"):
        with lfs.mounted(box.name) as mp:
            pid = daemon_pid(lfs, mp)
            before = probe1(lfs, mp, "big")
            assert before["data"] == BIG
            free_before = free_bytes(box.upper)

            result = do(lfs, mp, Append("big", b"more\n"))
            assert result != ["EIO"], "bug: a full disk during copy-up answers EIO, not ENOSPC"
            assert result == ["ENOSPC"], result
            assert process_running(pid), "the daemon died of a full disk"

            after = probe1(lfs, mp, "big")
            assert after == before, "a failed copy-up changed the file"
            assert listing(box.upper / "work") == set(), "the partial copy was left in work/"
            assert str(before["ino"]) not in listing(box.upper / "files")
            assert free_bytes(box.upper) >= free_before - 64 * 1024, \
                f"space leaked: {free_before} free before, {free_bytes(box.upper)} after"

            small = do(lfs, mp, WriteFile("small", b"small\n"))
            assert small in (["ok"], ["ENOSPC"]), small
            if small == ["ok"]:
                assert probe1(lfs, mp, "small")["data"] == b"small\n"
            assert do(lfs, mp, Mkdir("dir-after")) in (["ok"], ["ENOSPC"])
            assert process_running(pid) and daemon_pid(lfs, mp) == pid
            tree = snapshot_as(lfs, mp)
        with lfs.mounted(box.name) as mp:
            assert_same_tree(tree, snapshot_as(lfs, mp), ("before umount", "mounted again"))
            assert probe1(lfs, mp, "big")["data"] == BIG
        changes = diff_json(lfs, box.name)
    assert "/big" not in changes, changes
    assert changes == {p: "A" for p in ("/small", "/dir-after") if p in tree}


def test_disk_full_while_writing_a_new_file(lfs_root: Layerfs) -> None:
    """(Not a copy-up.) Writing a new file until the 1 MiB disk is full: the write that
    does not fit answers ENOSPC (or a short write first), the daemon survives, what was
    written stays readable, the journal is not corrupted by the changes refused while
    the disk was full, and deleting the file, even on a disk with no byte left, works
    and gives the space back."""
    lfs = lfs_root
    box = make_box(lfs)
    fill = r"""
import errno, json, os, sys
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
written, error = 0, None
chunk = b"\x5a" * 65536
try:
    for _ in range(64):
        written += os.write(fd, chunk)
except OSError as e:
    error = errno.errorcode.get(e.errno, str(e.errno))
finally:
    os.close(fd)
print(json.dumps({"written": written, "error": error}))
"""
    with small_disk_at(box.upper, "1m"):
        with lfs.mounted(box.name) as mp:
            pid = daemon_pid(lfs, mp)
            result = run_py(lfs, fill, str(mp / "fill"))
            assert result["error"] != "EIO", f"bug: a full disk answers EIO: {result}"
            assert result["error"] == "ENOSPC", result
            assert process_running(pid), "the daemon died of a full disk"
            filled = probe1(lfs, mp, "fill")
            assert filled["size"] == result["written"] and \
                filled["data"] == b"\x5a" * result["written"], (filled["size"], result)
            # The journal's last page has some room left: go on until it has none.
            refused = [do(lfs, mp, Mkdir(f"full{i}"))[0] for i in range(100)]
            assert set(refused) <= {"ok", "ENOSPC"}, refused
            assert "ENOSPC" in refused, "the disk never refused a journal record"
            assert process_running(pid)
            # rm of a file must work on a full disk (ext4, tmpfs, overlayfs all allow it),
            # or nothing inside the container can ever free space again.
            assert do(lfs, mp, Unlink("fill")) == ["ok"], \
                "unlink refused on a full disk: its journal record needs space"
            assert free_bytes(box.upper) > 512 * 1024, "the deleted file's space did not come back"
            assert do(lfs, mp, WriteFile("later", b"fits again\n")) == ["ok"]
            tree = snapshot_as(lfs, mp)
        with lfs.mounted(box.name) as mp:
            assert_same_tree(tree, snapshot_as(lfs, mp), ("before umount", "mounted again"))
            assert probe1(lfs, mp, "later")["data"] == b"fits again\n"
        made = {f"/full{i}" for i, r in enumerate(refused) if r == "ok"}
        assert diff_json(lfs, box.name) == {"/later": "A", **{p: "A" for p in made}}


# ---------------------------------------------------------------------------
# 3. Names that are bytes


ODD_NAMES = [b"new\nline", b"\xff\xfe", b"a\tb", b" two  spaces ", b"-rf", b"--", b"caf\xc3\xa9",
             b"\x01\x7f"]
ODD_DIR = b"dir \xff\n"
ODD_INNER = b"-in\nner\xfe"

_NAMES = r"""
import json, os, sys
root = os.fsencode(sys.argv[1])
spec = json.loads(sys.stdin.read())
if spec["make"]:
    for name in map(bytes.fromhex, spec["files"]):
        with open(os.path.join(root, name), "xb") as f:
            f.write(name)
    d = os.path.join(root, bytes.fromhex(spec["dir"]))
    os.mkdir(d)
    inner = bytes.fromhex(spec["inner"])
    with open(os.path.join(d, inner), "xb") as f:
        f.write(inner)
def read(path):
    with open(path, "rb") as f:
        return f.read().hex()
d = os.path.join(root, bytes.fromhex(spec["dir"]))
print(json.dumps({
    "root": sorted(n.hex() for n in os.listdir(root)),
    "dir": sorted(n.hex() for n in os.listdir(d)),
    "data": {n: read(os.path.join(root, bytes.fromhex(n))) for n in spec["files"]},
    "inner": read(os.path.join(d, bytes.fromhex(spec["inner"]))),
}))
"""


def odd_names(lfs: Layerfs, mountpoint: Path, make: bool) -> dict[str, Any]:
    """Create (if `make`) and read back the odd names as the identity; names as bytes."""
    spec = {"make": make, "files": [n.hex() for n in ODD_NAMES], "dir": ODD_DIR.hex(),
            "inner": ODD_INNER.hex()}
    out = run_py(lfs, _NAMES, str(mountpoint), input=json.dumps(spec).encode())
    return {"root": {bytes.fromhex(n) for n in out["root"]},
            "dir": [bytes.fromhex(n) for n in out["dir"]],
            "data": {bytes.fromhex(n): bytes.fromhex(v) for n, v in out["data"].items()},
            "inner": bytes.fromhex(out["inner"])}


def test_names_with_newlines_and_invalid_utf8(lfs: Layerfs) -> None:
    """A name is any bytes but "/" and NUL: newline, tab, 0xff, a leading dash. They
    must come back byte for byte from readdir, after a remount (journal replay), in
    `diff --json` and through `commit` into an image.

    `diff --json` writes each path through os.fsdecode and json.dumps: the output is
    ASCII, a byte that is not UTF-8 is a lone surrogate escape (b"\\xff" -> "\\udcff")
    and os.fsencode(path) gives the exact bytes back. Text `diff` keeps one line per
    change: a name with control characters or bytes that are not UTF-8 is printed in
    double quotes with C escapes, as git does."""
    box = make_box(lfs)
    expected_root_extra = {*ODD_NAMES, ODD_DIR}
    with lfs.mounted(box.name) as mp:
        base_root = {os.fsencode(n) for n in probe1(lfs, mp, "")["entries"]}
        seen = odd_names(lfs, mp, make=True)
    assert seen["root"] == base_root | expected_root_extra
    assert seen["dir"] == [ODD_INNER]
    assert seen["data"] == {n: n for n in ODD_NAMES} and seen["inner"] == ODD_INNER

    with lfs.mounted(box.name) as mp:
        assert odd_names(lfs, mp, make=False) == seen, "names changed across a remount"

    raw = layerfs_bytes(lfs, "diff", box.name, "--json")
    assert raw.isascii(), "diff --json must be ASCII (escapes for everything else)"
    assert b'"/\\udcff\\udcfe"' in raw and b'"/new\\nline"' in raw
    entries = {os.fsencode(e["path"]): e["kind"] for e in json.loads(raw)}
    assert entries == {**{b"/" + n: "added" for n in expected_root_extra},
                       b"/" + ODD_DIR + b"/" + ODD_INNER: "added"}

    text = layerfs_bytes(lfs, "diff", box.name).decode()
    # One line per change: odd names are quoted with C escapes, as git prints paths.
    assert len(text.splitlines()) == len(entries)
    for line in ('A "/new\\nline"', 'A "/\\377\\376"', 'A "/a\\tb"', "A / two  spaces ", "A /-rf",
                 "A /--", "A /caf\u00e9", 'A "/\\001\\177"', 'A "/dir \\377\\n"',
                 'A "/dir \\377\\n/-in\\nner\\376"'):
        assert line in text.splitlines(), line

    lfs.run("commit", box.name, "odd:1", "-m", "odd names")
    with lfs.mounted("odd:1") as mp:
        committed = odd_names(lfs, mp, make=False)
        assert do(lfs, mp, WriteFile("x", b"x")) == ["EROFS"], "an image mounts read-only"
    assert committed == seen, "the committed image lists other names"


# ---------------------------------------------------------------------------
# 4. 100,000 entries in one directory


COUNT = 100_000

_MANY = r"""
import json, os, sys, time
root, count, make = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "make"
d = os.path.join(root, "many")
out = {}
if make:
    t = time.monotonic()
    os.mkdir(d)
    for i in range(count):
        os.close(os.open(f"{d}/f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    out["create_s"] = time.monotonic() - t
t = time.monotonic()
names = os.listdir(d)
out["list_s"] = time.monotonic() - t
out["count"] = len(names)
out["distinct"] = len(set(names))
out["exact"] = set(names) == {f"f{i:06d}" for i in range(count)}
out["stats"] = {}
for i in (0, 1, count // 2, count - 1):
    st = os.stat(f"{d}/f{i:06d}")
    out["stats"][f"f{i:06d}"] = [st.st_size, st.st_mode]
print(json.dumps(out))
"""


@SKIP_SLOW
def test_hundred_thousand_entries_in_one_directory(lfs: Layerfs) -> None:
    """100,000 files in one new directory: readdir returns each name once, after a
    remount (journal replay of 100,000 creates) too, `diff --json` lists them, and
    rm -rf removes them all along with their data files. The timings are printed."""
    box = make_box(lfs)
    timings: dict[str, float] = {}

    def timed(label: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = action()
        timings[label] = round(time.monotonic() - started, 2)
        return result

    def check(found: dict[str, Any]) -> None:
        assert (found["count"], found["distinct"], found["exact"]) == (COUNT, COUNT, True), \
            {k: v for k, v in found.items() if k != "stats"}
        assert all(size == 0 and mode == 0o100644 for size, mode in found["stats"].values()), \
            found["stats"]

    mp = timed("mount (empty journal)", lambda: mount_at(lfs, box.name))
    try:
        made = timed("create+list (script)", lambda: run_py(lfs, _MANY, str(mp), str(COUNT),
                                                            "make", timeout=1800))
        timings["create 100k"] = round(made["create_s"], 2)
        timings["listdir"] = round(made["list_s"], 2)
        check(made)
        timed("umount", lambda: lfs.run("umount", str(mp)))
    finally:
        lfs.run("umount", str(mp), check=False)

    mp = timed("mount (replay 100k creates)", lambda: mount_at(lfs, box.name))
    try:
        again = run_py(lfs, _MANY, str(mp), str(COUNT), "list", timeout=1800)
        timings["listdir after remount"] = round(again["list_s"], 2)
        check(again)
        changes = timed("diff --json", lambda: diff_json(lfs, box.name))
        mine = {p: k for p, k in changes.items() if p == "/many" or p.startswith("/many/")}
        assert len(mine) == COUNT + 1 and set(mine.values()) == {"A"}, len(mine)
        assert mine.keys() == {"/many", *(f"/many/f{i:06d}" for i in range(COUNT))}

        timed("rm -rf", lambda: lfs.sh(["rm", "-rf", str(mp / "many")], timeout=1800))
        assert probe1(lfs, mp, "many") == {"error": "ENOENT"}
        assert "many" not in probe1(lfs, mp, "")["entries"]
        left = listing(box.upper / "files")
        assert len(left) < 10, f"{len(left)} data files left after rm -rf"
        lfs.run("umount", str(mp))
    finally:
        lfs.run("umount", str(mp), check=False)

    with lfs.mounted(box.name) as mp:
        assert probe1(lfs, mp, "many") == {"error": "ENOENT"}
    assert not [p for p in diff_json(lfs, box.name) if p.startswith("/many")]
    print(f"[{lfs.user or 'root'}] timings (s): {timings}")


# ---------------------------------------------------------------------------
# 5. Shared memory maps


_MMAP_WRITE = r"""
import mmap, os, sys
path, size = sys.argv[1], int(sys.argv[2])
patches = [(int(off), bytes.fromhex(data)) for off, data in
           (item.split(":") for item in sys.argv[3:])]
fd = os.open(path, os.O_RDWR | (os.O_CREAT if size >= 0 else 0), 0o644)
if size >= 0:
    os.ftruncate(fd, size)
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for off, data in patches:
    m[off:off + len(data)] = data
m.flush()  # msync(MS_SYNC)
m.close()
os.close(fd)
print("null")
"""

_MMAP_WATCH = r"""
import json, mmap, os, subprocess, sys
path, new = sys.argv[1], bytes.fromhex(sys.argv[2])
def mapped(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            return m[:]
    finally:
        os.close(fd)
fd = os.open(path, os.O_RDONLY)
held = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
before = held[:]
# another process overwrites the file in place with write(2)
subprocess.run([sys.executable, "-c",
                "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); "
                "os.write(fd, bytes.fromhex(sys.argv[2])); os.close(fd)", path, new.hex()],
               check=True)
print(json.dumps({"before": before.hex(), "held": held[:].hex(), "fresh": mapped(path).hex()}))
held.close()
os.close(fd)
"""

_MMAP_READ = r"""
import json, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ) as m:
    print(json.dumps(m[:].hex()))
os.close(fd)
"""


def patched(data: bytes, patches: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(data)
    for off, chunk in patches:
        out[off:off + len(chunk)] = chunk
    return bytes(out)


def mmap_write(lfs: Layerfs, path: Path, patches: list[tuple[int, bytes]], size: int = -1) -> None:
    """Map `path` MAP_SHARED as the identity (created and ftruncate'd to `size` if
    size >= 0), write the patches, msync, close."""
    run_py(lfs, _MMAP_WRITE, str(path), str(size), *(f"{o}:{d.hex()}" for o, d in patches))


def test_mmap_shared_write(lfs: Layerfs) -> None:
    """Programs (databases, linkers, package managers) write files through MAP_SHARED
    maps: writes into a map of a lower file (a copy-up at open) and of a new file
    extended with ftruncate must reach the file, be read by the next process and
    survive a remount. And a map of a file another process just changed with write(2)
    (a file whose lower content was already mapped and cached) must show new data."""
    box = make_box(lfs)
    big_patches = [((2 << 20) - 5, b"\xab" * 64), (123457, b"middle of the file"),
                   (len(BIG) - 3, b"end")]
    new_size = 3 * 4096 + 100
    new_patches = [(5000, b"pattern" * 100), (new_size - 4, b"last")]
    big_expected = patched(BIG, big_patches)
    new_expected = patched(bytes(new_size), new_patches)
    with lfs.mounted(box.name) as mp:
        assert digest(lfs, mp / "big") == (len(BIG), BIG_SHA)  # the lower data, now cached
        mmap_write(lfs, mp / "big", big_patches)
        assert digest(lfs, mp / "big") == sha(big_expected), "read(2) misses the mmap write"

        mmap_write(lfs, mp / "mm-new", new_patches, size=new_size)
        assert digest(lfs, mp / "mm-new") == sha(new_expected)
        assert bytes.fromhex(run_py(lfs, _MMAP_READ, str(mp / "mm-new"))) == new_expected

        # A map of a lower file, held while another process writes it.
        seen = run_py(lfs, _MMAP_WATCH, str(mp / "etc/other"), b"OTHER\n".hex())
        assert bytes.fromhex(seen["before"]) == b"other\n"
        assert bytes.fromhex(seen["fresh"]) == b"OTHER\n", "a new map shows stale data"
        assert bytes.fromhex(seen["held"]) == b"OTHER\n", "a held MAP_SHARED map went stale"

        # Lower data mapped (and cached) by one process, rewritten to another size by
        # a second, mapped again by a third.
        assert bytes.fromhex(run_py(lfs, _MMAP_READ, str(mp / "tree/top"))) == b"top\n"
        assert do(lfs, mp, WriteFile("tree/top", b"top, rewritten longer\n")) == ["ok"]
        assert bytes.fromhex(run_py(lfs, _MMAP_READ, str(mp / "tree/top"))) == \
            b"top, rewritten longer\n"

    with lfs.mounted(box.name) as mp:
        assert digest(lfs, mp / "big") == sha(big_expected)
        assert digest(lfs, mp / "mm-new") == sha(new_expected)
        assert probe1(lfs, mp, "etc/other")["data"] == b"OTHER\n"
        assert bytes.fromhex(run_py(lfs, _MMAP_READ, str(mp / "tree/top"))) == \
            b"top, rewritten longer\n"
    changes = diff_json(lfs, box.name)
    assert (changes.get("/big"), changes.get("/mm-new"), changes.get("/etc/other")) == \
        ("C", "A", "C"), changes
