"""Every key of the review screen, in one list (the footer, the help screen and extensions
all read it). An extension such as ui/training.py adds its Binding here and an `action_*`
method via `ReviewScreen.extension_actions`."""

from __future__ import annotations

from textual.binding import Binding

ALT_KEYS = tuple(str(n) for n in range(1, 10))

REVIEW_BINDINGS: list[Binding] = [
    Binding("a,enter", "accept", "Accept", key_display="a", id="review.accept",
            tooltip="Accept the proposed label (and the caption, unless you marked it)"),
    *[
        Binding(k, f"alternative({k})", "Alt", show=k == "1", key_display="1-9",
                id=f"review.alternative.{k}",
                tooltip="Take alternative N (1-9) as the label")
        for k in ALT_KEYS
    ],
    Binding("l", "pick_label", "Label", id="review.pick_label",
            tooltip="Pick a label from the vocabulary (fuzzy search)"),
    Binding("e", "edit_caption", "Edit", id="review.edit_caption",
            tooltip="Edit the caption in place (ctrl+s saves, esc cancels)"),
    Binding("x", "reject_caption", "Reject", id="review.reject_caption",
            tooltip="Mark the proposed caption unacceptable"),
    Binding("space", "skip", "Skip", key_display="spc", id="review.skip",
            tooltip="Skip this image (recorded)"),
    Binding("u", "undo", "Undo", id="review.undo", tooltip="Undo your last decision"),
    Binding("right,n", "move(1)", "Next", show=False, key_display="→/n", id="review.next",
            tooltip="Next image without deciding"),
    Binding("left,p", "move(-1)", "Prev", show=False, key_display="←/p", id="review.prev",
            tooltip="Previous image"),
    Binding("g", "goto", "Go to", show=False, id="review.goto",
            tooltip="Go to an index in the queue"),
    Binding("f", "filter", "Filter", show=False, id="review.filter",
            tooltip="Filter: pending, accepted, corrected, by label, confidence range"),
    Binding("s", "order", "Order", show=False, id="review.order",
            tooltip="Order: least confident first, dataset order, random with a seed"),
    Binding("d", "toggle_truth", "Dataset label", show=False, id="review.toggle_truth",
            tooltip="Show or hide the dataset label (not with --blind)"),
    Binding("question_mark", "help", "Help", key_display="?", id="review.help",
            tooltip="All keys"),
    Binding("q", "quit_review", "Quit", id="review.quit",
            tooltip="Quit (your decisions are already saved)"),
]
