"""Bad input is refused cleanly and changes nothing in the store.

Every case starts from a store that already holds a good image, runs one failing
command and checks the contract for failures: the documented exit code, exactly
one stderr line starting "layerfs: error: ", no traceback, and a store that is
file-for-file what it was before (`Layerfs.store_snapshot`). The hostile layers
are the ones that break naive tar extractors; a layerfs that accepted them would
hand them on to every tool that reads its store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import LAYERFS_BIN, TEST_USER, Layerfs
from support.oci import (TarSpec, directory, file, hardlink, make_layer, raw_tar, sha256_digest,
                         symlink, write_oci_layout)

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_BUSY = 1, 2, 3, 4
# Two cases the contract does not name, decided as `layerfs --help` states them:
MISSING_PATH = (EXIT_NOT_FOUND,)  # "3 unknown reference or missing file": SOURCE, MOUNTPOINT
BAD_TRANSPORT = (EXIT_ERROR,)     # a SOURCE that parses but names no transport: bad input

GOOD = "good:1"

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def good_layers(marker: bytes = b"payload") -> list[bytes]:
    """A harmless two-layer image; another `marker` gives another top layer (and image),
    so that no blob of it is in the store already and the importer must read them all."""
    return [
        make_layer([directory("etc"), file("etc/hostname", b"good\n"),
                    directory("bin"), file("bin/tool", b"#!/bin/sh\n", mode=0o755)], "gzip"),
        make_layer([directory("srv"), file("srv/data", marker + b"\n" * 512)], "zstd"),
    ]


def import_good(lfs: Layerfs) -> Layerfs:
    """Import the good image into `lfs` as good:1; returns `lfs`."""
    src = lfs.workdir / "good-src"
    write_oci_layout(src, good_layers())
    lfs.give(src)
    lfs.run("import", f"oci:{src}", GOOD, "-q")
    return lfs


@pytest.fixture
def seeded(lfs: Layerfs) -> Layerfs:
    """`lfs` with the good image imported as good:1, so "unchanged" means something."""
    return import_good(lfs)


def assert_clean_error(proc: subprocess.CompletedProcess[str], codes: tuple[int, ...]) -> None:
    """A failure as the contract describes it: right code, one error line, no traceback."""
    assert proc.returncode in codes, f"exit {proc.returncode}, wanted {codes}: {proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"want one stderr line, got: {proc.stderr!r}"
    assert lines[0].startswith("layerfs: error: "), lines[0]


def assert_refused(lfs: Layerfs, args: list[str], codes: tuple[int, ...]) -> str:
    """`layerfs ARGS` fails cleanly with one of `codes` and leaves the store as it was.
    Returns the error line."""
    before = lfs.store_snapshot()
    proc = lfs.run(*args, check=False)
    assert_clean_error(proc, codes)
    assert lfs.store_snapshot() == before, "a failed command changed the store"
    return proc.stderr


def image_ids(lfs: Layerfs) -> list[str]:
    """Ids of all images in the store."""
    return [i["id"] for i in json.loads(lfs.run("images", "--json").stdout)]


def blob(layout: Path, digest: str) -> Path:
    """The file of a blob in an OCI layout."""
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def put_blob(layout: Path, data: bytes) -> str:
    """Add a blob to an OCI layout; its digest."""
    digest = sha256_digest(data)
    blob(layout, digest).write_bytes(data)
    return digest


def rewrite_manifest(layout: Path, mutate: Callable[[dict[str, Any]], None]) -> None:
    """Edit the (only) manifest of a layout and re-point index.json at the edited copy,
    so that only the edit is wrong and every digest around it still checks out."""
    index = json.loads((layout / "index.json").read_bytes())
    (desc,) = index["manifests"]
    manifest = json.loads(blob(layout, desc["digest"]).read_bytes())
    mutate(manifest)
    data = json.dumps(manifest).encode()
    desc["digest"], desc["size"] = put_blob(layout, data), len(data)
    (layout / "index.json").write_text(json.dumps(index))


def replace_layer(layout: Path, index: int, data: bytes) -> None:
    """Swap layer `index` for `data`, with a manifest descriptor that matches it."""
    def mutate(manifest: dict[str, Any]) -> None:
        manifest["layers"][index].update(digest=put_blob(layout, data), size=len(data))
    rewrite_manifest(layout, mutate)


def replace_config(layout: Path, mutate_config: Callable[[dict[str, Any]], None]) -> None:
    """Edit the config, with a manifest descriptor that matches the edited config."""
    def mutate(manifest: dict[str, Any]) -> None:
        config = json.loads(blob(layout, manifest["config"]["digest"]).read_bytes())
        mutate_config(config)
        data = json.dumps(config).encode()
        manifest["config"].update(digest=put_blob(layout, data), size=len(data))
    rewrite_manifest(layout, mutate)


def bad_source(lfs: Layerfs, name: str, layers: list[bytes]) -> Path:
    """An OCI layout of `layers` in the scratch area (to be damaged by the caller)."""
    dest = lfs.workdir / name
    write_oci_layout(dest, layers)
    lfs.give(dest)
    return dest


def as_source(lfs: Layerfs, transport: str, layer: bytes,
              damage: Callable[[bytes], bytes] | None = None) -> str:
    """A SOURCE argument whose top layer is `layer`, damaged by `damage` if given.

    `tar:` is the (damaged) layer as a tarball. `oci:` puts it on a good base layer;
    the layout is written intact (the writer must decompress it to compute the
    diff_id) and the blob then swapped for the damaged one, manifest digest fixed up.
    """
    bad = damage(layer) if damage else layer
    if transport == "tar":
        path = lfs.workdir / "layer.tar"
        path.write_bytes(bad)
        lfs.give(path)
        return f"tar:{path}"
    src = bad_source(lfs, "bad-src", [good_layers()[0], layer])
    if damage:
        replace_layer(src, 1, bad)
    return f"oci:{src}"


# ---------------------------------------------------------------------------------------
# hostile layer tars
# ---------------------------------------------------------------------------------------

# case -> (layer entries, a path the error line must name so the user can find it)
HOSTILE: dict[str, tuple[list[TarSpec], str]] = {
    "dotdot": ([file("../x", b"escaped\n")], "../x"),
    "dotdot-inside": ([directory("a"), file("a/../../x", b"escaped\n")], "a/../../x"),
    "absolute": ([file("/etc/x", b"escaped\n")], "/etc/x"),
    "below-absolute-symlink": ([symlink("evil", "/etc"), file("evil/passwd", b"pwned\n")],
                               "evil/passwd"),
    "below-relative-symlink": ([symlink("evil", "../../.."), file("evil/x", b"escaped\n")],
                               "evil/x"),
    "hardlink-outside": ([hardlink("link", "../../etc/passwd")], "../../etc/passwd"),
    "hardlink-forward": ([hardlink("link", "later"), file("later", b"data\n")], "later"),
    # No Linux filesystem holds a name over 255 bytes: no tool could unpack these.
    "long-name": ([file("n" * 256, b"too long\n")], "n" * 256),
    "long-directory-name": ([directory("d" * 300), file("d" * 300 + "/x", b"below\n")], "d" * 300),
    "long-multibyte-name": ([file("\u00e9" * 128, b"256 bytes, 128 characters\n")], "\u00e9" * 128),
}


@pytest.mark.parametrize("transport", ["oci", "tar"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused(seeded: Layerfs, case: str, transport: str) -> None:
    """Names that escape the layer, paths through symlinks, links to nowhere: exit 1,
    with the offending path named in the error line."""
    entries, culprit = HOSTILE[case]
    source = as_source(seeded, transport, make_layer(entries, "gzip"))
    stderr = assert_refused(seeded, ["import", source, "evil:1"], (EXIT_ERROR,))
    assert culprit in stderr, f"the error does not name {culprit!r}: {stderr}"


def test_long_gnu_name_is_refused(seeded: Layerfs) -> None:
    """The same limit for a name written GNU-style (././@LongLink), not as a PAX record."""
    info = file("g" * 256, b"gnu\n").tarinfo()
    layer = raw_tar([(info, b"gnu\n")], format=tarfile.GNU_FORMAT)
    stderr = assert_refused(seeded, ["import", as_source(seeded, "tar", layer), "gnu:1"], (EXIT_ERROR,))
    assert "g" * 256 in stderr


def test_names_of_255_bytes_import(seeded: Layerfs) -> None:
    """The control: the longest names a filesystem holds are fine, in bytes, not characters."""
    entries = [directory("d" * 255), file("d" * 255 + "/" + "n" * 255, b"ok\n"),
               file("\u00e9" * 127 + "x", b"255 bytes\n")]
    seeded.run("import", as_source(seeded, "tar", make_layer(entries)), "long:1", "-q")
    assert len(image_ids(seeded)) == 2


def truncated(data: bytes) -> bytes:
    """The first half of a blob: a download cut short."""
    return data[: len(data) // 2]


def flipped(data: bytes) -> bytes:
    """Some bytes in the middle inverted: bit rot the length check cannot see."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8]) + data[mid + 8:]


