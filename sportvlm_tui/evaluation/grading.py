"""Blind caption grading, headless: which images, which captions in which order, and the
grades (table `caption_grades`, one row per prediction per key press; the newest wins).

The grader sees each image's zero-shot, few-shot and fine-tuned captions in an order drawn
from the session's seed and the image id alone, so neither position nor prediction id says
which mode wrote a caption. Identical captions are shown once; a grade applies to all of them.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from ..storage.db import now, rows, write
from .labels import Condition, choose_fine_tuned

BASE_MODES = ("zero-shot", "few-shot")


@dataclass(frozen=True)
class ShownCaption:
    """One caption as the grader sees it; `prediction_ids` are every mode that wrote it."""

    text: str
    prediction_ids: tuple[int, ...]


@dataclass(frozen=True)
class GradingItem:
    image_id: int
    path: Path
    rel_path: str
    captions: tuple[ShownCaption, ...]


@dataclass(frozen=True)
class ModeGrades:
    """`acceptable` of `graded` captions of one condition, as graded by `grader`."""

    grader: str
    model: str
    condition: str
    acceptable: int
    graded: int


def new_session() -> str:
    """A fresh session id (its text seeds the order of images and captions)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def caption_conditions(db: Database, split: str, model: str | None = None,
                       adapter: str | None = None) -> list[Condition]:
    """The conditions to grade on `split`: zero-shot and few-shot on the base model and the
    fine-tuned adapter asked zero-shot, for `model` (default: the one with most captions)."""
    found = rows(
        db,
        "SELECT p.model, p.adapter, p.mode, count(*) AS n FROM predictions p"
        " JOIN images i ON i.id = p.image_id WHERE p.task = 'caption' AND i.split = ?"
        " GROUP BY p.model, p.adapter, p.mode",
        (split,),
    )
    if not found:
        return []
    if model is None:
        totals: dict[str, int] = {}
        for r in found:
            totals[r["model"]] = totals.get(r["model"], 0) + r["n"]
        model = max(sorted(totals), key=lambda m: totals[m])
    all_conditions = [Condition(r["model"], r["adapter"], r["mode"]) for r in found]
    chosen = [c for c in all_conditions if c.model == model and not c.adapter
              and c.mode in BASE_MODES]
    chosen.sort(key=lambda c: BASE_MODES.index(c.mode))
    tuned = choose_fine_tuned(db, all_conditions, model, adapter)
    return chosen + ([tuned] if tuned else [])


