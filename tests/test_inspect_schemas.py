"""The JSON schemas of schemas/ (issue 9): every `--json` document of `history`, `diff`
and `analyze` has one, each is a valid, strict and documented draft 2020-12 schema,
and real outputs validate against it.

The images are built so that every branch of the schemas shows up in real output: a
file modified, a file deleted and added back, a deleted directory, an opaque directory,
a chmod-only re-add, a file replaced by a symlink, a hard link, a char device, a config
step that made no layer; and a container that changes content, owner, atime, xattrs
and types, and adds a fifo and a socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import validator_for
from referencing import Registry, Resource

from conftest import Layerfs
from support import oci
from support.oci import (CREATED, DEFAULT_MTIME, chardev, directory, file, hardlink, make_layer, opaque,
                         symlink, whiteout, write_oci_layout)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.json"))
DRAFT = "https://json-schema.org/draft/2020-12/schema"
EXIT_DIFFERENT = 1


# -- schemas ------------------------------------------------------------------------

def load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


@cache
def registry() -> Registry:
    """Every schema under its file name, which is what their relative `$ref`s say."""
    return Registry().with_resources((name, Resource.from_contents(load(name))) for name in SCHEMA_FILES)


def errors_of(name: str, doc: Any) -> list[str]:
    schema = load(name)
    validator = validator_for(schema)(schema, registry=registry())
    return [f"{name} at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])]


def validate(name: str, doc: Any) -> Any:
    """Assert that `doc` is valid by schemas/`name`; `doc` back."""
    errors = errors_of(name, doc)
    assert not errors, "\n".join(errors)
    return doc


def subschemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from subschemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from subschemas(value)


def refs_of(name: str) -> set[str]:
    return {s["$ref"] for s in subschemas(load(name)) if isinstance(s.get("$ref"), str)}


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_strict_and_documented(name: str) -> None:
    schema = load(name)
    assert schema["$schema"] == DRAFT
    validator_for(schema).check_schema(schema)
    assert schema.get("title") and schema.get("description"), f"{name}: give it a title and a description"
    for sub in subschemas(schema):
        if sub.get("type") == "object":
            assert sub.get("additionalProperties") is False, f"{name}: an object schema allows other keys"
        if "additionalProperties" in sub:  # a defining object schema (not an if/then refinement)
            assert "required" in sub, f"{name}: an object schema without required keys"
            for key, prop in sub.get("properties", {}).items():
                assert isinstance(prop, dict) and prop.get("description"), f"{name}: {key} has no description"
                if "integer" in (prop.get("type") or ()):
                    assert "minimum" in prop, f"{name}: {key} is an integer without a minimum"
    for ref in refs_of(name):  # every $ref lands (a typo would only show on the branch using it)
        registry().resolver(base_uri=name).lookup(ref)


def test_every_schema_is_used_and_listed() -> None:
    """No schema rots: each is validated against real output (a command's, not a
    sample's) by a test here, or is referenced by one that is; and the README names it."""
    real = r'validate\(\s*"([\w.-]+\.json)",\s*(?:run_json|json\.loads)\('
    validated = set(re.findall(real, Path(__file__).read_text()))
    used, todo = set(), list(validated)
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo.extend(ref.partition("#")[0] for ref in refs_of(name) if not ref.startswith("#"))
    assert used == set(SCHEMA_FILES), f"unused: {set(SCHEMA_FILES) - used}, missing: {used - set(SCHEMA_FILES)}"
    readme = (SCHEMAS / "README.md").read_text()
    assert not [name for name in SCHEMA_FILES if f"`{name}`" not in readme]


# -- the images ---------------------------------------------------------------------

def base_layer(mtime: int) -> bytes:
    return make_layer([
        directory("etc", mtime=mtime),
        file("etc/conf", b"one\n", mtime=mtime),
        file("etc/gone", b"bye\n", mtime=mtime),
        file("etc/swap", b"a file, then a symlink\n", mtime=mtime),
        directory("data", mtime=mtime),
        file("data/a", b"aaaa", mtime=mtime),
        file("data/b", b"bbbb", mtime=mtime),
        directory("bin", mtime=mtime),
        file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o644, mtime=mtime),
        directory("old", mtime=mtime),
        file("old/x", b"x", mtime=mtime),
    ])


