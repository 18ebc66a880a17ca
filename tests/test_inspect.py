"""history, diff and analyze against a fixture whose every change is written out by hand.

The fixture (`fx`) has three layers:
  1  the base: files, a hardlinked pair, a symlink, a data tree;
  2  a content change, a whiteout of a file and of a directory, an opaque directory that
     re-adds one file identically and adds another, a mode-only and an owner-only re-add,
     a symlink retargeted, a new file below two implicit directories;
  3  a `RUN chown -R 1000 /etc` layer: the same content again under another owner.
Every figure below (sizes, counts, efficiency, waste) is computed by hand in comments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Layerfs
from tests.support.oci import directory, file, hardlink, make_layer, opaque, symlink, whiteout

L1 = [
    directory("etc"), file("etc/passwd", b"root:x:0:0\n"), file("etc/motd", b"hello\n"),
    file("etc/big", b"a" * 1000),
    directory("app"), file("app/a.txt", b"aaaa"), file("app/b.txt", b"bbbbbbbb"),
    directory("data"), file("data/x", b"xx"), directory("data/sub"), file("data/sub/y", b"yyy"),
    directory("bin"), file("bin/tool", b"t" * 100, mode=0o755), hardlink("bin/tool2", "bin/tool"),
    symlink("lnk", "etc/motd"), file("keep", b"k"),
]
L2 = [
    file("etc/motd", b"hello world\n"), whiteout("etc/big"),
    opaque("app"), file("app/a.txt", b"aaaa"), file("app/c.txt", b"c"),
    file("bin/tool", b"t" * 100, mode=0o700), file("keep", b"k", uid=1000, gid=1000),
    whiteout("data"), symlink("lnk", "etc/passwd"), file("new/deep/f", b"z"),
]
L3 = [directory("etc", uid=1000), file("etc/passwd", b"root:x:0:0\n", uid=1000),
      file("etc/motd", b"hello world\n", uid=1000)]

LAYER1_ADDED = ["/app", "/app/a.txt", "/app/b.txt", "/bin", "/bin/tool", "/bin/tool2", "/data", "/data/sub",
                "/data/sub/y", "/data/x", "/etc", "/etc/big", "/etc/motd", "/etc/passwd", "/keep", "/lnk"]
# Layer 2, path by path (app/a.txt is re-added with the same hash, mode and owner: no change).
LAYER2 = [
    {"path": "/app/b.txt", "kind": "deleted", "type": "file", "size": 8, "entries": 1},
    {"path": "/app/c.txt", "kind": "added", "type": "file", "size": 1},
    {"path": "/bin/tool", "kind": "modified", "type": "file", "size": 100, "changed": ["mode"], "old_size": 100},
    {"path": "/data", "kind": "deleted", "type": "directory", "size": 5, "entries": 4},
    {"path": "/etc/big", "kind": "deleted", "type": "file", "size": 1000, "entries": 1},
    {"path": "/etc/motd", "kind": "modified", "type": "file", "size": 12, "changed": ["content"], "old_size": 6},
    {"path": "/keep", "kind": "modified", "type": "file", "size": 1, "changed": ["uid", "gid"], "old_size": 1},
    {"path": "/lnk", "kind": "modified", "type": "symlink", "size": 0, "changed": ["target"], "old_size": 0},
    {"path": "/new", "kind": "added", "type": "directory", "size": 0},
    {"path": "/new/deep", "kind": "added", "type": "directory", "size": 0},
    {"path": "/new/deep/f", "kind": "added", "type": "file", "size": 1},
]
LAYER3 = [
    {"path": "/etc", "kind": "modified", "type": "directory", "size": 0, "changed": ["uid"], "old_size": 0},
    {"path": "/etc/motd", "kind": "modified", "type": "file", "size": 12, "changed": ["uid"], "old_size": 12},
    {"path": "/etc/passwd", "kind": "modified", "type": "file", "size": 11, "changed": ["uid"], "old_size": 11},
]


@pytest.fixture
def fx(lfs: Layerfs) -> Layerfs:
    lfs.import_layers([make_layer(L1), make_layer(L2), make_layer(L3)], "fx")
    return lfs


def diff_json(lfs: Layerfs, *args: str) -> list[dict]:
    return json.loads(lfs.run("diff", *args, "--json").stdout)


def test_history_counts_every_layer_top_first(fx: Layerfs) -> None:
    rows = json.loads(fx.run("history", "fx", "--json").stdout)
    assert [r["layer"] for r in rows] == [3, 2, 1]
    assert [(r["added"], r["modified"], r["deleted"]) for r in rows] == [(0, 3, 0), (4, 4, 3), (16, 0, 0)]
    # Content bytes: 11+12 | 12+4+1+100+1+1 | 11+6+1000+4+8+2+3+100+1 (a hardlink holds none).
    assert [r["size"] for r in rows] == [23, 119, 1135]
    assert [r["created_by"] for r in rows] == ["layerfs-tests layer 2", "layerfs-tests layer 1",
                                              "layerfs-tests layer 0"]
    text = fx.run("history", "fx").stdout.splitlines()
    assert text[0].split()[:5] == ["LAYER", "DIGEST", "CREATED", "CREATED", "BY"]
    assert [line.split()[0] for line in text[1:]] == ["3", "2", "1"]


def test_history_shows_empty_layers_as_docker(lfs: Layerfs) -> None:
    from tests.support.oci import image_config, sha256_digest, write_oci_layout

    source = lfs.mkdir("src")
    layers = [make_layer([file("a", b"1")]), make_layer([file("b", b"2")])]
    info = write_oci_layout(source, layers, tag="v1")
    # Rewrite the config with an ENV step between the two layers, as a Dockerfile makes.
    config = image_config(info.diff_ids)
    config["history"].insert(1, {"created": config["created"], "created_by": "ENV A=1", "empty_layer": True})
    write_oci_layout(source, layers, tag="v1", config=None)
    blobs = source / "blobs" / "sha256"
    raw = json.dumps(config).encode()
    (blobs / sha256_digest(raw)[7:]).write_bytes(raw)
    index = json.loads((source / "index.json").read_text())
    manifest_path = blobs / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_text())
    manifest["config"] = {"mediaType": manifest["config"]["mediaType"], "digest": sha256_digest(raw), "size": len(raw)}
    new_manifest = json.dumps(manifest).encode()
    (blobs / sha256_digest(new_manifest)[7:]).write_bytes(new_manifest)
    index["manifests"][0].update(digest=sha256_digest(new_manifest), size=len(new_manifest))
    (source / "index.json").write_text(json.dumps(index))
    lfs.give(source)
    lfs.run("import", f"oci:{source}:v1", "env", "-q")
    rows = json.loads(lfs.run("history", "env", "--json").stdout)
    assert [(r["layer"], r["empty_layer"], r["created_by"]) for r in rows] == [
        (2, False, "layerfs-tests layer 1"), (None, True, "ENV A=1"), (1, False, "layerfs-tests layer 0")]
    assert "<empty layer>" in lfs.run("history", "env").stdout


def test_diff_of_each_layer_field_by_field(fx: Layerfs) -> None:
    layers = diff_json(fx, "fx")
    assert [layer["layer"] for layer in layers] == [1, 2, 3]
    assert [c["path"] for c in layers[0]["changes"]] == LAYER1_ADDED
    assert {c["kind"] for c in layers[0]["changes"]} == {"added"}
    assert layers[1]["changes"] == LAYER2
    assert layers[2]["changes"] == LAYER3
    assert diff_json(fx, "fx", "--layer", "2") == LAYER2


def test_diff_plain_lines_filters_and_tree(fx: Layerfs) -> None:
    lines = fx.run("diff", "fx", "--layer", "2").stdout.splitlines()
    assert lines == [f"{dict(added='A', modified='C', deleted='D')[c['kind']]} {c['path']}" for c in LAYER2]
    assert fx.run("diff", "fx", "--layer", "2", "--kind", "deleted").stdout.split() == [
        "D", "/app/b.txt", "D", "/data", "D", "/etc/big"]
    assert fx.run("diff", "fx", "--layer", "2", "--kind", "A,C", "--path", "/etc", "--path", "new/").stdout.split() == [
        "C", "/etc/motd", "A", "/new", "A", "/new/deep", "A", "/new/deep/f"]
    verbose = fx.run("diff", "fx", "--layer", "2", "-v", "--path", "/etc/motd").stdout
    assert verbose == "C /etc/motd  (content; 6 B -> 12 B)\n"
    tree = fx.run("diff", "fx", "--layer", "2", "--tree", "--path", "/new", "--path", "/data").stdout.splitlines()
    assert tree == ["D data/", "A new/", "    A deep/", "        A f"]
    tree = fx.run("diff", "fx", "--layer", "3", "--tree", "--kind", "modified").stdout.splitlines()
    assert tree == ["C etc/", "    C motd", "    C passwd"]


def test_range_is_the_net_change(fx: Layerfs) -> None:
    """Layers 2..3: motd changed content and owner, passwd only its owner."""
    net = {c["path"]: c for c in diff_json(fx, "fx", "--layer", "2..3")}
    assert net["/etc/motd"]["changed"] == ["content", "uid"]
    assert net["/etc/passwd"]["changed"] == ["uid"]
    assert net["/data"]["kind"] == "deleted" and "/app/a.txt" not in net
    assert diff_json(fx, "fx", "--layer", "1..1") == diff_json(fx, "fx", "--layer", "1")


def test_range_equals_diff_of_flattened_images(fx: Layerfs) -> None:
    """What layers 2..3 change is what tells the flattened image after layer 1 from
    the flattened image after layer 3 (files only: the configs differ by design)."""
    for upto in ("1", "3"):
        tar = fx.workdir / f"flat{upto}.tar"
        fx.run("export", f"fx@{upto}", "-o", str(tar))
        fx.run("import", f"tar:{tar}", f"flat:{upto}", "-q")
    pair = json.loads(fx.run("diff", "flat:1", "flat:3", "--json", check=False).stdout)
    assert pair["changes"] == diff_json(fx, "fx", "--layer", "2..3")
    assert pair["shared_layers"] == 0


def test_layer_errors_are_one_line(fx: Layerfs) -> None:
    for args, words in ((["--layer", "4"], "give a layer number from 1 (the base) to 3"),
                        (["--layer", "0"], "from 1 (the base) to 3"),
                        (["--layer", "3..2"], "comes before the last"),
                        (["--layer", "x"], "not a layer number")):
        proc = fx.run("diff", "fx", *args, check=False)
        assert proc.returncode != 0 and words in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = fx.run("diff", "nothing-here", check=False)
    assert proc.returncode == 3 and "no image" in proc.stderr


def test_file_contents_diff_and_report_dir(fx: Layerfs) -> None:
    proc = fx.run("diff", "fx", "--layer", "2", "--", "/etc/motd", check=False)  # exit 1: it differs
    assert (proc.returncode, proc.stdout) == (1, "--- a/etc/motd\n+++ b/etc/motd\n@@ -1 +1 @@\n-hello\n+hello world\n")
    proc = fx.run("diff", "fx", "--layer", "3", "--", "/etc/motd", check=False)  # only its owner, as git says it
    assert (proc.returncode, proc.stdout) == (1, "old owner 0:0\nnew owner 1000:0\n")
    proc = fx.run("diff", "fx", "--layer", "2", "--", "/bin/tool", check=False)
    assert proc.stdout == "old mode 100755\nnew mode 100700\n"
    assert fx.run("diff", "fx", "--layer", "2", "--", "/etc/passwd").stdout == ""  # the same: exit 0
    text = fx.run("diff", "fx", "--layer", "2", "--", "/app/c.txt", check=False).stdout
    assert text.startswith("new file mode 100644\n--- /dev/null\n+++ b/app/c.txt\n")
    proc = fx.run("diff", "fx", "--layer", "2", "--", "/etc", check=False)
    assert proc.returncode == 2 and "/etc is a directory" in proc.stderr
    proc = fx.run("diff", "fx", "--layer", "2", "--json", "--", "/etc/motd", check=False)
    assert proc.returncode == 2 and "leave out --json" in proc.stderr
    proc = fx.run("diff", "fx", "--", "/etc/motd", check=False)
    assert proc.returncode == 2 and "two states" in proc.stderr
    report = fx.workdir / "report"
    proc = fx.run("diff", "fx@1", "fx", "--report-dir", str(report), check=False)
    assert proc.returncode == 1
    assert (report / "old" / "etc" / "motd").read_bytes() == b"hello\n"
    assert (report / "new" / "etc" / "motd").read_bytes() == b"hello world\n"
    assert (report / "old" / "etc" / "big").read_bytes() == b"a" * 1000
    assert not (report / "new" / "etc" / "big").exists()
    doc = json.loads((report / "report.json").read_text())
    assert {c["path"] for c in doc["changes"]} >= {"/etc/motd", "/etc/big", "/data"}
    proc = fx.run("diff", "fx@1", "fx", "--report-dir", str(report), check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr


def test_image_pair_exit_codes_and_shared_layers(fx: Layerfs) -> None:
    assert fx.run("diff", "fx", "fx").returncode == 0
    proc = fx.run("diff", "fx@2", "fx", "--json", check=False)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["shared_layers"] == 2 and doc["same"] is False
    assert doc["changes"] == LAYER3
    # fx@2's config is the image's cut after layer 2: its history and layers lack layer 3's.
    assert [c["key"] for c in doc["config"]] == ["history", "layers"]
    assert len(doc["config"][0]["old"]) == 2 and len(doc["config"][1]["old"]) == 2
    assert json.loads(fx.run("history", "fx@2", "--json").stdout)[0]["created_by"] == "layerfs-tests layer 1"
    assert fx.run("diff", "fx", "no-such-image", check=False).returncode == 2


def test_rebuilt_image_is_semantically_equal(lfs: Layerfs) -> None:
    """The same rootfs imported twice, a file's mtime moved in between: plain diff says
    different (mtime, created); --semantic says the same."""
    rootfs = lfs.mkdir("rootfs")
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "conf").write_text("x=1\n")
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "run").write_text("#!/bin/sh\n")
    lfs.give(rootfs)
    lfs.run("import", f"dir:{rootfs}", "build:1", "-q")
    os.utime(rootfs / "etc" / "conf", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    lfs.run("import", f"dir:{rootfs}", "build:2", "-q")
    plain = lfs.run("diff", "build:1", "build:2", "--json", check=False)
    assert plain.returncode == 1
    doc = json.loads(plain.stdout)
    assert [(c["path"], c["changed"]) for c in doc["changes"]] == [("/etc/conf", ["mtime"])]
    assert "layers" in {c["key"] for c in doc["config"]}  # and "created", unless in the same second
    semantic = lfs.run("diff", "build:1", "build:2", "--semantic", "--json")
    assert json.loads(semantic.stdout)["same"] is True
    assert lfs.run("diff", "build:1", "build:2", "--semantic").returncode == 0


def test_analyze_figures_by_hand(fx: Layerfs) -> None:
    doc = json.loads(fx.run("analyze", "fx", "--json", "--top", "100").stdout)
    # Per path, the smallest copy (0 for a path the image no longer shows) over all copies:
    #   passwd 11/22  motd 6/30  big 0/1000  a.txt 4/8  b.txt 0/8  data/x 0/2  data/sub/y 0/3
    #   tool 100/200  tool2 0/0  lnk 0/0  keep 1/2  c.txt 1/1  f 1/1: 124 of all 1277 bytes.
    assert doc["efficiency"] == pytest.approx(124 / 1277)
    # Waste: all stored copies minus the one shown: passwd 11, motd 6+12, big 1000, a.txt 4,
    # b.txt 8, data/x 2, data/sub/y 3, tool 100, keep 1.
    assert doc["wasted"] == 1147
    assert (doc["size"], doc["user_size"]) == (1135 + 119 + 23, 119 + 23)
    assert doc["user_wasted_ratio"] == pytest.approx(1147 / 142)
    wasted = {p["path"]: p for p in doc["wasted_paths"]}
    assert {k: v["wasted"] for k, v in wasted.items()} == {
        "/etc/big": 1000, "/bin/tool": 100, "/etc/motd": 18, "/etc/passwd": 11, "/app/b.txt": 8,
        "/app/a.txt": 4, "/data/sub/y": 3, "/data/x": 2, "/keep": 1}
    assert wasted["/etc/motd"]["copies"] == [{"layer": 1, "size": 6}, {"layer": 2, "size": 12},
                                             {"layer": 3, "size": 12}]
    assert wasted["/etc/big"]["deleted_in"] == 2 and wasted["/data/sub/y"]["deleted_in"] == 2
    assert wasted["/etc/motd"]["deleted_in"] is None
    assert [p["path"] for p in doc["wasted_paths"][:2]] == ["/etc/big", "/bin/tool"]
    # Grouped by layer and by what the re-adds change: a.txt nothing, keep its owner, tool its mode.
    assert [(r["layer"], r["files"], r["size"], r["changed"]) for r in doc["metadata_readds"]] == [
        (2, 1, 4, []), (2, 1, 1, ["gid", "uid"]), (2, 1, 100, ["mode"]), (3, 2, 23, ["uid"])]
    assert doc["metadata_readds"][0]["fix"].startswith("do not add again")
    text = fx.run("analyze", "fx").stdout
    assert "Layer 3 stores 2 files again with the same content (23 B), changing only their uid" in text


def test_analyze_ci_rules_as_dive(fx: Layerfs) -> None:
    proc = fx.run("analyze", "fx", "--ci", check=False)  # dive's defaults: 0.9, disabled, 0.1
    assert proc.returncode == 1
    assert [line.split(":")[1].strip() for line in proc.stderr.splitlines()] == [
        "lowest-efficiency failed", "highest-user-wasted-percent failed"]
    (fx.workdir / ".dive-ci").write_text(
        "rules:\n  lowest-efficiency: 0.09\n  highest-wasted-bytes: 2KB\n  highest-user-wasted-percent: disabled\n")
    fx.give(fx.workdir / ".dive-ci")
    assert fx.run("analyze", "fx", "--ci").returncode == 0  # the CLI runs in fx.workdir
    proc = fx.run("analyze", "fx", "--ci", "--highest-wasted-bytes", "1KB", check=False)
    assert proc.returncode == 1 and "highest-wasted-bytes failed: wasted bytes 1147 > threshold 1000" in proc.stderr
    assert fx.run("analyze", "fx", "--ci", "--highestWastedBytes", "1.2kib").returncode == 0
    config = fx.workdir / "strict.yaml"
    config.write_text("rules:\n  lowest-efficiency: 0.6\n")
    fx.give(config)
    doc = json.loads(fx.run("analyze", "fx", "--ci", "--ci-config", str(config), "--json", check=False).stdout)
    assert doc["passed"] is False
    assert [(r["rule"], r["status"]) for r in doc["rules"]] == [
        ("lowest-efficiency", "fail"), ("highest-wasted-bytes", "skip"), ("highest-user-wasted-percent", "fail")]
    for text, words in (("rules: [1, 2]\n", "must be a mapping"), ("rules:\n  lowest: 1\n", "unknown rule"),
                        ("rules: {lowest-efficiency: 2}\n", "between 0 and 1"), ("a: [\n", "not valid YAML")):
        config.write_text(text)
        proc = fx.run("analyze", "fx", "--ci", "--ci-config", str(config), check=False)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and words in proc.stderr, proc.stderr


def test_container_diff_uses_the_same_listing(fx: Layerfs) -> None:
    fx.run("create", "--name", "c1", "fx")
    with fx.mounted("c1") as mp:  # changed as the mount's user (root may not enter a user's mount)
        fx.sh(["sh", "-ec", 'echo changed > "$1/etc/motd"; rm "$1/keep"; printf 12345 > "$1/made"; '
                            'chmod 600 "$1/etc/passwd"', "-", str(mp)])
    changes = {c["path"]: c for c in diff_json(fx, "c1")}
    assert changes["/etc/motd"]["kind"] == "modified" and "content" in changes["/etc/motd"]["changed"]
    assert changes["/etc/passwd"]["changed"] == ["mode"]
    assert changes["/keep"] == {"path": "/keep", "kind": "deleted", "type": "file", "size": 1, "entries": 1}
    assert changes["/made"] == {"path": "/made", "kind": "added", "type": "file", "size": 5}
    assert fx.run("diff", "c1", "--", "/etc/motd", check=False).stdout.endswith("-hello world\n+changed\n")
    assert fx.run("diff", "c1", "--kind", "D").stdout == "D /keep\n"


def test_transport_reference_is_imported_once(lfs: Layerfs) -> None:
    source = lfs.mkdir("layout")
    from tests.support.oci import write_oci_layout

    write_oci_layout(source, [make_layer(L1), make_layer(L2)], tag="v1")
    lfs.give(source)
    first = lfs.run("history", f"oci:{source}:v1", "--json")
    assert "importing" in first.stderr and len(json.loads(first.stdout)) == 2
    second = lfs.run("diff", f"oci:{source}:v1", "--layer", "2", "--json")
    assert second.stderr == "" and json.loads(second.stdout) == LAYER2


def test_no_tracebacks_on_bad_arguments(fx: Layerfs, tmp_path: Path) -> None:
    for args in (["diff"], ["diff", "a", "b", "c", "d"], ["diff", "fx", "--semantic"], ["history"],
                 ["analyze", "fx", "--top", "-1"], ["diff", "fx", "--kind", "x"], ["history", "fx@9"],
                 ["analyze", "@1"], ["diff", "fx", "fx", "--layer", "1"]):
        proc = fx.run(*args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
