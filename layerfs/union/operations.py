"""What a mount serves: an image read-only, or a container read-write.

Each returns a factory that the serving process calls, so pyfuse3 is imported
and a container's journal opened only where the filesystem is actually served.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from layerfs.union.access import MountKind
from layerfs.union.tree import MergedTree

if TYPE_CHECKING:
    import pyfuse3


def image_operations(tree: MergedTree, kind: MountKind) -> Callable[[], "pyfuse3.Operations"]:
    def make() -> "pyfuse3.Operations":
        from layerfs.union.readonly import ReadOnlyOperations
        return ReadOnlyOperations(tree, kind)
    return make


def container_operations(tree: MergedTree, upper_dir: Path, identity: str,
                         kind: MountKind) -> Callable[[], "pyfuse3.Operations"]:
    def make() -> "pyfuse3.Operations":
        from layerfs.union.readwrite import ReadWriteOperations
        from layerfs.union.upper import UpperLayer
        return ReadWriteOperations(tree, UpperLayer(upper_dir, tree, identity), kind)
    return make