def change_layer(mtime: int) -> bytes:
    return make_layer([
        directory("etc", mtime=mtime),
        file("etc/conf", b"two two\n", mtime=mtime),                   # modified
        whiteout("etc/gone"),                                          # a file deleted
        symlink("etc/swap", "conf", mtime=mtime),                      # a type change
        directory("data", mtime=mtime),
        opaque("data"),                                                # an opaque directory
        file("data/c", b"cc", mtime=mtime),
        directory("bin", mtime=mtime),
        file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755, mtime=mtime),  # a chmod-only re-add
        symlink("bin/link", "tool", mtime=mtime),                      # a symlink
        hardlink("bin/hard", "bin/tool"),                              # a hard link
        whiteout("old"),                                               # a directory deleted
    ])


def top_layer(mtime: int) -> bytes:
    return make_layer([
        directory("etc", mtime=mtime),
        file("etc/gone", b"back again\n", mtime=mtime),               # deleted, then added back
        directory("srv", mtime=mtime),
        file("srv/app", b"app\n", mode=0o755, uid=1000, gid=1000, mtime=mtime),
    ])


def image_layers(mtime: int = DEFAULT_MTIME) -> list[bytes]:
    return [base_layer(mtime), change_layer(mtime), top_layer(mtime)]


def with_empty_step(diff_ids: list[str], config: dict | None = None, *, _plain=oci.image_config) -> dict:
    """oci.image_config, with an ENV step that made no layer after the base's step."""
    doc = _plain(diff_ids, config)
    doc["history"].insert(1, {"created": CREATED, "created_by": "ENV MODE=test", "empty_layer": True,
                              "comment": "no layer"})
    return doc


@pytest.fixture
def images(lfs_root: Layerfs, monkeypatch: pytest.MonkeyPatch) -> Layerfs:
    """img (three layers and an ENV step), rebuilt (img's files with other mtimes),
    other (img's base, then a different layer and config)."""
    monkeypatch.setattr(oci, "image_config", with_empty_step)
    lfs_root.import_layers(image_layers(), "img")
    lfs_root.import_layers(image_layers(DEFAULT_MTIME + 3600), "rebuilt")
    monkeypatch.undo()
    source = lfs_root.mkdir("other-src")
    write_oci_layout(source, [base_layer(DEFAULT_MTIME), make_layer([
        directory("etc"), file("etc/conf", b"other\n"), chardev("etc/null", 1, 3), whiteout("data")])],
        config={"Env": ["MODE=other"], "Cmd": ["/bin/sh"]})
    lfs_root.give(source)
    lfs_root.run("import", f"oci:{source}", "other", "-q")
    return lfs_root


def run_json(lfs: Layerfs, *args: str, code: int = 0) -> Any:
    proc = lfs.run(*args, check=False)
    assert proc.returncode == code, f"{args}: exit {proc.returncode}, wanted {code}\n{proc.stderr}"
    return json.loads(proc.stdout)


def kinds(changes: list[dict[str, Any]]) -> dict[str, str]:
    return {c["path"]: c["kind"] for c in changes}


# -- history and diff of one image -----------------------------------------------------

def test_history_json(images: Layerfs) -> None:
    steps = validate("history.json", run_json(images, "history", "img", "--json"))
    assert [s["layer"] for s in steps] == [3, 2, None, 1]  # top first, the ENV step without a layer
    assert steps[2]["empty_layer"] and steps[2]["created_by"] == "ENV MODE=test"
    assert steps[1]["deleted"] == 4 and steps[1]["modified"] == 3  # etc/gone, data/a, data/b, old
    steps = validate("history.json", run_json(images, "history", "img@1", "--json"))
    assert [s["layer"] for s in steps] == [None, 1]  # the ENV step made before layer 2 is part of @1


