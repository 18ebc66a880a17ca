"""`scripts/bench`: argument parsing and the run from image build to report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import mounts
from .filesystems import DEFAULT_LAYERFS, FS_KEYS, Filesystem, all_filesystems
from .imagebuild import BenchImage, CachePaths, ensure_images
from .report import RUNTIME_NOISE_LIMIT, RUNTIME_NOTE, any_failed, render_json, render_table
from .util import DEFAULT_CACHE, BenchError, exclusive, format_duration, log
from .model import Env, Results
from .launch import LAUNCH_GROUPS, LaunchResults, render_launch, run_launch
from .inspection import INSPECT_GROUPS, InspectResults, ensure_fixture, render_inspect, run_inspect
from .registry import REGISTRY_GROUPS, RegistryResults, render_registry, run_registry
from .registryimage import ensure_images as ensure_registry_images
from .workloads import GROUPS, TAR_SUBTREE, run_benchmark
from .writeloads import (
    COMMIT_FILE_MIB,
    COMMIT_FILES,
    CP_SOURCE,
    RMRF_TARGETS,
    SMALL_FILES,
    UNTAR_FILES,
    WRITE_GROUPS,
    ensure_write_inputs,
)

FS_NAMES = FS_KEYS
# `mount` names both the read-only workload (as root, beside kernel overlayfs and
# fuse-overlayfs) and the rootless container group's mount + ls: --only mount runs both
ALL_GROUPS = list(dict.fromkeys(GROUPS + LAUNCH_GROUPS + INSPECT_GROUPS + REGISTRY_GROUPS))

DESCRIPTION = f"""\
Time read-only and write workloads on kernel overlayfs, fuse-overlayfs and
layerfs, all mounting the same images, and check layerfs against the targets:
every workload <= 1.0x fuse-overlayfs, warm read-only workloads <= 1.5x
kernel overlayfs, a 100-layer walk <= 1.1x the 3-layer walk. layerfs runs
twice: `layerfs` makes browse mounts (`layerfs mount REF DIR`, what the
targets are about) and `layerfs-runtime` makes runtime mounts (`layerfs mount
--allow-other REF DIR`: default_permissions, allow_other, POSIX ACLs checked
by the kernel), which must stay within noise of the browse mounts: every
workload rt/lfs <= {RUNTIME_NOISE_LIMIT:.2f}x. Runs as root.
The images (Debian bookworm minbase + python3 + a 1 GiB file, and the same
tree in 100 layers) are built on first use and cached under the cache
directory (about a minute with a fast Debian mirror; 5 GB, plus 5 GB for the
layerfs bench store; the write workloads need 2 GB more while they run)."""

EPILOG = f"""\
workloads (for --only):
  read-only, on the image mounted read-only:
  walk       stat every entry with `find MP -ls`, cold and warm; daemon RSS after it
  read       read the 1 GiB file with dd bs=1M, cold and warm
  tar        `tar cf - -C MP {TAR_SUBTREE} | cat`, cold and warm
  mount      as root: time from the mount command's start until `ls MP` answers
  walk100    the walk on the 100-layer image (and its ratio to the 3-layer walk)
  write, each on a fresh read-write mount per run (layerfs: a new container;
  the others: the image's layer dirs + a new empty upper and work dir):
  cp         `cp -a MP/{CP_SOURCE} MP/copy`
  rmrf       `rm -rf` MP/{' MP/'.join(RMRF_TARGETS)}
  append     append one byte to the 1 GiB lower file, fsync (copy-up)
  untar      untar a {UNTAR_FILES // 1000}k-file tarball (1 KiB files) into MP/untar
  smallfiles create+write {SMALL_FILES // 1000}k files of 1 KiB in a new dir, then delete them
  commit     write {COMMIT_FILES} x {COMMIT_FILE_MIB} MiB, unmount, time `layerfs commit`;
             for the peers: `tar -C UPPER -cf - . | tee layer.tar | sha256sum`
  containers, rootless as the user layerfs-bench (made, with subordinate ids), on
  the image's minbase + python3 layers, beside podman (runc, fuse-overlayfs) and
  bubblewrap on the image unpacked (podman, bubblewrap, runc are apt-installed);
  layerfs twice: through the user's resident service (warm) and in-process
  (LAYERFS_NO_SERVICE=1); with no service in the CLI, its rows say n/a:
  start      `run --rm IMAGE true`, median of 20; 20 starts back to back; the cold first
             start (`layerfs service stop`, then one run that starts it); where a start
             goes (python, the client, the service; in-process: imports, user namespace,
             mount, the rest); target: through the service <= 0.3x podman
  exec       `exec CONTAINER true` into a running container, median of 20
  mount      `layerfs mount IMAGE DIR && ls DIR` (the unmount untimed), median of 20, beside
             fuse-overlayfs over the layers unpacked to plain dirs (lowerdir=B:A, read-only)
             and `podman unshare sh -c 'd=$(podman image mount IMAGE) && ls "$d"'`; then
             PSS (smaps_rollup) per mount over 10 browse mounts and 5 detached containers
             (`run -d IMAGE sleep 1000`), and the service's own; targets: mount + ls <= 3x
             fuse-overlayfs and <= 0.3x podman image mount, <= 10 MiB PSS per extra mount
             (--only mount also runs the read-only mount workload above)
  inspect    layerfs history, analyze, diff, inspect --tui on a synthetic 20-layer 100k-file
             image (and one sharing 15 layers) and bench:latest: 5 cold + 5 warm, peak RSS
  registry   against Debian's docker-registry on 127.0.0.1 (plain HTTP), rootless as
             layerfs-bench (layerfs also as root): pull a ~300 MB 3-layer gzip image into an
             empty store + mount + `ls -la` (time to first browse) beside skopeo copy + umoci
             unpack and podman pull + image mount (runc, fuse-overlayfs); pull an image sharing
             2 of its layers (time, blobs downloaded); push a committed container (~50 MB
             written) to a new repository and to the base's, beside skopeo and podman push;
             target: first browse <= 0.6x podman, the shared-layer pull fetches only the new layer

filesystems (for --fs; all by default, a missing one is skipped with a note):
  kernel           kernel overlayfs (mount -t overlay): the speed ceiling
  fuse-overlayfs   fuse-overlayfs (C, libfuse 3): the userspace peer to beat
  layerfs          layerfs browse mounts: `layerfs mount REF DIR`, bench store
                   under the cache dir; containers named bench-rw-*
  layerfs-runtime  the same layerfs, store and images, but every mount (image
                   and container) passes --allow-other (root only):
                   default_permissions + allow_other, POSIX ACLs negotiated
                   (the kernel checks permissions, reads ACLs via getxattr);
                   containers named bench-rt-*. Its target, per timed
                   row: rt/lfs (layerfs-runtime / layerfs) <= {RUNTIME_NOISE_LIMIT:.2f}, the
                   noise band chosen; cold figures swing +-30% on a small VM,
                   so the warm rows are the ones that matter

cold = fresh mount, then `sync; echo 3 > /proc/sys/vm/drop_caches`;
warm = the same command again right after, on the same mount (best of 3).
write workloads: the image's data warm (an untimed run first), nothing
dropped; `sync` before each timed command; only the command is timed.
Exit status: 0 done (1 with --check if a target FAILs), 1 error, 130 interrupted."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reps", type=int, default=3, metavar="N",
                        help="repetitions per figure; the median is reported (default 3)")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help="run only these workloads (repeat or comma-separate): " + ", ".join(ALL_GROUPS))
    parser.add_argument("--fs", action="append", metavar="NAME",
                        help="run only these filesystems (repeat or comma-separate): " + ", ".join(FS_NAMES))
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 1 when any target FAILs")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"where images, the layerfs store and mount points live (default {DEFAULT_CACHE})")
    parser.add_argument("--layerfs", type=Path, default=Path(os.environ.get("LAYERFS_BIN", DEFAULT_LAYERFS)),
                        help=f"the layerfs command (default $LAYERFS_BIN or {DEFAULT_LAYERFS})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached images from scratch")
    parser.add_argument("--build-only", action="store_true", help="build the cached images, then stop")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    args.only = _split_choices(parser, "--only", args.only, ALL_GROUPS)
    args.fs = _split_choices(parser, "--fs", args.fs, FS_NAMES)
    return args


def _split_choices(parser: argparse.ArgumentParser, flag: str, given: list[str] | None,
                   choices: list[str]) -> list[str] | None:
    """Accept `--only walk --only read` and `--only walk,read`; keep canonical order."""
    if not given:
        return None
    picked = {item.strip() for value in given for item in value.split(",") if item.strip()}
    unknown = picked - set(choices)
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(sorted(unknown))} (choose from {', '.join(choices)})")
    return [c for c in choices if c in picked]


