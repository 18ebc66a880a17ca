"""Container start and exec latency: `layerfs run` beside podman and bubblewrap.

All three run rootless, as one unprivileged bench user, on the same image (the
bench image's Debian minbase + python3 layers, without the 1 GiB data layer):
  layerfs     `layerfs run --rm run:latest true` on the user's own store, as the
              CLI does it: through the user's resident service (warm: started by
              an untimed call first) when the CLI has one
  in-process  the same with LAYERFS_NO_SERVICE=1: CLI, launcher and FUSE server
              start in the command's own processes
  podman      `podman run --rm --network host run:latest true`: runc, cgroupfs,
              fuse-overlayfs as the mount program (what rootless users get here)
  bwrap       bubblewrap on the image unpacked to a directory: user, pid, ipc,
              uts, cgroup namespaces, fresh /proc, minimal /dev (no image store, no
              union, no init: the floor for a start)
Each figure is the median of REPS_START runs after two untimed ones; `20 starts
back to back` is one shell loop; the cold first start is `layerfs service stop`
(nothing else dropped), then one timed `run --rm` that starts the service
(median of 3 such cycles). `exec` is `exec CONTAINER true` into a running
container. Where a start goes is measured apart, as differences: python's own
start (with -S for the client, which runs so; with `site` in-process); through the service, the client (python, its imports and one request:
`layerfs ps -q`) and what the service does for the run; in-process, the CLI's
and launcher's imports, a user namespace with the subordinate map (`layerfs
unshare true`), the FUSE server's imports (it is forked, and imports pyfuse3 and
trio while the launcher waits for the mount), a mount of the container, and what
is left (pid/mount/uts/ipc namespaces, the root filesystem, the init, exec).
The `mount` group (mount + first ls, PSS per mount) is in mountbench.py.
"""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from . import mountbench
from .imagebuild import CachePaths
from .rootless import IMAGE, NO_SERVICE, REPS_START, LaunchResults, Setup, loop, median_of, table
from .util import log

LAUNCH_GROUPS = ["start", "exec", "mount"]
START_LIMIT = 0.3  # run --rm IMAGE true through the service <= 0.3x podman
COLD_CYCLES = 3
ROW_RUN, ROW_LOOP, ROW_COLD = "run --rm IMAGE true", "20 starts back to back", "cold first start (service stopped)"
ROW_EXEC = "exec CONTAINER true"


def run_launch(paths: CachePaths, layerfs: Path, groups: list[str], reps: int = REPS_START) -> LaunchResults:
    setup = Setup(paths, layerfs)
    setup.prepare()
    results = LaunchResults()
    service = setup.service
    service.probe()
    results.service_up, results.service = service.up, service.state
    log(f"layerfs service: {service.state}")
    try:
        if "start" in groups:
            _start(setup, results, reps)
        if "exec" in groups:
            _exec(setup, results, reps)
        if "mount" in groups:
            mountbench.run_mount(setup, results, reps)
    finally:
        service.stop()
    return results


def _start(setup: Setup, results: LaunchResults, reps: int) -> None:
    user, service = setup.user, setup.service
    run_rm = setup.layerfs("run", "--rm", IMAGE, "true")
    if service.up:
        def cold() -> None:
            samples = []
            for _ in range(COLD_CYCLES):
                service.stop()
                samples.append(user.timed(run_rm))
            results.add(ROW_COLD, "layerfs", statistics.median(samples))
        log("start latency: cold first start of the service")
        results.attempt(f"{ROW_COLD}: layerfs", cold)
    starts = {
        "layerfs": (run_rm, None),  # warm: median_of's untimed runs start the service if need be
        "in-process": (run_rm, NO_SERVICE),
        "podman": (["podman", "run", "--rm", "--network", "host", f"localhost/{IMAGE}", "true"], None),
        "bwrap": (setup.bwrap("true"), None),
    }
    for runtime, (argv, env) in starts.items():
        def measure(runtime: str = runtime, argv: list[str] = argv, env: dict[str, str] | None = env) -> None:
            log(f"start latency: {runtime}")
            results.add(ROW_RUN, runtime, median_of(lambda: user.timed(argv, env=env), reps))
            results.add(ROW_LOOP, runtime, loop(user, argv, env=env))
        results.attempt(f"{ROW_RUN}: {runtime}", measure)
    _breakdown(setup, results, reps)
    results.target(f"{ROW_RUN}: layerfs through the service <= {START_LIMIT}x podman",
                   results.ratio(ROW_RUN, "layerfs", "podman") if service.up else None, START_LIMIT)