def test_diff_layer_json(images: Layerfs) -> None:
    changes = validate("diff-changes.json", run_json(images, "diff", "img", "--layer", "2", "--json"))
    by_path = {c["path"]: c for c in changes}
    assert by_path["/etc/conf"]["changed"] == ["content"]
    assert by_path["/bin/tool"]["changed"] == ["mode"]
    assert by_path["/etc/swap"]["changed"] == ["type"] and by_path["/etc/swap"]["old_type"] == "file"
    assert by_path["/old"]["entries"] == 2 and by_path["/data/a"]["kind"] == "deleted"
    assert by_path["/bin/link"]["type"] == "symlink" and by_path["/bin/hard"]["type"] == "file"
    net = validate("diff-changes.json", run_json(images, "diff", "img", "--layer", "2..3", "--json"))
    assert kinds(net)["/etc/gone"] == "modified"  # deleted, then added back: net, a new file
    chosen = validate("diff-changes.json",
                      run_json(images, "diff", "img", "--layer", "2", "--kind", "D", "--path", "/data", "--json"))
    assert kinds(chosen) == {"/data/a": "deleted", "/data/b": "deleted"}


def test_diff_every_layer_json(images: Layerfs) -> None:
    layers = validate("diff-layers.json", run_json(images, "diff", "img", "--json"))
    assert [layer["layer"] for layer in layers] == [1, 2, 3]
    assert {c["kind"] for c in layers[1]["changes"]} == {"added", "modified", "deleted"}
    only = validate("diff-layers.json", run_json(images, "diff", "img", "--kind", "added", "--json"))
    assert all(c["kind"] == "added" for layer in only for c in layer["changes"])


# -- two images ---------------------------------------------------------------------

def test_diff_images_json(images: Layerfs) -> None:
    doc = validate("diff-images.json", run_json(images, "diff", "img", "other", "--json", code=EXIT_DIFFERENT))
    assert not doc["same"] and doc["shared_layers"] == 1
    assert {"config.Cmd", "config.Env", "layers"} <= {c["key"] for c in doc["config"]}
    assert {c["type"] for c in doc["changes"]} >= {"char-device", "directory", "file"}

    doc = validate("diff-images.json", run_json(images, "diff", "img", "rebuilt", "--json", code=EXIT_DIFFERENT))
    assert not doc["same"] and doc["shared_layers"] == 0
    assert any("mtime" in c.get("changed", []) for c in doc["changes"])
    doc = validate("diff-images.json", run_json(images, "diff", "img", "rebuilt", "--semantic", "--json"))
    assert doc["same"] and doc["semantic"] and doc["config"] == [] and doc["changes"] == []

    doc = validate("diff-images.json", run_json(images, "diff", "img@1", "img@2", "--kind", "deleted", "--json",
                                                code=EXIT_DIFFERENT))
    assert doc["old"]["ref"] == "img@1" and doc["new"]["layers"] == 2
    assert {c["kind"] for c in doc["changes"]} == {"deleted"}

    report = images.workdir / "report"
    images.run("diff", "img", "other", "--report-dir", str(report), check=False)
    validate("diff-images.json", json.loads((report / "report.json").read_text()))


# -- analyze ------------------------------------------------------------------------

def test_analyze_json(images: Layerfs) -> None:
    doc = validate("analyze.json", run_json(images, "analyze", "img", "--json"))
    assert "rules" not in doc and "passed" not in doc
    assert doc["metadata_readds"][0]["changed"] == ["mode"]
    gone = next(p for p in doc["wasted_paths"] if p["path"] == "/etc/gone")
    assert gone["deleted_in"] is None and [c["layer"] for c in gone["copies"]] == [1, 3]  # back in 3
    top = validate("analyze.json", run_json(images, "analyze", "img", "--top", "1", "--json"))
    assert len(top["wasted_paths"]) == 1 and top["wasted_path_count"] == doc["wasted_path_count"] > 1

    failed = validate("analyze.json", run_json(images, "analyze", "img", "--ci", "--json", code=EXIT_DIFFERENT))
    assert not failed["passed"] and "fail" in {r["status"] for r in failed["rules"]}
    passed = validate("analyze.json", run_json(images, "analyze", "img", "--ci", "--json",
                                               "--lowest-efficiency", "0", "--highest-wasted-bytes", "1GB",
                                               "--highest-user-wasted-percent", "disabled"))
    assert passed["passed"] and {r["status"] for r in passed["rules"]} == {"pass", "skip"}