def select_filesystems(args: argparse.Namespace, paths: CachePaths, notes: list[str]) -> list[Filesystem]:
    """The filesystems to run; a missing one is skipped unless asked for by name."""
    chosen = []
    for fs in all_filesystems(args.layerfs, paths.store):
        if args.fs is not None and fs.key not in args.fs:
            continue
        reason = fs.unavailable()
        if reason and args.fs is not None:
            raise BenchError(f"{fs.key} cannot run: {reason}")
        if reason:
            log(f"skipping {fs.key}: {reason}")
            notes.append(f"note: {fs.key} skipped: {reason}")
            continue
        chosen.append(fs)
    if not chosen:
        raise BenchError("no filesystem to benchmark")
    return chosen


def _build_note(paths: CachePaths, built_now: dict[str, float]) -> str:
    if built_now:
        return f"image build (this run): {format_duration(sum(built_now.values()))}"
    record = paths.root / "build-times.json"
    if record.exists():
        data = json.loads(record.read_text())
        return f"image build (cached, last built {data['built']}): a full build takes {format_duration(data['total'])}"
    return "images: cached"


def _listing_notes(results: Results, logs: Path) -> list[str]:
    """Every filesystem must show the same tree; when one does not, say so and keep
    the listings for `diff`."""
    notes = []
    for ref, per_fs in results.listings.items():
        if len({tuple(lines) for lines in per_fs.values()}) <= 1:
            continue
        logs.mkdir(parents=True, exist_ok=True)
        saved = []
        for fs, lines in per_fs.items():
            path = logs / f"listing-{ref.replace(':', '_')}-{fs}.txt"
            path.write_text("\n".join(lines) + "\n", errors="surrogateescape")
            saved.append(f"{fs} {len(lines)} entries")
        notes.append(f"WARNING: the filesystems show different trees for {ref} ({', '.join(saved)}); "
                     f"listings in {logs}/listing-*.txt")
    return notes


