"""Two images compared: their files (whatever their layer chains) and their configs.

The layers both chains start with are applied once and shared by both trees, so
only what the rest of each chain touched is walked. `semantic` compares what a
reproducible build must reproduce, as diffoci's --semantic does: file contents,
owners, modes, links and xattrs, and the config that decides how the image runs;
not timestamps, history, or how the layers were cut and compressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerfs.inspect.changes import PathChange, compare_states
from layerfs.inspect.layers import apply_layers, shared_prefix
from layerfs.store.layout import Store
from layerfs.union.tree import MergedTree, Node

# Config keys that change how a container of the image runs: compared always.
RUN_KEYS = ("architecture", "os", "variant", "os.version", "os.features")
# The rest: when and how it was built.
BUILD_KEYS = ("created", "author", "history")


@dataclass
class ConfigChange:
    key: str       # "config.Env", "created", "layers", ...
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new}


@dataclass
class ImageDiff:
    old_root: Node
    new_root: Node
    files: list[PathChange]
    config: list[ConfigChange]
    shared_layers: int

    @property
    def same(self) -> bool:
        return not self.files and not self.config


def config_changes(old: dict[str, Any], new: dict[str, Any], old_ids: list[str], new_ids: list[str],
                   semantic: bool) -> list[ConfigChange]:
    found = []
    old_process, new_process = old.get("config") or {}, new.get("config") or {}
    for key in sorted(set(old_process) | set(new_process)):
        a, b = old_process.get(key), new_process.get(key)
        if (a or None) != (b or None):  # an empty list or map is no setting
            found.append(ConfigChange(f"config.{key}", a, b))
    for key in RUN_KEYS + (() if semantic else BUILD_KEYS):
        if old.get(key) != new.get(key):
            found.append(ConfigChange(key, old.get(key), new.get(key)))
    if not semantic and old_ids != new_ids:
        found.append(ConfigChange("layers", old_ids, new_ids))
    return found


def diff_images(store: Store, old_config: dict[str, Any], old_ids: list[str],
                new_config: dict[str, Any], new_ids: list[str], semantic: bool = False) -> ImageDiff:
    """Compare two images given as (config, diff_ids)."""
    tree = MergedTree.layered()
    shared = shared_prefix(old_ids, new_ids)
    base = apply_layers(store, tree, old_ids[:shared])
    old_root = apply_layers(store, tree, old_ids[shared:])
    tree.resume(base)  # states are persistent: the second chain continues from the shared one
    new_root = apply_layers(store, tree, new_ids[shared:])
    files = compare_states(old_root, new_root, times=not semantic)
    return ImageDiff(old_root, new_root, files,
                     config_changes(old_config, new_config, old_ids, new_ids, semantic), shared)
