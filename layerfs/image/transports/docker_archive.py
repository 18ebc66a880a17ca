"""`docker save` archives: manifest.json names the config and layer files.

Docker 25+ archives are also OCI layouts, but manifest.json is present in both
the old and the new form and its paths lead to the right files, so it is the one
thing read here. Old archives carry no manifest digest: a fresh OCI manifest is
built from the layers as they are stored.
"""

from __future__ import annotations

import json

from layerfs.errors import BadInput, NotFound
from layerfs.image.source import Files, SourceImage, SourceLayer


def _entries(files: Files) -> list[dict]:
    try:
        entries = json.loads(files.read("manifest.json"))
    except ValueError as e:
        raise BadInput(f"{files.label}: manifest.json is not valid JSON ({e})") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise BadInput(f"{files.label}: manifest.json lists no images")
    return entries


def docker_archive_source(files: Files, ref: str | None) -> SourceImage:
    entries = _entries(files)
    if ref is not None:
        chosen = [e for e in entries if ref in (e.get("RepoTags") or [])]
        if not chosen:
            raise NotFound(f"{files.label} has no image {ref!r}")
        entry = chosen[0]
    elif len(entries) == 1:
        entry = entries[0]
    else:
        raise BadInput(f"{files.label} holds several images; name one as docker-archive:FILE:NAME:TAG")
    tags = _tags(files, entry)
    source = _entry_source(files, entry, ref or (tags[0] if tags else None))
    source.closers.append(files.close)
    return source


def docker_archive_images(files: Files) -> list[tuple[SourceImage, list[str]]]:
    """Every image of the archive with all its RepoTags (`load`), entries naming the same
    config merged. The sources share `files` and do not close it: the caller does."""
    by_config: dict[str, tuple[dict, list[str]]] = {}
    for entry in _entries(files):
        config = entry.get("Config")
        key = config if isinstance(config, str) else f"entry {len(by_config)}"
        names = by_config.setdefault(key, (entry, []))[1]
        names += [t for t in _tags(files, entry) if t not in names]
    return [(_entry_source(files, entry, names[0] if names else None), names)
            for entry, names in by_config.values()]


def _tags(files: Files, entry: dict) -> list[str]:
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadInput(f"{files.label}: manifest.json has RepoTags that are not a list of names")
    return tags


def _entry_source(files: Files, entry: dict, name: str | None) -> SourceImage:
    """One manifest.json entry as a source, its layers checked to be there."""
    config_path, layer_paths = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_path, str) or not isinstance(layer_paths, list):
        raise BadInput(f"{files.label}: manifest.json entry has no Config or Layers")
    for path in layer_paths:
        if not isinstance(path, str) or not files.exists(path):
            raise BadInput(f"{files.label}: manifest.json names layer {path!r}, which is missing")

    def opener(path: str):  # noqa: ANN202
        return lambda scratch: files.open(path)

    return SourceImage(layers=[SourceLayer(opener(p)) for p in layer_paths],
                       config=files.read(config_path), name=name)
