"""The screens `inspect --tui` opens over its main one: a file's contents or diff, and
the wasted-space table. Escape goes back from either."""

from __future__ import annotations

import os

from rich.highlighter import Highlighter
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Log, Static

from layerfs.cli.change_output import layers_of, readd_sentence
from layerfs.cli.output import human_size
from layerfs.errors import LayerfsError
from layerfs.inspect.analyze import Analysis
from layerfs.inspect.changes import MODIFIED
from layerfs.inspect.contents import file_diff
from layerfs.layer.index import CHARDEV, BLOCKDEV, DIRECTORY, REGULAR, SYMLINK
from layerfs.union.tree import Node

SHOW_LIMIT = 4 << 20   # bytes of a file shown
LINE_LIMIT = 100_000   # lines of a file or diff shown
WASTED_ROWS = 500
BACK = [Binding("escape", "app.pop_screen", "back"), Binding("q", "app.quit", "quit")]


class DiffHighlighter(Highlighter):
    """Added lines green, removed red, hunk headers cyan."""

    def highlight(self, text: Text) -> None:
        line = text.plain
        if line.startswith(("+++", "---")):
            text.stylize("bold")
        elif line.startswith("+"):
            text.stylize("green")
        elif line.startswith("-"):
            text.stylize("red")
        elif line.startswith("@@"):
            text.stylize("cyan")


class PlainHighlighter(Highlighter):
    def highlight(self, text: Text) -> None:
        pass


def node_text(node: Node) -> str:
    """What to show for one object: a file's text, or one line saying what it is."""
    if node.kind == SYMLINK:
        return f"symbolic link -> {node.target.decode('utf-8', 'backslashreplace')}\n"
    if node.kind == DIRECTORY:
        return f"directory, {len(node.children or {})} entries\n"
    if node.kind in (CHARDEV, BLOCKDEV):
        kind = "character" if node.kind == CHARDEV else "block"
        return f"{kind} device {os.major(node.rdev)}:{os.minor(node.rdev)}\n"
    if node.kind != REGULAR:
        return {"p": "fifo\n", "s": "socket\n"}.get(node.kind, f"{node.kind}\n")
    if not node.payload:
        return "(empty file)\n"
    with open(node.payload, "rb") as f:
        data = f.read(SHOW_LIMIT)
    if b"\0" in data[:65536]:
        return f"binary, {node.size} bytes ({human_size(node.size)})\n"
    text = data.decode("utf-8", "replace")
    if node.size > SHOW_LIMIT:
        text += f"\n… ({human_size(node.size)}: only the first {human_size(SHOW_LIMIT)} shown)\n"
    return text


def entry_text(before: Node, after: Node, path: bytes, node: Node, kind: str | None) -> tuple[str, bool]:
    """(text, is a diff): a modified file's diff of the two states, else its contents."""
    if kind == MODIFIED and node.kind in (REGULAR, SYMLINK):
        try:
            diff, differs = file_diff(before, after, os.fsdecode(path))
        except LayerfsError:  # the older one was no file (a type change): show the new one
            diff, differs = "", False
        if differs:
            return diff, True
    try:
        return node_text(node), False
    except OSError as e:
        return f"cannot read the file's content: {e.strerror or e}\n", False


class ContentScreen(Screen):
    """A file's contents or a diff, scrollable."""

    BINDINGS = BACK

    def __init__(self, title: str, text: str, is_diff: bool) -> None:
        super().__init__()
        self.title_text, self.text, self.is_diff = title, text, is_diff

    def compose(self) -> ComposeResult:
        yield Static(Text(self.title_text, "bold"), id="content-title")
        log = Log(highlight=True, id="content")
        log.highlighter = DiffHighlighter() if self.is_diff else PlainHighlighter()
        yield log
        yield Footer()

    def on_mount(self) -> None:
        lines = self.text.splitlines()
        if len(lines) > LINE_LIMIT:
            lines = lines[:LINE_LIMIT] + [f"… ({len(lines) - LINE_LIMIT} more lines not shown)"]
        log = self.query_one(Log)
        log.write_lines(lines, scroll_end=False)
        log.focus()


class WastedScreen(Screen):
    """The paths whose copies the image stores but does not show, most wasted first."""

    BINDINGS = [Binding("w", "app.pop_screen", "back"), *BACK]

    def compose(self) -> ComposeResult:
        yield Static("analyzing the image…", id="wasted-summary")
        table: DataTable = DataTable(cursor_type="row", zebra_stripes=True, id="wasted")
        table.add_columns("WASTED", "COPIES", "LAYERS (-N: deleted in N)", "PATH")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        analysis = getattr(self.app, "analysis", None)
        if analysis is not None:
            self.show(analysis)
        self.query_one(DataTable).focus()

    def show(self, analysis: Analysis) -> None:
        summary = (f"Efficiency {analysis.efficiency * 100:.2f} %   wasted {human_size(analysis.wasted)} in "
                   f"{len(analysis.paths)} paths ({analysis.user_wasted_ratio * 100:.2f} % of the bytes "
                   "above the base)")
        for readd in analysis.metadata_readds:
            summary += "\n" + readd_sentence(readd)
        if len(analysis.paths) > WASTED_ROWS:
            summary += f"\n(the {WASTED_ROWS} most wasted paths shown)"
        self.query_one("#wasted-summary", Static).update(summary)
        table = self.query_one(DataTable)
        table.clear()
        for p in analysis.paths[:WASTED_ROWS]:
            table.add_row(human_size(p.wasted), str(len(p.copies)), layers_of(p), p.path, key=p.path)

    def rows(self) -> list[list[str]]:
        """The table's cells (for tests)."""
        table = self.query_one(DataTable)
        return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