def _captions_by_image(db: Database, split: str,
                       conditions: list[Condition]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for c in conditions:
        for r in rows(
            db,
            "SELECT p.id, p.image_id, p.text FROM predictions p JOIN images i"
            " ON i.id = p.image_id WHERE p.task = 'caption' AND i.split = ? AND p.model = ?"
            " AND p.adapter = ? AND p.mode = ?",
            (split, c.model, c.adapter, c.mode),
        ):
            out.setdefault(r["image_id"], []).append(r)
    # Only images every condition captioned: the comparison is on the same images.
    return {i: caps for i, caps in out.items() if len(caps) == len(conditions)}


def blind_order(session: str, image_id: int, captions: list[dict]) -> tuple[ShownCaption, ...]:
    """Distinct caption texts in an order drawn from (session, image) alone."""
    merged: dict[str, list[int]] = {}
    for c in sorted(captions, key=lambda c: c["id"]):
        merged.setdefault(" ".join(c["text"].split()), []).append(c["id"])
    # Sorting by text first makes the input order (which follows the modes) irrelevant.
    shown = [ShownCaption(text, tuple(ids)) for text, ids in sorted(merged.items())]
    random.Random(f"{session}:{image_id}").shuffle(shown)
    return tuple(shown)


def session_images(db: Database, session: str, grader: str) -> list[int]:
    """Images this grader has graded in `session`, in the order first graded."""
    return [r["image_id"] for r in rows(
        db,
        "SELECT image_id, min(id) AS first FROM caption_grades WHERE session = ? AND grader = ?"
        " GROUP BY image_id ORDER BY first",
        (session, grader),
    )]


def grading_items(db: Database, *, split: str, n: int, session: str, grader: str,
                  conditions: list[Condition]) -> list[GradingItem]:
    """`n` images for the session, drawn with the session seed among images every condition
    captioned; images already graded in the session are always among them."""
    captions = _captions_by_image(db, split, conditions)
    order = sorted(captions)
    random.Random(session).shuffle(order)
    done = set(session_images(db, session, grader)) & set(captions)
    chosen = [i for i in order if i in done]
    chosen += [i for i in order if i not in done][: max(0, n - len(chosen))]
    # Session order, so a resumed session shows the same images in the same order.
    rank = {i: k for k, i in enumerate(order)}
    chosen.sort(key=rank.__getitem__)
    info = {r["id"]: r for r in rows(
        db,
        "SELECT i.id, r.path AS root, i.rel_path FROM images i JOIN roots r ON r.id = i.root_id"
        f" WHERE i.id IN ({','.join('?' * len(chosen))})",
        chosen,
    )} if chosen else {}
    return [
        GradingItem(i, Path(info[i]["root"]) / info[i]["rel_path"], info[i]["rel_path"],
                    blind_order(session, i, captions[i]))
        for i in chosen
    ]


def save_grade(db: Database, *, session: str, grader: str, image_id: int,
               caption: ShownCaption, acceptable: bool) -> None:
    """Record one grade for every prediction behind `caption`, committed on return."""
    stamp = now()
    with write(db):
        db.conn.executemany(
            "INSERT INTO caption_grades (session, image_id, prediction_id, grader, acceptable,"
            " created_at) VALUES (?,?,?,?,?,?)",
            [(session, image_id, pid, grader, int(acceptable), stamp)
             for pid in caption.prediction_ids],
        )


def current_grades(db: Database, session: str, grader: str) -> dict[int, bool]:
    """prediction id -> this grader's newest grade in `session`."""
    return {r["prediction_id"]: bool(r["acceptable"]) for r in rows(
        db,
        "SELECT g.prediction_id, g.acceptable FROM caption_grades g WHERE g.session = ?"
        " AND g.grader = ? AND g.id = (SELECT max(h.id) FROM caption_grades h"
        " WHERE h.session = g.session AND h.grader = g.grader"
        " AND h.prediction_id = g.prediction_id)",
        (session, grader),
    )}


def latest_session(db: Database, grader: str) -> str | None:
    """The session this grader graded in last."""
    found = rows(db, "SELECT session FROM caption_grades WHERE grader = ? ORDER BY id DESC"
                 " LIMIT 1", (grader,))
    return found[0]["session"] if found else None


def caption_results(db: Database, split: str | None = None) -> list[ModeGrades]:
    """Per grader, model and condition: K acceptable of N graded captions (each grader's
    newest grade of each caption counts once, whatever the session)."""
    where, params = "", ()
    if split is not None:
        where, params = " AND i.split = ?", (split,)
    found = rows(
        db,
        "SELECT g.grader, p.model, p.adapter, p.mode, sum(g.acceptable) AS k, count(*) AS n"
        " FROM caption_grades g JOIN predictions p ON p.id = g.prediction_id"
        " JOIN images i ON i.id = g.image_id"
        " WHERE g.id = (SELECT max(h.id) FROM caption_grades h WHERE h.grader = g.grader"
        " AND h.prediction_id = g.prediction_id)" + where +
        " GROUP BY g.grader, p.model, p.adapter, p.mode",
        params,
    )
    out = [ModeGrades(r["grader"], r["model"], Condition(r["model"], r["adapter"],
                                                          r["mode"]).name, r["k"], r["n"])
           for r in found]
    order = {"zero-shot": 0, "few-shot": 1}
    return sorted(out, key=lambda g: (g.grader, g.model, order.get(g.condition, 2),
                                      g.condition))
