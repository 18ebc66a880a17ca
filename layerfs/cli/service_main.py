"""The resident service's program (the CLI's client starts it; see layerfs/service/).

It imports what the commands that go through it need, builds the argument
parser once, freezes the garbage collector's view of all that (so that the
workers forked from here share those pages instead of copying them when a
collection would touch them), and serves.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import sys
from pathlib import Path
from collections.abc import Callable

import prctl

from launcher import held
from launcher.idmap import user_map
from layerfs.cli import main as cli
from layerfs.errors import LayerfsError
from layerfs.identity import in_user_namespace
from layerfs.store.layout import Store
from layerfs.union.build import keep_recent_trees, trees_in_memory
from layerfs.service.place import place_for
from layerfs.service.server import Service

DEFAULT_IDLE = 300.0
KEEP_TREES = 4  # merged trees of the images mounted last, held for the next mount or start
NAME = "layerfs-service"  # what ps shows (/proc/PID/comm)
# Parsed once at warm-up, for the regular expressions argparse compiles as it matches
# (re caches them): a worker would otherwise compile them again for every command.
TYPICAL_COMMANDS = (["run", "--rm", "-i", "-t", "IMAGE", "true"], ["run", "-d", "--name", "N", "IMAGE"],
                    ["exec", "-it", "CONTAINER", "true"], ["mount", "IMAGE", "DIR"], ["umount", "DIR"],
                    ["ps", "-a", "-q"], ["stop", "CONTAINER"], ["rm", "-f", "CONTAINER"], ["mounts"], ["images"])


def idle_seconds(given: float | None = None) -> float:
    """How long a service without requests lives: --idle, else $LAYERFS_SERVICE_IDLE."""
    if given is not None:
        return given
    try:
        return float(os.environ.get("LAYERFS_SERVICE_IDLE", DEFAULT_IDLE))
    except ValueError:
        return DEFAULT_IDLE


def _code_stamp() -> Callable[[], bool]:
    """A check of whether any module of layerfs it runs changed on disk since now (an
    upgrade, a checkout): such a service answers "in-process" and stops, so that the
    next command starts one of the new code. ~150 stats: well under a millisecond."""
    def stamp() -> list[float]:
        seen = []
        for path in files:
            try:
                seen.append(os.stat(path).st_mtime)
            except OSError:
                seen.append(-1.0)
        return seen
    files = sorted(module.__file__ for name, module in list(sys.modules.items())
                   if name.split(".")[0] in ("layerfs", "launcher") and getattr(module, "__file__", None))
    at_start = stamp()
    return lambda: stamp() != at_start


def _warm() -> argparse.ArgumentParser:
    """Import what mounting, starting and entering use (the command modules the parser
    imports, the FUSE server's trio and pyfuse3, the launcher) and build the parser."""
    import pyfuse3  # noqa: F401
    import trio  # noqa: F401

    import launcher.control  # noqa: F401
    import launcher.monitor  # noqa: F401
    import layerfs.union.readonly  # noqa: F401
    import layerfs.union.readwrite  # noqa: F401
    import layerfs.union.upper  # noqa: F401
    parser = cli.build_parser()
    with contextlib.redirect_stderr(io.StringIO()):
        for argv in TYPICAL_COMMANDS:
            with contextlib.suppress(SystemExit):
                parser.parse_known_args(argv)
    return parser


def _hold_user_namespace() -> None:
    """Rootless: keep a user namespace with the user's map ready for starts to join
    (launcher/held.py). Without one (no subordinate ids, no newuidmap), each start
    makes its own and says what is wrong, as it would in-process."""
    if os.geteuid() == 0 and not in_user_namespace():
        return
    try:
        held.hold(user_map(os.getuid(), os.getgid()))
    except LayerfsError as e:
        print(f"layerfs-service: starts will make their own user namespace: {e.message}", file=sys.stderr)


def _details() -> dict[str, object]:
    holder = held.held()
    return {"namespace": holder.describe() if holder else "", "trees": trees_in_memory()}


def main() -> int:
    parser = argparse.ArgumentParser(prog=NAME, description="the resident layerfs service (started by layerfs)")
    parser.add_argument("--root", required=True, help="the store (an absolute path)")
    parser.add_argument("--ready-fd", type=int, required=True, help="where to say ok once listening")
    parser.add_argument("--idle", type=float, help="exit after this many seconds without a command")
    args = parser.parse_args()
    os.chdir("/")  # keep no directory of the starter's busy
    # Before anything changes the environment: python-prctl moves the environment's
    # strings on its first set_proctitle, and crashes if os.environ was rebuilt since
    # (workers rebuild it, and pid 1 of a container sets its own title).
    prctl.set_proctitle(NAME)
    prctl.set_name(NAME)
    place = place_for(args.root, create=True)
    if place is None:
        os.write(args.ready_fd, b"no private directory for the service\n")
        return 1
    command_parser = _warm()
    _hold_user_namespace()
    store = Store(Path(args.root))

    def keep_trees() -> None:
        keep_recent_trees(store, KEEP_TREES)
    keep_trees()
    gc.collect()
    gc.freeze()
    service = Service(place, args.root, lambda argv: cli.main(argv, command_parser), idle_seconds(args.idle),
                      details=_details, outdated=_code_stamp(), after_command=keep_trees)
    service.serve(args.ready_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
