"""Get the merged tree of an image's layer chain: from the cache, or merge and cache it."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

from layerfs.layer.stored import layer_dir, load_index, require_unpacked
from layerfs.store.layout import Store
from layerfs.union.tree import MergedTree, cached_diff_ids, chain_key, load_cached, save_cached

TREES = "trees"


@contextlib.contextmanager
def no_gc_while_building() -> Iterator[None]:
    """A tree is ~100k long-lived objects: collecting while creating them only costs time,
    and once built they live as long as the mount, so they go to the permanent generation."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def merged_tree(store: Store, diff_ids: list[str]) -> MergedTree:
    with no_gc_while_building():
        return _merged_tree(store, diff_ids)


def _merged_tree(store: Store, diff_ids: list[str]) -> MergedTree:
    cache_dir = store.cache / TREES
    path = cache_dir / chain_key(store.root, diff_ids)
    tree = load_cached(path)
    if tree is not None:
        return tree
    require_unpacked(store, diff_ids)
    tree = MergedTree.merge([(layer_dir(store, d), load_index(store, d)) for d in diff_ids])
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_cached(tree, path, diff_ids)
    except OSError:
        pass  # a read-only or full store still mounts, just without the cache
    return tree


def prune_tree_cache(store: Store, live_diff_ids: set[str]) -> None:
    """Drop cached trees that use a layer which is gone."""
    cache_dir = store.cache / TREES
    if not cache_dir.is_dir():
        return
    for entry in os.scandir(cache_dir):
        chain = cached_diff_ids(cache_dir / entry.name)
        if chain is None or not set(chain) <= live_diff_ids:
            os.unlink(entry.path)
