"""history, diff and analyze: call the inspect package, print."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from layerfs.cli.change_output import layers_of, print_lines, print_tree, readd_sentence
from layerfs.cli.output import ago, human_size, print_json, quote_path, table
from layerfs.cli.references import ImageAt, image_argument
from layerfs.container.changes import container_changes, container_trees
from layerfs.container.records import Containers
from layerfs.errors import NotFound
from layerfs.inspect import ci_rules
from layerfs.inspect.analyze import Analysis, analyze
from layerfs.inspect.changes import KINDS, LETTER, PathChange, compare_states, container_path_changes, select
from layerfs.inspect.contents import file_diff, write_report
from layerfs.inspect.images import diff_images, render_value
from layerfs.inspect.layers import Layer, history, image_layers
from layerfs.store.layout import Store
from layerfs.union.tree import Node

EXIT_DIFFERENT = 1
EXIT_COMPARE_ERROR = 2  # diffoci's: a gate tells "different" from "could not compare"
SHORT = 12


def _kinds(text: str) -> set[str]:
    """--kind's type: added, modified, deleted (or A, C, M, D), comma-separated."""
    letters = {v: k for k, v in LETTER.items()} | {"M": "modified"}
    kinds = set()
    for word in text.split(","):
        word = word.strip()
        kind = letters.get(word.upper()) if len(word) == 1 else word.lower()
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown change kind {word!r}: use added, modified, deleted")
        kinds.add(kind)
    return kinds


