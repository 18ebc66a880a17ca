"""A store that several users and several processes touch at once.

Root working on a user's store acts as that user, so every file the store gains
stays the user's and the user is never locked out of it. Writers running at the
same time, from the very first one that creates the store, lose no name: the
index they leave is what their successful commands, applied one by one, imply.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

from conftest import LAYERFS_BIN, Layerfs
from support.oci import ImageInfo, directory, file, make_layer, write_oci_layout

REF_NAME = "org.opencontainers.image.ref.name"


def small_image(lfs: Layerfs, layout: str, marker: str) -> tuple[str, ImageInfo]:
    """A one-layer image of its own (by `marker`) in a layout of the scratch area,
    readable by `lfs`'s user; returns the `oci:` SOURCE and what was written."""
    dest = lfs.workdir / layout
    info = write_oci_layout(dest, [make_layer([directory("etc"), file("etc/marker", marker.encode())])],
                            tag=marker)
    lfs.give(dest)
    return f"oci:{dest}:{marker}", info


def index_names(store: Path) -> list[str]:
    """Every ref.name in the store's index.json, read from disk, duplicates kept."""
    index = json.loads((store / "index.json").read_bytes())
    return sorted(m["annotations"][REF_NAME] for m in index["manifests"] if m.get("annotations"))


def ids_by_name(lfs: Layerfs) -> dict[str, str]:
    """name -> image id, as `images --json` lists them."""
    return {name: image["id"] for image in json.loads(lfs.run("images", "--json").stdout)
            for name in image["names"]}


