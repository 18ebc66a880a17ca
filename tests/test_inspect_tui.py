"""`layerfs inspect --tui`: the layer browser, driven headless with textual's pilot.

One small image of three layers, each made to show one thing:
  1  the base: /etc/{config.txt,keep.txt,gone.txt}, /var/old/x.txt, /usr/bin/tool
     (binary), /big.bin, /srv/readme
  2  modifies /etc/config.txt (a line changes) and /usr/bin/tool, adds /etc/new.txt
     and /opt/app/run.sh, deletes /etc/gone.txt (a whiteout) and /var/old (a directory)
  3  writes /big.bin again (the first copy becomes wasted space)
and the CLI's own edges: no terminal, an unknown REF, and that no other command
imports textual.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conftest import LAYERFS_BIN, Layerfs
from support.oci import directory, file, make_layer, sha256_digest, whiteout

pytest.importorskip("textual")

from layerfs.cli import tui  # noqa: E402
from layerfs.cli.tui_screens import ContentScreen, WastedScreen  # noqa: E402
from layerfs.store.layout import Store  # noqa: E402

REF = "tui-test:latest"
CONFIG_1 = b"alpha\nbeta\ngamma\n"
CONFIG_2 = b"alpha\nBETA\ngamma\n"
TOOL_1 = b"\x7fELF\x00\x01" * 10


def _layers() -> list[bytes]:
    base = make_layer([
        directory("etc"), file("etc/config.txt", CONFIG_1), file("etc/keep.txt", b"keep\n"),
        file("etc/gone.txt", b"bye\n"), directory("var"), directory("var/old"), file("var/old/x.txt", b"x\n"),
        directory("usr"), directory("usr/bin"), file("usr/bin/tool", TOOL_1, mode=0o755),
        file("big.bin", b"x" * 20000), directory("srv"), file("srv/readme", b"hi\n")])
    second = make_layer([
        file("etc/config.txt", CONFIG_2), file("etc/new.txt", b"new file\n"), whiteout("etc/gone.txt"),
        whiteout("var/old"), file("usr/bin/tool", b"\x7fELF\x00\x02" * 10, mode=0o755),
        directory("opt"), directory("opt/app"), file("opt/app/run.sh", b"#!/bin/sh\n", mode=0o755)])
    third = make_layer([file("big.bin", b"y" * 20000)])
    return [base, second, third]


@pytest.fixture
def image(lfs_root: Layerfs) -> tuple[Layerfs, list[bytes]]:
    layers = _layers()
    lfs_root.import_layers(layers, REF)
    return lfs_root, layers


Script = Callable[[tui.InspectApp, object], Awaitable[None]]


def drive(store_root: Path, script: Script) -> None:
    """Run the app headless on REF and `script(app, pilot)` once the first screen is up."""
    at, layers = tui.load(Store(store_root), REF)
    app = tui.InspectApp(at, layers)

    async def main() -> None:
        async with app.run_test(size=(160, 48)) as pilot:
            await asyncio.wait_for(app.first_screen.wait(), 60)
            await settle(app, pilot)
            await script(app, pilot)

    asyncio.run(main())


async def settle(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
    """Let the worker threads (changes, analysis) finish and their results show."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def select_layer(app: tui.InspectApp, pilot, number: int) -> None:  # noqa: ANN001
    app.query_one("#layers").move_cursor(row=number - 1)
    await settle(app, pilot)
    assert app.selected == number


def markers(app: tui.InspectApp, *paths: bytes) -> dict[str, str]:
    """Open each path's parents, then: path -> its change letter (" " unchanged), for
    every row loaded."""
    for path in paths:
        app.tree.reveal(path)
    return {path: label[0] for path, label in app.tree.labels().items()}


SEEN = (b"/etc/keep.txt", b"/var/old", b"/usr/bin/tool", b"/opt/app/run.sh", b"/srv/readme")


