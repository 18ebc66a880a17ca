"""Subcommands for containers and volumes: call the container package, print."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from launcher.control import kill, wait_finished
from launcher.monitor import remove
from launcher.state import CREATED, EXITED, PAUSED, RUNNING, State, read_state
from layerfs.cli.output import ago, duration, human_size, print_json, quote_path, table
from layerfs.cli.progress import progress_for_terminal
from layerfs.container.changes import container_changes
from layerfs.container.commit import commit
from layerfs.container.mounting import mount_container, mounted_at
from layerfs.container.records import Container, Containers
from layerfs.container.volumes import Volumes
from layerfs.errors import BadInput, Busy
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.daemon import unmount
from layerfs.union.mounts import known_mounts, live_mounts


def _status(state: State, mounted: bool) -> tuple[str, str]:
    """(for --json, for people), as docker ps words them; a container that is mounted by
    `layerfs mount` but not running is "mounted"."""
    if state.alive:
        up = f"Up {duration(state.started_at)}"
        return (PAUSED, f"{up} (Paused)") if state.status == PAUSED else (RUNNING, up)
    if mounted:
        return "mounted", "Mounted"
    if state.status == EXITED:
        return EXITED, f"Exited ({state.exit_code}) {ago(state.finished_at)}"
    return CREATED, "Created"


def _command_line(container: Container) -> str:
    argv = container.run["process"]["argv"] if container.run else []
    text = shlex.join(argv)
    return f'"{text[:19]}…"' if len(text) > 20 else f'"{text}"'


def cmd_ps(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    mounted = {r.id for r in live_mounts(store)}
    rows = []
    for container in containers.all():
        state = read_state(containers.path(container))
        status = _status(state, container.id in mounted)
        if args.all or status[0] != EXITED and status[0] != CREATED:
            rows.append((container, state, status))
    if args.json:
        print_json([dict(c.to_json(), status=status[0], exit_code=state.exit_code,
                         pid=state.pid or None, started_at=state.started_at, finished_at=state.finished_at,
                         command=c.run["process"]["argv"] if c.run else [],
                         size=containers.layer_size(c)) for c, state, status in rows])
        return
    if args.quiet:
        for container, _state, _status_ in rows:
            print(container.short_id)
        return
    table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "SIZE", "NAMES"],
          [[c.short_id, c.image_ref, _command_line(c), ago(c.created), status[1],
            human_size(containers.layer_size(c)), c.name] for c, _state, status in rows])


def container_inspection(store: Store, container: Container) -> dict[str, object]:
    """`inspect CONTAINER`: the record, its state, and what it runs (docker's Config
    and HostConfig in one: the process, ports and volumes, the run options)."""
    containers = Containers(store)
    state = read_state(containers.path(container))
    run = dict(container.run or {})
    process = run.pop("process", {})
    status, _ = _status(state, bool(mounted_at(store, container)))
    return dict(container.to_json(), state=dict(asdict(state), status=status), config=process, host_config=run,
                size=containers.layer_size(container))


def cmd_rm(store: Store, args: argparse.Namespace) -> None:
    """Refuse a running or mounted container unless -f, which kills it first (as docker's
    rm -f) or unmounts it; -v takes its anonymous volumes along."""
    containers = Containers(store)
    for ref in args.containers:
        container = containers.resolve(ref)
        directory = containers.path(container)
        if read_state(directory).alive:
            if not args.force:
                raise Busy(f"container {container.name} is running: stop it first, or rm -f")
            kill(directory)
        wait_finished(directory, 10.0)  # a monitor still taking its mount down
        with store.locked():
            if not containers.exists(container):  # it was run with --rm: gone with its end
                print(container.name)
                continue
            if where := mounted_at(store, container):
                if not args.force:
                    raise Busy(f"container {container.name} is mounted at {where}: umount it first, or rm -f")
                unmount(store, Path(where), force=True)
            for dead in [r for r in known_mounts(store) if r.id == container.id and not r.served and r.here]:
                unmount(store, Path(dead.mountpoint), force=True)  # its server died: nothing to flush
        remove(store, container, volumes=args.volumes)
        print(container.name)


def mount_container_here(store: Store, container: Container, mountpoint: Path, foreground: bool,
                         kind: MountKind) -> None:
    if foreground:
        print(f"Serving container {container.name} at {mountpoint}; press Ctrl-C to unmount", file=sys.stderr)
    pid = mount_container(store, container, mountpoint, kind, foreground)
    if not foreground:
        print(f"Mounted container {container.name} at {mountpoint} (read-write, {kind.label}, pid {pid})")


def cmd_diff(store: Store, args: argparse.Namespace) -> None:
    container = Containers(store).resolve(args.container)
    _tree, found = container_changes(store, container)
    changes = sorted(found, key=lambda c: c.path)
    if args.json:
        print_json([{"path": os.fsdecode(c.path), "kind": c.kind} for c in changes])
        return
    for change in changes:
        print(change.kind, quote_path(change.path))


def cmd_commit(store: Store, args: argparse.Namespace) -> None:
    container = Containers(store).resolve(args.container)
    if where := mounted_at(store, container):
        raise Busy(f"container {container.name} is mounted read-write at {where}: umount it "
                   "before committing, so the image gets one consistent state")
    with progress_for_terminal(True) as progress:
        image, _ = commit(store, container, args.name, args.message or "", progress)
    print(image.id)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key:
            raise BadInput(f"invalid label {pair!r}: use KEY=VALUE")
        labels[key] = value if sep else ""
    return labels


def cmd_volume_create(store: Store, args: argparse.Namespace) -> None:
    with store.locked():
        volume = Volumes(store).create(args.name, _labels(args.label))
    print(volume.name)


def cmd_volume_ls(store: Store, args: argparse.Namespace) -> None:
    volumes = Volumes(store).all()
    if args.json:
        print_json([v.to_json() for v in volumes])
    elif args.quiet:
        for volume in volumes:
            print(volume.name)
    else:
        table(["DRIVER", "VOLUME NAME", "CREATED"], [["local", v.name, ago(v.created)] for v in volumes])


def cmd_volume_inspect(store: Store, args: argparse.Namespace) -> None:
    volumes = Volumes(store)
    print_json([volumes.get(name).to_json() for name in args.names])


def cmd_volume_rm(store: Store, args: argparse.Namespace) -> None:
    volumes = Volumes(store)
    with store.locked():
        for name in args.names:
            volumes.remove(volumes.get(name))
            print(name)
