"""The review screen: one image, the model's proposal, and keys to decide.

All database work runs in one store thread (a worker reading a job queue, so jobs run in the
order keys were pressed and a decision is committed before the next image is chosen); image
decode runs in a decoder thread that also renders the next images ahead into an LRU cache.
Both post messages; only message handlers touch widgets.
"""

from __future__ import annotations

import gc
import itertools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from ..storage.db import connect
from ..storage.images import Image, label_vocabulary
from ..storage.review_queue import QueueSpec
from . import panels
from .imaging import RenderCache, Rendered, RenderKey, render
from .keys import REVIEW_BINDINGS
from .modals import FilterScreen, GotoScreen, HelpScreen, LabelPicker, OrderScreen
from .session import Action, Item, ReviewSession, StaleAction, Stats, read_stats
from .widgets import CaptionEditor, GraphicsImage, HalfblockImage, ImageArea

QUEUE_RECOUNT_S = 5.0
# Images arriving faster than this apart come from a held key (see on_item_shown).
HELD_KEY_S = 0.08
PREFETCH_DELAY_S = 0.06
# A half-block image is thousands of GC-tracked objects (a segment and a style per cell), so
# with the default thresholds a full collection, walking every cached image and all of
# Textual, ran every few images and stalled both threads for 100-300 ms. Full collections
# wait for this many young-generation passes instead (a few hundred images).
GC_FULL_EVERY = 1000
# Errors a job may meet that must become a notification, never a crash.
JOB_ERRORS = (sqlite3.Error, OSError, LookupError, ValueError)


@dataclass
class ReviewConfig:
    """What `sportvlm review` was asked for."""

    db_path: str
    annotator: str
    spec: QueueSpec
    graphics: str = "halfblock"
    blind: bool = False
    resume: bool = True
    prefetch: int = 3
    page_size: int = 50


class ItemShown(Message, bubble=False):
    """The store thread chose the image to show (None: the queue is done)."""

    def __init__(self, item: Item | None, upcoming: list[Image], note: str | None = None,
                 severity: str = "information") -> None:
        super().__init__()
        self.item, self.upcoming, self.note, self.severity = item, upcoming, note, severity

    def can_replace(self, message: Message) -> bool:
        # A newer image supersedes one not yet drawn (a held key): skip the stale redraw.
        return isinstance(message, ItemShown) and message.note is None


class StoreNote(Message, bubble=False):
    """Something to tell the annotator (a failed or ignored job); the screen stays as is."""

    def __init__(self, text: str, severity: str = "warning") -> None:
        super().__init__()
        self.text, self.severity = text, severity


class VocabularyReady(Message, bubble=False):
    def __init__(self, labels: list[str]) -> None:
        super().__init__()
        self.labels = labels


class ImageReady(Message, bubble=False):
    def __init__(self, rendered: Rendered) -> None:
        super().__init__()
        self.rendered = rendered


class StatsReady(Message, bubble=False):
    def __init__(self, stats: Stats | None) -> None:
        super().__init__()
        self.stats = stats


class SessionClosed(Message, bubble=False):
    pass


Job = Callable[[ReviewSession], Message | None]


