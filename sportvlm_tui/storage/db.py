"""Opening the database: WAL, foreign keys, a busy timeout, and the migrations.

Writers use ``write(db)`` (``BEGIN IMMEDIATE``) so two processes never deadlock upgrading a
read transaction to a write one; readers use plain autocommit queries.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from .migrations import migrations

DEFAULT_DB = "sportvlm.db"
BUSY_TIMEOUT_S = 30.0


def default_db_path() -> str:
    """`$SPORTVLM_DB`, else ./sportvlm.db."""
    return os.environ.get("SPORTVLM_DB") or DEFAULT_DB


def now() -> str:
    """UTC timestamp with microseconds, sortable as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def connect(path: str | os.PathLike[str] = ":memory:", *, migrate: bool = True) -> Database:
    """Open (creating if needed) and migrate the database at `path`."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; every write block is explicit.
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    db = Database(conn)
    if migrate:
        migrations.apply(db)
    return db


@contextlib.contextmanager
def write(db: Database) -> Iterator[Database]:
    """One write transaction, taken with BEGIN IMMEDIATE (nested calls become savepoints)."""
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def rows(db: Database, sql: str, params: tuple | list | dict = ()) -> list[dict]:
    """Run a read query and return dict rows."""
    return list(db.query(sql, params))


def scalar(db: Database, sql: str, params: tuple | list | dict = ()):
    """First column of the first row, or None."""
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]