def compressible_layer(compression: str) -> bytes:
    """A layer big enough that its compressed stream has a middle to damage."""
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(4000))
    return make_layer([directory("data"), file("data/text", text)], compression)


DAMAGED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "truncated-gzip": ("gzip", truncated),
    "truncated-zstd": ("zstd", truncated),
    "corrupt-gzip": ("gzip", flipped),
    "truncated-tar": ("none", truncated),
}


@pytest.mark.parametrize("transport", ["oci", "tar"])
@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_layer_is_refused(seeded: Layerfs, case: str, transport: str) -> None:
    """A layer that does not decompress to a whole tar is refused, even when (oci) the
    manifest digest matches the damaged bytes, so only the content can tell."""
    compression, damage = DAMAGED[case]
    source = as_source(seeded, transport, compressible_layer(compression), damage)
    assert_refused(seeded, ["import", source, "broken:1"], (EXIT_ERROR,))


@pytest.mark.parametrize("transport", ["oci", "tar"])
def test_undamaged_control_imports(seeded: Layerfs, transport: str) -> None:
    """The control for the two tests above: the same sources built the same way (the
    oci blob swapped, here for identical bytes) import fine, so those fail for the
    hostile entries or the damage, not for how the sources were made."""
    layer = compressible_layer("gzip")
    source = as_source(seeded, transport, layer, damage=lambda data: data)
    seeded.run("import", source, "fine:1", "-q")
    source = as_source(seeded, transport, make_layer([directory("srv"), file("srv/ok", b"ok")]))
    seeded.run("import", source, "fine:2", "-q")
    assert len(image_ids(seeded)) == 3


