"""Import an image from any source into the store: stage every layer, then publish.

Order is what makes a killed or failed import invisible: layers are staged
(verified and unpacked in scratch space) first; only when all are good are they
renamed into place, then config and manifest are written, and the name is added
to index.json last. Until that final rename the store lists no new image.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from layerfs.errors import BadInput
from layerfs.image.catalog import Catalog, Image, reference_name
from layerfs.image.manifest import (LAYER_TYPES, OCI_CONFIG, OCI_MANIFEST, Descriptor,
                                    build_manifest, diff_ids, host_platform, parse_json)
from layerfs.image.source import SourceImage, SourceLayer
from layerfs.layer.stored import StagedLayer, stage
from layerfs.progress import Progress
from layerfs.store.layout import Store
from layerfs.timestamps import now_rfc3339


def _build_config(staged: list[StagedLayer], source: SourceImage) -> bytes:
    """A config for a source that has none: its base config (commit) or a fresh one,
    with the staged layers as rootfs and one history line for what was added."""
    now = now_rfc3339()
    os_name, arch = host_platform()
    config = copy.deepcopy(source.base_config) or {"architecture": arch, "os": os_name, "config": {}}
    config["created"] = now
    config["rootfs"] = {"type": "layers", "diff_ids": [s.diff_id for s in staged]}
    entry = {"created": now, "created_by": source.created_by}
    if source.comment:
        entry["comment"] = source.comment
    config.setdefault("history", []).append(entry)
    return json.dumps(config, indent=2).encode()


def _claimed_diff_ids(source: SourceImage) -> list[str | None]:
    if source.config is None:
        return [layer.diff_id for layer in source.layers]
    claimed: list[str | None] = list(diff_ids(parse_json(source.config, "image config")))
    if len(claimed) != len(source.layers):
        raise BadInput(f"image config lists {len(claimed)} layers but the manifest has {len(source.layers)}")
    return claimed


def _stage_one(store: Store, scratch: Path, layer: SourceLayer, diff_id: str | None, what: str,
               on_read: Callable[[int], None], fork: bool = False) -> StagedLayer:
    return stage(store, scratch, lambda: layer.open(scratch), digest=layer.digest, diff_id=diff_id,
                 what=what, on_read=on_read, fork=fork)


def _stage_all(store: Store, scratch: Path, source: SourceImage, progress: Progress,
               jobs: int) -> list[StagedLayer]:
    claimed = _claimed_diff_ids(source)
    count = len(source.layers)
    names = [f"layer {n}/{count}" + (f" {layer.digest[7:19]}" if layer.digest else "")
             for n, layer in enumerate(source.layers, 1)]
    if jobs <= 1 or count <= 1:
        staged = []
        for layer, diff_id, what in zip(source.layers, claimed, names):
            progress.task(what, layer.size)
            staged.append(_stage_one(store, scratch, layer, diff_id, what, progress.advance))
        return staged
    return _stage_parallel(store, scratch, source, claimed, names, progress, jobs)


def _stage_parallel(store: Store, scratch: Path, source: SourceImage, claimed: list[str | None],
                    names: list[str], progress: Progress, jobs: int) -> list[StagedLayer]:
    """Stage up to `jobs` layers at once, one bar each plus a total: each thread
    downloads and hashes (the GIL released) while a forked child unpacks. The first
    failure, or Ctrl-C, cancels the source's streams so the other workers stop at
    their next read (and kill their children); only then does the error go up, so
    nothing still writes into scratch space being removed."""
    tasks = [progress.concurrent(what, layer.size) for layer, what in zip(source.layers, names)]
    sizes = [layer.size for layer in source.layers]
    total = progress.concurrent("total", sum(sizes) if None not in sizes else None)  # type: ignore[arg-type]

    def work(i: int) -> StagedLayer:
        def on_read(n: int) -> None:
            tasks[i].advance(n)
            total.advance(n)
        staged = _stage_one(store, scratch, source.layers[i], claimed[i], names[i], on_read, fork=True)
        tasks[i].done()
        return staged

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="stage")
    futures = [pool.submit(work, i) for i in range(len(source.layers))]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
    except BaseException:
        if source.cancel is not None:
            source.cancel()
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    total.done()
    return [f.result() for f in futures]


def import_image(store: Store, source: SourceImage, name: str | None,
                 progress: Progress, jobs: int = 1) -> tuple[Image, str | None]:
    """Import `source` under `name` (or the source's own name, or none), staging up
    to `jobs` layers at once.

    Returns the image and the name it was given (None if it has none)."""
    name = reference_name(name) if name else (reference_name(source.name) if source.name else None)
    catalog = Catalog(store)
    try:
        with store.locked(), store.scratch() as scratch:
            staged = _stage_all(store, scratch, source, progress, jobs)
            config = source.config or _build_config(staged, source)
            for layer in staged:
                layer.publish(store)
            config_digest = store.put_bytes(config)
            manifest = source.manifest or build_manifest(
                Descriptor(OCI_CONFIG, config_digest, len(config)),
                [Descriptor(LAYER_TYPES[s.compression], s.digest, s.size) for s in staged])
            manifest_digest = store.put_bytes(manifest)
            media_type = parse_json(manifest, "manifest").get("mediaType") or OCI_MANIFEST
            catalog.name(Descriptor(media_type, manifest_digest, len(manifest)), name)
    finally:
        source.close()
    return catalog.resolve(manifest_digest), name
