"""The CLI's outer shell: help, usage errors, and where the store lives.

Scripts and the benchmark rely on these without reading code: every documented
option shows up in --help, a malformed command line exits 2 with one error line,
the store root follows --root, LAYERFS_ROOT and the XDG default, a directory that
is no store is never taken for one, and output that cannot be written (stdout
closed, a pipe whose reader left) is one error line too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs
from support.oci import directory, file, make_layer, write_oci_layout

# From the CLI as README.md and `layerfs --help` describe it: each command and the
# options it must document.
COMMAND_OPTIONS: dict[str, list[str]] = {
    "import": ["-q", "--skip-unreadable"],
    "images": ["--json", "-q"],
    "inspect": ["--json"],
    "tag": [],
    "rmi": ["--force"],
    "mount": ["--foreground"],
    "umount": [],
    "mounts": ["--json"],
    "create": ["--name"],
    "run": ["--rm", "--name", "--detach", "--interactive", "--tty", "--env", "--env-file", "--workdir", "--user",
            "--entrypoint", "--volume", "--read-only", "--hostname", "--network", "--userns", "--security-opt"],
    "start": ["--attach"], "stop": ["--time"], "restart": ["--time"], "kill": ["--signal"],
    "pause": [], "unpause": [], "wait": [],
    "exec": ["--interactive", "--tty", "--user", "--workdir", "--env"],
    "logs": ["--follow", "--timestamps"],
    "ps": ["--all", "--json", "--quiet"],
    "rm": ["--force", "--volumes"],
    "volume": ["create", "ls", "inspect", "rm"],
}

BAD_USAGE: dict[str, list[str]] = {
    "no-command": [],
    "unknown-command": ["frobnicate"],
    "unknown-option": ["images", "--bogus"],
    "import-without-source": ["import"],
    "inspect-without-ref": ["inspect"],
    "tag-one-argument": ["tag", "only-one"],
    "rmi-without-ref": ["rmi"],
    "mount-without-mountpoint": ["mount", "app:1"],
    "umount-without-mountpoint": ["umount"],
    "extra-argument": ["images", "surplus"],
}


def assert_clean_error(proc: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes],
                       code: int) -> None:
    """The contract's failure shape: the code, exactly one "layerfs: error: " line, no traceback."""
    stdout, stderr = (s.decode(errors="replace") if isinstance(s, bytes) else s
                      for s in (proc.stdout, proc.stderr))
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}: {stderr}"
    assert "Traceback" not in stderr + stdout
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerfs: error: "), stderr


def tiny_tarball(lfs: Layerfs) -> Path:
    """A one-file tarball for a `tar:` import, readable by `lfs`'s user."""
    path = lfs.workdir / "tiny.tar"
    path.write_bytes(make_layer([directory("etc"), file("etc/tiny", b"tiny\n")]))
    lfs.give(path)
    return path


def names_in(lfs: Layerfs, store: Path) -> list[str]:
    """All image names in the store at `store`, via --root."""
    out = lfs.sh([LAYERFS_BIN, "--root", str(store), "images", "--json"]).stdout
    return sorted(name for image in json.loads(out) for name in image["names"])


def store_made_at(lfs: Layerfs, env: list[str], expected: Path) -> None:
    """With `env` (VAR=value items) and no --root, the store is created at `expected`.

    `images --json` on a store that does not exist yet must answer `[]`; an import
    then creates the layout, and nowhere else than `expected`.
    """
    out = lfs.sh(["env", *env, LAYERFS_BIN, "images", "--json"]).stdout
    assert json.loads(out) == []
    lfs.sh(["env", *env, LAYERFS_BIN, "import", f"tar:{tiny_tarball(lfs)}", "where:1", "-q"])
    assert (expected / "oci-layout").is_file()
    assert (expected / "index.json").is_file()
    assert names_in(lfs, expected) == ["where:1"]
    assert not (lfs.workdir / "oci-layout").exists()


