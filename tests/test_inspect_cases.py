"""Each whiteout, opaque and link case of a layer diff, written out by hand: a base
layer, a second layer doing one thing, and the exact listing of layer 2."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Layerfs
from tests.support.oci import (TarSpec, chardev, directory, file, hardlink, make_layer, opaque, symlink,
                               whiteout)


def _added(path: str, type_: str = "file", size: int = 0) -> dict:
    return {"path": path, "kind": "added", "type": type_, "size": size}


def _deleted(path: str, type_: str = "file", size: int = 0, entries: int = 1) -> dict:
    return {"path": path, "kind": "deleted", "type": type_, "size": size, "entries": entries}


def _modified(path: str, changed: list[str], type_: str = "file", size: int = 0, old_size: int = 0,
              old_type: str = "") -> dict:
    doc = {"path": path, "kind": "modified", "type": type_, "size": size, "changed": changed,
           "old_size": old_size}
    return dict(doc, old_type=old_type) if old_type else doc


BASE = [directory("d"), file("d/x", b"x"), file("f", b"ff"), file("a", b"1"), hardlink("b", "a"),
        symlink("s", "f"), chardev("dev", 1, 3), file("gone", b"bye")]
CASES: dict[str, tuple[list[TarSpec], list[dict]]] = {
    "whiteout of a path nothing below has": ([whiteout("ghost"), file("new", b"n")], [_added("/new", size=1)]),
    "opaque directory, all of it again the same": ([opaque("d"), directory("d"), file("d/x", b"x")], []),
    "opaque directory, a new file only": ([opaque("d"), file("d/y", b"yy")],
                                           [_deleted("/d/x", size=1), _added("/d/y", size=2)]),
    "opaque root, one file again": ([opaque(""), file("f", b"ff")],
                                    [_deleted("/a", size=1), _deleted("/b", size=1), _deleted("/d", "directory", 1, 2),
                                     _deleted("/dev", "char-device"), _deleted("/gone", size=3),
                                     _deleted("/s", "symlink")]),
    "whiteout of a directory": ([whiteout("d")], [_deleted("/d", "directory", 1, 2)]),
    "a directory replaced by a file": ([whiteout("d"), file("d", b"now a file")],
                                       [_modified("/d", ["type"], size=10, old_type="directory"),
                                        _deleted("/d/x", size=1)]),
    "a file replaced by a directory": ([whiteout("f"), directory("f"), file("f/y", b"y")],
                                       [_modified("/f", ["type"], "directory", old_size=2, old_type="file"),
                                        _added("/f/y", size=1)]),
    "a file replaced by a symlink": ([whiteout("f"), symlink("f", "d/x")],
                                     [_modified("/f", ["type"], "symlink", old_size=2, old_type="file")]),
    "a whiteout and the path again, one layer": ([whiteout("gone"), file("gone", b"back")],
                                                  [_modified("/gone", ["content"], size=4, old_size=3)]),
    "a hardlink to a file re-added the same": ([file("a", b"1"), hardlink("c", "a")], [_added("/c", size=1)]),
    "one name of a linked file rewritten": ([file("a", b"2")], [_modified("/a", ["content"], size=1, old_size=1)]),
    "a directory's mode only": ([directory("d", mode=0o700)], [_modified("/d", ["mode"], "directory")]),
    "an owner only, through a new mtime": ([file("f", b"ff", uid=7, mtime=1700000100)],
                                           [_modified("/f", ["uid", "mtime"], size=2, old_size=2)]),
    "an xattr only": ([file("f", b"ff", xattrs={"user.k": b"v"})],
                      [_modified("/f", ["xattrs"], size=2, old_size=2)]),
    "a device's numbers": ([chardev("dev", 1, 5)], [_modified("/dev", ["rdev"], "char-device")]),
    "a symlink retargeted": ([symlink("s", "a")], [_modified("/s", ["target"], "symlink")]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_diff_case(lfs_root: Layerfs, case: str) -> None:
    layer, expected = CASES[case]
    lfs_root.import_layers([make_layer(BASE), make_layer(layer)], "case")
    listed = json.loads(lfs_root.run("diff", "case", "--layer", "2", "--json").stdout)
    assert listed == expected
    # The same change, as two images: the base alone against both layers.
    pair = json.loads(lfs_root.run("diff", "case@1", "case", "--json", check=False).stdout)
    assert pair["changes"] == expected and pair["shared_layers"] == 1