def _exec(setup: Setup, results: LaunchResults, reps: int) -> None:
    user = setup.user
    log("exec latency")
    starts = {
        "layerfs": setup.layerfs("run", "-d", "--name", "bench-exec", IMAGE, "sleep", "infinity"),
        "podman": ["podman", "run", "-d", "--name", "bench-exec", "--network", "host", f"localhost/{IMAGE}",
                   "sleep", "infinity"],
    }
    execs = {
        "layerfs": ("layerfs", setup.layerfs("exec", "bench-exec", "true"), None),
        "in-process": ("layerfs", setup.layerfs("exec", "bench-exec", "true"), NO_SERVICE),
        "podman": ("podman", ["podman", "exec", "bench-exec", "true"], None),
    }
    try:
        running = set()
        for runtime, argv in starts.items():
            if results.attempt(f"{ROW_EXEC}: {runtime}: the container", lambda argv=argv: user.run(argv)):
                running.add(runtime)
        for column, (container, argv, env) in execs.items():
            if container in running:
                results.attempt(f"{ROW_EXEC}: {column}", lambda column=column, argv=argv, env=env: results.add(
                    ROW_EXEC, column, median_of(lambda: user.timed(argv, env=env), reps)))
    finally:
        user.run(setup.layerfs("rm", "-f", "bench-exec"), check=False)
        user.run(["podman", "rm", "-f", "-t", "0", "bench-exec"], check=False)


def _breakdown(setup: Setup, results: LaunchResults, reps: int) -> None:
    """Where a layerfs start goes, as differences of commands that each add one step:
    through the service (layerfs column) and in-process (in-process column). A step
    that fails leaves out the rows that need it."""
    user = setup.user
    python = str(Path(setup.binary).parent / "python")
    mountpoint = user.directory("bench-mnt")
    mount_cycle = (shlex.join(setup.layerfs("mount", "bench-mount", str(mountpoint))) + " && "
                   + shlex.join(setup.layerfs("umount", str(mountpoint))))
    commands = {
        "python": ([python, "-c", "pass"], None),
        "python -S": ([python, "-S", "-c", "pass"], None),  # how the client runs (scripts/setup)
        "imports": ([setup.binary, "--help"], NO_SERVICE),  # the CLI's imports and its parser, what run loads
        "fuse": ([python, "-c", "import pyfuse3, trio"], None),
        "unshare": (setup.layerfs("unshare", "--", "true"), NO_SERVICE),
        "mount": (["sh", "-c", mount_cycle], NO_SERVICE),  # two layerfs commands
    }
    if setup.service.up:
        commands["client"] = (setup.layerfs("ps", "-q"), None)  # python + the client + one request
    total: dict[str, float] = {}
    if not results.attempt("where a start goes: create bench-mount", lambda: user.run(
            setup.layerfs("create", "--name", "bench-mount", IMAGE), env=NO_SERVICE)):
        del commands["mount"]
    try:
        for name, (argv, env) in commands.items():
            def measure(name: str = name, argv: list[str] = argv, env: dict[str, str] | None = env) -> None:
                total[name] = median_of(lambda: user.timed(argv, env=env), reps)
            results.attempt(f"where a start goes: {name}", measure)
    finally:
        user.run(setup.layerfs("rm", "-f", "bench-mount"), check=False, env=NO_SERVICE)

    def add(label: str, column: str, needs: list[str], value) -> None:  # noqa: ANN001
        if all(k in total for k in needs):
            results.add(label, column, max(value(), 0.0))

    total["start"], total["inproc"] = results.get(ROW_RUN, "layerfs"), results.get(ROW_RUN, "in-process")
    total = {k: v for k, v in total.items() if v is not None}
    add("  python start", "layerfs", ["python -S"], lambda: total["python -S"])
    add("  python start", "in-process", ["python"], lambda: total["python"])
    add("  client: imports + one request (`ps -q`)", "layerfs", ["client", "python -S"],
        lambda: total["client"] - total["python -S"])
    add("  in the service: the run itself", "layerfs", ["client", "start"], lambda: total["start"] - total["client"])
    fuse = ["fuse", "python"]
    add("  layerfs imports", "in-process", ["imports", "python"], lambda: total["imports"] - total["python"])
    add("  user namespace + id maps", "in-process", ["unshare", "imports"], lambda: total["unshare"] - total["imports"])
    add("  FUSE server's imports (pyfuse3, trio)", "in-process", fuse, lambda: total["fuse"] - total["python"])
    add("  mount + unmount, besides", "in-process", ["mount", "imports", *fuse],
        lambda: total["mount"] - 2 * total["imports"] - (total["fuse"] - total["python"]))
    add("  the rest: namespaces, rootfs, init, exec", "in-process", ["inproc", "unshare", "mount", *fuse],
        lambda: total["inproc"] - total["unshare"] - (total["fuse"] - total["python"])
        - (total["mount"] - 2 * total["imports"] - (total["fuse"] - total["python"])))


