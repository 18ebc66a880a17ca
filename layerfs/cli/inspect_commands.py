"""history, diff and analyze: call the inspect package, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from layerfs.cli.change_output import layers_of, print_lines, print_tree, readd_sentence
from layerfs.cli.output import ago, human_size, one_line, print_json, quote_path, short_digest, table
from layerfs.cli.references import REF_HELP, ImageAt, inspected_image
from layerfs.container.changes import container_changes, container_trees
from layerfs.container.records import Containers
from layerfs.errors import NotFound
from layerfs.inspect import ci_rules
from layerfs.inspect.analyze import Analysis, analyze
from layerfs.inspect.changes import KINDS, LETTER, PathChange, compare_states, container_path_changes, select
from layerfs.inspect.contents import file_diff, write_report
from layerfs.inspect.images import diff_images
from layerfs.inspect.layers import Layer, history, image_layers
from layerfs.store.layout import Store
from layerfs.union.tree import Node

EXIT_DIFFERENT = 1
EXIT_COMPARE_ERROR = 2  # diffoci's: a gate tells "different" from "could not compare"


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


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _layer_range(text: str) -> tuple[int, int]:
    """--layer's type: N or N..M (1 is the base layer)."""
    first, sep, last = text.partition("..")
    if not (_digits(first) and (not sep or _digits(last))):
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
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("--no-trunc", action="store_true", help="show full digests and commands")
    p.add_argument("--json", action="store_true", help="print a JSON list, top first (schema: schemas/history.json)")

    p = command("diff", cmd_diff, "list what layers, images or containers added, modified, deleted",
                "layerfs diff CONTAINER            what the container changed in its image\n"
                "layerfs diff IMAGE                what each layer changed, layer by layer\n"
                "layerfs diff IMAGE --layer N      what layer N changed (N..M: the net change of a range)\n"
                "layerfs diff IMAGE_A IMAGE_B      how B's files and config differ from A's; exits 0 when\n"
                "                                  they are the same, 1 when they differ, 2 on error\n"
                "... -- PATH                       one file's diff (two states needed: --layer, two\n"
                "                                  images or a container); exits 0 same, 1 different\n\n"
                "Each path is A (added), C (modified: same path, but the type, content hash, mode,\n"
                "owner, link target, device or xattrs differ, or a file's mtime) or D (deleted: a\n"
                "whiteout, a path an opaque directory hides, what a directory made a file held;\n"
                "a deleted directory is one line). A file re-added with the same content, owner,\n"
                "mode and mtime is no change. A directory's\n"
                "mtime is never a change of its own. On a terminal the paths show as a tree;\n"
                "piped, one per line, C-quoted where a name holds odd bytes.")
    p.usage = "layerfs diff [options] REF [REF_B] [-- PATH]"
    p.add_argument("refs", metavar="REF", nargs="+", help="a container, or one or two images, each " + REF_HELP)
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
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--tree", action="store_true", help="print a tree even when piped")
    shape.add_argument("--lines", action="store_true", help="print plain lines even on a terminal")
    p.add_argument("--json", action="store_true",
                   help="print JSON (schemas: schemas/diff-changes.json, diff-layers.json, diff-images.json)")
    # Exit 1 means "different" for two images and for -- PATH, so their errors exit 2.
    p.set_defaults(error_exit_for=lambda a: EXIT_COMPARE_ERROR if len(a.refs) == 2 or getattr(a, "file_path", None)
                   else None)
    p.add_argument("--report-dir", metavar="DIR", type=Path,
                   help="two states: write the differing files of each side into DIR/old and "
                        "DIR/new, and the JSON report as DIR/report.json")

    p = command("analyze", cmd_analyze, "score an image's efficiency and find wasted space",
                "Efficiency as dive scores it (per path, its smallest copy over all its copies; a\n"
                "deleted path needs nothing), and the space wasted: every copy of a path that\n"
                "the image does not show (overwritten, deleted, or made again only to change its\n"
                "owner or mode, reported apart with the fix). --ci applies dive's CI rules, from\n"
                "flags or from .dive-ci in the current directory (or --ci-config), and exits 1 when\n"
                "a rule fails, one line per failed rule (2 on an error). A rule flag or --ci-config\n"
                "turns --ci on.")
    p.set_defaults(error_exit_for=lambda a: EXIT_COMPARE_ERROR if _checks_rules(a) else None)  # 1: a rule failed
    p.add_argument("ref", metavar="REF", help=REF_HELP)
    p.add_argument("--top", type=int, metavar="N",
                   help="how many wasted paths to list (default: 10; with --json, all)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON (schema: schemas/analyze.json)")
    p.add_argument("--ci", action="store_true",
                   help="check the rules; exit 1 when one fails (dive also turns this on when CI=true; "
                        "layerfs waits for the flag, so that a CI job's environment alone never "
                        "changes what analyze prints or how it exits)")
    p.add_argument("--ci-config", type=Path, metavar="FILE",
                   help="dive's CI config file (default: .dive-ci in the current directory, if there)")
    p.add_argument("--lowest-efficiency", "--lowestEfficiency", metavar="RATIO",
                   help="fail below this efficiency, 0-1 or disabled (default 0.9)")
    p.add_argument("--highest-wasted-bytes", "--highestWastedBytes", metavar="SIZE",
                   help="fail above this many wasted bytes (20MB, 1GiB) or disabled (the default)")
    p.add_argument("--highest-user-wasted-percent", "--highestUserWastedPercent", metavar="RATIO",
                   help="fail above this ratio of wasted bytes to the bytes of the layers above the "
                        "base, 0-1 or disabled (default 0.1)")