def _layer_range(text: str) -> tuple[int, int]:
    """--layer's type: N or N..M (1 is the base layer)."""
    first, sep, last = text.partition("..")
    if not (first.isdigit() and (not sep or last.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not a layer number or range (N or N..M; 1 is the base)")
    low, high = int(first), int(last) if sep else int(first)
    if low > high:
        raise argparse.ArgumentTypeError(f"{text!r}: the first layer of a range comes before the last")
    return low, high


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("history", cmd_history, "show the layers of an image and what each one changed",
                "One row per history step, top first, as docker history shows them: the layer\n"
                "(number, 1 = base; short digest), when and by what it was made, its size, and how\n"
                "many paths it added, modified and deleted. Steps that made no layer (ENV, CMD...)\n"
                "show as <empty layer>.")
    p.add_argument("ref", metavar="REF", help="an image: name[:tag], digest, id, REF@N, or oci:DIR[:TAG], "
                                              "oci-archive:FILE[:TAG], docker-archive:FILE")
    p.add_argument("--no-trunc", action="store_true", help="show full digests and commands")
    p.add_argument("--json", action="store_true", help="print a JSON list, top first (schema: schemas/history.json)")

    p = command("diff", cmd_diff, "list what layers, images or containers added, modified, deleted",
                "layerfs diff CONTAINER            what the container changed in its image\n"
                "layerfs diff IMAGE                what each layer changed, layer by layer\n"
                "layerfs diff IMAGE --layer N      what layer N changed (N..M: the net change of a range)\n"
                "layerfs diff IMAGE_A IMAGE_B      how B's files and config differ from A's; exits 0 when\n"
                "                                  they are the same, 1 when they differ, 2 on error\n"
                "... -- PATH                       a unified diff of one file (two states needed)\n\n"
                "Each path is A (added), C (modified: same path, but the type, content hash, mode,\n"
                "owner, link target, device or xattrs differ, or a file's mtime) or D (deleted: a\n"
                "whiteout, or a path an opaque directory hides; a directory is one line). A file\n"
                "re-added with the same content, owner, mode and mtime is no change. A directory's\n"
                "mtime is never a change of its own. On a terminal the paths show as a tree;\n"
                "piped, one per line, C-quoted where a name holds odd bytes.")
    p.add_argument("refs", metavar="REF", nargs="+",
                   help="a container, or one or two images (name[:tag], digest, id, REF@N, oci:..., "
                        "oci-archive:..., docker-archive:...); then `-- PATH` for one file's diff")
    p.add_argument("--layer", type=_layer_range, metavar="N[..M]",
                   help="only layer N's change, or the net change of layers N to M")
    p.add_argument("--semantic", action="store_true",
                   help="two images: ignore timestamps, history and how the layers are cut and "
                        "compressed (as diffoci --semantic: are two builds the same image?)")
    p.add_argument("--kind", type=_kinds, metavar="KINDS",
                   help="only these kinds: added, modified, deleted (or A, C, D), comma-separated")
    p.add_argument("--path", action="append", default=[], metavar="PREFIX",
                   help="only paths at or below PREFIX (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="say what differs, with sizes")
    p.add_argument("--tree", action="store_true", help="print a tree even when piped")
    p.add_argument("--lines", action="store_true", help="print plain lines even on a terminal")
    p.add_argument("--json", action="store_true",
                   help="print JSON (schemas: schemas/diff-changes.json, diff-layers.json, diff-images.json)")
    p.set_defaults(error_exit_for=lambda a: EXIT_COMPARE_ERROR if len(a.refs) == 2 else None)
    p.add_argument("--report-dir", metavar="DIR", type=Path,
                   help="two states: write the differing files of each side into DIR/old and "
                        "DIR/new, and the JSON report as DIR/report.json")

    p = command("analyze", cmd_analyze, "score an image's efficiency and find wasted space",
                "Efficiency as dive scores it (per path, its smallest copy over all its copies; a\n"
                "whiteout counts what it hides), and the space wasted: every copy of a path that\n"
                "the image does not show (overwritten, deleted, or made again only to change its\n"
                "owner or mode, reported apart with the fix). --ci applies dive's CI rules, from\n"
                "flags or from .dive-ci in the current directory (or --ci-config), and exits 1 when\n"
                "a rule fails, one line per failed rule.")
    p.set_defaults(error_exit_for=lambda a: EXIT_COMPARE_ERROR if a.ci else None)  # 1: a rule failed
    p.add_argument("ref", metavar="REF", help="an image (name, digest, id, REF@N or a transport reference)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="how many wasted paths to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON (schema: schemas/analyze.json)")
    p.add_argument("--ci", action="store_true", help="check the rules; exit 1 when one fails")
    p.add_argument("--ci-config", type=Path, metavar="FILE",
                   help="dive's CI config file (default: .dive-ci in the current directory, if there)")
    p.add_argument("--lowest-efficiency", "--lowestEfficiency", metavar="RATIO",
                   help="fail below this efficiency, 0-1 or disabled (default 0.9)")
    p.add_argument("--highest-wasted-bytes", "--highestWastedBytes", metavar="SIZE",
                   help="fail above this many wasted bytes (20MB, 1GiB) or disabled (the default)")
    p.add_argument("--highest-user-wasted-percent", "--highestUserWastedPercent", metavar="RATIO",
                   help="fail above this ratio of wasted bytes to the bytes of the layers above the "
                        "base, 0-1 or disabled (default 0.1)")


def _image(store: Store, ref: str, command: str) -> ImageAt:
    """The image REF names; a container's name gets a pointer to what works for it."""
    try:
        return image_argument(store, ref)
    except NotFound as unknown:
        try:
            container = Containers(store).resolve(ref)
        except NotFound:
            raise unknown from None
        raise NotFound(f"{ref} is a container, and {command} takes an image: `layerfs diff {ref}` lists what "
                       f"the container changed in its image {container.image_ref}") from None


# -- history ------------------------------------------------------------------------

def _short(digest: str, full: bool) -> str:
    return digest if full else digest.removeprefix("sha256:")[:SHORT]


def _layer_json(layer: Layer) -> dict[str, object]:
    return {"layer": layer.number, "digest": layer.digest, "diff_id": layer.diff_id,
            "size": layer.size, "blob_size": layer.blob_size, **layer.counts()}


def cmd_history(store: Store, args: argparse.Namespace) -> None:
    at = _image(store, args.ref, "history")
    layers = image_layers(store, at.image, at.diff_ids)
    entries = history(at.image, layers)
    if args.json:
        print_json([dict({"layer": None, "digest": None, "diff_id": None, "size": 0, "blob_size": 0,
                          "added": 0, "modified": 0, "deleted": 0}, created=e.created,
                         created_by=e.created_by, comment=e.comment, empty_layer=e.layer is None,
                         **(_layer_json(e.layer) if e.layer else {})) for e in entries])
        return
    rows = []
    for e in entries:
        by = " ".join(e.created_by.split())
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        if e.layer is None:
            rows.append(["-", "<empty layer>", ago(e.created) if e.created else "", by, "0 B", "", "", "", e.comment])
            continue
        counts = e.layer.counts()
        rows.append([str(e.layer.number), _short(e.layer.digest, args.no_trunc),
                     ago(e.created) if e.created else "", by, human_size(e.layer.size),
                     str(counts["added"]), str(counts["modified"]), str(counts["deleted"]), e.comment])
    table(["LAYER", "DIGEST", "CREATED", "CREATED BY", "SIZE", "ADDED", "MODIFIED", "DELETED", "COMMENT"], rows)


# -- diff ---------------------------------------------------------------------------

def _print_changes(changes: list[PathChange], args: argparse.Namespace) -> None:
    chosen = select(changes, args.kind, [os.fsencode("/" + p.strip("/")) for p in args.path])
    tree = args.tree or (sys.stdout.isatty() and not args.lines)
    (print_tree if tree else print_lines)(chosen, args.verbose)


def _selected_json(changes: list[PathChange], args: argparse.Namespace) -> list[dict[str, object]]:
    return [c.to_json() for c in select(changes, args.kind, [os.fsencode("/" + p.strip("/")) for p in args.path])]


def cmd_diff(store: Store, args: argparse.Namespace) -> int:
    refs, path = args.refs, getattr(args, "file_path", None)
    if len(refs) > 2:
        args.parser.error("give one or two references (a file to diff goes after --)")
    if len(refs) == 2:
        return _diff_images(store, args, refs, path)
    container = None
    if args.layer is None and not args.semantic:
        try:
            container = Containers(store).resolve(refs[0])
        except NotFound:
            pass
    if container is not None:
        base, current = container_trees(store, container)
        _tree, found = container_changes(store, container, (base, current))
        return _two_states(args, container_path_changes(found), base.root, current.root, path)
    if args.semantic:
        args.parser.error("--semantic compares two images: give REF_A REF_B")
    at = _image(store, refs[0], "diff --layer" if args.layer else "diff")
    layers = image_layers(store, at.image, at.diff_ids)
    if args.layer is not None:
        low, high = args.layer
        for number in (low, high):
            at.layer(number)  # a number outside the image fails here, in one line naming the range
        before, after = layers[low - 1].before, layers[high - 1].after
        return _two_states(args, compare_states(before, after), before, after, path)
    if path is not None:
        args.parser.error("-- PATH needs two states: --layer N[..M], two images, or a container")
    _every_layer(layers, args)
    return 0


def _two_states(args: argparse.Namespace, changes: list[PathChange], old: Node, new: Node,
                path: str | None) -> int:
    if args.report_dir is not None:
        write_report(args.report_dir, changes, old, new, {"changes": [c.to_json() for c in changes]})
    if path is not None:
        sys.stdout.write(file_diff(old, new, path))
    elif args.json:
        print_json(_selected_json(changes, args))
    else:
        _print_changes(changes, args)
    return 0


def _every_layer(layers: list[Layer], args: argparse.Namespace) -> None:
    if args.report_dir is not None:
        args.parser.error("--report-dir needs two states: --layer N[..M], two images, or a container")
    if args.json:
        print_json([dict(_layer_json(layer), created=str(layer.history.get("created", "")),
                         created_by=str(layer.history.get("created_by", "")),
                         comment=str(layer.history.get("comment", "")),
                         changes=_selected_json(layer.changes, args)) for layer in layers])
        return
    for layer in layers:
        by = " ".join(str(layer.history.get("created_by", "")).split())
        print(f"# layer {layer.number}/{len(layers)} {_short(layer.digest, False)} {human_size(layer.size)}"
              + (f"  {by}" if by else ""))
        _print_changes(layer.changes, args)


def _diff_images(store: Store, args: argparse.Namespace, refs: list[str], path: str | None) -> int:
    if args.layer is not None:
        args.parser.error("--layer takes one image; for two images use REF@N")
    a, b = _image(store, refs[0], "a diff of two images"), _image(store, refs[1], "a diff of two images")
    result = diff_images(store, a.image.config, a.diff_ids, b.image.config, b.diff_ids, args.semantic)
    doc = {"old": _side(a), "new": _side(b), "same": result.same, "semantic": args.semantic,
           "shared_layers": result.shared_layers, "config": [c.to_json() for c in result.config],
           "changes": [c.to_json() for c in result.files]}
    if args.report_dir is not None:
        write_report(args.report_dir, result.files, result.old_root, result.new_root, doc)
    if path is not None:
        sys.stdout.write(file_diff(result.old_root, result.new_root, path))
    elif args.json:
        print_json(dict(doc, changes=_selected_json(result.files, args)))
    else:
        for change in result.config:
            print(f"config {change.key}: {render_value(change.old)} -> {render_value(change.new)}")
        _print_changes(result.files, args)
        if result.same:
            print(f"{a.label} and {b.label} are the same" + (" (semantic)" if args.semantic else ""),
                  file=sys.stderr)
    return 0 if result.same else EXIT_DIFFERENT


def _side(at: ImageAt) -> dict[str, object]:
    return {"ref": at.label, "id": at.image.id, "layers": len(at.diff_ids)}


# -- analyze ------------------------------------------------------------------------

def _ci_settings(args: argparse.Namespace) -> dict[str, str]:
    config = args.ci_config
    if config is None and Path(".dive-ci").is_file():
        config = Path(".dive-ci")
    settings = ci_rules.read_config(config) if config is not None else {}
    for rule, value in ((ci_rules.LOWEST_EFFICIENCY, args.lowest_efficiency),
                        (ci_rules.HIGHEST_WASTED_BYTES, args.highest_wasted_bytes),
                        (ci_rules.HIGHEST_USER_WASTED_PERCENT, args.highest_user_wasted_percent)):
        if value is not None:
            settings[rule] = value
    return settings


def cmd_analyze(store: Store, args: argparse.Namespace) -> int:
    if args.top < 0:
        args.parser.error("--top takes a count of 0 or more")
    settings = _ci_settings(args) if args.ci else {}
    at = _image(store, args.ref, "analyze")
    result = analyze(image_layers(store, at.image, at.diff_ids))
    rules = ci_rules.evaluate(result, settings) if args.ci else []
    failed = [r for r in rules if r.status == "fail"]
    if args.json:
        print_json({"image": at.label, "id": at.image.id, "size": result.size, "user_size": result.user_size,
                    "efficiency": result.efficiency, "wasted": result.wasted,
                    "user_wasted_ratio": result.user_wasted_ratio,
                    "wasted_paths": [p.to_json() for p in result.paths[:args.top]],
                    "wasted_path_count": len(result.paths),
                    "metadata_readds": [m.to_json() for m in result.metadata_readds],
                    **({"rules": [r.to_json() for r in rules], "passed": not failed} if args.ci else {})})
    else:
        _print_analysis(at, result, args.top)
        for rule in rules:
            print(f"{rule.status.upper()}: {rule.rule}: {rule.message}")
    for rule in failed:
        print(f"layerfs: {rule.rule} failed: {rule.message}", file=sys.stderr)
    return EXIT_DIFFERENT if failed else 0


def _print_analysis(at: ImageAt, result: Analysis, top: int) -> None:
    print(f"Image:             {at.label} ({at.image.short_id})")
    print(f"Size:              {human_size(result.size)} ({human_size(result.user_size)} above the base layer)")
    print(f"Efficiency:        {result.efficiency * 100:.4f} %")
    print(f"Wasted:            {human_size(result.wasted)} in {len(result.paths)} paths "
          f"({result.user_wasted_ratio * 100:.2f} % of the bytes above the base)")
    if result.paths and top:
        print()
        rows = [[str(len(p.copies)), human_size(p.wasted), layers_of(p), quote_path(os.fsencode(p.path))]
                for p in result.paths[:top]]
        table(["COPIES", "WASTED", "LAYERS (-N: deleted in N)", "PATH"], rows)
    for readd in result.metadata_readds:
        print("\n" + readd_sentence(readd))
