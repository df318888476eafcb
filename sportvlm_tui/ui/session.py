"""One annotator's review session over the database: no Textual here.

The app calls these methods from a single store thread (in order), so a decision is committed
before the next image is chosen. The session keeps only a window of the queue (the image ids
seen so far plus a page ahead), never the whole queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlite_utils import Database

from ..storage import review_queue as rq
from ..storage.db import write
from ..storage.images import Image, get_image
from ..storage.predictions import Prediction, latest_prediction
from ..storage.reviews import Review, last_reviewed_image, release_claims, save_decision, state


class StaleAction(Exception):
    """A key press meant for an image that is no longer the current one."""


@dataclass(frozen=True)
class Item:
    """Everything the review screen shows about one image."""

    image: Image
    label: Prediction | None
    caption: Prediction | None
    state: dict[str, dict]
    position: int  # 1-based index in the session's walk through the queue
    leased: bool  # True when this annotator holds the claim (a pending image)

    @property
    def label_decision(self) -> dict | None:
        return self.state.get("label")

    @property
    def caption_decision(self) -> dict | None:
        return self.state.get("caption")

    @property
    def skipped(self) -> bool:
        return "image" in self.state


@dataclass(frozen=True)
class Action:
    """One decision to save: task label|caption|image, decision accept|correct|reject|skip."""

    task: str
    decision: str
    value: str | None = None
    prediction_id: int | None = None


@dataclass
class Stats:
    done: int = 0
    total: int = 0
    queue: int = 0


@dataclass
class _Window:
    keys: list[tuple] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    start_key: tuple | None = None  # the walk runs [start_key, end) then [begin, start_key)
    lap: int = 0
    last: tuple | None = None  # key of the last row fetched in this lap
    exhausted: bool = False
    base: int = 0  # queue items before the window's first one (for positions)


class ReviewSession:
    """The queue walk, decisions, undo and claims for one annotator."""

    def __init__(self, db: Database, annotator: str, spec: rq.QueueSpec, *,
                 page_size: int = 50) -> None:
        self.db = db
        self.annotator = annotator
        self.spec = spec
        self.page_size = page_size
        self.pos = -1
        self.w = _Window()
        self.current: Item | None = None
        self._undo_sizes: list[int] = []

    # --- the window ------------------------------------------------------------------

    def _reset(self, start_key: tuple | None, base: int = 0) -> None:
        self.w = _Window(start_key=start_key, base=base)
        self.pos = -1

    def _fill(self, offset: int = 0) -> bool:
        """Append the next page to the window. False when the walk is over."""
        w = self.w
        # A random order can't use an index: each page scans the queue, so take bigger ones.
        limit = self.page_size * (20 if self.spec.order == "random" else 1)
        while not w.exhausted:
            if w.lap == 0:
                after = w.last if w.last is not None else w.start_key
                inclusive = w.last is None and w.start_key is not None
                got = rq.page(self.db, self.spec, annotator=self.annotator, after=after,
                              inclusive=inclusive, limit=limit, offset=offset)
            else:
                got = rq.page(self.db, self.spec, annotator=self.annotator, after=w.last,
                              before=w.start_key, limit=limit)
            offset = 0
            if got:
                w.last = got[-1][0]
            seen = set(w.ids)
            fresh = [(k, i) for k, i in got if i not in seen]
            for k, i in fresh:
                w.keys.append(k)
                w.ids.append(i)
            if fresh:
                return True
            if got:
                continue
            if w.lap == 0 and w.start_key is not None:
                # Past the end: wrap around to the images before where we resumed.
                w.lap, w.last = 1, None
                continue
            w.exhausted = True
        return False

    def _settle(self, step: int) -> Item | None:
        """From self.pos, walk by `step` to the first image this annotator may see."""
        only_pending = self.spec.status == "pending" and step > 0
        while True:
            if self.pos >= len(self.w.ids) and not self._fill():
                self.pos = len(self.w.ids)
                self.current = None
                return None
            if self.pos < 0:
                self.pos = 0
                step = 1
                continue
            image_id = self.w.ids[self.pos]
            verdict = rq.claim_for_review(self.db, image_id, self.annotator,
                                          only_pending=only_pending)
            if verdict == "taken":
                del self.w.ids[self.pos]
                del self.w.keys[self.pos]
                if step < 0:
                    self.pos -= 1
                continue
            self.current = self._load(image_id, leased=verdict == "claimed")
            return self.current

    def _load(self, image_id: int, *, leased: bool) -> Item:
        image = get_image(self.db, image_id)
        if image is None:
            raise LookupError(f"image {image_id} is not in the database")
        return Item(
            image=image,
            label=latest_prediction(self.db, image_id, "label"),
            caption=latest_prediction(self.db, image_id, "caption"),
            state=state(self.db, image_id),
            position=self.w.base + self.pos + 1,
            leased=leased,
        )

    def _leave(self) -> None:
        """Give back the lease on the image we move away from without deciding."""
        cur = self.current
        if cur is not None and cur.leased:
            rq.release_claim(self.db, cur.image.id, self.annotator)

    # --- what the app calls -------------------------------------------------------------

    def start(self, *, resume: bool = True) -> Item | None:
        """First image: where this annotator stopped last time (if resuming), else the top."""
        start_key = None
        if resume:
            last = last_reviewed_image(self.db, self.annotator)
            if last is not None:
                start_key = rq.sort_key(self.db, self.spec, last)
        self._reset(start_key)
        self.pos = 0
        return self._settle(+1)

    def move(self, step: int) -> Item | None:
        """Next (+1) or previous (-1) image; None past the end of the queue."""
        if step < 0 and self.pos <= 0:
            return self.refresh()
        self._leave()
        self.pos = min(self.pos + step, len(self.w.ids))
        return self._settle(step)

    def refresh(self) -> Item | None:
        """Re-read the current image (after a decision that stays on it)."""
        if self.current is None:
            return None
        self.current = self._load(self.current.image.id, leased=self.current.leased)
        return self.current

    def decide(self, image_id: int, actions: list[Action], *, advance: bool) -> Item | None:
        """Save `actions` for `image_id` in one transaction, then move on if `advance`."""
        if self.current is None or self.current.image.id != image_id:
            raise StaleAction(f"image {image_id} is no longer on screen")
        with write(self.db):
            for a in actions:
                save_decision(self.db, image_id=image_id, task=a.task, decision=a.decision,
                              annotator=self.annotator, value=a.value,
                              prediction_id=a.prediction_id)
        self._undo_sizes.append(len(actions))
        if not advance:
            self.current = self._load(image_id, leased=self.current.leased)
            return self.current
        # save_decision gave the lease back when it decided the label or skipped.
        self.current = None
        self.pos += 1
        return self._settle(+1)

    def undo(self) -> tuple[Item | None, list[Review]]:
        """Undo the last key press's decisions and go back to that image."""
        n = self._undo_sizes.pop() if self._undo_sizes else 1
        undone = rq.undo_group(self.db, self.annotator, n)
        if not undone:
            return self.current, []
        image_id = undone[0].image_id
        if self.current is not None and self.current.image.id == image_id:
            return self.refresh(), undone
        self._leave()
        if image_id in self.w.ids:
            self.pos = self.w.ids.index(image_id)
        else:
            key = rq.sort_key(self.db, self.spec, image_id) or (0, 0, image_id)
            self.pos = max(0, min(self.pos, len(self.w.ids)))
            self.w.ids.insert(self.pos, image_id)
            self.w.keys.insert(self.pos, key)
        verdict = rq.claim_for_review(self.db, image_id, self.annotator, only_pending=False)
        self.current = self._load(image_id, leased=verdict == "claimed")
        return self.current, undone

    def goto(self, n: int) -> Item | None:
        """Jump to the n-th image (1-based) of the queue as it is now."""
        self._leave()
        self.current = None
        self._reset(None, base=max(0, n - 1))
        self._fill(offset=max(0, n - 1))
        self.pos = 0
        return self._settle(+1)

    def set_spec(self, spec: rq.QueueSpec) -> Item | None:
        """A new filter or order: start from its top."""
        self._leave()
        self.current = None
        self.spec = spec
        self._reset(None)
        self.pos = 0
        return self._settle(+1)

    def upcoming(self, n: int) -> list[Image]:
        """The next `n` images of the window (to decode ahead); fetches a page if needed."""
        if len(self.w.ids) - self.pos <= n + 1:
            self._fill()
        ids = self.w.ids[self.pos + 1 : self.pos + 1 + n]
        out = [get_image(self.db, i) for i in ids]
        return [i for i in out if i is not None]

    def renew(self) -> None:
        """Keep the lease on the current image alive while the annotator looks at it."""
        if self.current is not None and self.current.leased:
            rq.claim_for_review(self.db, self.current.image.id, self.annotator,
                                only_pending=False)

    def close(self) -> None:
        """Give back every lease this annotator holds."""
        release_claims(self.db, self.annotator)


def read_stats(db: Database, spec: rq.QueueSpec, *, queue: int | None = None) -> Stats:
    """Counts for the status bar (run on a separate read connection). The queue size scans
    the whole queue, so the caller passes the last one back in (`queue`) to skip it."""
    done, total = rq.progress(db, spec.split)
    return Stats(done=done, total=total, queue=rq.count(db, spec) if queue is None else queue)
