"""Blind caption grading: one image, its captions unnamed and shuffled, graded by keyboard.

Nothing on screen says which mode (zero-shot, few-shot, fine-tuned) wrote a caption: captions
are lettered A, B, C in the order `evaluation.grading.blind_order` drew. Each key press is
committed to `caption_grades` before the screen moves on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rich.text import Text
from sqlite_utils import Database
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..evaluation.grading import GradingItem, current_grades, save_grade
from .imaging import Rendered, RenderKey, render
from .widgets import GraphicsImage, HalfblockImage, ImageArea

LETTERS = "ABCDEFGHIJ"


class CaptionRow(Static):
    """One caption, shown literally, with its letter and the grade given so far."""

    DEFAULT_CSS = """
    CaptionRow { padding: 0 1; margin: 0 0 1 0; border: round $panel; }
    CaptionRow.-selected { border: round $accent; }
    CaptionRow.-yes { background: $success 15%; }
    CaptionRow.-no { background: $error 15%; }
    """

    def __init__(self, letter: str, text: str, grade: bool | None, selected: bool) -> None:
        super().__init__()
        self.letter, self.text = letter, text
        self.set_state(grade, selected)

    def set_state(self, grade: bool | None, selected: bool) -> None:
        mark = {None: "?  not graded", True: "✓  acceptable", False: "✗  not acceptable"}[grade]
        self.set_class(selected, "-selected")
        self.set_class(grade is True, "-yes")
        self.set_class(grade is False, "-no")
        # Text, not markup: captions are model output and must show literally.
        # The arrow marks the highlighted caption where the border colour does not show.
        self.update(Text.assemble(("▶ " if selected else "  ", "bold"),
                                  (f"{self.letter}  ", "bold"), (mark, "italic"), "\n",
                                  Text(self.text)))


class GradingScreen(Screen):
    """Grade every caption of every image: y acceptable, n not, arrows to move."""

    BINDINGS = [
        Binding("y", "grade(True)", "acceptable", id="grade-yes",
                tooltip="Mark the highlighted caption acceptable (saved at once)"),
        Binding("n", "grade(False)", "not acceptable", id="grade-no",
                tooltip="Mark the highlighted caption not acceptable (saved at once)"),
        Binding("down,j", "move(1)", "next caption", id="caption-next",
                tooltip="Highlight the next caption"),
        Binding("up,k", "move(-1)", "previous caption", id="caption-prev",
                tooltip="Highlight the previous caption"),
        Binding("right,l", "image(1)", "next image", id="image-next",
                tooltip="Go to the next image"),
        Binding("left,h", "image(-1)", "previous image", id="image-prev",
                tooltip="Go to the previous image"),
        Binding("q", "app.quit", "quit", id="quit",
                tooltip="Quit; every grade is already saved"),
    ]

    class Graded(Message):
        """Posted after a grade is committed (for tests and observers)."""

        def __init__(self, image_id: int, prediction_ids: tuple[int, ...],
                     acceptable: bool) -> None:
            super().__init__()
            self.image_id, self.prediction_ids, self.acceptable = (
                image_id, prediction_ids, acceptable)

    class PictureReady(Message):
        """A rendered image from the decoder thread."""

        def __init__(self, rendered: Rendered) -> None:
            super().__init__()
            self.rendered = rendered

    def __init__(self, db: Database, items: list[GradingItem], *, session: str,
                 grader: str, graphics: str | None = "halfblock") -> None:
        """`graphics`: kitty, sixel or halfblock, as `ui.imaging.detect_graphics` resolved it
        before the app started; None shows no image."""
        super().__init__()
        self.db, self.items, self.session, self.grader = db, items, session, grader
        self.graphics = graphics
        self.grades = current_grades(db, session, grader)
        self.index = self._first_open_image()
        self.selected = 0

    # ---- state helpers ----------------------------------------------------------------

    def grade_of(self, item: GradingItem, n: int) -> bool | None:
        return self.grades.get(item.captions[n].prediction_ids[0])

    def _open(self, item: GradingItem) -> list[int]:
        return [n for n in range(len(item.captions)) if self.grade_of(item, n) is None]

    def _first_open_image(self) -> int:
        return next((i for i, it in enumerate(self.items) if self._open(it)), 0)

    @property
    def item(self) -> GradingItem:
        return self.items[self.index]

    def graded_count(self) -> int:
        return sum(not self._open(it) for it in self.items)

    # ---- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="grading-title")
        with Horizontal(id="grading-body"):
            if self.graphics in ("kitty", "sixel"):
                yield GraphicsImage(self.graphics, id="grading-image")
            elif self.graphics is not None:
                yield HalfblockImage(id="grading-image")
            with Vertical(id="grading-side"):
                yield Static(id="grading-path")
                yield VerticalScroll(id="grading-captions")
                yield Static(Text("Captions are unnamed and shuffled. y acceptable, n not, "
                                  "↑↓ caption, ←→ image; every key press is saved."),
                             id="grading-hint")
        yield Footer()

    async def on_mount(self) -> None:
        await self.show_item()

    async def show_item(self) -> None:
        """Show the current image, its path and its caption rows."""
        item = self.item
        open_rows = self._open(item)
        self.selected = open_rows[0] if open_rows else 0
        self.request_picture()
        self.query_one("#grading-path", Static).update(Text(item.rel_path, style="dim"))
        box = self.query_one("#grading-captions", VerticalScroll)
        await box.remove_children()
        await box.mount_all(
            CaptionRow(LETTERS[n], c.text, self.grade_of(item, n), n == self.selected)
            for n, c in enumerate(item.captions)
        )
        self.refresh_title()

    def request_picture(self) -> None:
        """Render the current image for the image area's size, off the UI thread."""
        if self.graphics is None:
            return
        area = self.query_one("#grading-image", ImageArea)
        mode = self.graphics if self.graphics in ("kitty", "sixel") else "halfblock"
        self._decode_picture(self.item.path, RenderKey(self.item.image_id, *area.cells(), mode))

    @work(thread=True, exclusive=True, group="grading-picture")
    def _decode_picture(self, path: Path, key: RenderKey) -> None:
        self.post_message(self.PictureReady(render(path, key)))

    def on_grading_screen_picture_ready(self, message: PictureReady) -> None:
        area = self.query_one("#grading-image", ImageArea)
        if message.rendered.key.image_id != self.item.image_id:
            return  # the grader has moved on
        if message.rendered.error:
            area.show_message(Text(message.rendered.error))
        else:
            area.show(message.rendered)

    def on_image_area_resized(self, message: ImageArea.Resized) -> None:
        self.request_picture()

    def refresh_rows(self) -> None:
        for n, row in enumerate(self.query(CaptionRow)):
            row.set_state(self.grade_of(self.item, n), n == self.selected)
        self.refresh_title()

    def refresh_title(self) -> None:
        done = self.graded_count()
        title = Text.assemble(
            ("Blind caption grading", "bold"),
            f"   image {self.index + 1} / {len(self.items)}"
            f"   fully graded {done} / {len(self.items)}   grader: ",
            Text(self.grader),
        )
        if done == len(self.items):
            title.append("   all graded: q quits, `sportvlm eval` shows the results",
                         style="bold green")
        self.query_one("#grading-title", Static).update(title)

    # ---- actions ------------------------------------------------------------------------

    async def action_grade(self, acceptable: bool) -> None:
        item = self.item
        caption = item.captions[self.selected]
        was_complete = not self._open(item)
        try:
            save_grade(self.db, session=self.session, grader=self.grader,
                       image_id=item.image_id, caption=caption, acceptable=acceptable)
        except sqlite3.Error as exc:
            # Not saved, so the screen stays where it is; the grader can press again.
            self.notify(f"grade not saved: {exc}", severity="error", markup=False)
            return
        for pid in caption.prediction_ids:
            self.grades[pid] = acceptable
        self.post_message(self.Graded(item.image_id, caption.prediction_ids, acceptable))
        if was_complete:
            # Changing a grade on a finished image: stay here, step to the next caption.
            self.selected = min(self.selected + 1, len(item.captions) - 1)
            self.refresh_rows()
            return
        open_rows = self._open(item)
        later = [n for n in open_rows if n > self.selected]
        if later or open_rows:
            self.selected = (later or open_rows)[0]
            self.refresh_rows()
            return
        nxt = next((i for i in range(self.index + 1, len(self.items))
                    if self._open(self.items[i])), None)
        if nxt is None:
            self.refresh_rows()
            return
        self.index = nxt
        await self.show_item()

    def action_move(self, step: int) -> None:
        self.selected = (self.selected + step) % len(self.item.captions)
        self.refresh_rows()

    async def action_image(self, step: int) -> None:
        target = self.index + step
        if 0 <= target < len(self.items):
            self.index = target
            await self.show_item()


class GradingApp(App):
    """`sportvlm grade`: the grading screen on its own."""

    CSS_PATH = "grading.tcss"
    TITLE = "sportvlm grade"

    def __init__(self, db: Database, items: list[GradingItem], *, session: str, grader: str,
                 graphics: str | None = "halfblock") -> None:
        super().__init__()
        self.grading = GradingScreen(db, items, session=session, grader=grader,
                                     graphics=graphics)

    def on_mount(self) -> None:
        self.push_screen(self.grading)
