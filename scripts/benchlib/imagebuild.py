"""Build the bench images once and keep them under the cache directory.

Layers are built the way a container build does it: layer 1 is a debootstrap
rootfs, and each later layer is the upper directory of a kernel overlay mount
over the layers below. That gives real overlay-format directories (char 0/0
whiteouts, trusted.overlay.opaque) that kernel overlayfs and fuse-overlayfs
mount directly, and from which the OCI layouts for layerfs are written.

Every step builds under a `.partial` name and renames into place, so an
existing output is a complete one; a rebuilt step invalidates the later ones.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .ocilayout import write_oci_layout
from .util import BenchError, format_duration, log

DEBIAN_MIRROR = os.environ.get("LAYERFS_BENCH_MIRROR", "http://deb.debian.org/debian")
BIG_FILE = "data/big.bin"
BIG_SIZE = 1 << 30
SPLIT_LAYERS = 100
OVERLAY_BUILD_OPTS = "redirect_dir=off,index=off,metacopy=off,xino=off"


@dataclass(frozen=True)
class BenchImage:
    """One image in both forms: overlay dirs (bottom first) and an OCI layout."""

    ref: str
    layer_dirs: list[Path]
    layout: Path

    @property
    def name(self) -> str:
        return self.ref.split(":", 1)[0]


@dataclass(frozen=True)
class CachePaths:
    """Where everything lives under the cache directory."""

    root: Path

    @property
    def layers3(self) -> list[Path]:
        base = self.root / "layers" / "bench"
        return [base / "1-minbase", base / "2-python3", base / "3-data"]

    @property
    def layers100_dir(self) -> Path:
        return self.root / "layers" / "bench100"

    @property
    def layers100(self) -> list[Path]:
        return [self.layers100_dir / f"{i:03d}" for i in range(SPLIT_LAYERS)]

    @property
    def layout3(self) -> Path:
        return self.root / "oci" / "bench"

    @property
    def layout100(self) -> Path:
        return self.root / "oci" / "bench100"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def mnt(self) -> Path:
        return self.root / "mnt"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def scratch(self) -> Path:
        """Upper and work dirs of the peers' read-write mounts (emptied at start)."""
        return self.root / "rw"

    @property
    def inputs(self) -> Path:
        """Files the write workloads copy in (built once, kept)."""
        return self.root / "inputs"

    def images(self) -> tuple[BenchImage, BenchImage]:
        return (
            BenchImage("bench:latest", self.layers3, self.layout3),
            BenchImage("bench100:latest", self.layers100, self.layout100),
        )


# ---------------------------------------------------------------- helpers


