"""Label accuracy from stored predictions: overall, per label, confusions, zero-shot vs
fine-tuned (the tutorial's Table 1). Pure reads; no torch, no textual."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlite_utils import Database

from ..storage import adapters as adapter_store
from ..storage.db import rows
from .matching import LabelMatcher


@dataclass(frozen=True)
class Condition:
    """What produced a set of predictions: model, adapter ('' = base) and prompt mode."""

    model: str
    adapter: str
    mode: str

    @property
    def name(self) -> str:
        """How the tutorial names it: zero-shot, few-shot, fine-tuned (adapter)."""
        if not self.adapter:
            return self.mode
        return f"fine-tuned ({self.adapter})" if self.mode == "zero-shot" else (
            f"{self.mode} + {self.adapter}")


# exact: the tutorial's rule; naming: the right sport by another name (lenient match);
# other label: names a different label of the dataset; not a label: names none (an unknown
# sport such as "rodeo" for chuckwagon racing, or no sport at all).
KINDS = ("exact", "naming", "other label", "not a label")


@dataclass(frozen=True)
class Answer:
    image_id: int
    rel_path: str
    truth: str
    text: str
    kind: str  # exact | naming | other label | not a label (see KINDS)


@dataclass
class LabelScore:
    """Counts for one label (or for everything)."""

    total: int = 0
    exact: int = 0
    naming: int = 0
    not_a_label: int = 0

    @property
    def lenient(self) -> int:
        return self.exact + self.naming

    @property
    def accuracy(self) -> float:
        return self.exact / self.total if self.total else 0.0

    def add(self, kind: str) -> None:
        self.total += 1
        self.exact += kind == "exact"
        self.naming += kind == "naming"
        self.not_a_label += kind == "not a label"


@dataclass
class GroupResult:
    """Every label answer of one condition on the split."""

    condition: Condition
    answers: dict[int, Answer]
    split_size: int  # labelled images in the split (answers may cover fewer)
    overall: LabelScore = field(default_factory=LabelScore)
    per_label: dict[str, LabelScore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        per: dict[str, LabelScore] = defaultdict(LabelScore)
        for a in self.answers.values():
            self.overall.add(a.kind)
            per[a.truth].add(a.kind)
        self.per_label = dict(sorted(per.items()))

    @property
    def missing(self) -> int:
        return self.split_size - self.overall.total

    def confusions(self, limit: int | None = 10) -> list[tuple[str, str, str, int]]:
        """Most frequent (truth, answer, kind, count) among answers that are not exact."""
        counts = Counter((a.truth, a.text, a.kind) for a in self.answers.values()
                         if a.kind != "exact")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(t, ans, kind, n) for (t, ans, kind), n in ranked[:limit]]


@dataclass(frozen=True)
class LabelDelta:
    """One label's exact-match accuracy before and after fine-tuning (same images)."""

    label: str
    total: int
    zero_shot: int
    fine_tuned: int

    @property
    def delta(self) -> int:
        return self.fine_tuned - self.zero_shot


@dataclass(frozen=True)
class Comparison:
    """Zero-shot vs fine-tuned on the images both answered (the tutorial's Table 1)."""

    zero_shot: Condition
    fine_tuned: Condition
    deltas: list[LabelDelta]
    helped: list[LabelDelta]  # best first
    worse: list[LabelDelta]  # worst first
    table1_labels: list[str]
    table1: list[tuple[Answer, Answer]]


def labelled_split(db: Database, split: str) -> list[dict]:
    """Labelled images of `split` (id, rel_path, label)."""
    return rows(
        db,
        "SELECT id, rel_path, label FROM images WHERE split = ? AND label IS NOT NULL"
        " ORDER BY id",
        (split,),
    )


def vocabulary(db: Database) -> list[str]:
    """Every dataset label in the database (all splits): what an answer may name."""
    return [r[0] for r in db.execute(
        "SELECT DISTINCT label FROM images WHERE label IS NOT NULL ORDER BY label").fetchall()]


