"""Subcommands for containers and volumes: call the container package, print."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from layerfs.cli.output import ago, human_size, print_json, quote_path, table
from layerfs.cli.progress import progress_for_terminal
from layerfs.container.changes import compare, container_trees
from layerfs.container.commit import commit
from layerfs.container.records import Container, Containers
from layerfs.container.volumes import Volumes
from layerfs.errors import BadInput, Busy
from layerfs.image.catalog import Catalog
from layerfs.store.layout import Store
from layerfs.union.access import MountKind
from layerfs.union.build import merged_tree
from layerfs.union.daemon import mount, unmount
from layerfs.union.mounts import live_mounts
from layerfs.union.operations import container_operations
from layerfs.union.tree import tree_identity


def cmd_create(store: Store, args: argparse.Namespace) -> None:
    with store.locked():
        image = Catalog(store).resolve(args.image)
        container = Containers(store).create(image.id, image.digest, args.image, args.name)
    print(container.id)


def cmd_ps(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    mounted = {r.id for r in live_mounts(store)}
    shown = [c for c in containers.all() if args.all or c.id in mounted]
    if args.json:
        print_json([dict(c.to_json(), status="mounted" if c.id in mounted else "created",
                         size=containers.layer_size(c)) for c in shown])
        return
    if args.quiet:
        for container in shown:
            print(container.short_id)
        return
    table(["CONTAINER ID", "IMAGE", "CREATED", "STATUS", "SIZE", "NAMES"],
          [[c.short_id, c.image_ref, ago(c.created), "Mounted" if c.id in mounted else "Created",
            human_size(containers.layer_size(c)), c.name] for c in shown])


def _mounted_at(store: Store, container: Container) -> str | None:
    return next((r.mountpoint for r in live_mounts(store) if r.id == container.id), None)


def cmd_rm(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    with store.locked():
        for ref in args.containers:
            container = containers.resolve(ref)
            if where := _mounted_at(store, container):
                if not args.force:
                    raise Busy(f"container {container.name} is mounted at {where}: umount it first, or rm -f")
                unmount(store, Path(where), force=True)
            containers.remove(container)
            print(container.name)


def mount_container(store: Store, container: Container, mountpoint: Path, foreground: bool,
                    kind: MountKind) -> None:
    if where := _mounted_at(store, container):
        raise Busy(f"container {container.name} is already mounted at {where}")
    image = Catalog(store).resolve(container.image_digest)
    tree = merged_tree(store, image.diff_ids)
    make = container_operations(tree, Containers(store).upper(container),
                                tree_identity(image.diff_ids, tree), kind)
    if foreground:
        print(f"Serving container {container.name} at {mountpoint}; press Ctrl-C to unmount", file=sys.stderr)
    pid = mount(store, make, mountpoint, container.name, container.id, foreground, kind, writable=True)
    if not foreground:
        print(f"Mounted container {container.name} at {mountpoint} (read-write, {kind.label}, pid {pid})")


def cmd_diff(store: Store, args: argparse.Namespace) -> None:
    container = Containers(store).resolve(args.container)
    base, current = container_trees(store, container)
    changes = sorted(compare(base, current), key=lambda c: c.path)
    if args.json:
        print_json([{"path": os.fsdecode(c.path), "kind": c.kind} for c in changes])
        return
    for change in changes:
        print(change.kind, quote_path(change.path))


def cmd_commit(store: Store, args: argparse.Namespace) -> None:
    container = Containers(store).resolve(args.container)
    if where := _mounted_at(store, container):
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
