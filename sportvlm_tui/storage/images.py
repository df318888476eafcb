"""Images and the roots their paths are relative to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from .db import now, rows, scalar, write


@dataclass(frozen=True)
class ImageRecord:
    """A validated image, ready to store (root and rel_path locate the file)."""

    sha256: str
    root: str
    rel_path: str
    split: str | None
    label: str | None
    width: int
    height: int
    mode: str
    bytes: int


@dataclass(frozen=True)
class Image:
    id: int
    sha256: str
    root: str
    rel_path: str
    split: str | None
    label: str | None
    width: int
    height: int
    mode: str

    @property
    def path(self) -> Path:
        return Path(self.root) / self.rel_path


_IMAGE_SELECT = (
    "SELECT i.id, i.sha256, r.path AS root, i.rel_path, i.split, i.label, i.width, i.height,"
    " i.mode FROM images i JOIN roots r ON r.id = i.root_id"
)


def ensure_root(db: Database, path: str | Path) -> int:
    """Id of the root at `path` (absolute, resolved), created if new."""
    p = str(Path(path).resolve())
    rid = scalar(db, "SELECT id FROM roots WHERE path = ?", (p,))
    if rid is not None:
        return int(rid)
    with write(db):
        db.execute("INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)", (p, now()))
    return int(scalar(db, "SELECT id FROM roots WHERE path = ?", (p,)))


def roots(db: Database) -> list[str]:
    return [r["path"] for r in rows(db, "SELECT path FROM roots ORDER BY id")]


def known_hashes(db: Database) -> set[str]:
    return {r[0] for r in db.execute("SELECT sha256 FROM images").fetchall()}


@dataclass(frozen=True)
class StoredContent:
    """What is stored for one content hash: enough to ingest a copy without decoding it."""

    width: int
    height: int
    mode: str
    split: str | None
    label: str | None
    rel_path: str


def stored_contents(db: Database) -> dict[str, StoredContent]:
    """Every stored image by sha256, in one query (ingest's duplicate check)."""
    return {
        sha: StoredContent(w, h, m, s, lab, rel)
        for sha, w, h, m, s, lab, rel in db.execute(
            "SELECT sha256, width, height, mode, split, label, rel_path FROM images"
        ).fetchall()
    }


def add_images(db: Database, records: list[ImageRecord]) -> int:
    """Store `records` in one transaction; content already present is skipped. Returns added."""
    if not records:
        return 0
    root_ids = {root: ensure_root(db, root) for root in {r.root for r in records}}
    stamp = now()
    with write(db):
        before = db.conn.total_changes
        db.conn.executemany(
            "INSERT OR IGNORE INTO images (sha256, root_id, rel_path, split, label, width,"
            " height, mode, bytes, added_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    r.sha256,
                    root_ids[r.root],
                    r.rel_path,
                    r.split,
                    r.label,
                    r.width,
                    r.height,
                    r.mode,
                    r.bytes,
                    stamp,
                )
                for r in records
            ],
        )
        return db.conn.total_changes - before


def get_image(db: Database, image_id: int) -> Image | None:
    found = rows(db, _IMAGE_SELECT + " WHERE i.id = ?", (image_id,))
    return Image(**found[0]) if found else None


def list_images(
    db: Database,
    *,
    split: str | None = None,
    label: str | None = None,
    ids: list[int] | None = None,
    limit: int | None = None,
) -> list[Image]:
    """Images in id order, optionally filtered."""
    where, params = [], []
    if split is not None:
        where.append("i.split = ?")
        params.append(split)
    if label is not None:
        where.append("i.label = ?")
        params.append(label)
    if ids is not None:
        where.append(f"i.id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    sql = _IMAGE_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY i.id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [Image(**r) for r in rows(db, sql, params)]


def label_vocabulary(db: Database) -> list[str]:
    """Every dataset label plus every label an annotator has decided, sorted."""
    found = {
        r[0]
        for r in db.execute(
            "SELECT label FROM images WHERE label IS NOT NULL"
            " UNION SELECT value FROM image_state WHERE task = 'label' AND value IS NOT NULL"
            " AND decision IN ('accept', 'correct')"
        ).fetchall()
    }
    return sorted(found)


def splits(db: Database) -> dict[str, int]:
    return {
        (r["split"] or "(none)"): r["n"]
        for r in rows(db, "SELECT split, count(*) AS n FROM images GROUP BY split ORDER BY split")
    }
