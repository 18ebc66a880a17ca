"""What the rootless groups (start, exec, mount; registry's rootless side) share.

The unprivileged bench user (layerfs-bench, with subordinate ids), the image in
the forms each runtime takes (the user's layerfs store, podman's storage, a
merged rootfs for bubblewrap, the layers unpacked to plain directories for
fuse-overlayfs), the user's resident layerfs service, and the results.

The service: the `layerfs` CLI starts a per-user service on first need (a unix
socket under $XDG_RUNTIME_DIR/layerfs/ or /tmp/layerfs-UID/) and run, exec,
mount, umount, ps and stop go through it; LAYERFS_NO_SERVICE=1 runs everything
in the CLI's own process. A CLI without the service (`layerfs service` unknown)
runs in-process either way: the figures of the service column are then the
CLI as it is, and its targets n/a.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import mounts
from .imagebuild import CachePaths
from .ocilayout import manifest_digest, write_oci_layout
from .report import Target
from .util import BenchError, log, run

USER = "layerfs-bench"
IMAGE = "run:latest"
REPS_START = 20
NO_SERVICE = {"LAYERFS_NO_SERVICE": "1"}
PACKAGES = ("podman", "bubblewrap", "runc", "uidmap", "fuse-overlayfs", "skopeo")
CONTAINERS_CONF = """[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
netns = "host"
"""
STORAGE_CONF = """[storage]
driver = "overlay"
[storage.options.overlay]
mount_program = "/usr/bin/fuse-overlayfs"
"""


@dataclass
class LaunchResults:
    """Median seconds per (row, column), MiB per (row, column), in the order measured.

    Columns: layerfs (the CLI as it is: through the service when there is one),
    in-process (LAYERFS_NO_SERVICE=1), podman, bwrap, fuse-overlayfs."""

    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)  # row -> start, mount
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # what did not run -> why
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    service: str = "n/a"  # the service's state, as the header shows it
    service_up: bool = False

    def add(self, row: str, column: str, seconds: float, section: str = "start") -> None:
        self.figures.setdefault(row, {})[column] = seconds
        self.sections[row] = section

    def get(self, row: str, column: str) -> float | None:
        return self.figures.get(row, {}).get(column)

    def ratio(self, row: str, of: str, over: str) -> float | None:
        a, b = self.get(row, of), self.get(row, over)
        return a / b if a is not None and b else None

    def attempt(self, what: str, measure: Callable[[], object]) -> bool:
        """Run one measurement; a failure is recorded under `what` and the bench goes on."""
        try:
            measure()
        except BenchError as exc:
            log(f"{what} failed: {exc}")
            self.errors[what] = str(exc)
            return False
        return True

    def target(self, name: str, value: float | None, limit: float) -> None:
        self.targets.append(Target(name, name, value, limit, f"<={limit}", ""))

    def failed(self) -> bool:
        return any(t.status == "FAIL" for t in self.targets)

    def as_json(self) -> dict[str, object]:
        return {"seconds": self.figures, "pss_mib": self.memory, "errors": self.errors, "service": self.service,
                "notes": self.notes,
                "targets": [{"name": t.name, "value": t.value, "limit": t.limit, "status": t.status}
                            for t in self.targets]}


class BenchUser:
    """The unprivileged user every runtime runs as, with subordinate ids and a home."""

    def __init__(self) -> None:
        if not _exists(USER):
            run(["useradd", "-m", "-s", "/bin/sh", USER], quiet=True)
        for path in ("/etc/subuid", "/etc/subgid"):
            lines = Path(path).read_text().splitlines() if Path(path).exists() else []
            if not any(line.startswith(f"{USER}:") for line in lines):
                end = max([100000] + [int(a) + int(b) for _, a, b in (line.split(":") for line in lines if line)])
                with open(path, "a") as f:
                    f.write(f"{USER}:{end}:65536\n")
        entry = pwd.getpwnam(USER)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
        self.runtime_dir = Path(f"/run/user/{self.uid}")
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.runtime_dir, self.uid, self.gid)
        self.runtime_dir.chmod(0o700)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": USER, "LOGNAME": USER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "XDG_RUNTIME_DIR": str(self.runtime_dir), "LANG": "C.UTF-8", **(extra or {})}

    def argv(self, argv: list[str]) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]

    def run(self, argv: list[str], check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run as the user; `env` adds to the user's environment (e.g. NO_SERVICE)."""
        proc = subprocess.run(self.argv(argv), env=self.env(env), cwd=self.home, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise BenchError(f"`{shlex.join(argv)}` as {USER} exited {proc.returncode}: "
                             f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
        return proc

    def timed(self, argv: list[str], env: dict[str, str] | None = None) -> float:
        start = time.perf_counter()
        self.run(argv, env=env)
        return time.perf_counter() - start

    def give(self, path: Path) -> None:
        run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)])

    def directory(self, name: str) -> Path:
        """An existing directory of the user's, under its home (for mount points)."""
        path = self.home / name
        path.mkdir(exist_ok=True)
        os.chown(path, self.uid, self.gid)
        return path

    def podman_config(self) -> None:
        """containers.conf and storage.conf: runc, cgroupfs, fuse-overlayfs as the mount program."""
        config = self.home / ".config" / "containers"
        config.mkdir(parents=True, exist_ok=True)
        (config / "containers.conf").write_text(CONTAINERS_CONF)
        (config / "storage.conf").write_text(STORAGE_CONF)
        self.give(self.home / ".config")


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _install_peers() -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", p],
                                                     capture_output=True, text=True).stdout != "installed"]
    if missing:
        log(f"installing {' '.join(missing)}")
        run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", *missing], quiet=True)


