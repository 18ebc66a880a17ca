"""The CLI's outer shell: help, usage errors, and where the store lives.

Scripts and the benchmark rely on these without reading code: every documented
option shows up in --help, a malformed command line exits 2 with one error line,
and the store root follows --root, LAYERFS_ROOT and the XDG default.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs
from support.oci import directory, file, make_layer

# From the CLI as README.md and `layerfs --help` describe it: each command and the
# options it must document.
COMMAND_OPTIONS: dict[str, list[str]] = {
    "import": ["-q"],
    "images": ["--json", "-q"],
    "inspect": ["--json"],
    "tag": [],
    "rmi": ["--force"],
    "mount": ["--foreground"],
    "umount": [],
    "mounts": ["--json"],
    "create": ["--name"],
    "ps": ["--all", "--json", "--quiet"],
    "rm": [],
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