# ---------------------------------------------------------------------------------------
# help and usage
# ---------------------------------------------------------------------------------------


def test_top_level_help(lfs_root: Layerfs) -> None:
    """`layerfs --help` succeeds and lists --root and every command."""
    proc = lfs_root.sh([LAYERFS_BIN, "--help"])
    text = proc.stdout.decode()
    assert "--root" in text
    for command in COMMAND_OPTIONS:
        assert command in text, f"--help does not mention {command}"


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_command_help(lfs_root: Layerfs, command: str) -> None:
    """`layerfs COMMAND --help` succeeds and documents every option of the contract."""
    text = lfs_root.run(command, "--help").stdout
    assert command in text
    for option in COMMAND_OPTIONS[command]:
        assert option in text, f"{command} --help does not mention {option}"


@pytest.mark.parametrize("case", sorted(BAD_USAGE))
def test_bad_usage_exits_2(lfs_root: Layerfs, case: str) -> None:
    """A malformed command line is a usage error: exit 2, one error line, no traceback."""
    assert_clean_error(lfs_root.run(*BAD_USAGE[case], check=False), 2)


def test_root_option_without_value(lfs_root: Layerfs) -> None:
    """`--root` with nothing after it is a usage error too."""
    assert_clean_error(lfs_root.sh([LAYERFS_BIN, "--root"], check=False), 2)


# ---------------------------------------------------------------------------------------
# where the store lives
# ---------------------------------------------------------------------------------------


def test_layerfs_root_env(lfs: Layerfs) -> None:
    """LAYERFS_ROOT places the store, as --root does."""
    store = lfs.workdir / "env-store"
    store_made_at(lfs, [f"LAYERFS_ROOT={store}"], store)


def test_root_option_beats_env(lfs: Layerfs) -> None:
    """An explicit --root wins over LAYERFS_ROOT (the usual flag-over-environment rule)."""
    ignored = lfs.workdir / "ignored-store"
    lfs.sh(["env", f"LAYERFS_ROOT={ignored}", LAYERFS_BIN, "--root", str(lfs.root),
            "import", f"tar:{tiny_tarball(lfs)}", "flag:1", "-q"])
    assert names_in(lfs, lfs.root) == ["flag:1"]
    assert not (ignored / "index.json").exists()


def test_rootless_default_root(lfs_user: Layerfs) -> None:
    """Without --root or LAYERFS_ROOT a user's store is ~/.local/share/layerfs.

    HOME points at a scratch directory so the test user's real home stays clean.
    """
    home = lfs_user.mkdir("home")
    store_made_at(lfs_user, ["-u", "XDG_DATA_HOME", "-u", "LAYERFS_ROOT", f"HOME={home}"],
                  home / ".local" / "share" / "layerfs")


def test_rootless_xdg_data_home(lfs_user: Layerfs) -> None:
    """XDG_DATA_HOME, when set, replaces ~/.local/share."""
    home = lfs_user.mkdir("home")
    xdg = lfs_user.mkdir("xdg")
    store_made_at(lfs_user, ["-u", "LAYERFS_ROOT", f"HOME={home}", f"XDG_DATA_HOME={xdg}"],
                  xdg / "layerfs")
    assert not (home / ".local" / "share" / "layerfs").exists()


def test_empty_layerfs_root_is_unset(lfs_user: Layerfs) -> None:
    """LAYERFS_ROOT= (set, but empty) means the default store, not the current directory."""
    home = lfs_user.mkdir("home")
    store_made_at(lfs_user, ["-u", "XDG_DATA_HOME", "LAYERFS_ROOT=", f"HOME={home}"],
                  home / ".local" / "share" / "layerfs")


