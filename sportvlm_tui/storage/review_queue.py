"""The review queue as keyset-paged SQL: which images to show next, in what order.

Nothing here loads the whole queue: every read is a page (LIMIT) that starts after a sort key,
so the next page of a 100,000-image queue costs an index walk, not a sort of the table.
Sort keys are tuples that compare like the SQL ORDER BY they come from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlite_utils import Database

from .db import now, rows, scalar, write

STATUSES = ("pending", "accepted", "corrected", "skipped", "decided", "all")
ORDERS = ("confidence", "dataset", "random")

# Newest label prediction of image i (what the reviewer is shown; same rule as
# predictions.latest_prediction).
_LATEST_LABEL = (
    "(SELECT max(q.id) FROM predictions q WHERE q.image_id = i.id AND q.task = 'label')"
)
_CONF = "ifnull(p.confidence, -1.0)"
# A cheap integer mix of (id, seed): the same seed always gives the same order, different
# seeds give unrelated ones. SQLite has no xor, so a ^ b is written (a | b) - (a & b).
_M = 4294967291  # largest prime below 2**32


def _random_key_sql(seed: int) -> str:
    s = int(seed) % _M
    x1 = f"(((i.id + {s}) * 2654435761) % {_M})"
    x2 = f"((({x1} | ({x1} >> 13)) - ({x1} & ({x1} >> 13))) * 2246822519 % {_M})"
    return f"((({x2} | ({x2} >> 16)) - ({x2} & ({x2} >> 16))) % {_M})"


@dataclass(frozen=True)
class QueueSpec:
    """What the reviewer is working through: a filter and an order."""

    status: str = "pending"  # one of STATUSES
    label: str | None = None  # proposed (predicted) label equals this
    min_conf: float | None = None
    max_conf: float | None = None
    split: str | None = None
    order: str = "confidence"  # one of ORDERS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown filter {self.status!r}; expected one of {STATUSES}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}; expected one of {ORDERS}")
        if (self.min_conf is not None and self.max_conf is not None
                and self.min_conf > self.max_conf):
            raise ValueError(f"confidence range {self.min_conf}-{self.max_conf} is empty")

    def with_(self, **changes) -> QueueSpec:
        return replace(self, **changes)

    def describe(self) -> str:
        """A short human description, e.g. 'pending · label=tennis · least confident first'."""
        parts = [self.status]
        if self.split:
            parts.append(f"split={self.split}")
        if self.label:
            parts.append(f"label={self.label}")
        if self.min_conf is not None or self.max_conf is not None:
            lo = "" if self.min_conf is None else f"{self.min_conf:g}"
            hi = "" if self.max_conf is None else f"{self.max_conf:g}"
            parts.append(f"conf={lo}-{hi}")
        parts.append({"confidence": "least confident first", "dataset": "dataset order",
                      "random": f"random (seed {self.seed})"}[self.order])
        return " · ".join(parts)


def parse_filter(spec: QueueSpec, text: str) -> QueueSpec:
    """Apply one `--filter` word: a status, `label=NAME`, `conf=LO-HI` or `split=NAME`."""
    text = text.strip()
    if text in STATUSES:
        return spec.with_(status=text)
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(
            f"--filter {text!r}: expected one of {', '.join(STATUSES)}, label=NAME,"
            " conf=LO-HI or split=NAME")
    key = key.strip()
    if key == "label":
        return spec.with_(label=value or None)
    if key == "split":
        return spec.with_(split=value or None)
    if key in ("conf", "confidence"):
        lo, dash, hi = value.partition("-")
        if not dash:
            raise ValueError(f"--filter {text!r}: confidence range must look like 0.2-0.6")
        try:
            return spec.with_(min_conf=float(lo) if lo.strip() else None,
                              max_conf=float(hi) if hi.strip() else None)
        except ValueError as exc:
            raise ValueError(f"--filter {text!r}: {exc}") from None
    raise ValueError(f"--filter {text!r}: unknown key {key!r}")


def parse_order(text: str) -> tuple[str, int]:
    """`confidence`, `dataset`, `random` or `random:SEED` -> (order, seed)."""
    name, _, seed = text.strip().partition(":")
    aliases = {"least-confident": "confidence", "conf": "confidence", "id": "dataset"}
    name = aliases.get(name, name)
    if name not in ORDERS:
        raise ValueError(f"--order {text!r}: expected confidence, dataset or random[:SEED]")
    try:
        return name, int(seed) if seed else 0
    except ValueError:
        raise ValueError(f"--order {text!r}: seed must be an integer") from None


def _status_sql(status: str) -> str:
    decided = (
        "EXISTS (SELECT 1 FROM image_state s WHERE s.image_id = i.id"
        " AND s.task IN ('label', 'image'))"
    )
    return {
        "pending": f"NOT {decided}",
        "decided": decided,
        "accepted": "EXISTS (SELECT 1 FROM image_state s WHERE s.image_id = i.id"
                    " AND s.task = 'label' AND s.decision = 'accept')",
        "corrected": "EXISTS (SELECT 1 FROM image_state s WHERE s.image_id = i.id"
                     " AND s.task = 'label' AND s.decision = 'correct')",
        "skipped": "EXISTS (SELECT 1 FROM image_state s WHERE s.image_id = i.id"
                   " AND s.task = 'image' AND s.decision = 'skip')",
        "all": "1",
    }[status]


def _filters(spec: QueueSpec, annotator: str | None) -> tuple[list[str], dict]:
    where = [_status_sql(spec.status)]
    params: dict = {}
    if spec.split is not None:
        where.append("i.split = :split")
        params["split"] = spec.split
    if spec.label is not None:
        where.append("p.text = :label")
        params["label"] = spec.label
    if spec.min_conf is not None:
        where.append("p.confidence >= :min_conf")
        params["min_conf"] = spec.min_conf
    if spec.max_conf is not None:
        where.append("p.confidence <= :max_conf")
        params["max_conf"] = spec.max_conf
    if annotator is not None:
        # Another annotator's live lease: that image is theirs for now.
        where.append(
            "NOT EXISTS (SELECT 1 FROM claims c WHERE c.image_id = i.id"
            " AND c.annotator != :annotator AND c.expires_at > :now)"
        )
        params["annotator"] = annotator
        params["now"] = now()
    return where, params


def _needs_prediction(spec: QueueSpec) -> bool:
    return spec.label is not None or spec.min_conf is not None or spec.max_conf is not None


def _select(spec: QueueSpec, annotator: str | None, phase: int) -> tuple[str, list[str], dict]:
    """(FROM+WHERE sql, key columns sql, params) for one phase of the order.

    Order "confidence" has two phases: images with a label prediction (by confidence, then
    id), then images with none (by id), which a filter on the prediction excludes.
    """
    where, params = _filters(spec, annotator)
    if spec.order == "confidence" and phase == 0:
        frm = (
            "FROM predictions p JOIN images i ON i.id = p.image_id"
            f" WHERE p.task = 'label' AND p.id = {_LATEST_LABEL}"
        )
        key = ["0", _CONF, "p.image_id"]
    elif spec.order == "confidence":
        frm = (
            "FROM images i WHERE NOT EXISTS (SELECT 1 FROM predictions q"
            " WHERE q.image_id = i.id AND q.task = 'label')"
        )
        if _needs_prediction(spec):
            frm += " AND 0"
        where = [w for w in where if "p." not in w]
        key = ["1", "0", "i.id"]
    else:
        if _needs_prediction(spec):
            frm = f"FROM images i JOIN predictions p ON p.id = {_LATEST_LABEL} WHERE 1"
        else:
            frm = "FROM images i WHERE 1"
        key = ["0", _random_key_sql(spec.seed) if spec.order == "random" else "0", "i.id"]
    return frm + "".join(f" AND {w}" for w in where), key, params


def _order_by(key: list[str]) -> str:
    # Integer literals in ORDER BY would mean column numbers; constant parts sort nothing.
    return ", ".join(k for k in key if not k.isdigit())


def _phases(spec: QueueSpec) -> tuple[int, ...]:
    return (0, 1) if spec.order == "confidence" else (0,)


def page(
    db: Database,
    spec: QueueSpec,
    *,
    annotator: str | None = None,
    after: tuple | None = None,
    before: tuple | None = None,
    inclusive: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> list[tuple[tuple, int]]:
    """Up to `limit` (sort key, image id) in queue order, after `after` (or from the start)
    and before `before` (exclusive). Images claimed by other annotators are left out."""
    out: list[tuple[tuple, int]] = []
    for phase in _phases(spec):
        if after is not None and after[0] > phase:
            continue
        if before is not None and before[0] < phase:
            break
        frm, keys, params = _select(spec, annotator, phase)
        key = ", ".join(keys)
        sql = f"SELECT {key}, i.id AS image_id {frm}"
        if after is not None and after[0] == phase:
            sql += f" AND ({key}) {'>=' if inclusive else '>'} (:a0, :a1, :a2)"
            params.update(a0=after[0], a1=after[1], a2=after[2])
        if before is not None and before[0] == phase:
            sql += f" AND ({key}) < (:b0, :b1, :b2)"
            params.update(b0=before[0], b1=before[1], b2=before[2])
        sql += f" ORDER BY {_order_by(keys)} LIMIT :limit OFFSET :offset"
        params.update(limit=limit - len(out), offset=offset)
        got = db.execute(sql, params).fetchall()
        out += [((r[0], r[1], r[2]), r[3]) for r in got]
        if len(out) >= limit:
            break
        if got:
            offset = 0
        elif offset:
            # The offset reaches past this phase: carry what is left into the next one.
            n = count(db, spec, annotator=annotator, phase=phase, after=after)
            offset = max(0, offset - n)
    return out


def count(
    db: Database,
    spec: QueueSpec,
    *,
    annotator: str | None = None,
    phase: int | None = None,
    after: tuple | None = None,
    before: tuple | None = None,
) -> int:
    """How many images the queue holds (optionally only after/before a sort key)."""
    total = 0
    for ph in _phases(spec) if phase is None else (phase,):
        if after is not None and after[0] > ph:
            continue
        if before is not None and before[0] < ph:
            continue
        frm, keys, params = _select(spec, annotator, ph)
        key = ", ".join(keys)
        sql = f"SELECT count(*) {frm}"
        if after is not None and after[0] == ph:
            sql += f" AND ({key}) > (:a0, :a1, :a2)"
            params.update(a0=after[0], a1=after[1], a2=after[2])
        if before is not None and before[0] == ph:
            sql += f" AND ({key}) < (:b0, :b1, :b2)"
            params.update(b0=before[0], b1=before[1], b2=before[2])
        total += int(scalar(db, sql, params) or 0)
    return total


def sort_key(db: Database, spec: QueueSpec, image_id: int) -> tuple | None:
    """The key image `image_id` has under `spec`'s order (ignoring the filter)."""
    loose = spec.with_(status="all", label=None, min_conf=None, max_conf=None, split=None)
    for phase in _phases(loose):
        frm, keys, params = _select(loose, None, phase)
        got = db.execute(f"SELECT {', '.join(keys)} {frm} AND i.id = :iid",
                         {**params, "iid": image_id})
        row = got.fetchone()
        if row is not None:
            return (row[0], row[1], row[2])
    return None


