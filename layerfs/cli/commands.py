"""One function per subcommand: call the storage model, print the result."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from layerfs.cli.output import ago, human_size, print_json, quote_path, table
from layerfs.cli.progress import progress_for_terminal
from layerfs.container.records import Containers
from layerfs.container.usage import image_use
from layerfs.cli.container_commands import container_inspection, mount_container_here
from layerfs.cli.references import image_argument
from layerfs.errors import BadInput, LayerfsError, NotFound
from layerfs.image.catalog import Catalog, Image, reference_name
from layerfs.image.importer import import_image
from layerfs.image.transports import open_source
from layerfs.inspect.layer_view import layer_view
from layerfs.store.layout import Store
from layerfs.union.build import merged_tree, prune_tree_cache
from layerfs.union.access import mount_kind
from layerfs.union.operations import image_operations
from layerfs.union.daemon import check_mountpoint, mount, unmount
from layerfs.union.mounts import known_mounts


def _report_skipped(path: str, why: str) -> None:
    print(f"layerfs: skipped ({why}): {quote_path(os.fsencode(path))}", file=sys.stderr)


def cmd_import(store: Store, args: argparse.Namespace) -> None:
    source = open_source(args.source, _report_skipped if args.skip_unreadable else None)
    with progress_for_terminal(args.quiet) as progress:
        image, name = import_image(store, source, args.name, progress)
    if args.quiet:
        print(image.id)
    else:
        print(f"Loaded image: {name or image.short_id} ({image.id})")


def _image_json(catalog: Catalog, image: Image) -> dict[str, Any]:
    return {"id": image.id, "digest": image.digest, "names": image.names,
            "created": image.created, "size": catalog.size(image)}


def cmd_images(store: Store, args: argparse.Namespace) -> None:
    catalog = Catalog(store)
    images = catalog.images()
    if args.json:
        print_json([_image_json(catalog, image) for image in images])
        return
    if args.quiet:
        for image in images:
            print(image.short_id)
        return
    rows = []
    for image in images:
        size = human_size(catalog.size(image))
        for name in image.names or ["<none>:<none>"]:
            repository, tag = name.rsplit(":", 1)
            rows.append([repository, tag, image.short_id, ago(image.created), size])
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)


def cmd_inspect(store: Store, args: argparse.Namespace) -> int | None:
    if args.tui:
        if args.json:
            args.parser.error("--tui and --json do not go together")
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise LayerfsError("--tui needs a terminal (standard input and output); when piped, "
                               "use `layerfs history`, `diff` or `analyze`")
        from layerfs.cli import tui  # textual is imported here only, not by other commands

        return tui.run(store, args.ref)
    if args.ref.startswith("docker://"):
        from layerfs.cli.registry_commands import inspect_remote

        return inspect_remote(args)
    if args.raw or args.config:
        raise BadInput("--raw and --config are for docker:// references (a stored image: --json)")
    catalog = Catalog(store)
    try:
        at = image_argument(store, args.ref)  # oci: and archives too, imported once
    except NotFound as unknown:
        try:
            container = Containers(store).resolve(args.ref)
        except NotFound:
            raise unknown from None
        print_json(container_inspection(store, container))
        return
    if at.upto is not None:
        raise BadInput(f"{args.ref}: inspect shows a whole image; REF@N is for history, diff, analyze, "
                       "mount and export")
    image = at.image
    layers = [{"digest": layer.digest, "diff_id": diff_id, "media_type": layer.media_type, "size": layer.size}
              for layer, diff_id in zip(image.manifest.layers, image.diff_ids)]
    if args.json:
        print_json(dict(_image_json(catalog, image), manifest=image.manifest_doc, config=image.config,
                        layers=layers))
        return
    process = image.config.get("config") or {}
    command = (process.get("Entrypoint") or []) + (process.get("Cmd") or [])
    fields = [
        ("Id", image.id), ("Digest", image.digest), ("Names", ", ".join(image.names) or "<none>"),
        ("Created", f"{image.created} ({ago(image.created)})"),
        ("Platform", f"{image.config.get('os', '?')}/{image.config.get('architecture', '?')}"),
        ("Size", human_size(catalog.size(image))), ("Command", json.dumps(command)),
        ("WorkingDir", process.get("WorkingDir") or "/"), ("User", process.get("User") or "root"),
        ("Ports", " ".join(sorted(process.get("ExposedPorts") or {})) or "<none>"),
        ("Volumes", " ".join(sorted(process.get("Volumes") or {})) or "<none>"),
    ]
    for key, value in fields:
        print(f"{key + ':':<12}{value}")
    for var in process.get("Env") or []:
        print(f"{'Env:':<12}{var}")
    print("Layers:")
    for number, layer in enumerate(layers, 1):
        kind = layer["media_type"].rsplit(".", 1)[-1]
        print(f"  {number:>3}  {layer['digest']}  {kind:<9} {human_size(layer['size']):>9}")


def cmd_tag(store: Store, args: argparse.Namespace) -> None:
    catalog = Catalog(store)
    name = reference_name(args.target)
    with store.locked():
        image = catalog.resolve(args.source)
        catalog.name(catalog.descriptor(image), name)


def cmd_rmi(store: Store, args: argparse.Namespace) -> None:
    catalog = Catalog(store)
    with store.locked():
        use_of = image_use(store)
        with catalog.batch():
            removals = [catalog.remove_reference(ref, args.force, use_of) for ref in args.refs]
        freed, live_layers = catalog.collect_garbage()
        prune_tree_cache(store, live_layers)
    for removal in removals:
        for name in removal.untagged:
            print(f"Untagged: {name}")
        if removal.deleted:
            print(f"Deleted: {removal.image.id}")
        elif removal.kept_for:
            print(f"layerfs: kept image {removal.image.short_id} without a name: it is "
                  f"{removal.kept_for.what}", file=sys.stderr)
    if freed:
        print(f"Reclaimed {human_size(freed)}", file=sys.stderr)


def cmd_mount(store: Store, args: argparse.Namespace) -> None:
    mountpoint = check_mountpoint(Path(args.mountpoint))
    kind = mount_kind(args.allow_other)
    try:
        container = Containers(store).resolve(args.ref)
    except NotFound:
        container = None
    if container is not None:
        if args.layer is not None:
            raise BadInput(f"{args.ref} is a container: --layer shows a layer of an image "
                           "(give the container's image, as `layerfs inspect` names it)")
        mount_container_here(store, container, mountpoint, args.foreground, kind)
        return
    at = image_argument(store, args.ref)  # REF@N, and oci: and archives, imported once
    if args.layer is None:
        tree, name = merged_tree(store, at.diff_ids), at.label
    else:
        _descriptor, diff_id = at.layer(args.layer)
        tree, name = layer_view(store, diff_id), f"{at.name} layer {args.layer}"
    make = image_operations(tree, kind)
    if args.foreground:
        print(f"Serving {name} at {mountpoint}; press Ctrl-C to unmount", file=sys.stderr)
    pid = mount(store, make, mountpoint, name, at.image.id, args.foreground, kind)
    if not args.foreground:
        print(f"Mounted {name} at {mountpoint} (read-only, {kind.label}, pid {pid})")


def cmd_umount(store: Store, args: argparse.Namespace) -> None:
    unmount(store, Path(args.mountpoint))


def cmd_mounts(store: Store, args: argparse.Namespace) -> None:
    """Every mount still mounted; one whose server died is listed as dead (it answers
    ENOTCONN until `layerfs umount` takes it down), not hidden."""
    listed = [(r, r.served) for r in known_mounts(store)]
    if args.json:
        print_json([dict(r.to_json(), here=r.here, alive=alive) for r, alive in listed])
        return
    table(["MOUNTPOINT", "IMAGE OR CONTAINER", "ID", "KIND", "PID", "STATUS"],
          [[r.mountpoint + ("" if r.here else " (in another mount namespace)"), r.image,
            r.id.removeprefix("sha256:")[:12], r.kind, str(r.pid), "alive" if alive else "dead"]
           for r, alive in listed])
