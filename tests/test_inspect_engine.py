"""The change engine against two oracles, on layer sequences hypothesis makes.

1. The states inspection builds (MergedTree.layered: each layer copies only the
   directories it touches) are the trees a mount merges from scratch.
2. What compare_states lists between any two states is what a naive comparison of
   the two trees' flat path maps gives, by the rules in layerfs/inspect/changes.py:
   every added path; a deleted path only where its parent survives (as a directory, or
   made a file or link: what the directory held is listed then);
   a modified path where type, content, mode, owner, link target or a file's mtime
   differ.
"""

from __future__ import annotations

import os
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerfs.inspect.changes import compare_states
from layerfs.layer.stored import layer_dir, load_index
from layerfs.store.layout import Store
from layerfs.union.tree import MergedTree, Node
from tests.conftest import Layerfs
from tests.support.oci import directory, file, make_layer, opaque, symlink, whiteout, write_oci_layout

EXAMPLES = int(os.environ.get("LAYERFS_INSPECT_EXAMPLES", "25"))
PATHS = ["a", "b", "a/x", "a/y", "b/x", "a/x/deep"]
CONTENTS = [b"", b"one", b"two", b"three-bytes"]


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@st.composite
def layer_ops(draw: st.DrawFn) -> list:
    """One layer: entries on distinct paths, none inside another's (a tar that says both
    `a` is a file and `a/x` exists is not one a builder writes)."""
    specs, used = [], []
    for _ in range(draw(st.integers(1, 5))):
        path = draw(st.sampled_from(PATHS))
        if any(path == u or path.startswith(u + "/") or u.startswith(path + "/") for u in used):
            continue
        used.append(path)
        op = draw(st.sampled_from(["file", "file", "dir", "symlink", "whiteout", "opaque"]))
        mode = draw(st.sampled_from([0o644, 0o600, 0o755]))
        uid = draw(st.sampled_from([0, 1000]))
        mtime = draw(st.sampled_from([1700000000, 1700000001]))
        if op == "file":
            specs.append(file(path, draw(st.sampled_from(CONTENTS)), mode=mode, uid=uid, mtime=mtime))
        elif op == "dir":
            specs.append(directory(path, mode=mode | 0o700, uid=uid))
        elif op == "symlink":
            specs.append(symlink(path, draw(st.sampled_from(["a", "b/x", "/etc"]))))
        elif op == "whiteout":
            specs.append(whiteout(path))
        else:
            specs.extend([directory(path), opaque(path)])
    return specs


def _flat(root: Node) -> dict[str, Node]:
    found: dict[str, Node] = {}
    stack = [("", root)]
    while stack:
        path, node = stack.pop()
        for name, child in (node.children or {}).items():
            child_path = f"{path}/{os.fsdecode(name)}"
            found[child_path] = child
            if child.kind == "d":
                stack.append((child_path, child))
    return found


def _naive(old: Node, new: Node) -> list[tuple[str, str]]:
    a, b = _flat(old), _flat(new)
    found = [(p, "added") for p in b if p not in a]
    found += [(p, "deleted") for p in a if p not in b and (_parent(p) == "" or _parent(p) in b)]
    for path in set(a) & set(b):
        x, y = a[path], b[path]
        same = (x.kind, x.mode, x.uid, x.gid, x.target, x.xattrs) == (y.kind, y.mode, y.uid, y.gid, y.target, y.xattrs)
        if x.kind == y.kind == "f":
            same = same and os.path.basename(x.payload) == os.path.basename(y.payload) and x.mtime_ns == y.mtime_ns
        if x.kind == y.kind == "l":
            same = same and x.mtime_ns == y.mtime_ns
        if not same:
            found.append((path, "modified"))
    return sorted(found, key=lambda change: change[0].split("/"))



@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(layers=st.lists(layer_ops(), min_size=1, max_size=4))
def test_states_and_changes_match_the_oracles(lfs_root: Layerfs, layers: list) -> None:
    source = lfs_root.workdir / f"src-{uuid.uuid4().hex[:8]}"
    info = write_oci_layout(source, [make_layer(specs) for specs in layers])
    lfs_root.run("import", f"oci:{source}", f"h:{uuid.uuid4().hex[:8]}", "-q")
    store = Store(lfs_root.root)
    pairs = [(layer_dir(store, d), load_index(store, d)) for d in info.diff_ids]
    layered = MergedTree.layered()
    states = [layered.root] + [layered.apply_layer(index, path) for path, index in pairs]
    fresh = [MergedTree.merge(pairs[:k]).root for k in range(len(pairs) + 1)]
    for k in range(len(pairs) + 1):
        assert compare_states(fresh[k], states[k]) == [], f"state after layer {k} differs from a fresh merge"
    for low in range(len(states)):
        for high in range(low, len(states)):
            listed = [(os.fsdecode(c.path), c.kind) for c in compare_states(states[low], states[high])]
            assert listed == _naive(fresh[low], fresh[high]), (low, high)