def test_layer_list_shows_every_layer(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, layers = image

    async def script(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        table = app.query_one("#layers")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [r[0] for r in rows] == ["1", "2", "3"]  # base first
        assert [r[1] for r in rows] == [sha256_digest(data).removeprefix("sha256:")[:12] for data in layers]
        assert app.selected == 1
        assert all(letter == "A" for letter in markers(app, *SEEN).values())  # the base adds everything

    drive(lfs.root, script)


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "thread"])
def test_layer_markers(image: tuple[Layerfs, list[bytes]], monkeypatch: pytest.MonkeyPatch, threaded: bool) -> None:
    lfs, _ = image
    if threaded:  # every layer's changes computed in a worker thread, as for big layers
        monkeypatch.setattr(tui, "SYNC_LIMIT", 0)

    async def script(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        await select_layer(app, pilot, 2)
        seen = markers(app, *SEEN)
        assert seen["/etc/config.txt"] == "C"
        assert seen["/usr/bin/tool"] == "C"
        assert seen["/etc/new.txt"] == "A"
        assert seen["/opt"] == seen["/opt/app"] == seen["/opt/app/run.sh"] == "A"
        assert seen["/etc/gone.txt"] == "D"  # shown from the state below
        assert seen["/var/old"] == "D"
        for unchanged in ("/etc/keep.txt", "/srv", "/srv/readme", "/big.bin", "/var"):
            assert seen[unchanged] == " ", unchanged
        assert app.tree.labels()["/etc"].rstrip().endswith("‹A C D›")  # what it holds
        await select_layer(app, pilot, 3)
        seen = markers(app, *SEEN)
        assert seen["/big.bin"] == "C"
        assert seen["/etc/config.txt"] == " "
        assert "/etc/gone.txt" not in seen and "/var/old" not in seen

    drive(lfs.root, script)


def test_changed_only_and_kind_filters(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image

    async def script(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        await select_layer(app, pilot, 2)
        markers(app, *SEEN)  # open the directories; they stay open across filters
        app.tree.focus()
        await pilot.press("c")  # changed only
        shown = app.tree.labels()
        assert {"/etc/config.txt", "/etc/new.txt", "/etc/gone.txt", "/var/old", "/usr/bin/tool",
                "/opt/app/run.sh"} <= set(shown)
        assert not {"/etc/keep.txt", "/srv", "/srv/readme", "/big.bin"} & set(shown)
        await pilot.press("3")  # and no deletions
        shown = app.tree.labels()
        assert "/etc/gone.txt" not in shown and "/var/old" not in shown
        assert "/var" not in shown  # it holds nothing else that changed
        assert "/etc/config.txt" in shown and "/etc/new.txt" in shown
        await pilot.press("1")  # and no additions
        shown = app.tree.labels()
        assert "/etc/new.txt" not in shown and "/opt" not in shown
        assert set(shown) == {"/etc", "/etc/config.txt", "/usr", "/usr/bin", "/usr/bin/tool"}
        await pilot.press("2")  # nothing left to show
        assert app.tree.labels() == {}
        for key in "c123":
            await pilot.press(key)
        assert {"/etc/keep.txt", "/etc/gone.txt", "/srv/readme", "/opt/app/run.sh"} <= set(app.tree.labels())

    drive(lfs.root, script)


def test_enter_shows_diff_or_contents(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image

    async def open_file(app: tui.InspectApp, pilot, path: bytes) -> ContentScreen:  # noqa: ANN001
        assert app.tree.reveal(path)
        app.tree.focus()
        await pilot.pause()
        assert app.tree.cursor_node.data.path == path
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ContentScreen)
        return app.screen

    async def back(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ContentScreen)

    async def script(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        screen = await open_file(app, pilot, b"/usr/bin/tool")  # layer 1: a binary file
        assert screen.text.startswith("binary, 60 bytes") and not screen.is_diff
        await back(app, pilot)
        await select_layer(app, pilot, 2)
        screen = await open_file(app, pilot, b"/etc/config.txt")
        assert screen.is_diff
        assert "-beta\n" in screen.text and "+BETA\n" in screen.text
        assert "-beta" in screen.query_one("#content").lines
        await back(app, pilot)
        screen = await open_file(app, pilot, b"/etc/new.txt")
        assert screen.text == "new file\n" and not screen.is_diff
        await back(app, pilot)
        screen = await open_file(app, pilot, b"/etc/gone.txt")  # deleted: its last content
        assert screen.text == "bye\n" and "D in layer 2" in screen.title_text

    drive(lfs.root, script)


def test_aggregate_compares_with_the_base(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image

    async def script(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        await select_layer(app, pilot, 3)
        await pilot.press("a")
        await settle(app, pilot)
        seen = markers(app, *SEEN)
        assert seen["/big.bin"] == "C" and seen["/etc/config.txt"] == "C"
        assert seen["/etc/new.txt"] == "A" and seen["/etc/gone.txt"] == "D" and seen["/var/old"] == "D"
        assert seen["/etc/keep.txt"] == " "
        await pilot.press("a")
        await settle(app, pilot)
        assert markers(app)["/etc/config.txt"] == " "

    drive(lfs.root, script)


def test_wasted_view(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image

    async def script(app: tui.InspectApp, pilot) -> None:  # noqa: ANN001
        await pilot.press("w")
        await settle(app, pilot)
        assert isinstance(app.screen, WastedScreen)
        rows = {row[3]: row for row in app.screen.rows()}
        assert rows["/big.bin"][:3] == ["20.0 kB", "2", "1,3"]  # overwritten by layer 3
        assert rows["/etc/gone.txt"][2] == "1,-2"  # deleted in layer 2
        assert list(rows)[0] == "/big.bin"  # most wasted first
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, WastedScreen)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running

    drive(lfs.root, script)


# -- the CLI around it ------------------------------------------------------------------

def test_no_terminal_is_one_line(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image
    proc = lfs.run("inspect", "--tui", REF, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("layerfs: error: --tui needs a terminal") and proc.stderr.count("\n") == 1


def _in_terminal(argv: list[str], keys: bytes = b"", until: bytes = b"", timeout: float = 60) -> tuple[int, bytes]:
    """Run argv on a pseudo-terminal; once `until` shows (if given), type `keys`."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env=dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40"))
    os.close(slave)
    out, typed, deadline = b"", not keys, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    out += os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
            if not typed and until in out:
                os.write(master, keys)
                typed = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=30), out
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_unknown_ref_in_a_terminal(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image
    code, out = _in_terminal([LAYERFS_BIN, "--root", str(lfs.root), "inspect", "--tui", "no-such-image"])
    assert code == 3
    assert out.decode().strip().startswith("layerfs: error: no image 'no-such-image'")
    assert out.count(b"\n") == 1


def test_runs_in_a_terminal_and_quits(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image
    code, out = _in_terminal([LAYERFS_BIN, "--root", str(lfs.root), "inspect", "--tui", REF],
                             keys=b"q", until=b"tui-test")
    assert code == 0
    assert b"Traceback" not in out


def test_other_commands_do_not_import_textual(image: tuple[Layerfs, list[bytes]]) -> None:
    lfs, _ = image
    check = ("import sys\nfrom layerfs.cli.main import main\n"
             f"for argv in (['images'], ['history', {REF!r}], ['inspect', {REF!r}]):\n"
             f"    assert main(['--root', {str(lfs.root)!r}, *argv]) == 0\n"
             "assert 'textual' not in sys.modules, 'textual imported'\n")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
