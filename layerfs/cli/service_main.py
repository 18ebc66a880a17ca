"""The resident service's program (the CLI's client starts it; see layerfs/service/).

It imports what the commands that go through it need, builds the argument
parser once, freezes the garbage collector's view of all that (so that the
workers forked from here share those pages instead of copying them when a
collection would touch them), and serves.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable

import prctl

from layerfs.cli import main as cli
from layerfs.service.place import place_for
from layerfs.service.server import Service

DEFAULT_IDLE = 300.0
NAME = "layerfs-service"  # what ps shows (/proc/PID/comm)


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
    return cli.build_parser()


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
    gc.collect()
    gc.freeze()
    service = Service(place, args.root, lambda argv: cli.main(argv, command_parser), idle_seconds(args.idle),
                      outdated=_code_stamp())
    service.serve(args.ready_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
