"""Model predictions: one row per (image, task, mode, model, adapter)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlite_utils import Database

from .db import now, rows, write

TASKS = ("label", "caption")
MODES = ("zero-shot", "few-shot")


@dataclass(frozen=True)
class NewPrediction:
    image_id: int
    task: str
    mode: str
    model: str
    adapter: str  # "" = base model only
    text: str  # the parsed answer (label stripped to the sport, or the caption)
    raw: str  # the model's output as generated
    confidence: float | None = None
    topk: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Prediction:
    id: int
    image_id: int
    task: str
    mode: str
    model: str
    adapter: str
    text: str
    raw: str
    confidence: float | None
    topk: list[tuple[str, float]]
    created_at: str


def _from_row(r: dict) -> Prediction:
    topk = [(str(a), float(b)) for a, b in json.loads(r["topk"])] if r.get("topk") else []
    return Prediction(**{**r, "topk": topk})


def add_predictions(db: Database, preds: list[NewPrediction]) -> int:
    """Insert one batch in one transaction; an existing (image, task, mode, model, adapter)
    is left as it was (that is what makes prediction resumable). Returns rows added."""
    if not preds:
        return 0
    stamp = now()
    with write(db):
        before = db.conn.total_changes
        db.conn.executemany(
            "INSERT OR IGNORE INTO predictions (image_id, task, mode, model, adapter, text, raw,"
            " confidence, topk, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    p.image_id,
                    p.task,
                    p.mode,
                    p.model,
                    p.adapter,
                    p.text,
                    p.raw,
                    p.confidence,
                    json.dumps(p.topk) if p.topk else None,
                    stamp,
                )
                for p in preds
            ],
        )
        return db.conn.total_changes - before


def predicted_image_ids(
    db: Database, *, task: str, mode: str, model: str, adapter: str
) -> set[int]:
    return {
        r[0]
        for r in db.execute(
            "SELECT image_id FROM predictions WHERE task=? AND mode=? AND model=? AND adapter=?",
            (task, mode, model, adapter),
        ).fetchall()
    }


def latest_prediction(db: Database, image_id: int, task: str) -> Prediction | None:
    """The newest prediction for an image and task (what the reviewer is shown)."""
    found = rows(
        db,
        "SELECT * FROM predictions WHERE image_id = ? AND task = ? ORDER BY id DESC LIMIT 1",
        (image_id, task),
    )
    return _from_row(found[0]) if found else None


def get_prediction(db: Database, prediction_id: int) -> Prediction | None:
    found = rows(db, "SELECT * FROM predictions WHERE id = ?", (prediction_id,))
    return _from_row(found[0]) if found else None


def list_predictions(
    db: Database,
    *,
    task: str | None = None,
    mode: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    split: str | None = None,
) -> list[Prediction]:
    where, params = [], []
    for col, val in (("task", task), ("mode", mode), ("model", model), ("adapter", adapter)):
        if val is not None:
            where.append(f"p.{col} = ?")
            params.append(val)
    if split is not None:
        where.append("i.split = ?")
        params.append(split)
    sql = "SELECT p.* FROM predictions p JOIN images i ON i.id = p.image_id"
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY p.image_id, p.id"
    return [_from_row(r) for r in rows(db, sql, params)]


def prediction_groups(db: Database) -> list[dict]:
    """Counts by (task, mode, model, adapter)."""
    return rows(
        db,
        "SELECT task, mode, model, adapter, count(*) AS n FROM predictions"
        " GROUP BY task, mode, model, adapter ORDER BY task, mode, model, adapter",
    )