def _prepare_notes(filesystems: list[Filesystem]) -> list[str]:
    return [
        f"{fs.key} one-time import: " + ", ".join(f"{ref} {secs:.1f}s" for ref, secs in fs.prepare_seconds.items())
        for fs in filesystems
        if fs.prepare_seconds
    ]


def _header(args: argparse.Namespace, results: Results, load: tuple[float, float]) -> list[str]:
    listings = [lines for per_fs in results.listings.values() for lines in per_fs.values()]
    shown = f", {len(listings[0])} entries" if listings else ""
    return [
        f"layerfs bench: median of {args.reps} rep(s); {os.cpu_count()} CPUs, Linux {platform.release()}",
        f"images: bench:latest (3 layers{shown}, 1 GiB file), bench100:latest (same tree in 100 layers)",
        f"1-min load average: {load[0]:.2f} at start, {load[1]:.2f} at end (other work on the machine skews figures)",
    ]


@dataclass
class Outcome:
    """What a finished run hands to the report."""

    filesystems: list[Filesystem]
    groups: list[str]
    results: Results
    load: tuple[float, float]
    notes: list[str]
    launch: LaunchResults | None = None
    inspect: InspectResults | None = None
    registry: RegistryResults | None = None


def _prepare(filesystems: list[Filesystem], groups: list[str], images: tuple[BenchImage, BenchImage],
             results: Results) -> list[Filesystem]:
    """One-time work per filesystem (layerfs: import, and removing containers a
    killed earlier run left); one that fails it is reported as an error in every
    workload and left out of the runs."""
    image3, image100 = images
    runnable = []
    for fs in filesystems:
        try:
            fs.prepare(image3)
            if "walk100" in groups:
                fs.prepare(image100)
            if set(groups) & set(WRITE_GROUPS):
                fs.remove_leftovers()
        except BenchError as exc:
            log(f"{fs.key} failed to prepare: {exc}")
            for group in groups:
                results.errors.setdefault(group, {})[fs.key] = str(exc)
            continue
        runnable.append(fs)
    return runnable