def _run_logged(argv: list[str], logfile: Path) -> None:
    """Run a long build command with its output in a log file (shown on failure)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{argv[0]} failed (exit {proc.returncode}), see {logfile}:\n  " + "\n  ".join(tail))


def _in_private_mount_ns(script: str, logfile: Path) -> None:
    """Run a bash script in its own mount namespace: its overlay, /proc and /dev
    mounts vanish with it, even if the bench is killed."""
    _run_logged(["unshare", "--mount", "--propagation", "private", "bash", "-euo", "pipefail", "-c", script], logfile)


def _fresh_dir(path: Path) -> Path:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _overlay_mount_cmd(lowers: list[Path], upper: Path, work: Path, target: Path) -> str:
    """Shell command for a writable overlay mount; `lowers` are bottom first."""
    lowerdir = ":".join(str(p) for p in reversed(lowers))
    opts = f"lowerdir={lowerdir},upperdir={upper},workdir={work},{OVERLAY_BUILD_OPTS}"
    return f"mount -t overlay overlay -o {shlex.quote(opts)} {shlex.quote(str(target))}"


def _build_upper_layer(paths: CachePaths, lowers: list[Path], out: Path, body: str, logname: str) -> None:
    """Mount lowers + a new upper, run `body` (shell, $M is the merged root), keep the upper."""
    upper = _fresh_dir(_partial(out))
    work = _fresh_dir(paths.work / "ovl-work")
    merged = _fresh_dir(paths.work / "ovl-merged")
    script = "\n".join(
        [
            _overlay_mount_cmd(lowers, upper, work, merged),
            f"M={shlex.quote(str(merged))}",
            body,
            'umount "$M"',
        ]
    )
    _in_private_mount_ns(script, paths.logs / logname)
    shutil.rmtree(work)
    upper.rename(out)


# ---------------------------------------------------------------- steps


def build_minbase(paths: CachePaths) -> None:
    """Layer 1: a debootstrap minbase bookworm, apt caches removed as images do."""
    out = paths.layers3[0]
    tmp = _partial(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", "--variant=minbase", "bookworm", str(tmp), DEBIAN_MIRROR]
    _run_logged(argv, paths.logs / "1-debootstrap.log")
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for leftover in tmp.glob(pattern):
            leftover.unlink()
    tmp.rename(out)


def build_python_layer(paths: CachePaths) -> None:
    """Layer 2: `apt-get install -y python3` in a chroot on an overlay over layer 1."""
    chroot_cmd = (
        "apt-get update -q && apt-get install -y -q python3 && apt-get clean && rm -rf /var/lib/apt/lists/*"
    )
    body = "\n".join(
        [
            'mount --bind /proc "$M/proc"',
            'mount --bind /dev "$M/dev"',
            'chroot "$M" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin '
            f"HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive sh -ec {shlex.quote(chroot_cmd)}",
            'umount "$M/dev" "$M/proc"',
        ]
    )
    _build_upper_layer(paths, paths.layers3[:1], paths.layers3[1], body, "2-python3.log")


def build_data_layer(paths: CachePaths) -> None:
    """Layer 3: delete the docs and man pages (whiteouts; doc/ comes back as an
    opaque dir with one file) and add a 1 GiB random file."""
    body = "\n".join(
        [
            'rm -rf "$M/usr/share/doc" "$M/usr/share/man"',
            'mkdir "$M/usr/share/doc"',
            'echo "documentation removed to keep the image small" > "$M/usr/share/doc/README.bench"',
            'mkdir -m 755 "$M/data"',
            f'head -c {BIG_SIZE} /dev/urandom > "$M/{BIG_FILE}"',
        ]
    )
    _build_upper_layer(paths, paths.layers3[:2], paths.layers3[2], body, "3-data.log")


def write_layout3(paths: CachePaths) -> None:
    """OCI layout of the 3-layer image, tagged bench:latest."""
    write_oci_layout(paths.layout3, paths.layers3, "bench:latest", _now())


def build_split_layers(paths: CachePaths) -> None:
    """The 100-layer image: the 3-layer merged tree's entries spread round-robin
    over 100 layers, each layer holding the directories its entries need."""
    staging = _fresh_dir(paths.work / "merged-copy")
    merged = _fresh_dir(paths.work / "ovl-merged")
    lowerdir = ":".join(str(p) for p in reversed(paths.layers3))
    script = "\n".join(
        [
            f"mount -t overlay overlay -o ro,{shlex.quote('lowerdir=' + lowerdir)} {shlex.quote(str(merged))}",
            f"cp -a {shlex.quote(str(merged))}/. {shlex.quote(str(staging))}/",
            f"umount {shlex.quote(str(merged))}",
        ]
    )
    _in_private_mount_ns(script, paths.logs / "5-merged-copy.log")
    out = _partial(paths.layers100_dir)
    if out.exists():
        shutil.rmtree(out)
    split_tree(staging, out, SPLIT_LAYERS)
    shutil.rmtree(staging)
    out.rename(paths.layers100_dir)


def write_layout100(paths: CachePaths) -> None:
    """OCI layout of the 100-layer image, tagged bench100:latest."""
    write_oci_layout(paths.layout100, paths.layers100, "bench100:latest", _now())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- 100-layer split


@dataclass
class _DirMeta:
    st: os.stat_result
    xattrs: dict[str, bytes]


def _read_dir_meta(path: Path) -> _DirMeta:
    st = os.lstat(path)
    names = os.listxattr(path, follow_symlinks=False)
    return _DirMeta(st, {n: os.getxattr(path, n, follow_symlinks=False) for n in names})


def _make_dir(path: Path, meta: _DirMeta) -> None:
    path.mkdir(exist_ok=True)
    os.chown(path, meta.st.st_uid, meta.st.st_gid)
    os.chmod(path, stat.S_IMODE(meta.st.st_mode))
    for name, value in meta.xattrs.items():
        os.setxattr(path, name, value)


def split_tree(staging: Path, out: Path, count: int) -> None:
    """Move every non-directory of `staging` into one of `count` layer dirs.

    Entries go round-robin in sorted path order, so neighbours land in
    different layers and most directories exist in many layers: the case where
    per-lookup layer probing hurts. Hardlinked names stay together in one layer.
    """
    dir_meta: dict[str, _DirMeta] = {}
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(staging):
        dirnames.sort()
        rel = os.path.relpath(dirpath, staging)
        dir_meta[rel] = _read_dir_meta(Path(dirpath))
        links_to_dirs = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        entries.extend(os.path.normpath(os.path.join(rel, n)) for n in sorted(filenames + links_to_dirs))

    layers = [out / f"{i:03d}" for i in range(count)]
    made: list[set[str]] = [{"."} for _ in range(count)]
    for layer in layers:
        layer.mkdir(parents=True)
        _make_dir(layer, dir_meta["."])

    def ensure_dirs(i: int, rel_dir: str) -> None:
        if rel_dir in made[i] or rel_dir in ("", "."):
            return
        ensure_dirs(i, os.path.dirname(rel_dir))
        _make_dir(layers[i] / rel_dir, dir_meta[rel_dir])
        made[i].add(rel_dir)

    link_layer: dict[int, int] = {}
    counter = 0
    for rel in entries:
        st = os.lstat(staging / rel)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_ino in link_layer:
            i = link_layer[st.st_ino]
        else:
            i = counter % count
            counter += 1
            link_layer[st.st_ino] = i
        ensure_dirs(i, os.path.dirname(rel))
        os.rename(staging / rel, layers[i] / rel)

    for rel in dir_meta:  # directories with no entries below still need a home
        if not any(rel in m for m in made):
            ensure_dirs(0, rel)

    for i, layer in enumerate(layers):  # creating entries bumped mtimes: restore them last
        for rel in made[i]:
            st = dir_meta[rel].st
            os.utime(layer / rel, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# ---------------------------------------------------------------- driver


@dataclass(frozen=True)
class Step:
    """One cached build product and the function that makes it."""

    title: str
    output: Path
    build: Callable[[CachePaths], None]


def steps(paths: CachePaths) -> list[Step]:
    return [
        Step("layer 1: debootstrap --variant=minbase bookworm", paths.layers3[0], build_minbase),
        Step("layer 2: apt-get install python3 (overlay upper)", paths.layers3[1], build_python_layer),
        Step("layer 3: delete docs, add 1 GiB file (overlay upper)", paths.layers3[2], build_data_layer),
        Step("OCI layout bench:latest", paths.layout3, write_layout3),
        Step("100-layer split of the merged tree", paths.layers100_dir, build_split_layers),
        Step("OCI layout bench100:latest", paths.layout100, write_layout100),
    ]


def _record_build_times(paths: CachePaths, timings: dict[str, float]) -> None:
    """Keep the latest time of every step, so the report can say what a full build costs."""
    record = paths.root / "build-times.json"
    seconds: dict[str, float] = json.loads(record.read_text())["seconds"] if record.exists() else {}
    seconds.update(timings)
    total = sum(seconds.get(step.title, 0.0) for step in steps(paths))
    record.write_text(json.dumps({"built": _now(), "seconds": seconds, "total": total}, indent=2))


def ensure_images(paths: CachePaths, *, rebuild: bool = False) -> dict[str, float]:
    """Build whatever is missing (everything with `rebuild`); returns seconds per
    step built now. Once a step is built, every later product is rebuilt too."""
    timings: dict[str, float] = {}
    invalid = rebuild
    for step in steps(paths):
        if step.output.exists() and not invalid:
            continue
        if step.output.exists():
            shutil.rmtree(step.output)
        invalid = True
        log(f"building {step.title} ...")
        start = time.monotonic()
        step.build(paths)
        timings[step.title] = time.monotonic() - start
        log(f"built {step.title} in {format_duration(timings[step.title])}")
    if timings:
        log(f"image build took {format_duration(sum(timings.values()))} in all")
        _record_build_times(paths, timings)
    if paths.work.exists():
        shutil.rmtree(paths.work)
    return timings