# -- a container ----------------------------------------------------------------------

def test_diff_container_json(images: Layerfs) -> None:
    images.run("create", "--name", "c1", "img")
    mp = images.mkdir("mp")
    images.run("mount", "c1", str(mp))
    try:
        (mp / "etc/conf").write_text("three\n")
        os.setxattr(mp / "etc/conf", "user.note", b"edited")
        os.chown(mp / "srv/app", 0, 0)
        st = os.stat(mp / "data/c")
        os.utime(mp / "data/c", ns=(st.st_atime_ns - 10**12, st.st_mtime_ns))
        os.remove(mp / "etc/swap")
        os.mkdir(mp / "etc/swap")
        shutil.rmtree(mp / "bin")
        os.remove(mp / "etc/gone")
        os.mkfifo(mp / "fifo")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(mp / "sock"))
    finally:
        images.run("umount", str(mp))

    changes = validate("diff-changes.json", run_json(images, "diff", "c1", "--json"))
    by_path = {c["path"]: c for c in changes}
    assert by_path["/etc/conf"]["changed"] == ["content", "xattrs", "mtime"]
    assert by_path["/srv/app"]["changed"] == ["uid", "gid"]
    assert by_path["/data/c"]["changed"] == ["atime"]
    assert by_path["/etc/swap"]["old_type"] == "symlink" and by_path["/etc/swap"]["type"] == "directory"
    assert by_path["/bin"]["entries"] == 4  # bin, tool, link, hard
    assert by_path["/fifo"]["type"] == "fifo" and by_path["/sock"]["type"] == "socket"

    report = images.workdir / "report"
    images.run("diff", "c1", "--report-dir", str(report))
    validate("diff-changes.json", json.loads((report / "report.json").read_text())["changes"])


# -- the schemas refuse what the commands never print -----------------------------------

ADDED = {"path": "/etc/new", "kind": "added", "type": "file", "size": 4}
MODIFIED = {"path": "/etc/conf", "kind": "modified", "type": "file", "size": 6, "changed": ["content"],
            "old_size": 4}
RETYPED = {"path": "/etc/swap", "kind": "modified", "type": "symlink", "size": 0, "changed": ["type"],
           "old_size": 3, "old_type": "file"}
DELETED = {"path": "/old", "kind": "deleted", "type": "directory", "size": 1, "entries": 2}
DIGEST = "sha256:" + "ab" * 32
STEP = {"layer": 1, "digest": DIGEST, "diff_id": DIGEST, "size": 1, "blob_size": 2048, "added": 1,
        "modified": 0, "deleted": 0, "created": CREATED, "created_by": "COPY x /", "comment": "",
        "empty_layer": False}
EMPTY_STEP = dict(STEP, layer=None, digest=None, diff_id=None, size=0, blob_size=0, added=0, empty_layer=True)
SIDE = {"ref": "img", "id": DIGEST, "layers": 1}
PAIR = {"old": SIDE, "new": SIDE, "same": False, "semantic": False, "shared_layers": 1,
        "config": [{"key": "config.Env", "old": None, "new": ["A=1"]}], "changes": [ADDED]}
ANALYSIS = {"image": "img", "id": DIGEST, "size": 10, "user_size": 5, "efficiency": 0.5, "wasted": 5,
            "user_wasted_ratio": 1.0, "wasted_path_count": 1,
            "wasted_paths": [{"path": "/a", "wasted": 5, "copies": [{"layer": 1, "size": 5}], "deleted_in": 2}],
            "metadata_readds": [], "rules": [{"rule": "lowest-efficiency", "status": "fail", "message": "m"}],
            "passed": False}