@pytest.mark.parametrize("form", [["--root", ""], ["--root="]], ids=["separate", "equals"])
def test_empty_root_option_is_a_usage_error(lfs: Layerfs, form: list[str]) -> None:
    """`--root ''` would turn the current directory into a store: exit 2, nothing made."""
    proc = lfs.sh([LAYERFS_BIN, *form, "import", f"tar:{tiny_tarball(lfs)}", "here:1"], check=False)
    assert_clean_error(proc, 2)
    assert b"--root" in proc.stderr
    assert sorted(p.name for p in lfs.workdir.iterdir()) == ["tiny.tar"]


# ---------------------------------------------------------------------------------------
# a directory that is not a store
# ---------------------------------------------------------------------------------------

# Every command, as it would run on a store: each must refuse a directory of something else.
EVERY_COMMAND: dict[str, list[str]] = {
    "import": ["import", "tar:{tarball}", "x:1"], "images": ["images"], "inspect": ["inspect", "x:1"],
    "tag": ["tag", "x:1", "y:1"], "rmi": ["rmi", "x:1"], "mount": ["mount", "x:1", "{workdir}"],
    "umount": ["umount", "{workdir}"], "mounts": ["mounts"], "create": ["create", "x:1"],
    "ps": ["ps", "-a"], "rm": ["rm", "c"], "diff": ["diff", "c"], "commit": ["commit", "c", "x:2"],
    "volume-create": ["volume", "create", "v"], "volume-ls": ["volume", "ls"],
    "volume-inspect": ["volume", "inspect", "v"], "volume-rm": ["volume", "rm", "v"],
    "run": ["run", "x:1"], "start": ["start", "c"], "exec": ["exec", "c", "true"], "stop": ["stop", "c"],
    "logs": ["logs", "c"], "history": ["history", "x:1"], "analyze": ["analyze", "x:1"],
    "export": ["export", "x:1", "-o", "{workdir}/out.tar"], "diff-images": ["diff", "x:1", "y:1"],
}
# Commands that run containers fail as docker's do: 125 for whatever is not the container's.
LAUNCHING = {"create", "run", "start", "exec"}
# A diff of two images exits 1 for "different", so its errors exit 2 (as diffoci's).
COMPARING = {"diff-images"}


def tree_listing(root: Path) -> list[tuple[str, int, int]]:
    """Every path below `root` with its size and mtime: to prove nothing changed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
    return sorted(found)


@pytest.mark.parametrize("command", sorted(EVERY_COMMAND))
def test_a_directory_that_is_no_store_is_refused(lfs: Layerfs, command: str) -> None:
    """A non-empty directory without oci-layout is neither listed as an empty store nor
    turned into one, whatever the command: one line naming it, exit 1, nothing touched."""
    other = lfs.mkdir("documents")
    (other / "letter.txt").write_text("dear store,\n")
    lfs.give(other)
    before = tree_listing(other)
    args = [a.format(tarball=tiny_tarball(lfs), workdir=lfs.workdir) for a in EVERY_COMMAND[command]]
    proc = lfs.sh([LAYERFS_BIN, "--root", str(other), *args], check=False)
    assert_clean_error(proc, 125 if command in LAUNCHING else 2 if command in COMPARING else 1)
    assert f"{other} is not a layerfs store (no oci-layout)".encode() in proc.stderr
    assert tree_listing(other) == before


def test_a_file_as_root_is_refused(lfs: Layerfs) -> None:
    path = lfs.workdir / "plain-file"
    path.write_text("not a directory\n")
    lfs.give(path)
    assert_clean_error(lfs.sh([LAYERFS_BIN, "--root", str(path), "images"], check=False), 1)
    assert path.read_text() == "not a directory\n"


READING: dict[str, list[str]] = {"images": ["images", "--json"], "ps": ["ps", "-a", "--json"],
                                 "mounts": ["mounts", "--json"], "volumes": ["volume", "ls", "--json"]}


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_missing_or_empty_directory_is_an_empty_store(lfs: Layerfs, empty: bool) -> None:
    """Reading commands list nothing and create nothing; the first write makes the store."""
    store = lfs.mkdir("fresh") if empty else lfs.workdir / "fresh"
    for args in READING.values():
        assert json.loads(lfs.sh([LAYERFS_BIN, "--root", str(store), *args]).stdout) == []
    assert (sorted(store.iterdir()) if empty else store.exists()) in ([], False)
    lfs.sh([LAYERFS_BIN, "--root", str(store), "import", f"tar:{tiny_tarball(lfs)}", "first:1", "-q"])
    assert names_in(lfs, store) == ["first:1"]


def test_a_layout_made_by_another_tool_is_a_store(lfs: Layerfs) -> None:
    """Any directory with oci-layout is a store, even without layerfs's own areas."""
    layout = lfs.workdir / "by-skopeo"
    write_oci_layout(layout, [make_layer([file("x", b"x")])], tag="other:1")
    lfs.give(layout)
    assert names_in(lfs, layout) == ["other:1"]