def label_conditions(db: Database, split: str) -> list[Condition]:
    """Every (model, adapter, mode) with label predictions on labelled images of `split`."""
    found = rows(
        db,
        "SELECT DISTINCT p.model, p.adapter, p.mode FROM predictions p"
        " JOIN images i ON i.id = p.image_id"
        " WHERE p.task = 'label' AND i.split = ? AND i.label IS NOT NULL"
        " ORDER BY p.model, p.adapter != '', p.adapter, p.mode DESC",
        (split,),
    )
    return [Condition(r["model"], r["adapter"], r["mode"]) for r in found]


def group_result(db: Database, split: str, condition: Condition,
                 matcher: LabelMatcher | None = None) -> GroupResult:
    """Score one condition's label predictions on `split`."""
    matcher = matcher or LabelMatcher(vocabulary(db))
    found = rows(
        db,
        "SELECT i.id, i.rel_path, i.label, p.text FROM predictions p"
        " JOIN images i ON i.id = p.image_id"
        " WHERE p.task = 'label' AND i.split = ? AND i.label IS NOT NULL"
        " AND p.model = ? AND p.adapter = ? AND p.mode = ? ORDER BY i.id",
        (split, condition.model, condition.adapter, condition.mode),
    )
    answers = {
        r["id"]: Answer(r["id"], r["rel_path"], r["label"], r["text"],
                        answer_kind(matcher, r["text"], r["label"]))
        for r in found
    }
    return GroupResult(condition, answers, split_size=len(labelled_split(db, split)))


def answer_kind(matcher: LabelMatcher, answer: str, truth: str) -> str:
    """One of KINDS for `answer` to an image labelled `truth`."""
    kind = matcher.classify(answer, truth)
    if kind != "wrong":
        return kind
    return "other label" if matcher.lenient_label(answer) is not None else "not a label"


def choose_fine_tuned(db: Database, conditions: list[Condition], model: str,
                      adapter: str | None = None) -> Condition | None:
    """The fine-tuned condition to compare: `adapter` if given, else the promoted adapter,
    else the newest registered adapter, else any adapter; zero-shot prompts on `model`."""
    tuned = [c for c in conditions if c.model == model and c.adapter and c.mode == "zero-shot"]
    if adapter is not None:
        return next((c for c in tuned if c.adapter == adapter), None)
    if not tuned:
        return None
    by_name = {c.adapter: c for c in tuned}
    promoted = adapter_store.promoted_adapter(db)
    if promoted and promoted.name in by_name:
        return by_name[promoted.name]
    for a in reversed(adapter_store.list_adapters(db)):
        if a.name in by_name:
            return by_name[a.name]
    return tuned[-1]


def compare(zs: GroupResult, ft: GroupResult, labels: list[str] | None = None,
            n_each: int = 3) -> Comparison:
    """Per-label change from zero-shot to fine-tuned on the images both answered, and Table 1
    for `labels` (default: the `n_each` labels fine-tuning helped most and hurt most; when
    accuracy moved nowhere, the `n_each` labels whose answers changed most)."""
    common = sorted(set(zs.answers) & set(ft.answers))
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for i in common:
        c = per[zs.answers[i].truth]
        c[0] += 1
        c[1] += zs.answers[i].kind == "exact"
        c[2] += ft.answers[i].kind == "exact"
    deltas = [LabelDelta(label, *c) for label, c in sorted(per.items())]
    helped = sorted((d for d in deltas if d.delta > 0), key=lambda d: (-d.delta, d.label))
    worse = sorted((d for d in deltas if d.delta < 0), key=lambda d: (d.delta, d.label))
    if labels is None:
        labels = [d.label for d in helped[:n_each]] + [d.label for d in worse[:n_each]]
    if not labels:
        # Nothing changed in accuracy: show where the answers changed most, so the table
        # still says what fine-tuning did to the model's words.
        changed = Counter(zs.answers[i].truth for i in common
                          if zs.answers[i].text != ft.answers[i].text)
        ranked = sorted(per, key=lambda label: (-changed[label], label))
        labels = ranked[:n_each]
    wanted = set(labels)
    order = {label: n for n, label in enumerate(labels)}
    table = [(zs.answers[i], ft.answers[i]) for i in common if zs.answers[i].truth in wanted]
    table.sort(key=lambda pair: (order[pair[0].truth], pair[0].image_id))
    return Comparison(zs.condition, ft.condition, deltas, helped, worse, list(labels), table)