class Setup:
    """The image in the four forms, for the bench user (made once, kept in the cache)."""

    def __init__(self, paths: CachePaths, layerfs: Path) -> None:
        self.root = paths.root / "launch"
        self.layers = paths.layers3[:2]
        self.binary = str(layerfs)
        self.user = BenchUser()
        self.shared = Path("/tmp/layerfs-bench-launch")  # where the user can read the layout
        self.store = self.user.home / "layerfs-store"
        self.rootfs = self.user.home / "rootfs"
        self.unpacked = self.user.home / "layers"  # the layers as plain directories, bottom first in `lowers`
        self.service = Service(self)

    @property
    def layout(self) -> Path:
        return self.root / "oci-run"

    def prepare(self) -> None:
        _install_peers()
        if not self.layout.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_oci_layout(self.layout, self.layers, IMAGE, "2026-01-01T00:00:00Z")
        if self.shared.exists():
            shutil.rmtree(self.shared)
        shutil.copytree(self.layout, self.shared / "oci")
        self.user.give(self.shared)
        chmod = subprocess.run(["chmod", "0666", "/dev/fuse"], capture_output=True)
        if chmod.returncode != 0:
            raise BenchError("cannot make /dev/fuse usable for the bench user")
        # the service (if the CLI has one) is the user's: stop it when the bench ends, however it ends
        mounts.register_leftover("the bench user's layerfs service", self.service.stop)
        self._layerfs_image()
        self._podman_image()
        self._rootfs()

    def _layerfs_image(self) -> None:
        for container in self.user.run(self.layerfs("ps", "-aq")).stdout.split():
            self.user.run(self.layerfs("rm", "-f", container), check=False)
        if IMAGE not in self.user.run(self.layerfs("images")).stdout.replace(" ", ":"):
            self.user.run(self.layerfs("import", f"oci:{self.shared}/oci:{IMAGE}", IMAGE, "-q"))

    def _podman_image(self) -> None:
        self.user.podman_config()
        self.user.run(["podman", "rm", "-af"], check=False)
        if self.user.run(["podman", "image", "exists", f"localhost/{IMAGE}"], check=False).returncode != 0:
            self.user.run(["podman", "pull", "-q", f"oci:{self.shared}/oci:{IMAGE}"])
            self.user.run(["podman", "tag", self.user.run(["podman", "images", "-q"]).stdout.split()[0],
                           f"localhost/{IMAGE}"])

    def _rootfs(self) -> None:
        """The image merged (kernel overlayfs, read-only) and copied for bubblewrap."""
        if self.rootfs.exists():
            return
        merged, partial = self.root / "merged", Path(f"{self.rootfs}.partial")
        merged.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        lower = ":".join(str(p) for p in reversed(self.layers))
        run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(merged)])
        try:
            run(["cp", "-a", f"{merged}/.", f"{partial}/"], quiet=True)
        finally:
            run(["umount", str(merged)])
        self.user.give(partial)
        partial.rename(self.rootfs)

    def lowers(self) -> list[Path]:
        """The image's layer tars unpacked to plain directories the user owns, bottom
        first (OCI whiteouts as they are: `.wh.NAME` files, which fuse-overlayfs reads
        as whiteouts). Made on first use, kept."""
        blobs = self.layout / "blobs" / "sha256"
        manifest = json.loads((blobs / manifest_digest(self.layout, IMAGE).split(":", 1)[1]).read_text())
        dirs = [self.unpacked / f"{i + 1}" for i in range(len(manifest["layers"]))]
        if all(d.is_dir() for d in dirs):
            return dirs
        partial = Path(f"{self.unpacked}.partial")
        for stale in (partial, self.unpacked):
            if stale.exists():
                shutil.rmtree(stale)
        for i, layer in enumerate(manifest["layers"]):
            target = partial / f"{i + 1}"
            target.mkdir(parents=True)
            run(["tar", "-xf", str(blobs / layer["digest"].split(":", 1)[1]), "-C", str(target)], quiet=True)
        self.user.give(partial)
        partial.rename(self.unpacked)
        return dirs

    # -- the commands ---------------------------------------------------------------

    def layerfs(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.store), *args]

    def bwrap(self, *args: str) -> list[str]:
        return ["bwrap", "--unshare-all", "--share-net", "--uid", "0", "--gid", "0", "--bind", str(self.rootfs), "/",
                "--proc", "/proc", "--dev", "/dev", "--die-with-parent", *args]


