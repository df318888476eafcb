"""Live decisions -> training pairs (JSONL). Never imports torch or textual.

One pair per (image, task) with a live `accept` (the proposal's value) or `correct` (the
corrected value); `skip` and `reject` give none. Each line is flat, so
`datasets.load_dataset("json", data_files=path)` reads it as it is.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlite_utils import Database

from ..prompts import QUESTIONS, build_prompt
from ..storage.db import now, rows, scalar, write
from ..storage.images import roots as image_roots

PAIR_DECISIONS = ("accept", "correct")
IMAGE_PLACEHOLDER = "<image>"  # how an image part is written in a pair's prompt text


@dataclass(frozen=True)
class TrainingPair:
    """One (image, task, answer) example, as written to a JSONL line."""

    image: str  # absolute path of the image file
    root: str  # the ingested root the image lives under
    rel_path: str  # path relative to `root`
    task: str  # label | caption
    prompt: str  # prompt text; IMAGE_PLACEHOLDER marks where the image goes
    answer: str  # the decided answer (without the end-of-answer marker)
    label: str | None  # the sport: the answer for label pairs; the image's label for captions
    image_id: int
    review_id: int
    decision: str  # accept | correct
    annotator: str
    split: str | None
    sha256: str
    replay: bool = False  # True: an earlier pair replayed so new training does not forget


@dataclass
class ExportResult:
    """What an export wrote and what it refused (one line per refused image)."""

    path: Path | None
    pairs: list[TrainingPair]
    new: int
    replayed: int
    max_review_id: int
    refused: list[str] = field(default_factory=list)
    export_id: int | None = None


def prompt_text(task: str) -> str:
    """The zero-shot prompt of `task` as text, from the one prompt builder."""
    parts = build_prompt(task, IMAGE_PLACEHOLDER)
    return "".join(p if isinstance(p, str) else IMAGE_PLACEHOLDER for p in parts)


def last_export_review_id(db: Database) -> int:
    """The newest review id covered by an earlier export (0 when none)."""
    return int(scalar(db, "SELECT max(max_review_id) FROM exports") or 0)


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _live_rows(db: Database, tasks: list[str]) -> list[dict]:
    marks = ",".join("?" * len(tasks))
    return rows(
        db,
        "SELECT s.image_id, s.task, s.review_id, s.decision, s.value, s.annotator,"
        " r.prediction_id, p.text AS proposal, i.rel_path, i.split, i.sha256,"
        " i.label AS dataset_label, ro.path AS root,"
        " (SELECT ls.value FROM image_state ls WHERE ls.image_id = s.image_id"
        "  AND ls.task = 'label' AND ls.decision IN ('accept', 'correct')) AS decided_label,"
        " (SELECT lp.text FROM image_state ls JOIN reviews lr ON lr.id = ls.review_id"
        "  JOIN predictions lp ON lp.id = lr.prediction_id WHERE ls.image_id = s.image_id"
        "  AND ls.task = 'label' AND ls.decision = 'accept') AS accepted_label"
        " FROM image_state s"
        " JOIN reviews r ON r.id = s.review_id"
        " LEFT JOIN predictions p ON p.id = r.prediction_id"
        " JOIN images i ON i.id = s.image_id"
        " JOIN roots ro ON ro.id = i.root_id"
        f" WHERE s.task IN ({marks}) AND s.decision IN ('accept', 'correct')"
        " ORDER BY s.review_id",
        tasks,
    )


def _answer(row: dict) -> str | None:
    # accept: the proposal the annotator saw; a value stored with the accept is the fallback
    # (an accept recorded without a prediction id still carries what was accepted).
    if row["decision"] == "accept":
        text = row["proposal"] if row["proposal"] is not None else row["value"]
    else:
        text = row["value"]
    text = (text or "").strip()
    return text or None


def collect_pairs(db: Database, tasks: list[str]) -> tuple[list[TrainingPair], list[str]]:
    """Every live accept/correct decision of `tasks` as a pair, plus one line per refusal."""
    for t in tasks:
        if t not in QUESTIONS:
            raise ValueError(f"unknown task {t!r}; expected one of {sorted(QUESTIONS)}")
    known_roots = [Path(r).resolve() for r in image_roots(db)]
    prompts = {t: prompt_text(t) for t in tasks}
    pairs: list[TrainingPair] = []
    refused: list[str] = []
    for row in _live_rows(db, tasks):
        root = Path(row["root"]).resolve()
        path = (root / row["rel_path"]).resolve()
        if not any(_is_within(path, r) for r in known_roots) or not _is_within(path, root):
            refused.append(f"{path}: outside the ingested roots; not exported")
            continue
        if not path.is_file():
            refused.append(f"{path}: image file missing; not exported")
            continue
        answer = _answer(row)
        if answer is None:
            refused.append(f"image {row['image_id']} ({row['task']}): empty answer; not exported")
            continue
        if row["task"] == "label":
            label = answer
        else:
            label = row["decided_label"] or row["accepted_label"] or row["dataset_label"]
        pairs.append(
            TrainingPair(
                image=str(path),
                root=str(root),
                rel_path=row["rel_path"],
                task=row["task"],
                prompt=prompts[row["task"]],
                answer=answer,
                label=label,
                image_id=row["image_id"],
                review_id=row["review_id"],
                decision=row["decision"],
                annotator=row["annotator"],
                split=row["split"],
                sha256=row["sha256"],
            )
        )
    return pairs, refused


def parse_replay(spec: str | None) -> float | int | None:
    """`0.2` (a fraction of the earlier pairs) or `500` (that many); None/'' means none."""
    if spec is None or str(spec).strip() == "":
        return None
    s = str(spec).strip()
    try:
        if any(c in s for c in ".eE"):
            value: float | int = float(s)
            if not 0.0 <= value <= 1.0:
                raise ValueError
        else:
            value = int(s)
            if value < 0:
                raise ValueError
    except ValueError:
        raise ValueError(
            f"--replay {s!r}: expected a fraction in [0, 1] (e.g. 0.2) or a count (e.g. 500)"
        ) from None
    return value


def stratified_sample(
    pairs: list[TrainingPair], n: int, *, seed: int = 0
) -> list[TrainingPair]:
    """`n` pairs drawn so each label keeps its share (every label at least once while n
    allows); deterministic for a seed. Returned in review order."""
    if n >= len(pairs):
        return list(pairs)
    if n <= 0:
        return []
    rng = random.Random(seed)
    by_label: dict[str, list[TrainingPair]] = defaultdict(list)
    for p in pairs:
        by_label[p.label or ""].append(p)
    groups = {k: rng.sample(v, len(v)) for k, v in sorted(by_label.items())}
    total = len(pairs)
    # Largest-remainder allocation, then a floor of one per label taken from the biggest.
    quota = {k: n * len(v) / total for k, v in groups.items()}
    take = {k: int(q) for k, q in quota.items()}
    rest = n - sum(take.values())
    for k in sorted(quota, key=lambda k: (-(quota[k] - take[k]), k))[:rest]:
        take[k] += 1
    starved = [k for k in groups if take[k] == 0]
    for k in starved:
        donor = max(take, key=lambda d: (take[d], d))
        if take[donor] <= 1:
            break
        take[donor] -= 1
        take[k] = 1
    chosen = [p for k, v in groups.items() for p in v[: take[k]]]
    return sorted(chosen, key=lambda p: p.review_id)


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Write one JSON object per line via a temp file + rename: a reader (or a crash) never
    sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_export_path() -> Path:
    stamp = now().replace(":", "").replace("-", "")[:15]
    return Path("runs") / "exports" / f"pairs-{stamp}.jsonl"


def export_pairs(
    db: Database,
    out: str | os.PathLike[str] | None = None,
    *,
    tasks: list[str] | tuple[str, ...] = ("label",),
    new_only: bool = False,
    replay: float | int | None = None,
    seed: int = 0,
    record: bool = True,
) -> ExportResult:
    """Write the live decisions of `tasks` as JSONL and record the export.

    `new_only`: only decisions newer than the last export; `replay` then adds a stratified
    share of the earlier pairs (a fraction of them, or a count), marked `replay: true`.
    """
    tasks = list(dict.fromkeys(tasks))
    if replay and not new_only:
        raise ValueError("--replay needs --new-only (without it every decision is exported "
                         "already)")
    all_pairs, refused = collect_pairs(db, tasks)
    since = last_export_review_id(db) if new_only else 0
    new = [p for p in all_pairs if p.review_id > since]
    earlier = [p for p in all_pairs if p.review_id <= since]
    replayed: list[TrainingPair] = []
    if replay and earlier:
        n = round(replay * len(earlier)) if isinstance(replay, float) else int(replay)
        replayed = [
            TrainingPair(**{**asdict(p), "replay": True})
            for p in stratified_sample(earlier, n, seed=seed)
        ]
    pairs = new + replayed
    # Everything decided so far counts as seen, skips and rejects too, so the next
    # --new-only export starts after them.
    max_review_id = int(scalar(db, "SELECT max(review_id) FROM image_state") or 0)
    max_review_id = max(max_review_id, since)
    path = Path(out) if out is not None else default_export_path()
    write_jsonl_atomic(path, (asdict(p) for p in pairs))
    result = ExportResult(
        path=path, pairs=pairs, new=len(new), replayed=len(replayed),
        max_review_id=max_review_id, refused=refused,
    )
    if record:
        with write(db):
            cur = db.execute(
                "INSERT INTO exports (path, tasks, pairs, max_review_id, created_at)"
                " VALUES (?,?,?,?,?)",
                (str(path.resolve()), ",".join(tasks), len(pairs), max_review_id, now()),
            )
            result.export_id = int(cur.lastrowid)
    return result


def read_pairs(path: str | os.PathLike[str]) -> list[TrainingPair]:
    """Pairs from a JSONL export. Raises ValueError naming the file and line on bad input."""
    path = Path(path)
    fields = set(TrainingPair.__dataclass_fields__)
    required = {"image", "task", "answer"}
    out: list[TrainingPair] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not required <= obj.keys():
            raise ValueError(f"{path}:{n}: a pair needs the fields {sorted(required)}")
        if obj["task"] not in QUESTIONS:
            raise ValueError(f"{path}:{n}: unknown task {obj['task']!r}")
        if not str(obj["answer"]).strip():
            raise ValueError(f"{path}:{n}: empty answer")
        defaults = {
            "root": "", "rel_path": "", "prompt": prompt_text(obj["task"]), "label": None,
            "image_id": 0, "review_id": 0, "decision": "correct", "annotator": "",
            "split": None, "sha256": "",
        }
        out.append(TrainingPair(**{**defaults, **{k: v for k, v in obj.items() if k in fields}}))
    return out
