"""`layerfs inspect --tui REF`: browse an image layer by layer, as dive does.

Left, the layers (base first) with the image's efficiency and waste and the selected
layer's details; right, the merged tree as of the selected layer, marked with what
that layer added (A, green), modified (C, yellow) and deleted (D, red).

Keys: up/down pick a layer or a path; tab switches pane; space or enter opens and
closes a directory; enter on a file shows its contents, or its diff when the layer
modified it; escape goes back. c shows only changed paths; 1, 2, 3 show or hide the
added, modified, deleted ones; a aggregates (the changes of every layer up to the
selected one over the base); x collapses all; w shows the wasted-space table; q quits.

Only what is looked at is computed: the tree gets widgets for opened directories
only, a layer's changes are computed when it is selected (in a thread when the layer
is big), and the analysis runs in a thread after the first screen.

Timing the first screen (the bench): `first_screen_timings(store_root, ref)` runs
the app headless (App.run_test) and returns the seconds from opening the store to
each phase (load: the layers' states; first_screen: drawn with the layer list and
the tree filled in; changes: the selected layer's markers; analysis); the textual
import is already paid then.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Static, Tree
from textual.worker import Worker, WorkerState

from layerfs.cli.output import human_size, one_line, short_digest
from layerfs.cli.references import ImageAt, image_argument
from layerfs.cli.tui_panes import image_summary, layer_details, tree_title
from layerfs.cli.tui_screens import ContentScreen, WastedScreen, entry_text
from layerfs.cli.tui_tree import UNMODIFIED, ChangeView, Entry, FileTree, More, shown_name
from layerfs.inspect.analyze import Analysis, analyze
from layerfs.inspect.changes import LETTER, MODIFIED, PathChange, compare_states
from layerfs.inspect.layers import Layer, image_layers
from layerfs.layer.index import DIRECTORY
from layerfs.store.layout import Store
from layerfs.union.tree import Node

SYNC_LIMIT = 5000  # index rows below which a layer's changes are computed at once
MAIN_ONLY = {"focus_next", "changed_only", "kind", "aggregate", "collapse", "wasted"}


def load(store: Store, ref: str) -> tuple[ImageAt, list[Layer]]:
    """The image and its layers' states; a one-line LayerfsError when REF is wrong."""
    at = image_argument(store, ref)
    return at, image_layers(store, at.image, at.diff_ids)


def run(store: Store, ref: str) -> int:
    """The CLI's entry: load (errors are the CLI's one line), then run the app."""
    at, layers = load(store, ref)
    app = InspectApp(at, layers)
    app.run()
    return app.return_code or 0


