"""The write workloads: what a container does to its own tree, on a fresh writable layer.

Each timed run gets its own new writable layer (writable.py), mounted read-write,
because every workload changes the tree it runs on. Caches: the image's data is
kept warm (the first repetition on each filesystem is preceded by one untimed
run of the same workload, and nothing drops caches), while the mount itself is
new, as for a container that has just started. Dirty data from earlier runs is
written back (`sync`) before each timed command, so one run's writeback does not
land in the next one's time. Only the workload command is timed: creating,
mounting, checking, unmounting and removing the layer are not. Every run is
checked afterwards (untimed), so that a filesystem cannot look fast by doing
less than asked.
"""

from __future__ import annotations

import io
import os
import random
import shlex
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from .filesystems import Filesystem
from .imagebuild import BIG_FILE, BIG_SIZE, CachePaths
from .model import Env, Metric, Runner
from .util import BenchError, log, run, timed
from .writable import WritableLayer, fresh_layer

CP_SOURCE = "usr/lib/python3.11"  # ~1.2k entries, 27 MB in the bench image
RMRF_TARGETS = ("usr/share", "usr/lib/python3.11")  # large lower dirs
UNTAR_DIRS, UNTAR_SUBDIRS, UNTAR_FILES_PER_DIR = 20, 25, 40  # 20,000 files
UNTAR_FILES = UNTAR_DIRS * UNTAR_SUBDIRS * UNTAR_FILES_PER_DIR
UNTAR_FILE_SIZE = 1024
SMALL_FILES = 10_000
COMMIT_FILES, COMMIT_FILE_MIB = 5, 100  # 500 MiB written before the commit

WRITE_METRICS = [
    Metric("cp", f"cp -a {CP_SOURCE} (1.2k entries, 27 MB)", "s", "cp"),
    Metric("rmrf", "rm -rf " + " ".join(RMRF_TARGETS), "s", "rmrf"),
    Metric("append", "append 1 byte to 1 GiB lower file + fsync", "s", "append"),
    Metric("untar", f"untar {UNTAR_FILES // 1000}k files of 1 KiB", "s", "untar"),
    Metric("smallfiles", f"create+write+delete {SMALL_FILES // 1000}k 1 KiB files", "s", "smallfiles"),
    Metric("commit", f"commit {COMMIT_FILES * COMMIT_FILE_MIB} MiB upper (peers: tar|sha256)", "s", "commit"),
]
WRITE_GROUPS = [m.group for m in WRITE_METRICS]


# ---------------------------------------------------------------- inputs built once


def untar_tarball(paths: CachePaths) -> Path:
    return paths.inputs / f"untar-{UNTAR_FILES}.tar"


def commit_source(paths: CachePaths) -> Path:
    return paths.inputs / f"random-{COMMIT_FILE_MIB}M.bin"


