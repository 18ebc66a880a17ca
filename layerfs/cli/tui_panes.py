"""The text panes of `inspect --tui`'s main screen: the image's summary, the selected
layer's details, and the tree's title line (what it compares, the counts, the filters)."""

from __future__ import annotations

from rich.text import Text

from layerfs.cli.output import ago, human_size, one_line
from layerfs.cli.references import ImageAt
from layerfs.cli.tui_tree import STYLE, UNMODIFIED, ChangeView
from layerfs.inspect.analyze import Analysis
from layerfs.inspect.changes import ADDED, DELETED, LETTER, MODIFIED
from layerfs.inspect.layers import Layer

KEY_KIND = {"1": ADDED, "2": MODIFIED, "3": DELETED}


def _counts(text: Text, view: ChangeView) -> None:
    for kind in (ADDED, MODIFIED, DELETED):
        text.append(f"{LETTER[kind]} {view.counts[kind]}  ", STYLE[kind])


def image_summary(at: ImageAt, layers: list[Layer], analysis: Analysis | None) -> Text:
    text = Text(at.label, "bold")
    text.append(f"  {at.image.short_id}  {len(layers)} layers  {human_size(sum(x.size for x in layers))}\n")
    if analysis is None:
        text.append("efficiency, wasted: analyzing…", "dim")
    else:
        text.append(f"efficiency {analysis.efficiency * 100:.2f} %  wasted {human_size(analysis.wasted)} "
                    f"({analysis.user_wasted_ratio * 100:.1f} % of the bytes above the base)")
    return text


def layer_details(layer: Layer, total: int, own: ChangeView | None) -> Text:
    """`own`: the layer's own changes, once known."""
    h = layer.history
    text = Text(f"Layer {layer.number} of {total}\n", "bold")
    text.append(f"digest  {layer.digest}\n")
    if layer.diff_id != layer.digest:
        text.append(f"diff id {layer.diff_id}\n")
    text.append(f"size    {human_size(layer.size)} (blob {human_size(layer.blob_size)})\n")
    if h.get("created"):
        text.append(f"created {h['created']} ({ago(str(h['created']))})\n")
    if h.get("created_by"):
        text.append(f"command {one_line(h['created_by'])}\n")
    if h.get("comment"):
        text.append(f"comment {h['comment']}\n")
    if own is None:
        text.append("changes computing…", "dim")
    else:
        text.append("changes ")
        _counts(text, own)
    return text


def tree_title(number: int, aggregate: bool, view: ChangeView | None, shown: set[str]) -> Text:
    what = (f"layers 2..{number} over the base (aggregated)" if aggregate and number > 1
            else f"layer {number}'s changes" + (" (aggregated: the base)" if aggregate else ""))
    text = Text(f"/ as of layer {number}: {what}\n", "bold")
    if view is None:
        text.append("computing the changes…", "dim")
    else:
        _counts(text, view)
    text.append("  showing: ")
    for key, kind in KEY_KIND.items():
        on = kind in shown
        text.append(f"{key}:{LETTER[kind]}{'' if on else ' off'} ", STYLE[kind] if on else "dim strike")
    everything = UNMODIFIED in shown
    text.append("c:all" if everything else "c:changed only", "" if everything else "reverse")
    return text