class Service:
    """The bench user's resident layerfs service for the bench store, if the CLI has one.

    `layerfs service status` names its pid and socket; the service's processes are
    the user's processes holding that socket (read from /proc/net/unix and their
    fds), so a service of another store of the same user is not counted."""

    def __init__(self, setup: Setup) -> None:
        self.setup, self.user = setup, setup.user
        self.up = False
        self.state = "n/a"
        self.socket: str | None = None

    def _status(self) -> tuple[subprocess.CompletedProcess[str], int | None]:
        proc = self.user.run(self.setup.layerfs("service", "status"), check=False)
        found = re.search(r"^socket:\s*(\S+)", proc.stdout, re.MULTILINE)
        if found:
            self.socket = found.group(1)
        pid = re.search(r"\bpid\D{0,3}(\d+)", proc.stdout)
        alive = pid is not None and int(pid.group(1)) in user_pids(self.user.uid)
        return proc, int(pid.group(1)) if alive and pid else None

    def probe(self) -> bool:
        """Start it with an untimed `layerfs ps` (a command that goes through it), then ask
        `layerfs service status`; False, with the reason in `state`, when it is not there."""
        self.user.run(self.setup.layerfs("ps", "-q"), check=False)
        proc, pid = self._status()
        said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        line = re.sub(r"^service:\s*", "", said[0].strip()) if said else "(nothing printed)"
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            why = "this layerfs has no `service` command (yet)" if "invalid choice" in tail else tail[-160:]
            self.up, self.state = False, f"n/a (`layerfs service status` exited {proc.returncode}: {why})"
        elif pid is None and not self.pids():
            self.up, self.state = False, f"n/a (not running after a command: {line})"
        else:
            self.up, self.state = True, line
        return self.up

    def stop(self) -> None:
        """`layerfs service stop` (a CLI without it fails: ignored), then wait for its processes to end."""
        running = self.pids()
        self.user.run(self.setup.layerfs("service", "stop"), check=False)
        deadline = time.monotonic() + 10
        while set(running) & set(user_pids(self.user.uid)) and time.monotonic() < deadline:
            time.sleep(0.02)

    def pids(self) -> list[int]:
        """The bench user's processes holding the service's socket (none when it is unknown)."""
        if self.socket is None:
            return []
        inodes = set()
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == self.socket:
                    inodes.add(f"socket:[{fields[6]}]")
        found = []
        for pid in user_pids(self.user.uid) if inodes else []:
            try:
                if any(os.readlink(fd.path) in inodes for fd in os.scandir(f"/proc/{pid}/fd")):
                    found.append(pid)
            except OSError:
                continue
        return found

    def main_pid(self) -> int | None:
        """The service's pid, as `layerfs service status` names it, or the first process
        holding its socket whose parent does not."""
        _, pid = self._status()
        if pid is not None:
            return pid
        pids = self.pids()
        roots = [p for p in pids if parent_pid(p) not in pids]
        return min(roots) if roots else None


# ---------------------------------------------------------------- processes and memory

def user_pids(uid: int) -> list[int]:
    """Processes whose real uid is `uid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def pss_mib(pid: int) -> float | None:
    """Proportional set size of one process (its share of every page it maps), MiB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def total_pss(pids: list[int]) -> float:
    return sum(v for v in (pss_mib(p) for p in pids) if v is not None)


# ---------------------------------------------------------------- timing

def median_of(measure: Callable[[], float], reps: int) -> float:
    """The median of `reps` timed runs after two untimed ones."""
    for _ in range(2):
        measure()
    return statistics.median(measure() for _ in range(reps))


def loop(user: BenchUser, argv: list[str], count: int = 20, env: dict[str, str] | None = None) -> float:
    """`count` runs back to back in one shell loop, as the user."""
    script = f"for i in $(seq {count}); do {shlex.join(argv)} || exit 1; done"
    return user.timed(["sh", "-c", script], env=env)


# ---------------------------------------------------------------- the report

def table(rows: dict[str, dict[str, float]], columns: list[str], ratios: list[tuple[str, str, str]],
          fmt: str = "{:.0f} ms", scale: float = 1000.0) -> list[str]:
    """One aligned table: a row per entry, a column per runtime, then the ratio columns."""
    header = ["workload", *columns, *(r[0] for r in ratios)]
    lines = []
    for row, figures in rows.items():
        cells = [row] + [fmt.format(figures[c] * scale) if c in figures else "-" for c in columns]
        cells += [f"{figures[a] / figures[b]:.2f}x" if a in figures and figures.get(b) else ""
                  for _, a, b in ratios]
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *lines]]
