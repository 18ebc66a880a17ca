"""An image layer by layer: each layer's index, its history entry, and the tree's state
before and after it, built from the indexes (no tar is read), in order, on first need:
a browser showing the base layer does not wait for the twentieth."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from layerfs.image.catalog import Image
from layerfs.inspect.changes import ADDED, DELETED, MODIFIED, PathChange, compare_states
from layerfs.layer.index import LayerIndex
from layerfs.layer.stored import layer_dir, load_index, require_unpacked, unpacked_size
from layerfs.store.layout import Store
from layerfs.union.build import no_gc_while_building
from layerfs.union.tree import MergedTree, Node


class _States:
    """The states of one layer chain, applied in order as far as asked (under a lock:
    the browser asks from its threads too)."""

    def __init__(self, store: Store, diff_ids: list[str]) -> None:
        self.store = store
        self.diff_ids = diff_ids
        self.tree = MergedTree.layered()
        self.roots = [self.tree.root]  # roots[n]: the state after layer n (0: nothing)
        self.indexes: dict[int, LayerIndex] = {}
        self.lock = threading.Lock()

    def index(self, number: int) -> LayerIndex:
        with self.lock:
            return self._index(number)

    def _index(self, number: int) -> LayerIndex:
        if number not in self.indexes:
            self.indexes[number] = load_index(self.store, self.diff_ids[number - 1])
        return self.indexes[number]

    def root(self, number: int) -> Node:
        """The root after layer `number` (0: the empty tree below the base)."""
        with self.lock:
            if number >= len(self.roots):
                with no_gc_while_building():
                    while number >= len(self.roots):
                        done = len(self.roots)
                        self.roots.append(self.tree.apply_layer(
                            self._index(done), layer_dir(self.store, self.diff_ids[done - 1])))
            return self.roots[number]


@dataclass
class Layer:
    number: int              # 1 is the base
    diff_id: str
    digest: str              # the blob's digest as the manifest lists it
    blob_size: int           # the blob's bytes (compressed)
    history: dict[str, Any]  # the config's history entry for this layer ({} if it has none)
    _states: _States = field(repr=False)
    _changes: list[PathChange] | None = field(default=None, repr=False)

    @property
    def index(self) -> LayerIndex:
        return self._states.index(self.number)

    @property
    def before(self) -> Node:
        """The root of the tree below this layer."""
        return self._states.root(self.number - 1)

    @property
    def after(self) -> Node:
        """The root of the tree with this layer."""
        return self._states.root(self.number)

    @property
    def size(self) -> int:
        """Bytes of file content the layer holds (known without loading its index)."""
        return unpacked_size(self._states.store, self.diff_id)

    @property
    def changes(self) -> list[PathChange]:
        if self._changes is None:
            self._changes = compare_states(self.before, self.after)
        return self._changes

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((ADDED, MODIFIED, DELETED), 0)
        for change in self.changes:
            counts[change.kind] += 1
        return counts


@dataclass
class HistoryEntry:
    """One line of `history`: a layer, or a config-only step (ENV, CMD, ...)."""

    created: str
    created_by: str
    comment: str
    layer: Layer | None


def _layer_history(config: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The history entry of each layer: the entries that are not empty_layer, in order
    (when the config's history does not match the layers, none)."""
    entries = [h for h in config.get("history") or [] if isinstance(h, dict) and not h.get("empty_layer")]
    return entries if len(entries) == count else [{} for _ in range(count)]


def apply_layers(store: Store, tree: MergedTree, diff_ids: list[str]) -> Node:
    """Add layers to a layered tree (the states before stay as they were); return the
    root after them."""
    require_unpacked(store, diff_ids)
    with no_gc_while_building():
        for diff_id in diff_ids:
            tree.apply_layer(load_index(store, diff_id), layer_dir(store, diff_id))
    return tree.root


def image_layers(store: Store, image: Image, diff_ids: list[str] | None = None) -> list[Layer]:
    """The image's layers (or its first ones: `diff_ids` a prefix of the image's), each
    with its history entry; their indexes and states load when first asked for."""
    diff_ids = image.diff_ids if diff_ids is None else diff_ids
    require_unpacked(store, diff_ids)
    steps = _layer_history(image.config, len(image.diff_ids))
    states = _States(store, diff_ids)
    return [Layer(number, diff_id, descriptor.digest, descriptor.size, steps[number - 1], states)
            for number, (diff_id, descriptor) in enumerate(zip(diff_ids, image.manifest.layers), 1)]


def history(image: Image, layers: list[Layer]) -> list[HistoryEntry]:
    """Every history step up to the last layer given, top first, each layer with the
    step that made it, as docker history shows them; when the config's history does
    not describe the layers, one bare line per layer."""
    if not any(layer.history for layer in layers):
        return [HistoryEntry("", "", "", layer) for layer in reversed(layers)]
    entries = []
    by_layer = iter(layers)
    for step in image.config.get("history") or []:
        if not isinstance(step, dict):
            continue
        layer = None
        if not step.get("empty_layer"):
            layer = next(by_layer, None)
            if layer is None:
                break  # above the layers in view (REF@N)
        entries.append(HistoryEntry(str(step.get("created", "")), str(step.get("created_by", "")),
                                    str(step.get("comment", "")), layer))
    return entries[::-1]


def shared_prefix(a: list[str], b: list[str]) -> int:
    """How many first layers two chains share."""
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count