# -- history ------------------------------------------------------------------------

def _layer_json(layer: Layer) -> dict[str, object]:
    return {"layer": layer.number, "digest": layer.digest, "diff_id": layer.diff_id,
            "size": layer.size, "blob_size": layer.blob_size, **layer.counts()}


def cmd_history(store: Store, args: argparse.Namespace) -> None:
    at = inspected_image(store, args.ref, "history")
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
        by = one_line(e.created_by, None if args.no_trunc else 45)
        if e.layer is None:
            rows.append(["-", "<empty layer>", ago(e.created) if e.created else "", by, "0 B", "", "", "", e.comment])
            continue
        counts = e.layer.counts()
        rows.append([str(e.layer.number), e.layer.digest if args.no_trunc else short_digest(e.layer.digest),
                     ago(e.created) if e.created else "", by, human_size(e.layer.size),
                     str(counts["added"]), str(counts["modified"]), str(counts["deleted"]), e.comment])
    table(["LAYER", "DIGEST", "CREATED", "CREATED BY", "SIZE", "ADDED", "MODIFIED", "DELETED", "COMMENT"], rows)


# -- diff ---------------------------------------------------------------------------

def _chosen(changes: list[PathChange], args: argparse.Namespace) -> list[PathChange]:
    """The changes --kind and --path select."""
    return list(select(changes, args.kind, [os.fsencode("/" + p.strip("/")) for p in args.path]))


def _print_changes(changes: list[PathChange], args: argparse.Namespace) -> None:
    tree = args.tree or (sys.stdout.isatty() and not args.lines)
    (print_tree if tree else print_lines)(_chosen(changes, args), args.verbose)


def _selected_json(changes: list[PathChange], args: argparse.Namespace) -> list[dict[str, object]]:
    return [c.to_json() for c in _chosen(changes, args)]


def cmd_diff(store: Store, args: argparse.Namespace) -> int:
    refs, path = args.refs, getattr(args, "file_path", None)
    if len(refs) > 2:
        args.parser.error("give one or two references (a file to diff goes after --)")
    if path is not None and args.json:
        args.parser.error("-- PATH prints a diff of the file, not JSON: leave out --json")
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
    at = inspected_image(store, refs[0], "diff --layer" if args.layer else "diff")
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
        return _print_file_diff(old, new, path)
    if args.json:
        print_json(_selected_json(changes, args))
    else:
        _print_changes(changes, args)
    return 0


