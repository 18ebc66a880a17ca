"""Wasted space: what an image's layers store that its final tree does not show.

The efficiency score is dive's (filetree/efficiency.go): over every path a layer
stores, the sum of its smallest copy over the sum of all its copies, where a deleted
path needs nothing (its smallest copy counts 0). dive does that for a file's own
whiteout, but the files of a deleted directory, or those an opaque directory hides,
it counts as fully used (each has one copy), and it adds the deleted directory's
bytes to both sums; here they count as deleted, so the score falls with the waste
they are. On an image without such deletions both scores are the same, so dive's
CI thresholds keep their meaning.

The wasted bytes are all the copies of a path minus the one the image shows (none,
if the path is gone). dive adds the kept copy too (dive issue 684), which can double
the figure, and misses the deleted directories' files.

A copy that only changes metadata (the same content hash under a new owner or
mode, the `RUN chown -R` doubling) is waste of its own kind, reported with the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from layerfs.inspect.changes import lookup
from layerfs.inspect.layers import Layer
from layerfs.layer.index import DIRECTORY, REGULAR, Entry
from layerfs.union.compare import content_id

REMEDY = ("set owners and modes where the files are made (COPY --chown/--chmod, or chown/chmod "
          "in the same RUN step that creates them), not in a later layer")
REMEDY_UNCHANGED = "do not add again what a lower layer already holds (copy each file in one step only)"


@dataclass
class PathCopies:
    """Every layer's copy of one path: (layer number, bytes stored; a hardlink stores none)."""

    path: str
    copies: list[tuple[int, int]] = field(default_factory=list)
    wasted: int = 0
    deleted_in: int | None = None  # the layer that removed the path, if the image lacks it

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "wasted": self.wasted,
                "copies": [{"layer": n, "size": s} for n, s in self.copies], "deleted_in": self.deleted_in}


@dataclass
class MetadataReadd:
    """Files a layer re-adds with the content they have below, all changing the same
    (owner, mode, or nothing at all), yet every byte stored again."""

    layer: int
    files: int = 0
    size: int = 0
    changed: set[str] = field(default_factory=set)  # "uid", "gid", "mode"; empty: re-added unchanged
    examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer, "files": self.files, "size": self.size,
                "changed": sorted(self.changed), "examples": self.examples, "fix": self.fix}

    @property
    def fix(self) -> str:
        return REMEDY if self.changed else REMEDY_UNCHANGED


@dataclass
class Analysis:
    size: int            # bytes of all layers' content
    user_size: int       # the same without the base layer (dive's "user" bytes)
    efficiency: float
    wasted: int
    paths: list[PathCopies]           # every path with waste, most wasted first
    metadata_readds: list[MetadataReadd]

    @property
    def user_wasted_ratio(self) -> float:
        """Wasted bytes over the bytes the layers above the base add (dive's
        highest-user-wasted-percent compares this with its threshold)."""
        return self.wasted / self.user_size if self.user_size else 0.0


def analyze(layers: list[Layer]) -> Analysis:
    copies: dict[str, PathCopies] = {}
    readds: list[MetadataReadd] = []
    removals = _Removals()
    for layer in layers:
        index = layer.index
        for path in index.opaques:
            removals.below[path] = removals.below.get(path, ()) + (layer.number,)
        for path in index.whiteouts:
            removals.at[path] = removals.at.get(path, ()) + (layer.number,)
        readds_here: dict[frozenset[str], MetadataReadd] = {}  # by what the re-adds change
        for entry in index.entries:
            if entry.kind == DIRECTORY:
                continue
            size = entry.size if entry.kind == REGULAR else 0  # a hardlink stores no bytes
            found = copies.get(entry.path)
            if found is None:
                found = copies[entry.path] = PathCopies("/" + entry.path)
            found.copies.append((layer.number, size))
            if len(found.copies) > 1 and entry.kind == REGULAR and entry.payload:
                _note_readd(readds_here, layer, entry)
        readds.extend(sorted(readds_here.values(), key=lambda r: sorted(r.changed)))
    return _score(layers, copies, readds, removals)


def _note_readd(readds: dict[frozenset[str], MetadataReadd], layer: Layer, entry: Entry) -> None:
    """Count `entry` as a re-add if the tree below holds the same content at its path."""
    old = lookup(layer.before, os.fsencode(entry.path))
    if old is None or old.kind != REGULAR or content_id(old) != entry.payload:
        return
    changed = frozenset(name for name, a, b in (("uid", old.uid, entry.uid), ("gid", old.gid, entry.gid),
                                                 ("mode", old.mode, entry.mode)) if a != b)
    readd = readds.get(changed)
    if readd is None:
        readd = readds[changed] = MetadataReadd(layer.number, changed=set(changed))
    readd.files += 1
    readd.size += entry.size
    if len(readd.examples) < 5:
        readd.examples.append("/" + entry.path)


@dataclass
class _Removals:
    """Where each layer's whiteouts and opaque markers removed something: a path is gone
    with a whiteout of it or of a directory above it, or an opaque marker above it."""

    at: dict[str, tuple[int, ...]] = field(default_factory=dict)     # whiteouts: path -> layers
    below: dict[str, tuple[int, ...]] = field(default_factory=dict)  # opaque directories -> layers

    def deleted_in(self, layers: list[Layer], entry: PathCopies) -> int | None:
        """The first layer after the path's last copy that removed it (a directory
        above it replaced by a file is found by walking the states)."""
        last_copy = entry.copies[-1][0]
        parts = entry.path.lstrip("/").split("/")
        found = [n for n in self.at.get("/".join(parts), ()) if n > last_copy]
        for depth in range(len(parts)):  # every directory above it, the root ("") first
            parent = "/".join(parts[:depth])
            found += [n for n in self.at.get(parent, ()) + self.below.get(parent, ()) if n > last_copy]
        if found:
            return min(found)
        raw = os.fsencode(entry.path)
        return next((layer.number for layer in layers[last_copy:]
                     if lookup(layer.after, raw) is None), None)


def _score(layers: list[Layer], copies: dict[str, PathCopies], readds: list[MetadataReadd],
           removals: _Removals) -> Analysis:
    final = layers[-1].after if layers else None
    needed = stored = wasted = 0
    for path, entry in copies.items():
        sizes = [size for _, size in entry.copies]
        node = lookup(final, os.fsencode(path)) if final is not None else None
        shown = node is not None and node.kind != DIRECTORY
        stored += sum(sizes)
        needed += min(sizes) if shown else 0
        entry.wasted = sum(sizes) - (sizes[-1] if shown else 0)
        wasted += entry.wasted
        if not shown and entry.wasted:
            entry.deleted_in = removals.deleted_in(layers, entry)
    paths = sorted((e for e in copies.values() if e.wasted > 0), key=lambda e: (-e.wasted, e.path))
    size = sum(layer.size for layer in layers)
    return Analysis(size, size - (layers[0].size if layers else 0), needed / stored if stored else 1.0,
                    wasted, paths, readds)
