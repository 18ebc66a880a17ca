"""Import an image from any source into the store: stage every layer, then publish.

Order is what makes a killed or failed import invisible: layers are staged
(verified and unpacked in scratch space) first; only when all are good are they
renamed into place, then config and manifest are written, and the name is added
to index.json last. Until that final rename the store lists no new image.
"""

from __future__ import annotations

import copy
import json
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


def _stage_all(store: Store, scratch: Path, source: SourceImage, progress: Progress) -> list[StagedLayer]:
    claimed: list[str | None]
    if source.config is not None:
        claimed = list(diff_ids(parse_json(source.config, "image config")))
        if len(claimed) != len(source.layers):
            raise BadInput(f"image config lists {len(claimed)} layers but the manifest has {len(source.layers)}")
    else:
        claimed = [layer.diff_id for layer in source.layers]
    staged = []
    count = len(source.layers)
    for number, (layer, diff_id) in enumerate(zip(source.layers, claimed), 1):
        what = f"layer {number}/{count}" + (f" {layer.digest[7:19]}" if layer.digest else "")
        progress.task(what, layer.size)

        def open_layer(layer: SourceLayer = layer):  # noqa: ANN202
            return layer.open(scratch)

        staged.append(stage(store, scratch, open_layer, digest=layer.digest, diff_id=diff_id,
                            what=what, on_read=progress.advance))
    return staged


def import_image(store: Store, source: SourceImage, name: str | None,
                 progress: Progress) -> tuple[Image, str | None]:
    """Import `source` under `name` (or the source's own name, or none).

    Returns the image and the name it was given (None if it has none)."""
    name = reference_name(name) if name else (reference_name(source.name) if source.name else None)
    catalog = Catalog(store)
    try:
        with store.locked(), store.scratch() as scratch:
            staged = _stage_all(store, scratch, source, progress)
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
