"""What the side panel and status line say, as rich Text built from literal strings only."""

from __future__ import annotations

from rich.text import Text

from ..storage.review_queue import QueueSpec
from .session import Item, Stats


def alternatives(item: Item) -> list[tuple[str, float]]:
    """The model's other candidates, numbered 1-9 on screen (the proposal itself left out)."""
    if item.label is None:
        return []
    out = [(lab, p) for lab, p in item.label.topk if lab != item.label.text]
    return out[:9]


def _conf(p: float | None) -> str:
    return "   ?" if p is None else f"{p:4.0%}"


def label_text(item: Item) -> Text:
    out = Text()
    out.append("Proposed label\n", "bold underline")
    if item.label is None:
        out.append("(no prediction; press l to pick one)\n", "dim italic")
    else:
        out.append(item.label.text or "(empty answer)", "bold reverse" if item.label.text
                   else "dim")
        out.append(f"  {_conf(item.label.confidence)}\n", "cyan")
    decision = item.label_decision
    if decision:
        word = {"accept": "accepted", "correct": "corrected"}.get(decision["decision"],
                                                                   decision["decision"])
        out.append("✓ ", "green")
        out.append(word, "green")
        if decision["decision"] == "correct":
            out.append(" → ")
            out.append(str(decision["value"]), "bold")
        out.append(" by ")
        out.append(str(decision["annotator"]), "dim")
        out.append("\n")
    if item.skipped:
        out.append("skipped by ", "yellow")
        out.append(str(item.state["image"]["annotator"]), "dim")
        out.append("\n")
    alts = alternatives(item)
    if alts:
        out.append("\nAlternatives\n", "bold underline")
        for n, (lab, p) in enumerate(alts, 1):
            out.append(f" {n} ", "bold reverse")
            out.append(" ")
            out.append(lab)
            out.append(f"  {_conf(p)}\n", "cyan")
    return out


def caption_text(item: Item) -> Text:
    out = Text()
    out.append("Proposed caption\n", "bold underline")
    decision = item.caption_decision
    if item.caption is None and not decision:
        out.append("(no caption prediction)", "dim italic")
        return out
    if item.caption is not None:
        style = "strike dim" if decision and decision["decision"] == "reject" else ""
        out.append(item.caption.text, style)
    if decision:
        out.append("\n")
        kind = decision["decision"]
        if kind == "reject":
            out.append("✗ unacceptable", "red")
        elif kind == "correct":
            out.append("✎ corrected: ", "green")
            out.append(str(decision["value"]))
        else:
            out.append("✓ accepted", "green")
        out.append(" by ")
        out.append(str(decision["annotator"]), "dim")
    return out


def truth_text(item: Item, *, blind: bool, shown: bool) -> Text:
    out = Text()
    out.append("Dataset label  ", "bold")
    if blind:
        out.append("hidden (--blind)", "dim italic")
    elif not shown:
        out.append("hidden (d shows)", "dim italic")
    elif item.image.label is None:
        out.append("unknown", "dim italic")
    else:
        out.append(item.image.label)
        if item.label is not None and item.label.text == item.image.label:
            out.append("  =", "green")
        elif item.label is not None:
            out.append("  ≠", "red")
    return out


def file_text(item: Item) -> Text:
    out = Text()
    out.append("File  ", "bold")
    out.append(item.image.rel_path)
    out.append("\nSplit ", "bold")
    out.append(item.image.split or "(none)")
    out.append(f"   {item.image.width}×{item.image.height}", "dim")
    if item.label is not None:
        out.append("\nModel ", "bold")
        out.append(item.label.model)
        if item.label.adapter:
            out.append(" + ")
            out.append(item.label.adapter)
        out.append(f" ({item.label.mode})", "dim")
    return out


def status_text(item: Item | None, stats: Stats | None, spec: QueueSpec, annotator: str,
                rate: float | None) -> Text:
    out = Text()
    if item is not None:
        out.append(f"#{item.position}", "bold")
        if stats is not None:
            out.append(f" of {stats.queue}")
        out.append("  ")
    if stats is not None:
        pct = stats.done / stats.total if stats.total else 0.0
        out.append(f"done {stats.done}/{stats.total} ({pct:.0%})", "green")
        out.append("  ")
    out.append("–/min" if rate is None else f"{rate:.1f}/min", "cyan")
    out.append("  ")
    out.append(spec.describe(), "dim")
    out.append("  ")
    out.append(annotator, "bold")
    return out
