"""The right pane of `inspect --tui`: the merged tree of one state, loaded lazily, with
the change markers of one comparison (a layer over the one below, or the layers above
the base over it).

Only the directories the user opened have widgets (a Tree node per entry shown); a
directory's children are added when it is first expanded, at most CHUNK at a time.
Paths the compared-with state held and the shown one deleted appear as D rows, from
that older state.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from layerfs.cli.output import human_size
from layerfs.inspect.changes import ADDED, DELETED, KINDS, LETTER, MODIFIED, PathChange, lookup
from layerfs.layer.index import DIRECTORY, SYMLINK
from layerfs.union.tree import FILE_TYPE, Node

UNMODIFIED = "unmodified"
CHUNK = 1000  # children added per expansion; a "more" row adds the next ones
STYLE = {ADDED: "bold green", MODIFIED: "bold yellow", DELETED: "bold red"}


def join(parent: bytes, name: bytes) -> bytes:
    return (b"" if parent == b"/" else parent) + b"/" + name


def parent_of(path: bytes) -> bytes:
    return path.rpartition(b"/")[0] or b"/"


def shown_name(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


@dataclass
class ChangeView:
    """One comparison's changes, indexed for the tree: by path, the names deleted in
    each directory, and the kinds of change below each directory."""

    by_path: dict[bytes, PathChange]
    deleted_in: dict[bytes, list[bytes]]
    kinds_below: dict[bytes, set[str]]
    counts: dict[str, int]

    @classmethod
    def of(cls, changes: Iterable[PathChange]) -> "ChangeView":
        by_path: dict[bytes, PathChange] = {}
        deleted_in: dict[bytes, list[bytes]] = {}
        kinds_below: dict[bytes, set[str]] = {}
        counts = dict.fromkeys(KINDS, 0)
        for change in changes:
            path, kind = change.path, change.kind
            by_path[path] = change
            counts[kind] += 1
            if path == b"/":
                continue
            if kind == DELETED:
                deleted_in.setdefault(parent_of(path), []).append(path.rpartition(b"/")[2])
            up = path
            while up != b"/":  # an ancestor with this kind has it all the way up
                up = parent_of(up)
                below = kinds_below.setdefault(up, set())
                if kind in below:
                    break
                below.add(kind)
        return cls(by_path, deleted_in, kinds_below, counts)


@dataclass
class Entry:
    """What a tree row shows: a path of the shown state (or of the older one, deleted)."""

    path: bytes
    node: Node
    kind: str | None          # its change, None when unchanged
    deleted: bool = False     # only the older state has it
    loaded: bool = False


@dataclass
class More:
    """The row after CHUNK children: selecting it adds the next ones."""

    parent: TreeNode
    rows: list[Entry] = field(default_factory=list)


def label(name: bytes, entry: Entry, below: set[str] | None = None) -> Text:
    """One row: the change's letter, mode, owner, size, name; a directory holding
    changes ends with their letters (‹A C D›)."""
    node, kind = entry.node, entry.kind
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{LETTER.get(kind, ' ') if kind else ' '} ", STYLE.get(kind or "", ""))
    size = human_size(node.size) if node.kind != DIRECTORY else ""
    text.append(f"{stat.filemode(FILE_TYPE[node.kind] | node.mode)} {node.uid:>5}:{node.gid:<5} {size:>8}  ",
                "dim")
    style = STYLE.get(kind or "", "")
    if node.kind == DIRECTORY:
        style = (style + " bold").strip() if kind else "bold"
    text.append(shown_name(name), style)
    if node.kind == SYMLINK:
        text.append(" → " + shown_name(node.target), "dim")
    if below and not entry.deleted:
        text.append("  ‹", "dim")
        text.append_text(Text(" ").join(Text(LETTER[k], STYLE[k]) for k in KINDS if k in below))
        text.append("›", "dim")
    return text


class FileTree(Tree):
    """The tree of `after` marked with `view`'s changes (None: still being computed)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("/", **kwargs)  # type: ignore[arg-type]
        self.show_root = False
        self.guide_depth = 2
        self.before: Node | None = None
        self.after: Node | None = None
        self.view: ChangeView | None = None
        self.shown: set[str] = {ADDED, MODIFIED, DELETED, UNMODIFIED}
        self.expanded: set[bytes] = set()  # what the user opened, kept across layers

    # -- what to show ---------------------------------------------------------------

    def show(self, before: Node, after: Node, view: ChangeView | None) -> None:
        """Show `after` compared with `before`; keep what was open and the cursor's path."""
        cursor = self.cursor_node.data if self.cursor_node is not None else None
        self.before, self.after, self.view = before, after, view
        self.clear()
        self.root.data = Entry(b"/", after, None)
        self._load(self.root)
        self.root.expand()
        if not (isinstance(cursor, Entry) and self.reveal(cursor.path, open_parents=False)) \
                and self.cursor_line < 0 and self.root.children:
            self.cursor_line = 0

    def refilter(self) -> None:
        if self.before is not None and self.after is not None:
            self.show(self.before, self.after, self.view)

    def _visible(self, entry: Entry) -> bool:
        if entry.kind is None:
            if UNMODIFIED in self.shown:
                return True
        elif entry.kind in self.shown:
            return True
        if entry.node.kind == DIRECTORY and not entry.deleted and self.view is not None:
            return bool(self.view.kinds_below.get(entry.path, set()) & self.shown)
        return False

    def _rows(self, entry: Entry) -> list[tuple[bytes, Entry]]:
        """The children of a directory row, sorted by name, filtered."""
        children = entry.node.children or {}
        by_path = self.view.by_path if self.view is not None else {}
        rows = []
        for name, child in children.items():
            path = join(entry.path, name)
            if entry.deleted:
                rows.append((name, Entry(path, child, DELETED, True)))
            else:
                change = by_path.get(path)
                rows.append((name, Entry(path, child, change.kind if change else None)))
        if not entry.deleted and self.view is not None and self.before is not None:
            for name in self.view.deleted_in.get(entry.path, []):
                old = lookup(self.before, join(entry.path, name))
                if old is not None:
                    rows.append((name, Entry(join(entry.path, name), old, DELETED, True)))
        rows.sort(key=lambda row: row[0])
        return [row for row in rows if self._visible(row[1])]

    def _load(self, tree_node: TreeNode) -> None:
        entry = tree_node.data
        if not isinstance(entry, Entry) or entry.loaded:
            return
        entry.loaded = True
        self._add_rows(tree_node, [e for _, e in self._rows(entry)])

    def _add_rows(self, parent: TreeNode, rows: list[Entry]) -> None:
        kinds_below = self.view.kinds_below if self.view is not None else {}
        for entry in rows[:CHUNK]:
            name = entry.path.rpartition(b"/")[2]
            if entry.node.kind == DIRECTORY:
                below = kinds_below.get(entry.path, set()) & self.shown
                child = parent.add(label(name, entry, below), entry, allow_expand=True)
                if entry.path in self.expanded:
                    self._load(child)
                    child.expand()
            else:
                parent.add_leaf(label(name, entry), entry)
        if len(rows) > CHUNK:
            parent.add_leaf(Text(f"  … {len(rows) - CHUNK} more (enter)", "italic"), More(parent, rows[CHUNK:]))

    def more(self, tree_node: TreeNode) -> None:
        rest = tree_node.data
        if isinstance(rest, More):
            tree_node.remove()
            self._add_rows(rest.parent, rest.rows)

    def reveal(self, path: bytes, open_parents: bool = True) -> bool:
        """Put the cursor on `path`, opening its parents (or, not asked to, only when
        they are open); False when the path is not shown."""
        node = self.root
        for part in path.strip(b"/").split(b"/") if path.strip(b"/") else []:
            if node is not self.root and not node.is_expanded:
                if not open_parents:
                    return False
                node.expand()
            self._load(node)
            want = join(node.data.path, part)
            node = next((c for c in node.children if isinstance(c.data, Entry) and c.data.path == want), None)
            if node is None:
                return False
        if node is not self.root:
            self.call_after_refresh(self.move_cursor, node)  # its line is known once drawn
        return True

    # -- events ---------------------------------------------------------------------

    def on_tree_node_expanded(self, event: Tree.NodeExpanded) -> None:
        entry = event.node.data
        if isinstance(entry, Entry):
            self._load(event.node)
            if event.node is not self.root:
                self.expanded.add(entry.path)

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed) -> None:
        entry = event.node.data
        if isinstance(entry, Entry):
            self.expanded.discard(entry.path)

    def collapse_everything(self) -> None:
        self.expanded.clear()
        for child in self.root.children:
            child.collapse_all()

    def labels(self, node: TreeNode | None = None) -> dict[str, str]:
        """Path -> label text of every row loaded (for tests and the bench)."""
        found: dict[str, str] = {}
        for child in (node or self.root).children:
            if isinstance(child.data, Entry):
                found[shown_name(child.data.path)] = str(child.label.plain)
                found.update(self.labels(child))
        return found
