"""The rootless `mount` group: mount + first ls, and PSS per mount.

As the bench user, on the start group's image (run:latest: minbase + python3):
  layerfs         `layerfs mount run:latest DIR && ls DIR`, through the service (warm)
  in-process      the same with LAYERFS_NO_SERVICE=1
  fuse-overlayfs  `fuse-overlayfs -o lowerdir=B:A DIR && ls DIR`, read-only, over the
                  image's layer tars unpacked to plain directories the user owns
  podman          `podman unshare sh -c 'd=$(podman image mount run:latest) && ls "$d"'`
                  (rootless podman mounts images only inside its user namespace; runc,
                  fuse-overlayfs as the mount program)
Only that command is timed (median of REPS, after two untimed cycles); the unmount
after each (`layerfs umount`, `fusermount3 -u`, `podman image umount`) is not. The
ls must list something, or the cycle fails.

Memory: N browse mounts of the image, each listed once, then `layerfs mounts
--json` for each mount's server pid and /proc/PID/smaps_rollup for its PSS; the
cost of one more mount is the growth of the PSS of all the bench user's
processes (the service's included) divided by N, which holds whether a mount is
served by a process of its own or inside the service. The same for detached
containers (`layerfs run -d run:latest sleep 1000`): per container, everything
it adds (its mount's server, monitor, init, sleep), and its mount server alone.
"""

from __future__ import annotations

import json
import shlex
import statistics
import time
from pathlib import Path

from . import mounts
from .rootless import (IMAGE, NO_SERVICE, REPS_START, LaunchResults, Setup, median_of, pss_mib, table,
                       total_pss, user_pids)
from .util import BenchError, log

ROW_MOUNT = "mount IMAGE DIR && ls DIR"
ROW_PYTHON = "  python -S -c pass (the client's floor: it runs with -S)"
ROW_CLIENT = "  client: python + imports + one request (`ps -q`)"
FO_LIMIT = 3.0  # mount + first ls, through the service, <= 3x fuse-overlayfs
PODMAN_LIMIT = 0.3  # ... and <= 0.3x podman image mount
PSS_MOUNTS = 10
PSS_CONTAINERS = 5
PSS_LIMIT = 10.0  # MiB per extra browse mount, through the service
MOUNT_COLUMNS = ["layerfs", "in-process", "fuse-overlayfs", "podman"]
MOUNT_RATIOS = [("lfs/fo", "layerfs", "fuse-overlayfs"), ("lfs/podman", "layerfs", "podman"),
                ("inproc/fo", "in-process", "fuse-overlayfs")]
ROW_PER_MOUNT = f"{PSS_MOUNTS} browse mounts: PSS per extra mount"
ROW_PER_CONTAINER = f"{PSS_CONTAINERS} containers (sleep): PSS per extra container"


def run_mount(setup: Setup, results: LaunchResults, reps: int = REPS_START) -> None:
    _mount_times(setup, results, reps)
    _memory(setup, results)


# ---------------------------------------------------------------- mount + first ls

def _listed(path: str) -> str:
    """sh: list `path` (already quoted); fail when it lists nothing (not mounted yet)."""
    return f'l=$(ls {path}) && [ -n "$l" ]'


def _cycle(setup: Setup, script: str, unmount: list[str], mountpoint: Path | None,
           env: dict[str, str] | None) -> float:
    """One timed `sh -c SCRIPT` as the user (mount + ls), then the untimed unmount
    (and, for a mount root can see, the wait until it is gone)."""
    user = setup.user
    record = mounts.register(mountpoint, lambda: user.run(unmount, check=False, env=env)) if mountpoint else None
    try:
        return user.timed(["sh", "-c", script], env=env)
    finally:
        if record is not None:
            mounts.release(record)
        else:
            user.run(unmount, check=False, env=env)


def _mount_times(setup: Setup, results: LaunchResults, reps: int) -> None:
    user, service = setup.user, setup.service
    mp = user.directory("bench-mount-ls")
    quoted = shlex.quote(str(mp))
    layerfs_script = f"{shlex.join(setup.layerfs('mount', IMAGE, str(mp)))} && {_listed(quoted)}"
    ref = f"localhost/{IMAGE}"
    podman_script = f'd=$(podman image mount {ref}) && {_listed(chr(34) + "$d" + chr(34))}'

    def fuse_overlayfs() -> tuple[str, list[str], Path, None]:
        lower = ":".join(str(d) for d in reversed(setup.lowers()))  # top layer first
        return (f"fuse-overlayfs -o {shlex.quote(f'lowerdir={lower}')} {quoted} && {_listed(quoted)}",
                ["fusermount3", "-u", str(mp)], mp, None)

    cycles = {
        "layerfs": lambda: (layerfs_script, setup.layerfs("umount", str(mp)), mp, None),
        "in-process": lambda: (layerfs_script, setup.layerfs("umount", str(mp)), mp, NO_SERVICE),
        "fuse-overlayfs": fuse_overlayfs,
        "podman": lambda: (shlex.join(["podman", "unshare", "sh", "-c", podman_script]),
                           ["podman", "unshare", "podman", "image", "umount", ref], None, None),
    }
    for column, make in cycles.items():
        def measure(column: str = column, make=make) -> None:  # noqa: ANN001
            log(f"mount + ls: {column}")
            script, unmount, point, env = make()
            results.add(ROW_MOUNT, column, median_of(lambda: _cycle(setup, script, unmount, point, env), reps),
                        section="mount")
        results.attempt(f"{ROW_MOUNT}: {column}", measure)
    _mount_breakdown(setup, results, reps)
    up = service.up
    for peer, limit, name in (("fuse-overlayfs", FO_LIMIT, "fuse-overlayfs"),
                              ("podman", PODMAN_LIMIT, "podman image mount")):
        results.target(f"{ROW_MOUNT}: layerfs through the service <= {limit}x {name}",
                       results.ratio(ROW_MOUNT, "layerfs", peer) if up else None, limit)


