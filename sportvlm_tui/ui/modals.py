"""Modal screens. Each returns its answer through dismiss() (ModalScreen[T]) instead of
reaching into the screen below."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.fuzzy import FuzzySearch
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from ..storage.review_queue import ORDERS, STATUSES, QueueSpec

CANCEL = Binding("escape", "cancel", "Cancel", id="modal.cancel", tooltip="Close without change")


class _Modal(ModalScreen[None]):
    BINDINGS = [CANCEL]

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(_Modal):
    """Every review key with what it does (read from the one bindings list)."""

    BINDINGS = [CANCEL, Binding("question_mark,q", "cancel", "Close", id="help.close",
                                tooltip="Close the help")]

    def __init__(self, bindings, blind: bool) -> None:
        super().__init__()
        self._review_bindings = bindings
        self._blind = blind

    def compose(self) -> ComposeResult:
        # A two-column grid, so a long description wraps under itself, not under the keys.
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold", no_wrap=True)
        table.add_column()
        seen = set()
        for b in self._review_bindings:
            key = b.key_display or b.key
            if key in seen:
                continue
            seen.add(key)
            keys = key if b.key_display else " / ".join(b.key.split(","))
            table.add_row(Text(keys), Text(b.tooltip or b.description))
        notes = Text("While editing a caption: ctrl+s saves, esc cancels; other keys type.",
                     "dim")
        if self._blind:
            notes.append("\nBlind mode: the dataset label stays hidden.")
        with Vertical(id="dialog"):
            yield Label("Keys", classes="title")
            # Scrolls when the terminal is shorter than the list (80x24).
            with VerticalScroll(id="help-scroll"):
                yield Static(table, id="help-table")
                yield Static(notes, id="help-notes")
            yield Label("esc or ? to close", classes="hint")


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no. The question is literal text."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes", tooltip="Yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no", tooltip="No"),
    ]

    def __init__(self, question: Text) -> None:
        super().__init__()
        self._question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._question, id="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="primary")
                yield Button("No (n)", id="no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


def fuzzy_rank(query: str, labels: list[str], limit: int = 200) -> list[tuple[str, list[int]]]:
    """Labels matching `query` (fuzzy), best first, with the matched character offsets."""
    if not query.strip():
        return [(lab, []) for lab in labels[:limit]]
    search = FuzzySearch()
    scored = []
    for lab in labels:
        score, offsets = search.match(query, lab)
        if score > 0:
            scored.append((-score, lab, list(offsets)))
    scored.sort()
    return [(lab, offs) for _, lab, offs in scored[:limit]]


def highlighted(label: str, offsets: list[int]) -> Content:
    # Content(label) is literal; Matcher.highlight would parse the label as markup.
    content = Content(label)
    for o in offsets:
        content = content.stylize("bold reverse", o, o + 1)
    return content


class LabelPicker(ModalScreen[str | None]):
    """Fuzzy search over the label vocabulary; a label not in it needs a confirmation."""

    BINDINGS = [
        CANCEL,
        Binding("down", "cursor(1)", "Down", show=False, id="picker.down",
                tooltip="Next match"),
        Binding("up", "cursor(-1)", "Up", show=False, id="picker.up", tooltip="Previous match"),
    ]

    def __init__(self, vocabulary: list[str]) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Label", classes="title")
            yield Input(placeholder="type to search; enter picks", id="query")
            yield OptionList(id="matches")
            yield Label("enter: pick · ↑↓: move · esc: cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).can_focus = False
        self._refill("")

    def _refill(self, query: str) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(
            Option(highlighted(lab, offs), id=f"l{k}")
            for k, (lab, offs) in enumerate(fuzzy_rank(query, self.vocabulary))
        )
        self._shown = [lab for lab, _ in fuzzy_rank(query, self.vocabulary)]
        if self._shown:
            options.highlighted = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self._refill(event.value)

    def action_cursor(self, step: int) -> None:
        options = self.query_one(OptionList)
        if self._shown:
            cur = options.highlighted or 0
            options.highlighted = max(0, min(len(self._shown) - 1, cur + step))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(self._shown[event.option_index])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        typed = event.value.strip()
        options = self.query_one(OptionList)
        exact = [lab for lab in self.vocabulary if lab == typed]
        if exact:
            self._choose(exact[0])
        elif self._shown and options.highlighted is not None and typed:
            self._choose(self._shown[options.highlighted])
        elif typed:
            self._choose(typed)
        elif self._shown and options.highlighted is not None:
            self._choose(self._shown[options.highlighted])

    def _choose(self, label: str) -> None:
        if label in self.vocabulary:
            self.dismiss(label)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.dismiss(label)

        question = Text.assemble("“", (label, "bold"), "” is not in the vocabulary. Add it?")
        self.app.push_screen(ConfirmScreen(question), confirmed)


class GotoScreen(ModalScreen[int | None]):
    """Ask for a 1-based index in the queue."""

    BINDINGS = [CANCEL]

    def __init__(self, size: int | None) -> None:
        super().__init__()
        self.queue_size = size

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Go to", classes="title")
            hint = f"1-{self.queue_size}" if self.queue_size else "index"
            yield Input(placeholder=hint, type="integer", id="index")
            yield Label("enter: go · esc: cancel", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            n = int(event.value)
        except ValueError:
            self.notify(f"not a number: {event.value}", severity="warning", markup=False)
            return
        if n < 1:
            self.notify("the first image is 1", severity="warning")
            return
        self.dismiss(n)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _float_or_none(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


class FilterScreen(ModalScreen[QueueSpec | None]):
    """Status, proposed label and confidence range of the queue."""

    BINDINGS = [CANCEL, Binding("ctrl+s", "apply", "Apply", id="filter.apply",
                                tooltip="Apply the filter")]

    def __init__(self, spec: QueueSpec) -> None:
        super().__init__()
        self.spec = spec

    def compose(self) -> ComposeResult:
        s = self.spec
        with Vertical(id="dialog"):
            yield Label("Filter", classes="title")
            yield Select([(name, name) for name in STATUSES], value=s.status, allow_blank=False,
                         id="status")
            yield Input(value=s.label or "", placeholder="proposed label (empty: any)",
                        id="label")
            with Horizontal(classes="range"):
                yield Input(value="" if s.min_conf is None else f"{s.min_conf:g}",
                            placeholder="min conf", type="number", id="min")
                yield Input(value="" if s.max_conf is None else f"{s.max_conf:g}",
                            placeholder="max conf", type="number", id="max")
            yield Label("enter/ctrl+s: apply · esc: cancel", classes="hint")

    def action_apply(self) -> None:
        try:
            spec = self.spec.with_(
                status=str(self.query_one("#status", Select).value),
                label=self.query_one("#label", Input).value.strip() or None,
                min_conf=_float_or_none(self.query_one("#min", Input).value),
                max_conf=_float_or_none(self.query_one("#max", Input).value),
            )
        except ValueError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.dismiss(spec)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_apply()

    def action_cancel(self) -> None:
        self.dismiss(None)


class OrderScreen(ModalScreen[tuple[str, int] | None]):
    """Least confident first, dataset order, or random with a seed."""

    BINDINGS = [CANCEL]
    NAMES = {"confidence": "least confident first", "dataset": "dataset order",
             "random": "random (seed below)"}

    def __init__(self, order: str, seed: int) -> None:
        super().__init__()
        self.order, self.seed = order, seed

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Order", classes="title")
            yield OptionList(*[Option(self.NAMES[o], id=o) for o in ORDERS], id="orders")
            yield Input(value=str(self.seed), type="integer", placeholder="seed", id="seed")
            yield Label("enter: choose · tab: seed · esc: cancel", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = ORDERS.index(self.order)
        options.focus()

    def _seed(self) -> int | None:
        try:
            return int(self.query_one("#seed", Input).value or 0)
        except ValueError:
            self.notify("the seed must be an integer", severity="warning")
            return None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        seed = self._seed()
        if seed is not None:
            self.dismiss((str(event.option.id), seed))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        seed = self._seed()
        highlighted = self.query_one(OptionList).highlighted
        if seed is not None:
            self.dismiss((ORDERS[highlighted or 0], seed))

    def action_cancel(self) -> None:
        self.dismiss(None)
