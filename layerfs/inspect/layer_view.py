"""One layer on its own, as its tar holds it: what `layerfs mount --layer N` serves.

A layer's index keeps its whiteouts and opaque markers apart from its entries (they
act on the layers below, not as files). Shown alone, a layer has nothing below it,
so they are put back as the files the tar holds: a deleted NAME as an empty regular
file `.wh.NAME` beside where NAME was, an opaque directory with an empty file
`.wh..wh..opq` in it (0644, root's, with the time of the directory they are in).
"""

from __future__ import annotations

from layerfs.layer.index import DIRECTORY, REGULAR, Entry, LayerIndex
from layerfs.layer.stored import layer_dir, load_index, require_unpacked
from layerfs.layer.unpack import OPAQUE_MARKER, WHITEOUT_PREFIX
from layerfs.store.layout import Store
from layerfs.union.tree import MergedTree

MARKER_MODE = 0o644


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def with_markers(index: LayerIndex) -> LayerIndex:
    """`index` with no whiteouts or opaques: each is an entry of its marker file instead."""
    dir_mtimes = {e.path: e.mtime_ns for e in index.entries if e.kind == DIRECTORY}

    def marker(directory: str, name: str) -> Entry:
        return Entry(_join(directory, name), REGULAR, MARKER_MODE, 0, 0,
                     mtime_ns=dir_mtimes.get(directory, 0))

    markers = [marker(path.rpartition("/")[0], WHITEOUT_PREFIX + path.rpartition("/")[2])
               for path in index.whiteouts]
    markers += [marker(path, OPAQUE_MARKER) for path in index.opaques]
    return LayerIndex(index.entries + markers, [], [], index.size)


def layer_view(store: Store, diff_id: str) -> MergedTree:
    """The tree of layer `diff_id` alone, whiteouts and opaque markers as files."""
    require_unpacked(store, [diff_id])
    return MergedTree.merge([(layer_dir(store, diff_id), with_markers(load_index(store, diff_id)))])