def _mount_breakdown(setup: Setup, results: LaunchResults, reps: int) -> None:
    """Where a mount + ls through the service goes: python's start, the client (python,
    its imports, one request: `layerfs ps -q`), and the rest, in the service."""
    user = setup.user
    python = str(Path(setup.binary).parent / "python")
    commands = {ROW_PYTHON: [python, "-S", "-c", "pass"]}
    if setup.service.up:
        commands[ROW_CLIENT] = setup.layerfs("ps", "-q")
    for row, argv in commands.items():
        def measure(row: str = row, argv: list[str] = argv) -> None:
            results.add(row, "layerfs", median_of(lambda: user.timed(argv), reps), section="mount")
        results.attempt(f"{ROW_MOUNT}: {row.strip()}", measure)
    client, total = results.get(ROW_CLIENT, "layerfs"), results.get(ROW_MOUNT, "layerfs")
    if client is not None and total is not None:
        results.add("  in the service: the mount + ls", "layerfs", max(total - client, 0.0), section="mount")


# ---------------------------------------------------------------- memory

def _memory(setup: Setup, results: LaunchResults) -> None:
    columns: dict[str, dict[str, str] | None] = {"in-process": NO_SERVICE}
    if setup.service.up:
        columns = {"layerfs": None, **columns}
    else:
        results.notes.append("PSS through the service: n/a (no service)")
    for column, env in columns.items():
        log(f"PSS per mount: {column}")
        results.attempt(f"PSS, browse mounts: {column}", lambda column=column, env=env: _browse_pss(
            setup, results, column, env))
        results.attempt(f"PSS, containers: {column}", lambda column=column, env=env: _container_pss(
            setup, results, column, env))
    value = results.memory.get(ROW_PER_MOUNT, {}).get("layerfs")
    results.target(f"PSS per extra browse mount through the service <= {PSS_LIMIT:.0f} MiB", value, PSS_LIMIT)


class _Counted:
    """The PSS of the bench user's processes (without the service's when measuring
    in-process, so that the service's own changes stay out), before and after."""

    def __init__(self, setup: Setup, env: dict[str, str] | None) -> None:
        self.setup, self.in_process = setup, env is not None
        self.service_pid = None if self.in_process else setup.service.main_pid()
        self.service_before = pss_mib(self.service_pid) if self.service_pid else None
        self.before = self.total()
        self.count_before = len(user_pids(setup.user.uid))

    def total(self) -> float:
        pids = set(user_pids(self.setup.user.uid))
        if self.in_process:
            pids -= set(self.setup.service.pids())
        return total_pss(sorted(pids))

    def servers(self, env: dict[str, str] | None, exclude: set[str]) -> dict[str, int]:
        """mount point -> server pid, from `layerfs mounts --json`, leaving out `exclude`."""
        listed = self.setup.user.run(self.setup.layerfs("mounts", "--json"), env=env).stdout
        try:
            records = json.loads(listed)
        except ValueError:
            raise BenchError(f"`layerfs mounts --json` printed no JSON: {listed[:120]!r}") from None
        return {r["mountpoint"]: int(r["pid"]) for r in records if r.get("mountpoint") not in exclude}

    def check_service(self, results: LaunchResults, what: str) -> None:
        """Say so when the service's process ended while measuring: then its PSS left
        the sum and a new service's came in, and the growth means little."""
        if self.service_pid is None:
            return
        now = self.setup.service.main_pid()
        if now != self.service_pid:
            results.notes.append(f"warning: {what}: the service (pid {self.service_pid}) ended while "
                                 f"measuring; now {f'pid {now}' if now else 'none runs'}")

    def settle(self) -> None:
        """After removing what was added: wait (10 s at most) for its processes to end."""
        deadline = time.monotonic() + 10
        while len(user_pids(self.setup.user.uid)) > self.count_before and time.monotonic() < deadline:
            time.sleep(0.05)


