"""Container start and exec latency: `layerfs run` beside podman and bubblewrap.

All three run rootless, as one unprivileged bench user, on the same image (the
bench image's Debian minbase + python3 layers, without the 1 GiB data layer):
  layerfs   `layerfs run --rm run:latest true` on the user's own store
  podman    `podman run --rm --network host run:latest true`: runc, cgroupfs,
            fuse-overlayfs as the mount program (what rootless users get here)
  bwrap     bubblewrap on the image unpacked to a directory: user, pid, ipc,
            uts, cgroup namespaces, fresh /proc, minimal /dev (no image store, no
            union, no init: the floor for a start)
Each figure is the median of REPS_START runs after two untimed ones; `start x20`
is twenty starts back to back in one shell loop; `exec` is `exec CONTAINER true`
into a running container. The layerfs breakdown is measured apart, as
differences: python's own start, the CLI's and launcher's imports, a user
namespace with the subordinate map (`layerfs unshare true`), the FUSE server's
imports (it is forked, and imports pyfuse3 and trio while the launcher waits for
the mount), a mount of the container, and what is left (pid/mount/uts/ipc
namespaces, the root filesystem, the init, exec).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .imagebuild import CachePaths
from .ocilayout import write_oci_layout
from .util import BenchError, log, run

LAUNCH_GROUPS = ["start", "exec"]
USER = "layerfs-bench"
IMAGE = "run:latest"
REPS_START = 20
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
    """Median seconds per (row, runtime); rows in the order measured."""

    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # runtime -> why it did not run

    def add(self, row: str, runtime: str, seconds: float) -> None:
        self.figures.setdefault(row, {})[runtime] = seconds


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

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": USER, "LOGNAME": USER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "XDG_RUNTIME_DIR": str(self.runtime_dir), "LANG": "C.UTF-8"}

    def argv(self, argv: list[str]) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(argv), env=self.env(), cwd=self.home, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise BenchError(f"`{shlex.join(argv)}` as {USER} exited {proc.returncode}: "
                             f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
        return proc

    def timed(self, argv: list[str]) -> float:
        start = time.perf_counter()
        self.run(argv)
        return time.perf_counter() - start

    def give(self, path: Path) -> None:
        run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)])


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
    """The image in the three forms, for the bench user (made once, kept in the cache)."""

    def __init__(self, paths: CachePaths, layerfs: Path) -> None:
        self.root = paths.root / "launch"
        self.layers = paths.layers3[:2]
        self.binary = str(layerfs)
        self.user = BenchUser()
        self.shared = Path("/tmp/layerfs-bench-launch")  # where the user can read the layout
        self.store = self.user.home / "layerfs-store"
        self.rootfs = self.user.home / "rootfs"

    def prepare(self) -> None:
        _install_peers()
        layout = self.root / "oci-run"
        if not layout.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_oci_layout(layout, self.layers, IMAGE, "2026-01-01T00:00:00Z")
        if self.shared.exists():
            shutil.rmtree(self.shared)
        shutil.copytree(layout, self.shared / "oci")
        self.user.give(self.shared)
        chmod = subprocess.run(["chmod", "0666", "/dev/fuse"], capture_output=True)
        if chmod.returncode != 0:
            raise BenchError("cannot make /dev/fuse usable for the bench user")
        self._layerfs_image()
        self._podman_image()
        self._rootfs()

    def _layerfs_image(self) -> None:
        for container in self.user.run([self.binary, "--root", str(self.store), "ps", "-aq"]).stdout.split():
            self.user.run([self.binary, "--root", str(self.store), "rm", "-f", container], check=False)
        if IMAGE not in self.user.run([self.binary, "--root", str(self.store), "images"]).stdout.replace(" ", ":"):
            self.user.run([self.binary, "--root", str(self.store), "import", f"oci:{self.shared}/oci:{IMAGE}",
                           IMAGE, "-q"])

    def _podman_image(self) -> None:
        config = self.user.home / ".config" / "containers"
        config.mkdir(parents=True, exist_ok=True)
        (config / "containers.conf").write_text(CONTAINERS_CONF)
        (config / "storage.conf").write_text(STORAGE_CONF)
        self.user.give(self.user.home / ".config")
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

    # -- the commands ---------------------------------------------------------------

    def layerfs(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.store), *args]

    def bwrap(self, *args: str) -> list[str]:
        return ["bwrap", "--unshare-all", "--share-net", "--uid", "0", "--gid", "0", "--bind", str(self.rootfs), "/",
                "--proc", "/proc", "--dev", "/dev", "--die-with-parent", *args]


def _median(measure, reps: int) -> float:  # noqa: ANN001
    for _ in range(2):
        measure()
    return statistics.median(measure() for _ in range(reps))


def _loop(user: BenchUser, argv: list[str], count: int = 20) -> float:
    script = f"for i in $(seq {count}); do {shlex.join(argv)} || exit 1; done"
    return user.timed(["sh", "-c", script])


def run_launch(paths: CachePaths, layerfs: Path, groups: list[str], reps: int = REPS_START) -> LaunchResults:
    setup = Setup(paths, layerfs)
    setup.prepare()
    user, results = setup.user, LaunchResults()
    starts = {
        "layerfs": setup.layerfs("run", "--rm", IMAGE, "true"),
        "podman": ["podman", "run", "--rm", "--network", "host", f"localhost/{IMAGE}", "true"],
        "bwrap": setup.bwrap("true"),
    }
    if "start" in groups:
        for runtime, argv in starts.items():
            log(f"start latency: {runtime}")
            results.add("run --rm IMAGE true", runtime, _median(lambda argv=argv: user.timed(argv), reps))
            results.add("20 starts back to back", runtime, _loop(user, argv))
        _breakdown(setup, results, reps)
    if "exec" in groups:
        log("exec latency")
        user.run(setup.layerfs("run", "-d", "--name", "bench-exec", IMAGE, "sleep", "infinity"))
        user.run(["podman", "run", "-d", "--name", "bench-exec", "--network", "host", f"localhost/{IMAGE}",
                  "sleep", "infinity"])
        try:
            results.add("exec CONTAINER true", "layerfs",
                        _median(lambda: user.timed(setup.layerfs("exec", "bench-exec", "true")), reps))
            results.add("exec CONTAINER true", "podman",
                        _median(lambda: user.timed(["podman", "exec", "bench-exec", "true"]), reps))
        finally:
            user.run(setup.layerfs("rm", "-f", "bench-exec"), check=False)
            user.run(["podman", "rm", "-f", "-t", "0", "bench-exec"], check=False)
    return results


def _breakdown(setup: Setup, results: LaunchResults, reps: int) -> None:
    """Where a layerfs start goes, as differences of commands that each add one step."""
    user = setup.user
    python = str(Path(setup.binary).parent / "python")
    mountpoint = user.home / "bench-mnt"
    mountpoint.mkdir(exist_ok=True)
    user.give(mountpoint)
    user.run(setup.layerfs("create", "--name", "bench-mount", IMAGE))
    mount_cycle = (shlex.join(setup.layerfs("mount", "bench-mount", str(mountpoint))) + " && "
                   + shlex.join(setup.layerfs("umount", str(mountpoint))))
    try:
        total = {name: _median(lambda argv=argv: user.timed(argv), reps) for name, argv in {
            "python": [python, "-c", "pass"],
            "imports": [python, "-c", "from layerfs.cli.main import _parser; _parser()"],  # what run loads
            "fuse": [python, "-c", "import pyfuse3, trio"],
            "unshare": setup.layerfs("unshare", "--", "true"),
            "mount": ["sh", "-c", mount_cycle],  # two layerfs commands
        }.items()}
    finally:
        user.run(setup.layerfs("rm", "-f", "bench-mount"), check=False)
    start = results.figures["run --rm IMAGE true"]["layerfs"]
    steps = {
        "  python start": total["python"],
        "  layerfs imports": total["imports"] - total["python"],
        "  user namespace + id maps": total["unshare"] - total["imports"],
        "  FUSE server's imports (pyfuse3, trio)": total["fuse"] - total["python"],
        "  mount + unmount, besides": total["mount"] - 2 * total["imports"] - (total["fuse"] - total["python"]),
    }
    steps["  the rest: namespaces, rootfs, init, exec"] = start - sum(steps.values())
    for label, seconds in steps.items():
        results.add(label, "layerfs", max(seconds, 0.0))


def render_launch(results: LaunchResults) -> str:
    runtimes = ["layerfs", "podman", "bwrap"]
    header = ["workload", *runtimes, "lfs/podman", "lfs/bwrap"]
    rows = []
    for row, figures in results.figures.items():
        cells = [row] + [f"{figures[r] * 1000:.0f} ms" if r in figures else "-" for r in runtimes]
        for peer in ("podman", "bwrap"):
            cells.append(f"{figures['layerfs'] / figures[peer]:.2f}x" if "layerfs" in figures and peer in figures
                         else "")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["container start (rootless, one bench user, same image; median of "
             f"{REPS_START} unless a loop)"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *rows]]
    lines += [f"error: {runtime}: {message}" for runtime, message in results.errors.items()]
    lines.append("indented rows: where a layerfs start goes (differences of commands that each add one step; "
                 "the rest is the pid/mount/uts/ipc namespaces, /proc /dev /sys, pivot_root, the init, exec)")
    return "\n".join(lines)
