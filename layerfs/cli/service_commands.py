"""`layerfs service status|start|stop`: the resident service of this user and store."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from layerfs.cli.entry import service_command, service_disabled
from layerfs.cli.output import print_json
from layerfs.errors import LayerfsError
from layerfs.service import client
from layerfs.service.place import place_for
from layerfs.store.layout import Store
from layerfs.union.mounts import daemon_alive

STOP_TIMEOUT = 10.0


def register(command) -> None:  # noqa: ANN001 - main's `command` helper
    service = command("service", None, "the resident service that starts containers and mounts",
                      "The commands that start, enter and mount (run, exec, mount, umount, ps, stop, ...)\n"
                      "go through a resident service of yours, one per store, which the first of them\n"
                      "starts: it keeps the interpreter and its imports warm, and runs each command in\n"
                      "a process forked from it, as if that command ran in your shell (your terminal,\n"
                      "directory, environment). Containers and mounts are processes of their own: they\n"
                      "outlive the service, and a new one finds them again. It exits after\n"
                      "$LAYERFS_SERVICE_IDLE seconds without a command (default 300).\n"
                      "LAYERFS_NO_SERVICE=1 runs every command in-process instead, with the same results.")
    commands = service.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    p = command("status", cmd_status, "say whether the service runs, and what it holds", under=commands)
    p.add_argument("--json", action="store_true",
                   help="print a JSON object (running, pid, store, socket, uptime, idle_timeout, served, "
                        "running_commands, trees, namespace)")
    p = command("start", cmd_start, "start the service now (commands start it when needed)", under=commands)
    p.add_argument("--idle", type=float, metavar="SECONDS",
                   help="exit after this many seconds without a command (default: $LAYERFS_SERVICE_IDLE, "
                        "else 300)")
    command("stop", cmd_stop, "stop the service (its containers and mounts go on)", under=commands)


def _root(store: Store) -> str:
    return os.path.abspath(store.root)


def cmd_status(store: Store, args: argparse.Namespace) -> None:
    status = client.control(_root(store), "status")
    if args.json:
        print_json({"running": False, "store": _root(store)} if status is None else _shown(status))
        return
    if status is None:
        why = " (LAYERFS_NO_SERVICE is set: commands run in-process)" if service_disabled() else ""
        print(f"service: not running for {_root(store)}{why}")
        return
    for key, value in _lines(status):
        print(f"{key + ':':<11}{value}")


def _shown(status: dict[str, Any]) -> dict[str, Any]:
    shown = {key: value for key, value in status.items() if key != "running"}
    return {"running": True, **shown, "running_commands": status["running"]}


def _lines(status: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("service", f"running (pid {status['pid']}, up {_duration(status['uptime'])}, exits after "
                         f"{_duration(status['idle_timeout'])} idle)"),
             ("store", status["store"]), ("socket", status["socket"]),
             ("served", f"{status['served']} commands, {status['running']} running now")]
    if "trees" in status:
        lines.append(("trees", f"{status['trees']} merged trees in memory"))
    if status.get("namespace"):
        lines.append(("namespace", status["namespace"]))
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_start(store: Store, args: argparse.Namespace) -> None:
    root = _root(store)
    status = client.control(root, "status")
    if status is None:
        place = place_for(root, create=True)
        if place is None:
            raise LayerfsError("cannot start the service: its directory is not private to you "
                               "(see $XDG_RUNTIME_DIR, or /tmp/layerfs-UID)")
        command = service_command(root) + ([] if args.idle is None else ["--idle", str(args.idle)])
        try:
            sock = client.start(place, command)
        except client.Foreign as e:
            raise LayerfsError(f"cannot start the service: {e}") from None
        if sock is None:
            raise LayerfsError(f"the service did not start (see {place.log})")
        sock.close()
        status = client.control(root, "status")
    if status is None:
        raise LayerfsError("the service stopped just after it started")
    print(f"service: running (pid {status['pid']}) for {root}")


def cmd_stop(store: Store, args: argparse.Namespace) -> None:
    root = _root(store)
    status = client.control(root, "stop")
    if status is None:
        print(f"service: not running for {root}")
        return
    pid = int(status["pid"])
    deadline = time.monotonic() + STOP_TIMEOUT
    while daemon_alive(pid):
        if time.monotonic() > deadline:
            raise LayerfsError(f"the service (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")
        time.sleep(0.01)
    print(f"service: stopped (pid {pid})")