def _build_untar_tarball(out: Path) -> None:
    """20k files of 1 KiB in 20 x 25 nested dirs, root-owned, random contents
    (seeded, so the tarball is the same every time it is rebuilt)."""
    rng = random.Random(20_000)

    def add_dir(tar: tarfile.TarFile, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
        tar.addfile(info)

    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in range(UNTAR_DIRS):
            add_dir(tar, f"d{d:02d}")
            for s in range(UNTAR_SUBDIRS):
                sub = f"d{d:02d}/s{s:02d}"
                add_dir(tar, sub)
                for f in range(UNTAR_FILES_PER_DIR):
                    info = tarfile.TarInfo(f"{sub}/f{f:02d}.dat")
                    info.size, info.mode, info.mtime = UNTAR_FILE_SIZE, 0o644, 1_700_000_000
                    tar.addfile(info, io.BytesIO(rng.randbytes(UNTAR_FILE_SIZE)))


def _build_commit_source(out: Path) -> None:
    """100 MiB of random bytes: what the commit workload writes five times
    (incompressible, and copied from the page cache rather than /dev/urandom)."""
    with open(out, "wb") as f:
        for _ in range(COMMIT_FILE_MIB):
            f.write(os.urandom(1 << 20))


def _ensure(path: Path, build: Callable[[Path], None]) -> None:
    """Build under a .partial name and rename, so an existing file is a complete one."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    log(f"building {path} ...")
    build(partial)
    partial.rename(path)


def ensure_write_inputs(paths: CachePaths, groups: list[str]) -> None:
    """Build the inputs the chosen write workloads need (once; kept in the cache)."""
    if "untar" in groups:
        _ensure(untar_tarball(paths), _build_untar_tarball)
    if "commit" in groups:
        _ensure(commit_source(paths), _build_commit_source)


# ---------------------------------------------------------------- checks (untimed)


def _count(root: Path) -> tuple[int, int]:
    """(directories, other entries) below `root`, root excluded."""
    dirs = others = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        others += len(filenames)
    return dirs, others


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BenchError(f"wrong result: {what}")


# ---------------------------------------------------------------- the workloads


def _time_after_sync(argv: list[str | os.PathLike[str]], *, shell: bool = False) -> float:
    """Write back earlier runs' dirty data first (untimed), then time the command."""
    os.sync()
    return timed(argv, shell=shell)


def do_cp(layer: WritableLayer, env: Env) -> float:
    """`cp -a` a lower subtree inside the container: copy-up of nothing, but
    1.2k creates, 27 MB of writes and the metadata (owners, modes, times, xattrs)."""
    mp = layer.mountpoint
    seconds = _time_after_sync(["cp", "-a", mp / CP_SOURCE, mp / "copy"])
    _check(_count(mp / "copy") == _count(mp / CP_SOURCE), f"cp -a {CP_SOURCE}: the copy differs in entries")
    return seconds


def do_rmrf(layer: WritableLayer, env: Env) -> float:
    """Delete large lower directories: one whiteout (or equivalent) per entry."""
    mp = layer.mountpoint
    seconds = _time_after_sync(["rm", "-rf", *(mp / t for t in RMRF_TARGETS)])
    for target in RMRF_TARGETS:
        _check(not os.path.lexists(mp / target), f"{target} still exists after rm -rf")
    return seconds


def do_append(layer: WritableLayer, env: Env) -> float:
    """Open the 1 GiB lower file for append, write one byte, fsync: the whole
    copy-up (and its write-back) is in the time."""
    target = layer.mountpoint / BIG_FILE
    command = f"printf x | dd of={shlex.quote(str(target))} oflag=append conv=notrunc,fsync status=none"
    seconds = _time_after_sync([command], shell=True)
    _check(target.stat().st_size == BIG_SIZE + 1, f"{BIG_FILE} is {target.stat().st_size} bytes, not {BIG_SIZE + 1}")
    with open(target, "rb") as f:
        f.seek(BIG_SIZE)
        _check(f.read() == b"x", f"{BIG_FILE} does not end with the appended byte")
    return seconds


def do_untar(layer: WritableLayer, env: Env) -> float:
    """Extract 20k small files into a new directory (GNU tar, as root: owners,
    modes and mtimes are set on every entry)."""
    dest = layer.mountpoint / "untar"
    tarball = untar_tarball(env.paths)
    command = f"mkdir {shlex.quote(str(dest))} && tar -xf {shlex.quote(str(tarball))} -C {shlex.quote(str(dest))}"
    seconds = _time_after_sync([command], shell=True)
    _check(_count(dest) == (UNTAR_DIRS * (1 + UNTAR_SUBDIRS), UNTAR_FILES), "untar: wrong number of entries")
    return seconds


SMALLFILES_SCRIPT = f"""\
import os, sys
d = sys.argv[1]
os.mkdir(d)
data = b"x" * 1024
names = [os.path.join(d, "f%05d" % i) for i in range({SMALL_FILES})]
for name in names:
    with open(name, "wb") as f:
        f.write(data)
for name in names:
    os.unlink(name)
os.rmdir(d)
"""


def do_smallfiles(layer: WritableLayer, env: Env) -> float:
    """Create and write 10k 1 KiB files in a new dir, then delete them all (a
    Python loop in a subprocess: the same syscalls on every filesystem)."""
    dest = layer.mountpoint / "smallfiles"
    seconds = _time_after_sync([sys.executable, "-c", SMALLFILES_SCRIPT, dest])
    _check(not os.path.lexists(dest), "smallfiles: the directory is still there")
    return seconds


def do_commit(layer: WritableLayer, env: Env) -> float:
    """Write 500 MiB into the container (untimed), unmount, then time making a
    layer of it: `layerfs commit` for layerfs; for the peers, which have no
    commit, tar of the upper dir into a file plus its sha256 (the minimum an
    OCI layer blob takes)."""
    source = commit_source(env.paths)
    dest = layer.mountpoint / "commit"
    dest.mkdir()
    for i in range(COMMIT_FILES):
        run(["cp", source, dest / f"part{i}.bin"])
    layer.unmount()
    os.sync()
    return layer.commit_seconds()


# ---------------------------------------------------------------- runners


def _fresh_run(do: Callable[[WritableLayer, Env], float], fs: Filesystem, env: Env) -> float:
    with fresh_layer(fs, env.image3, env.paths.scratch, env.mnt / fs.key) as layer:
        return do(layer, env)


def _runner(group: str, do: Callable[[WritableLayer, Env], float]) -> Runner:
    """One repetition: a fresh layer, the workload, its time. The first
    repetition on each filesystem starts with an untimed run, so that the image's
    data (and the filesystem's own code) is in the page cache for every timed one."""

    def run(fs: Filesystem, env: Env, first: bool) -> dict[str, float]:
        if first:
            _fresh_run(do, fs, env)
        return {group: _fresh_run(do, fs, env)}

    return run


WRITE_RUNNERS: dict[str, Runner] = {
    "cp": _runner("cp", do_cp),
    "rmrf": _runner("rmrf", do_rmrf),
    "append": _runner("append", do_append),
    "untar": _runner("untar", do_untar),
    "smallfiles": _runner("smallfiles", do_smallfiles),
    "commit": _runner("commit", do_commit),
}