REFUSED = [
    ("diff-changes.json", [dict(ADDED, mode=0o644)]),
    ("diff-changes.json", [dict(ADDED, size=-1)]),
    ("diff-changes.json", [dict(ADDED, size=1.5)]),
    ("diff-changes.json", [dict(ADDED, kind="changed")]),
    ("diff-changes.json", [dict(ADDED, type="hardlink")]),
    ("diff-changes.json", [dict(ADDED, path="etc/new")]),
    ("diff-changes.json", [dict(ADDED, entries=1)]),
    ("diff-changes.json", [dict(ADDED, type="directory")]),  # a directory's own size is 0
    ("diff-changes.json", [{k: v for k, v in MODIFIED.items() if k != "changed"}]),
    ("diff-changes.json", [dict(MODIFIED, changed=[])]),
    ("diff-changes.json", [dict(MODIFIED, changed=["size"])]),
    ("diff-changes.json", [dict(MODIFIED, old_type="directory")]),
    ("diff-changes.json", [dict(RETYPED, changed=["type", "mode"])]),
    ("diff-changes.json", [{k: v for k, v in RETYPED.items() if k != "old_type"}]),
    ("diff-changes.json", [{k: v for k, v in DELETED.items() if k != "entries"}]),
    ("diff-changes.json", [dict(DELETED, type="file", entries=2)]),
    ("diff-changes.json", [dict(DELETED, changed=["content"])]),
    ("history.json", [dict(STEP, layer=0)]),
    ("history.json", [{k: v for k, v in STEP.items() if k != "comment"}]),
    ("history.json", [dict(STEP, layer=None)]),
    ("history.json", [dict(EMPTY_STEP, layer=2)]),
    ("history.json", [dict(EMPTY_STEP, size=5)]),
    ("history.json", [dict(STEP, digest="abc")]),
    ("diff-layers.json", [dict({k: v for k, v in STEP.items() if k in (
        "layer", "digest", "diff_id", "size", "blob_size", "added", "modified", "deleted", "created_by")},
        changes=[dict(ADDED, size=-1)])]),
    ("diff-images.json", dict(PAIR, same=True)),
    ("diff-images.json", dict(PAIR, semantic=True, config=[{"key": "created", "old": "a", "new": "b"}])),
    ("diff-images.json", dict(PAIR, config=[{"key": "Env", "old": None, "new": []}])),
    ("diff-images.json", dict(PAIR, config=[{"key": "layers", "old": ["x"], "new": []}])),
    ("diff-images.json", dict(PAIR, old=dict(SIDE, name="img"))),
    ("analyze.json", {k: v for k, v in ANALYSIS.items() if k != "passed"}),
    ("analyze.json", dict(ANALYSIS, passed=True)),
    ("analyze.json", dict(ANALYSIS, efficiency=1.5)),
    ("analyze.json", dict(ANALYSIS, rules=[{"rule": "lowest-efficiency", "status": "error", "message": "m"}])),
    ("analyze.json", dict(ANALYSIS, metadata_readds=[{"layer": 1, "files": 1, "size": 1, "changed": [],
                                                      "examples": ["/a"], "fix": "f"}])),
]


def test_samples_are_valid() -> None:
    """The documents REFUSED mutates are valid as they are."""
    validate("diff-changes.json", [ADDED, MODIFIED, RETYPED, DELETED])
    validate("history.json", [STEP, EMPTY_STEP])
    validate("diff-images.json", PAIR)
    validate("analyze.json", ANALYSIS)
    validate("analyze.json", {k: v for k, v in ANALYSIS.items() if k not in ("rules", "passed")})


@pytest.mark.parametrize(("name", "doc"), REFUSED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REFUSED)])
def test_schema_refuses(name: str, doc: Any) -> None:
    assert errors_of(name, doc)