class ReviewScreen(Screen):
    """One image at a time, decided by single keys."""

    BINDINGS = REVIEW_BINDINGS
    # Nothing takes focus by itself: review keys go to the screen until `e` opens the editor.
    AUTO_FOCUS = None

    def __init__(self, config: ReviewConfig, *, clock: Callable[[], float]) -> None:
        super().__init__()
        self.cfg = config
        self.clock = clock
        self.spec = config.spec
        self.item: Item | None = None
        self.stats: Stats | None = None
        self.show_truth = not config.blind
        self.cache = RenderCache(12)
        self.decisions = 0
        self.started = clock()
        self.vocabulary: list[str] | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._decode_q: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._wanted: RenderKey | None = None
        # Image ids worth decoding now (on screen and next up); the decoder drops the rest.
        self._relevant: set[int] = set()
        self._last_item_at = float("-inf")
        self._paint_timer = None
        self._stats_timer = None
        self._first_shown = False
        self._stats_due = False
        self._queue_counted: tuple[QueueSpec, float] | None = None

    # --- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            if self.cfg.graphics in ("kitty", "sixel"):
                yield GraphicsImage(self.cfg.graphics, id="image")
            else:
                yield HalfblockImage(id="image")
            with VerticalScroll(id="side", can_focus=False):
                yield Static(id="proposal")
                yield Static(id="caption")
                editor = CaptionEditor(id="caption-editor", soft_wrap=True)
                editor.display = False
                editor.can_focus = False
                yield editor
                yield Static(id="truth")
                yield Static(id="file")
        yield Static(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.image_area.show_message(Text("loading…", "dim"))
        self._store_loop()
        self._decode_loop()
        self._submit(lambda s: self._shown(s, s.start(resume=self.cfg.resume)))
        # Leases expire after a few minutes; keep ours while the annotator looks.
        self.set_interval(60, lambda: self._submit(lambda s: s.renew()))
        self._update_status()

    def on_unmount(self) -> None:
        self._jobs.put(None)

    @property
    def image_area(self) -> ImageArea:
        return self.query_one("#image", ImageArea)

    # --- the store thread ---------------------------------------------------------------

    def _submit(self, job: Job) -> None:
        with self._busy_lock:
            self._busy += 1
        self._jobs.put(job)

    @property
    def ready(self) -> bool:
        """The first answer from the store thread has arrived."""
        return self._first_shown

    @property
    def idle(self) -> bool:
        """No database job queued or running and no image being decoded for the screen."""
        return self.idle_ignoring_stats and not self._stats_due

    @property
    def idle_ignoring_stats(self) -> bool:
        return self._busy == 0 and self._wanted is None

    @work(thread=True, exit_on_error=False, name="store", group="store")
    def _store_loop(self) -> None:
        worker = get_current_worker()
        session = ReviewSession(connect(self.cfg.db_path), self.cfg.annotator, self.spec,
                                page_size=self.cfg.page_size)
        self.session = session
        try:
            while not worker.is_cancelled:
                try:
                    job = self._jobs.get(timeout=0.1)
                except queue.Empty:
                    continue
                if job is None:
                    break
                try:
                    message = job(session)
                except StaleAction:
                    message = StoreNote("ignored a key meant for the previous image",
                                        "information")
                except JOB_ERRORS as exc:
                    message = StoreNote(f"database: {exc} (nothing was lost; try again)",
                                        "error")
                if message is not None:
                    self.post_message(message)
                with self._busy_lock:
                    self._busy -= 1
        finally:
            try:
                session.close()
            except JOB_ERRORS:
                pass  # leases expire on their own

    def _shown(self, session: ReviewSession, item: Item | None, note: str | None = None,
               severity: str = "information") -> ItemShown:
        upcoming = session.upcoming(self.cfg.prefetch) if item is not None else []
        return ItemShown(item, upcoming, note, severity)

    # --- the decoder thread -------------------------------------------------------------

    @work(thread=True, exit_on_error=False, name="decode", group="decode")
    def _decode_loop(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                _, _, key, path = self._decode_q.get(timeout=0.1)
            except queue.Empty:
                continue
            if key.image_id not in self._relevant:
                continue  # passed already (a held key): decoding it would only add lag
            done = self.cache.get(key)
            if done is None:
                done = render(path, key)
                self.cache.put(done)
            if key == self._wanted:
                self.post_message(ImageReady(done))

    def _key_for(self, image_id: int) -> RenderKey:
        w, h = self.image_area.cells()
        mode = self.cfg.graphics if self.cfg.graphics in ("kitty", "sixel") else "halfblock"
        return RenderKey(image_id, w, h, mode)

    @staticmethod
    def clock_s() -> float:
        # Real time even when tests fix `clock` (that one only feeds the displayed rate).
        return time.monotonic()

    def _show_image(self) -> None:
        self._paint_timer = None
        if self.item is None:
            return
        key = self._key_for(self.item.image.id)
        done = self.cache.get(key)
        if done is not None:
            self._wanted = None
            self._display(done)
            return
        self._wanted = key
        self.image_area.show_message(Text("loading…", "dim"))
        # Newest first: the image on screen now beats any the annotator has already passed.
        self._decode_q.put((0, -next(self._seq), key, self.item.image.path))

    def _show_then_prefetch(self, upcoming: list[Image]) -> None:
        self._show_image()
        # Decoding ahead holds the GIL: start it once this image is painted, not during.
        self.set_timer(PREFETCH_DELAY_S, partial(self._prefetch, upcoming))

    def _prefetch(self, images: list[Image]) -> None:
        for n, image in enumerate(images, 1):
            key = self._key_for(image.id)
            if key not in self.cache:
                self._decode_q.put((n, next(self._seq), key, image.path))

    def _display(self, rendered: Rendered) -> None:
        if rendered.error:
            self.image_area.show_message(Text(rendered.error, "red"))
        else:
            self.image_area.show(rendered)
        hook = getattr(self.app, "image_shown_hook", None)
        if hook is not None and (rendered.error or not isinstance(self.image_area,
                                                                   HalfblockImage)):
            # (a half-block image reports itself while it is being drawn)
            self.call_after_refresh(hook, rendered.key.image_id)

    # --- message handlers ---------------------------------------------------------------

    def on_item_shown(self, message: ItemShown) -> None:
        self.item = message.item
        if not self._first_shown:
            self._settle_heap()
        self._first_shown = True
        if message.note:
            self.notify(message.note, severity=message.severity, markup=False)
        self._render_item()
        if self.item is None:
            self._wanted = None
            self.image_area.show_message(Text.assemble(
                ("Nothing left in this queue.\n", "bold"),
                ("f changes the filter · u undoes · q quits", "dim")))
        else:
            self._relevant = {self.item.image.id, *(i.id for i in message.upcoming)}
            now = self.clock_s()
            rapid = now - self._last_item_at < HELD_KEY_S
            self._last_item_at = now
            if self._paint_timer is not None:
                self._paint_timer.stop()
                self._paint_timer = None
            if rapid:
                # A held key: a full-image repaint costs more than the key interval, so paint
                # only once the keys pause (the text panels above are already current).
                # No decoding ahead either: it holds the GIL and would slow the keys down.
                self._wanted = None
                self.image_area.show_message(Text("…", "dim"))
                self._paint_timer = self.set_timer(
                    HELD_KEY_S, partial(self._show_then_prefetch, message.upcoming))
            else:
                self._show_then_prefetch(message.upcoming)
        self._schedule_stats()

    def on_image_ready(self, message: ImageReady) -> None:
        if message.rendered.key == self._wanted:
            self._wanted = None
            self._display(message.rendered)

    def on_store_note(self, message: StoreNote) -> None:
        self.notify(message.text, severity=message.severity, markup=False)

    def on_image_area_resized(self, message: ImageArea.Resized) -> None:
        self._show_image()

    def on_stats_ready(self, message: StatsReady) -> None:
        self._stats_due = False
        if message.stats is not None:
            self.stats = message.stats
            self._update_status()

    def on_session_closed(self, message: SessionClosed) -> None:
        self.app.exit()

    @staticmethod
    def _settle_heap() -> None:
        # Everything alive once the app is up (modules, widgets, CSS) lives for the session:
        # frozen, no collection walks it again.
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, max(GC_FULL_EVERY, gc.get_threshold()[2]))
        gc.freeze()

    def _render_item(self) -> None:
        item = self.item
        proposal, caption, truth, file = (self.query_one(f"#{n}", Static)
                                          for n in ("proposal", "caption", "truth", "file"))
        if item is None:
            for w in (proposal, caption, truth, file):
                w.update("")
        else:
            proposal.update(panels.label_text(item))
            caption.update(panels.caption_text(item))
            truth.update(panels.truth_text(item, blind=self.cfg.blind, shown=self.show_truth))
            file.update(panels.file_text(item))
        self._update_status()

    def _rate(self) -> float | None:
        elapsed = self.clock() - self.started
        if self.decisions == 0 or elapsed < 1:
            return None
        return self.decisions * 60 / elapsed

    def _update_status(self) -> None:
        self.query_one("#status", Static).update(panels.status_text(
            self.item, self.stats, self.spec, self.cfg.annotator, self._rate()))

    def _schedule_stats(self) -> None:
        self._stats_due = True
        if self._stats_timer is not None:
            self._stats_timer.stop()
        self._stats_timer = self.set_timer(0.2, self._refresh_stats)

    @work(thread=True, exclusive=True, group="stats", exit_on_error=False)
    def _refresh_stats(self) -> None:
        worker = get_current_worker()
        # A separate connection: the counts scan the queue and must not hold up decisions.
        db = getattr(self, "_stats_db", None)
        if db is None:
            db = self._stats_db = connect(self.cfg.db_path, migrate=False)
        spec, last = self.spec, self.stats
        # Recount the queue (a scan) only for a new filter or every few seconds; the done
        # count is an index lookup and is fresh after every decision.
        fresh = (last is not None and self._queue_counted is not None
                 and self._queue_counted[0] == spec
                 and self.clock() - self._queue_counted[1] < QUEUE_RECOUNT_S)
        try:
            stats = read_stats(db, spec, queue=last.queue if fresh else None)
            if not fresh:
                self._queue_counted = (spec, self.clock())
        except JOB_ERRORS:
            stats = None  # the counts are a nicety; the next decision tries again
        if not worker.is_cancelled:
            self.post_message(StatsReady(stats))

    # --- actions --------------------------------------------------------------------------

    def _decide(self, actions: list[Action], *, advance: bool, note: str | None = None) -> None:
        if self.item is None:
            self.notify("no image on screen", severity="warning")
            return
        image_id = self.item.image.id
        if advance:
            self.decisions += 1

        def job(s: ReviewSession) -> Message:
            return self._shown(s, s.decide(image_id, actions, advance=advance), note)

        self._submit(job)

    def _caption_accept(self) -> list[Action]:
        """Moving on with a label decision accepts the caption shown, unless it was marked."""
        item = self.item
        if item is None or item.caption is None or item.caption_decision is not None:
            return []
        return [Action("caption", "accept", item.caption.text, item.caption.id)]

    def _label_action(self, value: str) -> Action:
        pred = self.item.label if self.item is not None else None
        if pred is not None and value == pred.text:
            return Action("label", "accept", value, pred.id)
        return Action("label", "correct", value, pred.id if pred is not None else None)

    def action_accept(self) -> None:
        if self.item is None:
            return
        if self.item.label is None or not self.item.label.text:
            self.notify("no proposed label: press l to pick one", severity="warning")
            return
        self._decide([self._label_action(self.item.label.text), *self._caption_accept()],
                     advance=True)

    def action_alternative(self, n: str) -> None:
        if self.item is None:
            return
        alts = panels.alternatives(self.item)
        k = int(n)
        if k > len(alts):
            self.notify(f"there is no alternative {k}", severity="warning")
            return
        self._decide([self._label_action(alts[k - 1][0]), *self._caption_accept()],
                     advance=True)

    def action_pick_label(self) -> None:
        if self.item is None:
            return

        def job(s: ReviewSession) -> Message:
            return VocabularyReady(label_vocabulary(s.db))

        self._submit(job)

    def on_vocabulary_ready(self, message: VocabularyReady) -> None:
        if self.item is None:
            return
        image_id = self.item.image.id

        def picked(label: str | None) -> None:
            if label is None or self.item is None or self.item.image.id != image_id:
                return
            self._decide([self._label_action(label), *self._caption_accept()], advance=True)

        self.app.push_screen(LabelPicker(message.labels), picked)

    def action_edit_caption(self) -> None:
        if self.item is None:
            return
        editor = self.query_one(CaptionEditor)
        decision = self.item.caption_decision
        if decision and decision["decision"] == "correct":
            text = str(decision["value"])
        else:
            text = self.item.caption.text if self.item.caption is not None else ""
        editor.load_text(text)
        self._editing = self.item.image.id
        self.query_one("#caption", Static).display = False
        editor.display = True
        editor.can_focus = True
        editor.focus()

    def on_caption_editor_done(self, message: CaptionEditor.Done) -> None:
        editor = self.query_one(CaptionEditor)
        editor.display = False
        editor.can_focus = False
        self.query_one("#caption", Static).display = True
        self.set_focus(None)
        text = None if message.text is None else message.text.strip()
        image_id = getattr(self, "_editing", None)
        if text is None or self.item is None or self.item.image.id != image_id:
            return
        if not text:
            self.notify("an empty caption is not saved (x marks it unacceptable)",
                        severity="warning")
            return
        pred = self.item.caption
        if pred is not None and text == pred.text:
            action = Action("caption", "accept", text, pred.id)
        else:
            action = Action("caption", "correct", text, pred.id if pred is not None else None)
        self._decide([action], advance=False, note="caption saved")

    def action_reject_caption(self) -> None:
        if self.item is None:
            return
        if self.item.caption is None:
            self.notify("no proposed caption to reject", severity="warning")
            return
        self._decide([Action("caption", "reject", None, self.item.caption.id)], advance=False)

    def action_skip(self) -> None:
        self._decide([Action("image", "skip")], advance=True)

    def action_undo(self) -> None:
        def job(s: ReviewSession) -> Message:
            item, undone = s.undo()
            if not undone:
                return StoreNote("nothing to undo", "information")
            what = ", ".join(f"{r.task} {r.decision}" for r in undone)
            return self._shown(s, item, f"undone: {what}")

        self.decisions = max(0, self.decisions - 1)
        self._submit(job)

    def action_move(self, step: int) -> None:
        self._submit(lambda s: self._shown(s, s.move(step)))

    def action_goto(self) -> None:
        def chosen(n: int | None) -> None:
            if n is not None:
                self._submit(lambda s: self._shown(s, s.goto(n)))

        self.app.push_screen(GotoScreen(self.stats.queue if self.stats else None), chosen)

    def _set_spec(self, spec: QueueSpec) -> None:
        self.spec = spec
        self._submit(lambda s: self._shown(s, s.set_spec(spec), spec.describe()))

    def action_filter(self) -> None:
        def chosen(spec: QueueSpec | None) -> None:
            if spec is not None:
                self._set_spec(spec)

        self.app.push_screen(FilterScreen(self.spec), chosen)

    def action_order(self) -> None:
        def chosen(answer: tuple[str, int] | None) -> None:
            if answer is not None:
                self._set_spec(self.spec.with_(order=answer[0], seed=answer[1]))

        self.app.push_screen(OrderScreen(self.spec.order, self.spec.seed), chosen)

    def action_toggle_truth(self) -> None:
        if self.cfg.blind:
            self.notify("blind mode: the dataset label stays hidden", severity="warning")
            return
        self.show_truth = not self.show_truth
        self._render_item()

    def action_help(self) -> None:
        # Keys that extensions bound on the app (e.g. `t` for training) belong in the list too.
        extra = [ab.binding for ab in self.app.active_bindings.values()
                 if ab.node is self.app and ab.binding.show and ab.binding.description]
        self.app.push_screen(HelpScreen([*self.BINDINGS, *extra], self.cfg.blind))

    def action_quit_review(self) -> None:
        def job(s: ReviewSession) -> Message:
            s.close()
            return SessionClosed()

        self._submit(job)