def _servers_rows(results: LaunchResults, counted: _Counted, column: str, label: str,
                  pids: list[int]) -> None:
    """mean and max PSS of the servers, or a note when the service serves them itself."""
    service_pids = set(counted.setup.service.pids())
    inside = [p for p in pids if p in service_pids]
    if inside:
        results.notes.append(f"{label} ({column}): served inside the service (pid {inside[0]}); "
                             f"their cost is the service's growth")
    own = [v for v in (pss_mib(p) for p in pids if p not in service_pids) if v is not None]
    if own:
        results.memory.setdefault(f"  {label}: mean", {})[column] = statistics.mean(own)
        results.memory.setdefault(f"  {label}: max", {})[column] = max(own)


def _browse_pss(setup: Setup, results: LaunchResults, column: str, env: dict[str, str] | None) -> None:
    user = setup.user
    user.run(setup.layerfs("ps", "-q"), env=env)  # the service warm
    counted = _Counted(setup, env)
    if counted.service_before is not None:
        results.memory.setdefault("service, idle (its own PSS)", {})[column] = counted.service_before
    points = [user.directory(f"bench-pss-{i}") for i in range(PSS_MOUNTS)]
    records = []
    try:
        for mp in points:
            records.append(mounts.register(mp, lambda mp=mp: user.run(setup.layerfs("umount", str(mp)),
                                                                     check=False, env=env)))
            user.run(setup.layerfs("mount", IMAGE, str(mp)), env=env)
            user.run(["ls", str(mp)])
        after = counted.total()
        service_after = pss_mib(counted.service_pid) if counted.service_pid else None
        counted.check_service(results, f"PSS, {PSS_MOUNTS} browse mounts")
        wanted = {str(p) for p in points}
        servers = {mp: pid for mp, pid in counted.servers(env, set()).items() if mp in wanted}
        if len(servers) != len(points):
            raise BenchError(f"`layerfs mounts --json` lists {len(servers)} of the {len(points)} mounts")
        results.memory.setdefault(ROW_PER_MOUNT, {})[column] = (after - counted.before) / len(points)
        _servers_rows(results, counted, column, "a browse mount's server", list(servers.values()))
        if service_after is not None:
            results.memory.setdefault(f"service with the {PSS_MOUNTS} mounts (its own PSS)", {})[column] = \
                service_after
    finally:
        for record in records:
            mounts.release(record)
        counted.settle()


def _container_pss(setup: Setup, results: LaunchResults, column: str, env: dict[str, str] | None) -> None:
    user = setup.user
    counted = _Counted(setup, env)
    mounted_before = set(counted.servers(env, set()))
    names = [f"bench-pss-c{i}" for i in range(PSS_CONTAINERS)]
    try:
        for name in names:
            user.run(setup.layerfs("run", "-d", "--name", name, IMAGE, "sleep", "1000"), env=env)
        time.sleep(0.2)  # let the inits reach sleep
        after = counted.total()
        counted.check_service(results, f"PSS, {PSS_CONTAINERS} containers")
        servers = counted.servers(env, mounted_before)
        results.memory.setdefault(ROW_PER_CONTAINER, {})[column] = (after - counted.before) / len(names)
        _servers_rows(results, counted, column, "a container's mount server", list(servers.values()))
    finally:
        user.run(setup.layerfs("rm", "-f", *names), check=False, env=env)
        counted.settle()


# ---------------------------------------------------------------- the report

def render_mount(results: LaunchResults) -> list[str]:
    out = []
    rows = {r: f for r, f in results.figures.items() if results.sections.get(r) == "mount"}
    if rows:
        out += ["", f"mount + first ls (rootless, bench user, run:latest; median of {REPS_START}; only the mount "
                "command + ls timed, the unmount not): layerfs = `layerfs mount IMAGE DIR && ls DIR` through the "
                "service (warm), in-process = the same with LAYERFS_NO_SERVICE=1, fuse-overlayfs = `fuse-overlayfs "
                "-o lowerdir=B:A DIR && ls DIR` over the layers unpacked to plain dirs, podman = `podman unshare "
                "sh -c 'd=$(podman image mount IMAGE) && ls \"$d\"'`"]
        out += table(rows, MOUNT_COLUMNS, MOUNT_RATIOS)
        if any(r.startswith("  ") for r in rows):
            out.append("indented rows: where a mount + ls through the service goes (differences of commands)")
    if results.memory:
        out += ["", f"memory (PSS from /proc/PID/smaps_rollup, MiB): {PSS_MOUNTS} browse mounts, each listed once; "
                f"{PSS_CONTAINERS} detached containers running sleep; per extra = growth of the PSS of all the "
                "bench user's processes / count (in-process: the service's processes left out)"]
        out += table(results.memory, ["layerfs", "in-process"], [], fmt="{:.1f}", scale=1.0)
    return out
