"""Decisions as append-only events, the derived per-image state, and claims.

A decision is a row in `reviews`; undo is a row too (`decision='undo'`, `undoes=<id>`).
`image_state` holds, per (image, task), the live decision: the newest event that is neither
an undo nor undone. It is updated in the same transaction as each event and can be rebuilt
from `reviews` alone.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from .db import now, rows, scalar, write

# label: accept | correct ; caption: accept | correct | reject ; task None: skip
DECISIONS = ("accept", "correct", "reject", "skip", "undo")
IMAGE_TASK = "image"  # task recorded for decisions about the image as a whole (skip)
CLAIM_SECONDS = 300


def default_annotator(explicit: str | None = None) -> str:
    """--annotator, else $SPORTVLM_ANNOTATOR, else the login name."""
    if explicit:
        return explicit
    env = os.environ.get("SPORTVLM_ANNOTATOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return "annotator"


@dataclass(frozen=True)
class Review:
    id: int
    image_id: int
    task: str
    prediction_id: int | None
    annotator: str
    decision: str
    value: str | None
    undoes: int | None
    created_at: str


def _refresh_state(db: Database, image_id: int, task: str) -> None:
    live = rows(
        db,
        "SELECT r.id, r.decision, r.value, r.annotator, r.created_at FROM reviews r"
        " WHERE r.image_id = ? AND r.task = ? AND r.decision != 'undo'"
        " AND NOT EXISTS (SELECT 1 FROM reviews u WHERE u.undoes = r.id)"
        " ORDER BY r.id DESC LIMIT 1",
        (image_id, task),
    )
    if live:
        r = live[0]
        db.execute(
            "INSERT OR REPLACE INTO image_state (image_id, task, review_id, decision, value,"
            " annotator, updated_at) VALUES (?,?,?,?,?,?,?)",
            (image_id, task, r["id"], r["decision"], r["value"], r["annotator"], r["created_at"]),
        )
    else:
        db.execute("DELETE FROM image_state WHERE image_id = ? AND task = ?", (image_id, task))


def save_decision(
    db: Database,
    *,
    image_id: int,
    task: str,
    decision: str,
    annotator: str,
    value: str | None = None,
    prediction_id: int | None = None,
) -> int:
    """Append one decision and update the derived state, committed on return. Returns its id."""
    if decision not in DECISIONS or decision == "undo":
        raise ValueError(f"unknown decision {decision!r}; expected one of {DECISIONS[:-1]}")
    if decision == "correct" and not (value or "").strip():
        raise ValueError("a correction needs a non-empty value")
    with write(db):
        cur = db.execute(
            "INSERT INTO reviews (image_id, task, prediction_id, annotator, decision, value,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (image_id, task, prediction_id, annotator, decision, value, now()),
        )
        rid = int(cur.lastrowid)
        _refresh_state(db, image_id, task)
        db.execute(
            "DELETE FROM claims WHERE image_id = ? AND annotator = ?", (image_id, annotator)
        )
    return rid


def undo_last(db: Database, annotator: str) -> Review | None:
    """Undo this annotator's newest live decision (an 'undo' event). Returns what was undone."""
    with write(db):
        found = rows(
            db,
            "SELECT * FROM reviews r WHERE r.annotator = ? AND r.decision != 'undo'"
            " AND NOT EXISTS (SELECT 1 FROM reviews u WHERE u.undoes = r.id)"
            " ORDER BY r.id DESC LIMIT 1",
            (annotator,),
        )
        if not found:
            return None
        target = Review(**found[0])
        db.execute(
            "INSERT INTO reviews (image_id, task, prediction_id, annotator, decision, value,"
            " undoes, created_at) VALUES (?,?,?,?,'undo',NULL,?,?)",
            (target.image_id, target.task, target.prediction_id, annotator, target.id, now()),
        )
        _refresh_state(db, target.image_id, target.task)
    return target


def rebuild_state(db: Database) -> None:
    """Recompute `image_state` from the event log (repair tool; the log is the truth)."""
    with write(db):
        db.execute("DELETE FROM image_state")
        for r in rows(db, "SELECT DISTINCT image_id, task FROM reviews"):
            _refresh_state(db, r["image_id"], r["task"])


def state(db: Database, image_id: int) -> dict[str, dict]:
    """Live decisions for one image, by task."""
    return {
        r["task"]: r
        for r in rows(db, "SELECT * FROM image_state WHERE image_id = ?", (image_id,))
    }


def history(db: Database, image_id: int | None = None) -> list[Review]:
    sql, params = "SELECT * FROM reviews", ()
    if image_id is not None:
        sql, params = sql + " WHERE image_id = ?", (image_id,)
    return [Review(**r) for r in rows(db, sql + " ORDER BY id", params)]


def last_reviewed_image(db: Database, annotator: str) -> int | None:
    """The image this annotator last decided on (where a reopened session resumes)."""
    return scalar(
        db,
        "SELECT image_id FROM reviews WHERE annotator = ? AND decision != 'undo'"
        " ORDER BY id DESC LIMIT 1",
        (annotator,),
    )


def decision_counts(db: Database) -> list[dict]:
    """Live decisions by task, decision and annotator."""
    return rows(
        db,
        "SELECT task, decision, annotator, count(*) AS n FROM image_state"
        " GROUP BY task, decision, annotator ORDER BY task, decision, annotator",
    )


# --- claims: leases so that two annotators are not given the same pending image ---------


def _expiry(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def claim(db: Database, image_id: int, annotator: str, seconds: int = CLAIM_SECONDS) -> bool:
    """Take (or renew) the lease on an image. False if another annotator holds a live one."""
    with write(db):
        holder = rows(db, "SELECT annotator, expires_at FROM claims WHERE image_id = ?",
                      (image_id,))
        if holder and holder[0]["annotator"] != annotator and holder[0]["expires_at"] > now():
            return False
        db.execute(
            "INSERT OR REPLACE INTO claims (image_id, annotator, expires_at) VALUES (?,?,?)",
            (image_id, annotator, _expiry(seconds)),
        )
    return True


def release_claims(db: Database, annotator: str) -> None:
    with write(db):
        db.execute("DELETE FROM claims WHERE annotator = ?", (annotator,))


def claimed_by_others(db: Database, annotator: str) -> set[int]:
    return {
        r[0]
        for r in db.execute(
            "SELECT image_id FROM claims WHERE annotator != ? AND expires_at > ?",
            (annotator, now()),
        ).fetchall()
    }
