"""`layerfs export`: an image (as it is, or as it was after layer N) or one of its layers, as a tar."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from layerfs.cli.progress import progress_for_terminal
from layerfs.cli.tar_output import Counting, destination, writing
from layerfs.cli.references import REF_HELP, ImageAt, inspected_image, layer_number
from layerfs.container.commit import write_tree
from layerfs.layer.stored import copy_layer_tar
from layerfs.progress import Progress
from layerfs.store.layout import Store
from layerfs.union.build import merged_tree

CHUNK = 1 << 20


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands of this module through main's `command(name, func, help, ...)`."""
    p = command("export", cmd_export, "write an image, or one of its layers, as a tar",
                "Write an image as one tar: every path of its merged tree (REF@N: as it was\n"
                "after layer N), with owners, modes, times, xattrs, device numbers and hard\n"
                "links exact, so that `layerfs import tar:FILE` or any tar extractor gives the\n"
                "same tree back. With --layer N, write layer N itself instead: its tar as the\n"
                "image holds it, uncompressed (whiteouts as `.wh.` files), whose sha256 is the\n"
                "layer's diff_id.\n\n"
                "FILE is written under a temporary name and renamed at the end, so a failure or\n"
                "Ctrl-C leaves no partial file. A tar is never written to a terminal.")
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("--layer", metavar="N", type=layer_number,
                   help="write only layer N (1 is the base; see `layerfs inspect REF`), "
                        "uncompressed, exactly as the image holds it")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the tar; `-` or no -o: standard output, unless it is a "
                        "terminal. An existing FILE is replaced")


def cmd_export(store: Store, args: argparse.Namespace) -> None:
    target = destination(args.output)
    at = inspected_image(store, args.ref, "export")
    layer = at.layer(args.layer) if args.layer is not None else None
    with progress_for_terminal(False) as progress, writing(target) as out:
        if layer is None:
            progress.task(f"export {at.label}", None)
            write_tree(merged_tree(store, at.diff_ids), Counting(out, progress.advance))  # type: ignore[arg-type]
        else:
            _copy_layer(store, at, args.layer, out, progress)


def _copy_layer(store: Store, at: ImageAt, number: int, out: Any, progress: Progress) -> None:
    """Layer `number`'s tar, checked against both digests as it streams."""
    descriptor, diff_id = at.layer(number)
    what = f"layer {number} of {at.label}"
    progress.task(what, descriptor.size)
    copy_layer_tar(store, descriptor.digest, diff_id, out, what, progress.advance)