class InspectApp(App):
    TITLE = "layerfs inspect"
    CSS = """
    #left { width: 45%; min-width: 40; border-right: solid $primary; }
    #right { width: 1fr; }
    #image-summary, #layer-details, #tree-title { height: auto; padding: 0 1; }
    #image-summary { border-bottom: solid $primary; }
    #layer-details { border-top: solid $primary; max-height: 12; }
    #tree-title { border-bottom: solid $primary; }
    #layers { height: 1fr; }
    #tree { height: 1fr; }
    #content-title, #wasted-summary { height: auto; padding: 0 1; border-bottom: solid $primary; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", show=False, priority=True),
        Binding("tab", "focus_next", "pane", priority=True),
        Binding("c", "changed_only", "changed only"),
        Binding("1", "kind('added')", "A"),
        Binding("2", "kind('modified')", "C"),
        Binding("3", "kind('deleted')", "D"),
        Binding("a", "aggregate", "aggregate"),
        Binding("x", "collapse", "collapse all"),
        Binding("w", "wasted", "wasted space"),
    ]

    def __init__(self, at: ImageAt, layers: list[Layer]) -> None:
        super().__init__()
        self.at, self.layers = at, layers
        self.selected = 0
        self.aggregate = False
        self.views: dict[tuple[int, bool], ChangeView] = {}
        self.computing: dict[Worker, tuple[int, bool]] = {}  # (layer, aggregate) a thread works on
        self.analysis: Analysis | None = None
        self.first_screen = asyncio.Event()
        self.marked = asyncio.Event()  # the selected layer's markers are shown

    # -- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="left"):
                yield Static(image_summary(self.at, self.layers, None), id="image-summary")
                table: DataTable = DataTable(cursor_type="row", id="layers")
                table.add_columns("#", "DIGEST", "SIZE", "CREATED BY")
                yield table
                yield Static("", id="layer-details")
            with Vertical(id="right"):
                yield Static("", id="tree-title")
                yield FileTree(id="tree")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#layers", DataTable)
        for layer in self.layers:
            table.add_row(str(layer.number), short_digest(layer.digest),
                          human_size(layer.size), one_line(layer.history.get("created_by", ""), 60),
                          key=str(layer.number))
        table.focus()
        if self.layers:
            self.select(1)
        else:
            self.marked.set()
        self.call_after_refresh(self._first_screen_drawn)

    def _first_screen_drawn(self) -> None:
        """Only now the analysis (every layer's states) starts: its thread would hold the
        GIL the first screen needs."""
        self.first_screen.set()
        if self.layers:
            self.run_worker(lambda: analyze(self.layers), name="analyze", thread=True, exit_on_error=False)

    @property
    def tree(self) -> FileTree:
        return self.query_one("#tree", FileTree)

    # -- the selected layer ---------------------------------------------------------

    def _states(self, number: int, aggregate: bool) -> tuple[Node, Node]:
        layer = self.layers[number - 1]
        if aggregate and number > 1:
            return self.layers[0].after, layer.after
        return layer.before, layer.after

    def _changes(self, number: int, aggregate: bool) -> list[PathChange]:
        if aggregate and number > 1:
            return compare_states(self.layers[0].after, self.layers[number - 1].after)
        return self.layers[number - 1].changes

    def _rows(self, number: int, aggregate: bool) -> int:
        chosen = self.layers[1:number] if aggregate and number > 1 else [self.layers[number - 1]]
        return sum(len(x.index.entries) + len(x.index.whiteouts) + len(x.index.opaques) for x in chosen)

    def select(self, number: int) -> None:
        """Show the tree as of layer `number`, with its changes (or the aggregate's)."""
        key = (number, self.aggregate)
        if number == self.selected and key in self.views:
            return
        self.selected = number
        self.marked.clear()
        view = self.views.get(key)
        if view is None and self._rows(number, self.aggregate) <= SYNC_LIMIT:
            view = self.views[key] = ChangeView.of(self._changes(*key))
        if view is None and key not in self.computing.values():
            worker = self.run_worker(lambda: ChangeView.of(self._changes(*key)), name="changes",
                                     group="changes", thread=True, exit_on_error=False)
            self.computing[worker] = key
        self._show(view)

    def _show(self, view: ChangeView | None) -> None:
        before, after = self._states(self.selected, self.aggregate)
        self.tree.show(before, after, view)
        self._title(view)
        self.query_one("#layer-details", Static).update(
            layer_details(self.layers[self.selected - 1], len(self.layers), self.views.get((self.selected, False))))
        if view is not None:
            self.marked.set()

    def _title(self, view: ChangeView | None) -> None:
        self.query_one("#tree-title", Static).update(tree_title(self.selected, self.aggregate, view, self.tree.shown))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            self.computing.pop(worker, None)
            self.notify(f"{worker.name} failed: {worker.error}", severity="error")
        if event.state != WorkerState.SUCCESS:
            return
        if worker.name == "analyze":
            self.analysis = worker.result
            self.query_one("#image-summary", Static).update(image_summary(self.at, self.layers, self.analysis))
            for screen in self.screen_stack:
                if isinstance(screen, WastedScreen):
                    screen.show(worker.result)
        elif worker in self.computing:
            key = self.computing.pop(worker)
            self.views[key] = worker.result
            if key == (self.selected, self.aggregate):
                self._show(worker.result)

    # -- events and actions ---------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The main screen's keys work (and show) only there, not over a file or the table."""
        if action in MAIN_ONLY and len(self.screen_stack) > 1:
            return False
        return True

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "layers" and event.row_key.value is not None:
            self.select(int(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "layers":
            self.tree.focus()

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        data = event.node.data
        if isinstance(data, More):
            self.tree.more(event.node)
        elif isinstance(data, Entry) and data.node.kind != DIRECTORY:
            self.open_entry(data)

    def open_entry(self, entry: Entry) -> None:
        before, after = self._states(self.selected, self.aggregate)
        text, is_diff = entry_text(before, after, entry.path, entry.node, entry.kind)
        where = f"layer {self.selected}" if not self.aggregate else f"layers up to {self.selected}"
        title = shown_name(entry.path) + (f"   {LETTER[entry.kind]} in {where}" if entry.kind else "")
        if entry.kind == MODIFIED and not is_diff:
            change = (self.views.get((self.selected, self.aggregate)) or ChangeView({}, {}, {}, {})).by_path.get(
                entry.path)
            title += "   (content unchanged" + (f": {', '.join(change.fields)} changed)" if change else ")")
        self.push_screen(ContentScreen(title, text, is_diff))

    def action_changed_only(self) -> None:
        self.tree.shown ^= {UNMODIFIED}
        self._refilter()

    def action_kind(self, kind: str) -> None:
        self.tree.shown ^= {kind}
        self._refilter()

    def _refilter(self) -> None:
        self.tree.refilter()
        self._title(self.tree.view)

    def action_aggregate(self) -> None:
        self.aggregate = not self.aggregate
        number, self.selected = self.selected, 0
        self.select(number)

    def action_collapse(self) -> None:
        self.tree.collapse_everything()

    def action_wasted(self) -> None:
        self.push_screen(WastedScreen())


# -- timing hook for the bench ------------------------------------------------------------

def first_screen_timings(store_root: str | Path, ref: str, size: tuple[int, int] = (160, 48),
                         wait_all: bool = True) -> dict[str, float]:
    """Seconds from opening the store: `load` (the image's layers and their states),
    `first_screen` (drawn with the layer list and the tree filled in), and, with
    `wait_all`, `changes` (the selected layer's markers shown) and `analysis`."""
    start = time.perf_counter()
    store = Store(Path(store_root))
    store.check()
    at, layers = load(store, ref)
    timings = {"load": time.perf_counter() - start}
    app = InspectApp(at, layers)

    async def drive() -> None:
        async with app.run_test(size=size) as pilot:
            await app.first_screen.wait()
            timings["first_screen"] = time.perf_counter() - start
            if wait_all:
                await app.marked.wait()
                timings["changes"] = time.perf_counter() - start
                await app.workers.wait_for_complete()
                timings["analysis"] = time.perf_counter() - start
            await pilot.press("q")

    asyncio.run(drive())
    return timings
