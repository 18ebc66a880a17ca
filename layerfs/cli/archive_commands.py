"""`layerfs save` and `layerfs load`: images to and from docker-archive / oci-archive files,
as `docker save` / `docker load` and podman's do; parse, call image/save and image/load, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from layerfs.cli.progress import progress_for_terminal
from layerfs.cli.tar_output import destination, writing
from layerfs.errors import BadInput, NotFound
from layerfs.store.layout import Store

FORMAT_NAMES = ("docker-archive", "oci-archive")  # image.save.FORMATS, without importing it for --help


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands of this module through main's `command(name, func, help, ...)`."""
    p = command("save", cmd_save, "write images to a docker-archive or oci-archive tar",
                "Write one or more images of the store to one archive, as `docker save` and\n"
                "`podman save` do; `layerfs load`, `docker load`, `podman load` and skopeo\n"
                "(docker-archive:FILE, oci-archive:FILE:NAME:TAG) read it back.\n\n"
                "  docker-archive  (default) manifest.json, each config as <id>.json and each\n"
                "                  layer uncompressed as <diff_id>.tar (the format has no\n"
                "                  compressed layers), plus the legacy `repositories` file\n"
                "  oci-archive     a tar of an OCI image layout: the stored manifest, config and\n"
                "                  (compressed) layer blobs byte for byte, so digests stay; each\n"
                "                  image's index entry is annotated with its NAME:TAG\n"
                "                  (org.opencontainers.image.ref.name, io.containerd.image.name)\n\n"
                "A REF given by name is saved under that name; by id or digest, without one.\n"
                "Layers shared by several images are written once. Every layer is checked\n"
                "against its digests while it is written. FILE is written under a temporary\n"
                "name and renamed at the end, so a failure or Ctrl-C leaves no partial file.\n"
                "A tar is never written to a terminal.")
    p.add_argument("refs", metavar="REF", nargs="+",
                   help="an image of the store: name[:tag], name@sha256:DIGEST, or an id (prefix)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the archive; `-` or no -o: standard output, unless it is "
                        "a terminal. An existing FILE is replaced")
    p.add_argument("--format", choices=FORMAT_NAMES, default="docker-archive",
                   help="the archive's format (default docker-archive, as docker save)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = command("load", cmd_load, "import every image of a docker-archive or oci-archive",
                "Import every image of an archive into the store, with all its names, as\n"
                "`docker load` does, and print `Loaded image: NAME` for each name (`Loaded\n"
                "image ID: sha256:...` for an image without one). The archive is a\n"
                "docker-archive (it has manifest.json: `docker save`, `podman save`, skopeo,\n"
                "`layerfs save`) or an oci-archive (a tar of an OCI layout), plain or\n"
                "compressed (gzip, zstd). Every digest is verified while it is read; a bad\n"
                "archive fails in one line and leaves the store as it was.")
    p.add_argument("-i", "--input", metavar="FILE",
                   help="the archive; `-` or no -i: standard input (spooled to scratch space "
                        "first, as a tar is read out of order)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cmd_save(store: Store, args: argparse.Namespace) -> None:
    from layerfs.image.save import chosen, write_archive

    target = destination(args.output)
    saved = chosen(store, args.refs)
    with progress_for_terminal(args.quiet) as progress, writing(target) as out:
        write_archive(store, saved, args.format, out, progress)


def cmd_load(store: Store, args: argparse.Namespace) -> None:
    from layerfs.image.load import load_archive

    if args.input in (None, "-"):
        stdin = sys.stdin.buffer if sys.stdin is not None else None
        if stdin is None or stdin.isatty():
            raise BadInput("no archive to load: give -i FILE, or pipe one to standard input")
        archive: Path | object = stdin
        label = "standard input"
    else:
        archive = Path(args.input)
        label = str(archive)
        if not archive.exists():
            raise NotFound(f"{archive} does not exist")
        if archive.is_dir():
            raise BadInput(f"{archive} is a directory: -i takes an archive file (for an OCI layout "
                           "directory, use `layerfs import oci:DIR[:TAG]`)")
    with progress_for_terminal(args.quiet) as progress:
        loaded = load_archive(store, archive, label, progress)  # type: ignore[arg-type]
    for item in loaded:
        for name in item.names:
            print(f"Loaded image: {name}")
        if not item.names:
            print(f"Loaded image ID: {item.image.id}")