def claim_for_review(
    db: Database, image_id: int, annotator: str, *, only_pending: bool
) -> str:
    """Decide, in one write transaction, whether `annotator` may be shown `image_id` now.

    Returns "claimed" (pending, and now leased to this annotator), "decided" (already has a
    decision: shown without a lease, unless `only_pending`, then "taken"), or "taken"
    (another annotator holds a live lease, or decided it while `only_pending`).
    """
    with write(db):
        states = rows(
            db,
            "SELECT task, annotator FROM image_state WHERE image_id = ?"
            " AND task IN ('label', 'image')",
            (image_id,),
        )
        if states:
            if only_pending and any(s["annotator"] != annotator for s in states):
                return "taken"
            return "decided"
        stamp = now()
        holder = rows(db, "SELECT annotator, expires_at FROM claims WHERE image_id = ?",
                      (image_id,))
        if holder and holder[0]["annotator"] != annotator and holder[0]["expires_at"] > stamp:
            return "taken"
        from .reviews import CLAIM_SECONDS, _expiry

        db.execute(
            "INSERT OR REPLACE INTO claims (image_id, annotator, expires_at) VALUES (?,?,?)",
            (image_id, annotator, _expiry(CLAIM_SECONDS)),
        )
    return "claimed"


def release_claim(db: Database, image_id: int, annotator: str) -> None:
    """Give back this annotator's lease on one image (moving on without deciding)."""
    with write(db):
        db.execute(
            "DELETE FROM claims WHERE image_id = ? AND annotator = ?", (image_id, annotator)
        )


def progress(db: Database, split: str | None = None) -> tuple[int, int]:
    """(images with a live label decision or skip, images) in `split` (or all)."""
    if split is None:
        total = scalar(db, "SELECT count(*) FROM images")
        done = scalar(
            db, "SELECT count(DISTINCT image_id) FROM image_state WHERE task IN ('label','image')"
        )
    else:
        total = scalar(db, "SELECT count(*) FROM images WHERE split = ?", (split,))
        done = scalar(
            db,
            "SELECT count(DISTINCT s.image_id) FROM image_state s JOIN images i"
            " ON i.id = s.image_id WHERE s.task IN ('label','image') AND i.split = ?",
            (split,),
        )
    return int(done or 0), int(total or 0)


def undo_group(db: Database, annotator: str, n: int) -> list:
    """Undo this annotator's `n` newest live decisions in one transaction (one key press
    may have saved a label and a caption decision together). Returns what was undone."""
    from .reviews import undo_last

    undone = []
    with write(db):
        for _ in range(max(1, n)):
            r = undo_last(db, annotator)
            if r is None:
                break
            undone.append(r)
    return undone