def run_at_once(lfs: Layerfs, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every `layerfs --root STORE ...` command before waiting for any."""
    procs = [subprocess.Popen(lfs.wrap([LAYERFS_BIN, "--root", str(lfs.root), *args]), env=lfs.env(),
                              cwd=lfs.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    results = []
    for args, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def assert_all_succeeded(results: list[subprocess.CompletedProcess[str]]) -> None:
    failed = [(r.args, r.returncode, r.stderr) for r in results if r.returncode != 0]
    assert not failed, failed


def foreign_owned(store: Path, uid: int, gid: int) -> list[str]:
    """Paths under `store` (itself included) not owned by uid:gid."""
    found = []
    for dirpath, dirnames, filenames in os.walk(store):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (uid, gid):
                found.append(f"{path} {st.st_uid}:{st.st_gid}")
    return found


def as_root_on(lfs_user: Layerfs) -> Layerfs:
    """Root's CLI on the test user's store (and scratch area), as `sudo layerfs --root`."""
    return Layerfs(user=None, workdir=lfs_user.workdir)


# ---------------------------------------------------------------------------------------
# root on a user's store
# ---------------------------------------------------------------------------------------


def test_root_acts_as_the_owner_of_a_user_store(lfs_user: Layerfs) -> None:
    """tag, import, create and rmi by root leave every file the user's, and the user
    can go on using the store for everything."""
    pw = pwd.getpwnam(lfs_user.user)  # type: ignore[arg-type]
    base, base_info = small_image(lfs_user, "src", "base")
    lfs_user.run("import", base, "base:1", "-q")
    root = as_root_on(lfs_user)

    root.run("tag", "base:1", "by-root:tag")
    extra, extra_info = small_image(lfs_user, "src", "extra")
    root.run("import", extra, "by-root:import", "-q")
    doomed, _ = small_image(lfs_user, "src", "doomed")
    root.run("import", doomed, "doomed:1", "-q")
    root.run("create", "--name", "c1", "base:1")
    root.run("rmi", "by-root:tag", "doomed:1")
    assert foreign_owned(lfs_user.root, pw.pw_uid, pw.pw_gid) == []

    assert ids_by_name(lfs_user) == {"base:1": base_info.config_digest,
                                     "by-root:import": extra_info.config_digest}
    lfs_user.run("tag", "by-root:import", "user:again")
    lfs_user.run("rmi", "by-root:import", "user:again")
    more, more_info = small_image(lfs_user, "src", "more")
    lfs_user.run("import", more, "user:more", "-q")
    assert ids_by_name(lfs_user) == {"base:1": base_info.config_digest, "user:more": more_info.config_digest}
    assert json.loads(lfs_user.run("ps", "-a", "--json").stdout)[0]["name"] == "c1"


def test_root_makes_a_new_store_in_a_user_directory_as_that_user(lfs_user: Layerfs) -> None:
    """A store that does not exist yet belongs to whoever owns the directory it is made
    in (here the user's scratch area, as a store under the user's home would)."""
    pw = pwd.getpwnam(lfs_user.user)  # type: ignore[arg-type]
    root = as_root_on(lfs_user)
    root.root = lfs_user.workdir / "deep" / "new-store"
    source, info = small_image(lfs_user, "src", "fresh")
    root.run("import", source, "fresh:1", "-q")
    assert foreign_owned(lfs_user.workdir / "deep", pw.pw_uid, pw.pw_gid) == []
    out = lfs_user.sh([LAYERFS_BIN, "--root", str(root.root), "images", "--json"]).stdout
    assert [image["id"] for image in json.loads(out)] == [info.config_digest]


def test_a_mount_root_makes_on_a_user_store_is_the_users(lfs_user: Layerfs) -> None:
    """The daemon, its records and the mount itself are the owner's: the owner enters
    the mount, lists it and unmounts it; root cannot give it allow_other from there."""
    lfs_user.run("import", small_image(lfs_user, "src", "base")[0], "base:1", "-q")
    lfs_user.run("create", "--name", "c1", "base:1")
    mountpoint = lfs_user.mkdir("mnt")
    root = as_root_on(lfs_user)
    root.run("mount", "c1", str(mountpoint))
    try:
        assert lfs_user.sh(["cat", str(mountpoint / "etc" / "marker")]).stdout == b"base"
        lfs_user.sh(["sh", "-c", f"echo new > {mountpoint}/etc/new"])
        [record] = json.loads(lfs_user.run("mounts", "--json").stdout)
        assert os.stat(f"/proc/{record['pid']}").st_uid == pwd.getpwnam(lfs_user.user).pw_uid  # type: ignore[arg-type]
    finally:
        lfs_user.run("umount", str(mountpoint))
    refused = root.run("mount", "--allow-other", "c1", str(mountpoint), check=False)
    assert refused.returncode == 1 and "acts as" in refused.stderr and refused.stderr.count("\n") == 1
    pw = pwd.getpwnam(lfs_user.user)  # type: ignore[arg-type]
    assert foreign_owned(lfs_user.root, pw.pw_uid, pw.pw_gid) == []


def test_root_cannot_import_what_the_owner_cannot_read(lfs_user: Layerfs) -> None:
    """Acting as the owner cuts both ways: a root-only file is unreadable for root too
    (one line naming it, store unchanged), as the README says."""
    lfs_user.run("import", small_image(lfs_user, "src", "base")[0], "base:1", "-q")
    rootfs = lfs_user.workdir / "root-only"  # made by root, not given to the user
    (rootfs / "etc").mkdir(parents=True)
    secret = rootfs / "etc" / "shadow"
    secret.write_text("root:*:19000::::::\n")
    secret.chmod(0o600)
    root = as_root_on(lfs_user)
    before = lfs_user.store_snapshot()
    proc = root.run("import", f"dir:{rootfs}", "shadow:1", check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(secret) in proc.stderr, proc.stderr
    assert lfs_user.store_snapshot() == before


def import_with_umask(lfs: Layerfs, umask: int, source: str, name: str) -> None:
    lfs.sh(["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", LAYERFS_BIN, "--root", str(lfs.root),
            "import", source, name, "-q"])


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_new_files_follow_the_umask(lfs: Layerfs) -> None:
    """index.json and the other files a write makes get 0666 less the umask, as any
    created file does, so other users' tools can read the store when the umask allows."""
    source, info = small_image(lfs, "src", "modes")
    import_with_umask(lfs, 0o022, source, "modes:1")
    manifest = lfs.root / "blobs" / "sha256" / info.manifest_digest[7:]  # type: ignore[index]
    assert [mode(p) for p in (lfs.root / "index.json", lfs.root / "oci-layout", manifest)] == [0o644] * 3
    import_with_umask(lfs, 0o077, source, "modes:2")
    assert mode(lfs.root / "index.json") == 0o600


# ---------------------------------------------------------------------------------------
# many writers at once
# ---------------------------------------------------------------------------------------


def test_parallel_writers_lose_nothing(lfs: Layerfs) -> None:
    """Imports into a store that does not exist yet, then imports, tags and rmis (with
    readers among them), each batch started all at once: every command succeeds and
    the index holds exactly the names they imply, each once, each resolving to its image."""
    assert not lfs.root.exists()
    first = {f"first{i}": small_image(lfs, "src", f"first{i}") for i in range(8)}
    assert_all_succeeded(run_at_once(lfs, [["import", source, f"{name}:1", "-q"]
                                           for name, (source, _) in first.items()]))
    assert index_names(lfs.root) == sorted(f"{name}:1" for name in first)

    doomed = {f"doomed{i}": small_image(lfs, "src", f"doomed{i}") for i in range(4)}
    for name, (source, _) in doomed.items():
        lfs.run("import", source, f"{name}:1", "-q")
    for i in range(4):
        lfs.run("tag", "first0:1", f"old:{i}")
    second = {f"second{i}": small_image(lfs, "src", f"second{i}") for i in range(8)}
    commands = ([["import", source, f"{name}:1", "-q"] for name, (source, _) in second.items()]
                + [["tag", f"first{i}:1", f"alias:{i}"] for i in range(8)]
                + [["rmi", f"old:{i}"] for i in range(4)]
                + [["rmi", f"{name}:1"] for name in doomed]
                + [["images", "--json"], ["inspect", "first0:1"]] * 4)  # readers take no lock
    assert_all_succeeded(run_at_once(lfs, commands))

    expected = {f"{name}:1": info.config_digest for name, (_, info) in {**first, **second}.items()}
    expected.update({f"alias:{i}": first[f"first{i}"][1].config_digest for i in range(8)})
    assert index_names(lfs.root) == sorted(expected)
    assert ids_by_name(lfs) == expected
    for name, image_id in expected.items():
        assert json.loads(lfs.run("inspect", name, "--json").stdout)["id"] == image_id
    listed = {image["id"] for image in json.loads(lfs.run("images", "--json").stdout)}
    assert listed == set(expected.values())
    blobs = {p.name for p in (lfs.root / "blobs" / "sha256").iterdir()}
    assert not {info.config_digest[7:] for _, info in doomed.values()} & blobs
