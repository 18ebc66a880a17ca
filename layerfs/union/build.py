"""Get the merged tree of an image's layer chain: from the cache, or merge and cache it."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from pathlib import Path

from layerfs.layer.stored import layer_dir, load_index, require_unpacked
from layerfs.store.layout import Store
from layerfs.union.tree import MergedTree, cached_diff_ids, chain_key, load_cached, save_cached

TREES = "trees"
# Trees kept in this process's memory, by chain key. Only the resident service keeps
# any (keep_recent_trees): the workers forked from it then find a mount's tree here,
# in pages they share with the service, instead of reading and decoding the cache file.
_in_memory: dict[str, MergedTree] = {}


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
    key = chain_key(store.root, diff_ids)
    if (tree := _in_memory.get(key)) is not None:
        _touch(store.cache / TREES / key)
        return tree
    with no_gc_while_building():
        return _merged_tree(store, diff_ids, key)


def _touch(path: Path) -> None:
    """Mark a cached tree used now: keep_recent_trees picks the latest."""
    with contextlib.suppress(OSError):
        os.utime(path)


def keep_recent_trees(store: Store, count: int) -> int:
    """Hold in memory the `count` trees of this store mounted last (their cache files'
    mtimes say which), dropping the others; how many are held."""
    cache_dir = store.cache / TREES
    try:
        entries = sorted((e for e in os.scandir(cache_dir) if not e.name.startswith(".")),
                         key=lambda e: e.stat().st_mtime, reverse=True)[:count]
    except OSError:
        entries = []
    wanted = {e.name for e in entries}
    for key in set(_in_memory) - wanted:
        del _in_memory[key]
    with no_gc_while_building():
        for entry in entries:
            if entry.name not in _in_memory and (tree := load_cached(Path(entry.path))) is not None:
                _in_memory[entry.name] = tree
    return len(_in_memory)


def trees_in_memory() -> int:
    return len(_in_memory)


def _merged_tree(store: Store, diff_ids: list[str], key: str) -> MergedTree:
    cache_dir = store.cache / TREES
    path = cache_dir / key
    tree = load_cached(path)
    if tree is not None:
        _touch(path)
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
