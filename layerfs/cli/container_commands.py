"""Subcommands for containers and volumes: call the container package, print."""

from __future__ import annotations

import argparse

from layerfs.cli.output import ago, human_size, print_json, table
from layerfs.container.records import Containers
from layerfs.container.volumes import Volumes
from layerfs.errors import BadInput
from layerfs.image.catalog import Catalog
from layerfs.store.layout import Store
from layerfs.union.mounts import live_mounts


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


def cmd_rm(store: Store, args: argparse.Namespace) -> None:
    containers = Containers(store)
    with store.locked():
        for ref in args.containers:
            container = containers.resolve(ref)
            containers.remove(container)
            print(container.name)


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