# ---------------------------------------------------------------------------------------
# output that cannot be written
# ---------------------------------------------------------------------------------------


def seeded_store(lfs: Layerfs) -> Layerfs:
    """`lfs` with one image whose `inspect --json` is about a megabyte (a long Env), so
    that a reader leaving early always leaves the writer with more to write."""
    src = lfs.workdir / "big-config"
    env = [f"VAR{i}={'x' * 200}" for i in range(5000)]
    write_oci_layout(src, [make_layer([file("x", b"x")])], config={"Env": env})
    lfs.give(src)
    lfs.run("import", f"oci:{src}", "big:1", "-q")
    return lfs


OUTPUT_COMMANDS = [["images"], ["images", "--json"], ["inspect", "big:1", "--json"], ["ps", "-a"],
                   ["--help"]]


def assert_output_error(proc: subprocess.CompletedProcess[bytes]) -> None:
    assert_clean_error(proc, 1)
    assert b"cannot write output" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", OUTPUT_COMMANDS, ids=" ".join)
def test_closed_stdout(lfs: Layerfs, args: list[str]) -> None:
    """`layerfs ... >&-`: exit 1 and one line, where Python would print a traceback."""
    seeded_store(lfs)
    script = 'exec "$@" >&-'
    assert_output_error(lfs.sh(["sh", "-c", script, "sh", LAYERFS_BIN, "--root", str(lfs.root), *args],
                               check=False))


def test_closed_stdout_is_fine_without_output(lfs: Layerfs) -> None:
    """Only output that cannot be written fails: `tag` prints nothing, so it succeeds."""
    seeded_store(lfs)
    lfs.sh(["sh", "-c", 'exec "$@" >&-', "sh", LAYERFS_BIN, "--root", str(lfs.root), "tag", "big:1", "big:2"])
    assert names_in(lfs, lfs.root) == ["big:1", "big:2"]


@pytest.mark.parametrize("args", OUTPUT_COMMANDS, ids=" ".join)
def test_reader_gone_before_the_first_write(lfs: Layerfs, args: list[str]) -> None:
    """A pipe whose read end is already closed (EPIPE on the first write or flush)."""
    seeded_store(lfs)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(lfs.wrap([LAYERFS_BIN, "--root", str(lfs.root), *args]), stdout=write_end,
                              stderr=subprocess.PIPE, env=lfs.env(), cwd=lfs.workdir, timeout=120)
    finally:
        os.close(write_end)
    assert_output_error(subprocess.CompletedProcess(proc.args, proc.returncode, b"", proc.stderr))


def test_reader_gone_midway(lfs: Layerfs) -> None:
    """`inspect --json | head -c1`: the reader leaves after one byte of a megabyte."""
    seeded_store(lfs)
    script = '"$@" | head -c1 >/dev/null; exit "${PIPESTATUS[0]}"'
    proc = lfs.sh(["bash", "-c", script, "bash", LAYERFS_BIN, "--root", str(lfs.root),
                   "inspect", "big:1", "--json"], check=False)
    assert_output_error(proc)
