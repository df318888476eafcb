"""SQLite storage (sqlite-utils, WAL, migrations). Never imports textual or torch."""

from .db import connect, default_db_path, now, rows, scalar, write

__all__ = ["connect", "default_db_path", "now", "rows", "scalar", "write"]