def _print_file_diff(old: Node, new: Node, path: str) -> int:
    """One file's diff between two states; exit 0 when it is the same, 1 when not (diff's)."""
    text, differs = file_diff(old, new, path)
    sys.stdout.write(text)
    return EXIT_DIFFERENT if differs else 0


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
        by = one_line(layer.history.get("created_by", ""))
        print(f"# layer {layer.number}/{len(layers)} {short_digest(layer.digest)} {human_size(layer.size)}"
              + (f"  {by}" if by else ""))
        _print_changes(layer.changes, args)


def _diff_images(store: Store, args: argparse.Namespace, refs: list[str], path: str | None) -> int:
    if args.layer is not None:
        args.parser.error("--layer takes one image; for two images use REF@N")
    a, b = (inspected_image(store, ref, "a diff of two images") for ref in refs)
    result = diff_images(store, a.config, a.diff_ids, b.config, b.diff_ids, args.semantic)
    doc = {"old": _side(a), "new": _side(b), "same": result.same, "semantic": args.semantic,
           "shared_layers": result.shared_layers, "config": [c.to_json() for c in result.config],
           "changes": [c.to_json() for c in result.files]}
    if args.report_dir is not None:
        write_report(args.report_dir, result.files, result.old_root, result.new_root, doc)
    if path is not None:
        return _print_file_diff(result.old_root, result.new_root, path)
    if args.json:
        print_json(dict(doc, changes=_selected_json(result.files, args)))
    else:
        for change in result.config:
            print(f"config {change.key}: {render_value(change.old)} -> {render_value(change.new)}")
        _print_changes(result.files, args)
        if result.same:
            print(f"{a.label} and {b.label} are the same" + (" (semantic)" if args.semantic else ""),
                  file=sys.stderr)
    return 0 if result.same else EXIT_DIFFERENT


def render_value(value: object, limit: int = 100) -> str:
    """A config value on part of one line: a long list as its length (the history of an
    image is hundreds of lines; --json has it all)."""
    if isinstance(value, list) and len(json.dumps(value, sort_keys=True)) > limit:
        return f"[{len(value)} entries]"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 1] + "…"


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


def _checks_rules(args: argparse.Namespace) -> bool:
    """--ci, or what only --ci uses (dive's flags are "only valid with --ci")."""
    return args.ci or args.ci_config is not None or any(
        value is not None for value in (args.lowest_efficiency, args.highest_wasted_bytes,
                                        args.highest_user_wasted_percent))


def cmd_analyze(store: Store, args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 0:
        args.parser.error("--top takes a count of 0 or more")
    args.ci = _checks_rules(args)
    settings = _ci_settings(args) if args.ci else {}
    at = inspected_image(store, args.ref, "analyze")
    result = analyze(image_layers(store, at.image, at.diff_ids))
    rules = ci_rules.evaluate(result, settings) if args.ci else []
    top = args.top if args.top is not None else (len(result.paths) if args.json else 10)
    failed = [r for r in rules if r.status == "fail"]
    if args.json:
        print_json({"image": at.label, "id": at.image.id, "size": result.size, "user_size": result.user_size,
                    "efficiency": result.efficiency, "wasted": result.wasted,
                    "user_wasted_ratio": result.user_wasted_ratio,
                    "wasted_paths": [p.to_json() for p in result.paths[:top]],
                    "wasted_path_count": len(result.paths),
                    "metadata_readds": [m.to_json() for m in result.metadata_readds],
                    **({"rules": [r.to_json() for r in rules], "passed": not failed} if args.ci else {})})
    else:
        _print_analysis(at, result, top)
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
