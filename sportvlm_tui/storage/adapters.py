"""The adapter registry: candidates, the promoted one, and rollback."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlite_utils import Database

from .db import now, rows, write

STATUSES = ("candidate", "promoted", "retired", "rejected")


@dataclass(frozen=True)
class Adapter:
    id: int
    name: str
    path: str
    parent: str | None
    base_model: str | None
    status: str
    pairs: int | None
    metrics: dict
    training_run_id: int | None
    created_at: str
    promoted_at: str | None


def _from_row(r: dict) -> Adapter:
    return Adapter(**{**r, "metrics": json.loads(r["metrics"]) if r.get("metrics") else {}})


def register_adapter(
    db: Database,
    *,
    name: str,
    path: str,
    parent: str | None = None,
    base_model: str | None = None,
    pairs: int | None = None,
    metrics: dict | None = None,
    training_run_id: int | None = None,
) -> Adapter:
    """Record a new candidate adapter."""
    with write(db):
        db.execute(
            "INSERT INTO adapters (name, path, parent, base_model, status, pairs, metrics,"
            " training_run_id, created_at) VALUES (?,?,?,?,'candidate',?,?,?,?)",
            (name, path, parent, base_model, pairs, json.dumps(metrics or {}), training_run_id,
             now()),
        )
    return get_adapter(db, name)  # type: ignore[return-value]


def get_adapter(db: Database, name: str) -> Adapter | None:
    found = rows(db, "SELECT * FROM adapters WHERE name = ?", (name,))
    return _from_row(found[0]) if found else None


def list_adapters(db: Database) -> list[Adapter]:
    return [_from_row(r) for r in rows(db, "SELECT * FROM adapters ORDER BY id")]


def promoted_adapter(db: Database) -> Adapter | None:
    found = rows(db, "SELECT * FROM adapters WHERE status = 'promoted' LIMIT 1")
    return _from_row(found[0]) if found else None


def set_metrics(db: Database, name: str, metrics: dict) -> None:
    with write(db):
        db.execute("UPDATE adapters SET metrics = ? WHERE name = ?", (json.dumps(metrics), name))


def set_status(db: Database, name: str, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown adapter status {status!r}")
    with write(db):
        db.execute("UPDATE adapters SET status = ? WHERE name = ?", (status, name))


def promote(db: Database, name: str) -> Adapter | None:
    """Make `name` the promoted adapter; the previous one is retired (kept for rollback).
    Returns the previously promoted adapter."""
    with write(db):
        if not rows(db, "SELECT 1 FROM adapters WHERE name = ?", (name,)):
            raise KeyError(f"no adapter named {name!r}")
        previous = promoted_adapter(db)
        db.execute("UPDATE adapters SET status = 'retired' WHERE status = 'promoted'")
        db.execute(
            "UPDATE adapters SET status = 'promoted', promoted_at = ? WHERE name = ?",
            (now(), name),
        )
    return previous


def rollback(db: Database) -> Adapter | None:
    """Promote the most recently retired adapter again (None: back to the base model)."""
    current = promoted_adapter(db)
    found = rows(
        db,
        "SELECT * FROM adapters WHERE status = 'retired' AND promoted_at IS NOT NULL"
        " ORDER BY promoted_at DESC LIMIT 1",
    )
    with write(db):
        if current is not None:
            db.execute("UPDATE adapters SET status = 'retired' WHERE name = ?", (current.name,))
        if found:
            db.execute(
                "UPDATE adapters SET status = 'promoted', promoted_at = ? WHERE name = ?",
                (now(), found[0]["name"]),
            )
    return get_adapter(db, found[0]["name"]) if found else None