# ---------------------------------------------------------------------------------------
# digests that do not match
# ---------------------------------------------------------------------------------------


def test_tampered_blob_is_refused(seeded: Layerfs) -> None:
    """A layer blob whose content no longer matches its name (and manifest digest)."""
    src = bad_source(seeded, "tampered", good_layers(b"tampered"))
    manifest = json.loads(blob(src, json.loads((src / "index.json").read_bytes())
                               ["manifests"][0]["digest"]).read_bytes())
    victim = blob(src, manifest["layers"][1]["digest"])
    victim.write_bytes(make_layer([directory("srv"), file("srv/data", b"swapped\n")], "zstd"))
    assert_refused(seeded, ["import", f"oci:{src}", "tampered:1"], (EXIT_ERROR,))


def test_diff_id_mismatch_is_refused(seeded: Layerfs) -> None:
    """A config whose diff_id does not match the layer's uncompressed content."""
    src = bad_source(seeded, "diffid", good_layers(b"diffid"))

    def wrong_diff_id(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"][1] = sha256_digest(b"something else")
    replace_config(src, wrong_diff_id)
    assert_refused(seeded, ["import", f"oci:{src}", "diffid:1"], (EXIT_ERROR,))


def test_missing_blob_is_refused(seeded: Layerfs) -> None:
    """A manifest naming a layer blob the source does not have."""
    src = bad_source(seeded, "missing", good_layers(b"missing"))
    missing = make_layer([file("never-written", b"?")], "gzip")

    def point_at_missing(manifest: dict[str, Any]) -> None:
        manifest["layers"][1].update(digest=sha256_digest(missing), size=len(missing))
    rewrite_manifest(src, point_at_missing)
    assert_refused(seeded, ["import", f"oci:{src}", "missing:1"], (EXIT_ERROR,))


# ---------------------------------------------------------------------------------------
# unknown references and sources
# ---------------------------------------------------------------------------------------

UNKNOWN_REFS = ["nosuch:1", "nosuch", "sha256:" + "0" * 64, "good@sha256:" + "0" * 64]


@pytest.mark.parametrize("ref", UNKNOWN_REFS)
@pytest.mark.parametrize("command", ["inspect", "mount", "rmi", "tag"])
def test_unknown_reference(seeded: Layerfs, command: str, ref: str) -> None:
    """Every command that takes a REF answers an unknown one with exit 3."""
    args = {"inspect": ["inspect", ref], "rmi": ["rmi", ref], "tag": ["tag", ref, "new:1"],
            "mount": ["mount", ref, str(seeded.mkdir("mnt"))]}[command]
    assert_refused(seeded, args, (EXIT_NOT_FOUND,))


@pytest.mark.parametrize("transport", ["oci", "oci-archive", "docker-archive", "dir", "tar"])
def test_missing_source(seeded: Layerfs, transport: str) -> None:
    """A SOURCE path that does not exist."""
    assert_refused(seeded, ["import", f"{transport}:{seeded.workdir}/does-not-exist", "x:1"],
                   MISSING_PATH)


def test_unknown_tag_in_source(seeded: Layerfs) -> None:
    """`oci:DIR:TAG` where the layout has no such tag is an unknown reference."""
    src = seeded.workdir / "good-src"
    assert_refused(seeded, ["import", f"oci:{src}:no-such-tag", "x:1"], (EXIT_NOT_FOUND,))


@pytest.mark.parametrize("prefix", ["nosuch:", ""], ids=["unknown", "none"])
def test_unknown_transport(seeded: Layerfs, prefix: str) -> None:
    """A SOURCE with a transport layerfs does not know, or with none at all (even when
    the path is a valid layout: guessing would make scripts depend on luck)."""
    assert_refused(seeded, ["import", f"{prefix}{seeded.workdir}/good-src", "x:1"], BAD_TRANSPORT)


# ---------------------------------------------------------------------------------------
# mount points
# ---------------------------------------------------------------------------------------


def test_missing_mountpoint(seeded: Layerfs) -> None:
    """Mounting on a directory that does not exist (layerfs must not create it)."""
    target = seeded.workdir / "no-such-dir"
    assert_refused(seeded, ["mount", GOOD, str(target)], MISSING_PATH)
    assert not target.exists()


def test_umount_of_a_non_mount(seeded: Layerfs) -> None:
    """`umount` of a directory that is no layerfs mount: nothing to find, exit 3."""
    assert_refused(seeded, ["umount", str(seeded.mkdir("plain-dir"))], (EXIT_NOT_FOUND,))


def test_busy_mountpoint(seeded: Layerfs) -> None:
    """Mounting over a live mount is refused with exit 4, and the first mount keeps working."""
    mountpoint = seeded.mkdir("mnt")
    seeded.run("mount", GOOD, str(mountpoint))
    try:
        assert_refused(seeded, ["mount", GOOD, str(mountpoint)], (EXIT_BUSY,))
        assert seeded.sh(["cat", str(mountpoint / "etc/hostname")]).stdout == b"good\n"
    finally:
        seeded.run("umount", str(mountpoint))


@pytest.fixture
def seeded_user(lfs_user: Layerfs) -> Layerfs:
    """The rootless identity with the good image imported."""
    return import_good(lfs_user)


def test_dev_fuse_unusable(seeded_user: Layerfs) -> None:
    """A rootless mount without access to /dev/fuse fails with one clear line.

    /dev/fuse is hidden only inside a private mount namespace (a mode-000 file bound
    over it), so tests running in parallel keep theirs.
    """
    lfs = seeded_user
    blocker = lfs.workdir / "no-fuse"
    blocker.touch()
    blocker.chmod(0o000)
    mountpoint = lfs.mkdir("mnt")
    script = 'mount --bind "$1" /dev/fuse && exec runuser -u "$2" -- "$3" --root "$4" mount "$5" "$6"'
    before = lfs.store_snapshot()
    raw = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(blocker), TEST_USER,
                          LAYERFS_BIN, str(lfs.root), GOOD, str(mountpoint)],
                         capture_output=True, env=lfs.env(), cwd=lfs.workdir, timeout=120)
    proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                       raw.stderr.decode(errors="replace"))
    assert_clean_error(proc, (EXIT_ERROR,))
    assert "/dev/fuse" in proc.stderr, proc.stderr
    assert lfs.store_snapshot() == before
    assert image_ids(lfs)  # and the store is still usable