# ---------------------------------------------------------------- the report

START_COLUMNS = ["layerfs", "in-process", "podman", "bwrap"]
START_RATIOS = [("lfs/podman", "layerfs", "podman"), ("inproc/podman", "in-process", "podman"),
                ("lfs/bwrap", "layerfs", "bwrap")]


def render_launch(results: LaunchResults) -> str:
    out = [f"layerfs service: {results.service}"]
    if not results.service_up:
        out.append("  (so the `layerfs` column is the CLI as it is now, in-process like the in-process column, "
                   "and the service's rows and targets are n/a)")
    start_rows = {r: f for r, f in results.figures.items() if results.sections.get(r) == "start"}
    if start_rows:
        out += ["", f"container start (rootless, one bench user, same image; median of {REPS_START} unless a "
                "loop; layerfs = through the service, warm; in-process = LAYERFS_NO_SERVICE=1)"]
        out += table(start_rows, START_COLUMNS, START_RATIOS)
        if any(r.startswith("  ") for r in start_rows):
            out.append("indented rows: where a layerfs start goes (differences of commands that each add one step; "
                       "the rest is the pid/mount/uts/ipc namespaces, /proc /dev /sys, pivot_root, the init, "
                       "exec)")
        if ROW_COLD in results.figures:
            out.append(f"cold first start: `layerfs service stop`, nothing else dropped, then one timed "
                       f"`run --rm IMAGE true` that starts the service; median of {COLD_CYCLES} cycles")
    out += mountbench.render_mount(results)
    if results.targets:
        passed = sum(t.status == "PASS" for t in results.targets)
        failed = sum(t.status == "FAIL" for t in results.targets)
        out += ["", f"targets: {passed} PASS, {failed} FAIL, {len(results.targets) - passed - failed} n/a"]
        for t in results.targets:
            shown = "n/a" if t.value is None else (f"{t.value:.1f} MiB" if "MiB" in t.name else f"{t.value:.2f}x")
            out.append(f"  {t.status:4}  {t.name} (got {shown})")
    out += [f"error: {what}: {message}" for what, message in results.errors.items()]
    out += results.notes
    return "\n".join(out)