def _run(args: argparse.Namespace, paths: CachePaths) -> Outcome | None:
    """Build what is missing, then run the workloads (None with --build-only)."""
    paths.mnt.mkdir(parents=True, exist_ok=True)
    mounts.remove_stale(paths.mnt)
    _remove_scratch(paths)
    only_registry = args.only is not None and set(args.only) <= set(REGISTRY_GROUPS)
    built_now = {} if only_registry else ensure_images(paths, rebuild=args.rebuild)
    if "registry" in (args.only or ALL_GROUPS):
        ensure_registry_images(paths, rebuild=args.rebuild)
    notes = [_build_note(paths, built_now)]
    if "inspect" in (args.only or ALL_GROUPS):
        ensure_fixture(paths, rebuild=args.rebuild)
    if args.build_only:
        print(f"images ready under {paths.root}; {notes[0]}")
        return None
    chosen = args.only or ALL_GROUPS
    groups = [g for g in chosen if g in GROUPS]
    launching = [g for g in chosen if g in LAUNCH_GROUPS]
    filesystems = select_filesystems(args, paths, notes) if groups else []
    ensure_write_inputs(paths, groups)
    images = paths.images()
    results = Results()
    runnable = _prepare(filesystems, groups, images, results)
    load_start = os.getloadavg()[0]
    try:
        run_benchmark(runnable, groups, args.reps, Env(*images, paths, results))
    finally:
        _remove_scratch(paths)
    launch = run_launch(paths, args.layerfs, launching) if launching else None
    inspect = run_inspect(paths, args.layerfs) if "inspect" in chosen else None
    registry = run_registry(paths, args.layerfs, args.reps) if "registry" in chosen else None
    return Outcome(filesystems, groups, results, (load_start, os.getloadavg()[0]), notes, launch, inspect,
                   registry)


def _remove_scratch(paths: CachePaths) -> None:
    """The peers' upper/work dirs: normally each is removed after its run, but a
    killed run leaves them (only after its mounts are gone, see remove_stale)."""
    if paths.scratch.exists():
        shutil.rmtree(paths.scratch)


def _print_report(args: argparse.Namespace, paths: CachePaths, outcome: Outcome) -> None:
    results, load = outcome.results, outcome.load
    ran = [fs.key for fs in outcome.filesystems]
    notes = list(outcome.notes)
    notes += _prepare_notes(outcome.filesystems)
    notes += _listing_notes(results, paths.logs)
    notes += [f"error: {group} on {fs}: {msg}" for group, by_fs in results.errors.items() for fs, msg in by_fs.items()]
    notes.append("fo = fuse-overlayfs, k = kernel overlayfs, lfs = layerfs (browse mounts)")
    if "layerfs-runtime" in ran:
        notes.append(RUNTIME_NOTE)
    if set(outcome.groups) - set(WRITE_GROUPS):
        notes.append("read-only workloads: cold = fresh mount + drop_caches, "
                     "warm = best of 3 runs of the same command right after, on that mount")
    if set(outcome.groups) & set(WRITE_GROUPS):
        notes.append("write workloads: a fresh read-write mount per run (layerfs: new container; k, fo: "
                     "the lower dirs + new upper/work dirs, default options); image data warm "
                     "(one untimed run first, no drop_caches), `sync` before each timed command, "
                     "only the command timed; commit for k and fo = `tar -C UPPER -cf - . | tee "
                     "layer.tar | sha256sum` (they have no commit)")
    if args.json:
        meta = {"reps": args.reps, "workloads": outcome.groups, "notes": notes, "kernel": platform.release(),
                "cpus": os.cpu_count(), "loadavg_start": load[0], "loadavg_end": load[1]}
        if outcome.launch is not None:
            meta["containers"] = outcome.launch.as_json()
        if outcome.inspect is not None:
            meta["inspect"] = outcome.inspect.as_json()
        if outcome.registry is not None:
            meta["registry"] = outcome.registry.as_json()
        print(render_json(results, ran, meta))
        return
    if outcome.groups:
        print(render_table(results, ran, _header(args, results, load), notes))
    if outcome.launch is not None:
        print(("\n" if outcome.groups else "") + render_launch(outcome.launch))
    if outcome.inspect is not None:
        print(("\n" if outcome.groups or outcome.launch else "") + render_inspect(outcome.inspect))
    if outcome.registry is not None:
        print(("\n" if outcome.groups or outcome.launch or outcome.inspect else "") + render_registry(outcome.registry))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: error: run as root (overlay mounts and drop_caches need it)", file=sys.stderr)
        return 1
    paths = CachePaths(args.cache)
    try:
        with exclusive(paths.root), mounts.cleanup_on_exit():
            outcome = _run(args, paths)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; mounts removed", file=sys.stderr)
        return 130
    if outcome is None:
        return 0
    _print_report(args, paths, outcome)
    inspect_failed = outcome.inspect is not None and outcome.inspect.failed()
    registry_failed = outcome.registry is not None and outcome.registry.failed()
    launch_failed = outcome.launch is not None and outcome.launch.failed()
    failed = any_failed(outcome.results) or inspect_failed or registry_failed or launch_failed
    return 1 if args.check and failed else 0