# ---------------------------------------------------------------------------------------
# an import killed midway
# ---------------------------------------------------------------------------------------

PART_SIZE = 40 << 20
KILL_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 0.95, 1.0)


def assert_reads_fully(lfs: Layerfs, ref: str, expected: dict[str, str]) -> None:
    """Mount `ref` and check every file's sha256 (read as the mounting user)."""
    with lfs.mounted(ref) as mountpoint:
        paths = [str(mountpoint / name) for name in sorted(expected)]
        out = lfs.sh(["sha256sum", *paths]).stdout.decode()
    got = {Path(line.split(None, 1)[1]).name: line.split()[0] for line in out.splitlines()}
    assert got == {Path(name).name: digest for name, digest in expected.items()}


def assert_blobs_whole(lfs: Layerfs) -> None:
    """Every file under blobs/sha256 is complete: its content hashes to its name."""
    blobs = lfs.root / "blobs" / "sha256"
    for path in blobs.iterdir() if blobs.exists() else ():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == path.name, f"partial or corrupt blob {path.name} in the store"


def test_import_killed_midway(lfs: Layerfs) -> None:
    """SIGKILL at several points of an import leaves all of the image or none of it.

    The kill times are fractions of a measured full import, so they land in
    different phases (reading, verifying, unpacking, publishing) whatever the
    machine's speed. After each kill the store must list the image whole (and it
    must mount and read back) or not at all, hold no partial blob, and accept a
    fresh import.
    """
    contents = {f"data/part{i}": os.urandom(PART_SIZE) for i in range(3)}
    expected = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    layers = [make_layer([directory("data"), file(name, data)]) for name, data in contents.items()]
    src = lfs.workdir / "big-src"
    info = write_oci_layout(src, layers)
    lfs.give(src)
    argv = [LAYERFS_BIN, "--root", str(lfs.root), "import", f"oci:{src}", "big:1", "-q"]

    start = time.monotonic()
    lfs.sh([LAYERFS_BIN, "--root", str(lfs.workdir / "timing-store"), *argv[3:]])
    full = time.monotonic() - start

    for fraction in KILL_FRACTIONS:
        proc = subprocess.Popen(lfs.wrap(argv), env=lfs.env(), cwd=lfs.workdir,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(full * fraction)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: runuser and its child
        proc.wait()

        ids = image_ids(lfs)
        assert ids in ([], [info.config_digest]), f"after kill at {fraction:.0%}: {ids}"
        assert_blobs_whole(lfs)
        if ids:
            assert_reads_fully(lfs, "big:1", expected)
            lfs.run("rmi", "big:1")

    lfs.run("import", f"oci:{src}", "big:1", "-q")
    assert image_ids(lfs) == [info.config_digest]
    assert_reads_fully(lfs, "big:1", expected)
