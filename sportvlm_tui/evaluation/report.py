"""The evaluation report: built once from the database, rendered as rich text in the terminal,
as JSON, or as Markdown with a CSV file per table beside it."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from sqlite_utils import Database

from .grading import ModeGrades, caption_results
from .labels import (
    Comparison,
    Condition,
    GroupResult,
    choose_fine_tuned,
    compare,
    group_result,
    label_conditions,
    labelled_split,
    vocabulary,
)
from .matching import LabelMatcher

BAR_WIDTH = 20
# What the tutorial reported (IDEFICS-9b, 4-bit NF4, 100SIC test split; captions hand-graded
# on 20 test images), printed beside every report for comparison.
TUTORIAL = {
    "model": "HuggingFaceM4/idefics-9b (4-bit NF4)",
    "labels": {"zero-shot": "212 / 500", "fine-tuned (QLoRA, 10 images per sport)": "419 / 500"},
    "captions": {"zero-shot": "7 / 20", "few-shot": "11 / 20", "fine-tuned": "14 / 20"},
}
MARKS = {"exact": "✓", "naming": "≈", "other label": "✗", "not a label": "✗"}


@dataclass
class Report:
    split: str
    split_size: int
    vocabulary_size: int
    groups: list[GroupResult]
    comparison: Comparison | None
    captions: list[ModeGrades]
    confusion_limit: int = 10

    # ---- tables as plain rows (shared by JSON, Markdown, CSV and the terminal) ----------

    def accuracy_rows(self) -> list[dict]:
        return [
            {
                "condition": g.condition.name,
                "model": g.condition.model,
                "adapter": g.condition.adapter,
                "mode": g.condition.mode,
                "exact": g.overall.exact,
                "lenient": g.overall.lenient,
                "naming_errors": g.overall.naming,
                "not_a_label": g.overall.not_a_label,
                "total": g.overall.total,
                "not_predicted": g.missing,
            }
            for g in self.groups
        ]

    def per_label_rows(self) -> list[dict]:
        labels = sorted({label for g in self.groups for label in g.per_label})
        out = []
        for label in labels:
            row: dict = {"label": label}
            for g in self.groups:
                s = g.per_label.get(label)
                key = self.column(g)
                row[f"{key} exact"] = s.exact if s else 0
                row[f"{key} lenient"] = s.lenient if s else 0
                row[f"{key} total"] = s.total if s else 0
            out.append(row)
        return out

    def confusion_rows(self) -> list[dict]:
        return [
            {"condition": self.column(g), "label": t, "answer": ans, "kind": kind, "count": n}
            for g in self.groups
            for t, ans, kind, n in g.confusions(self.confusion_limit)
        ]

    def delta_rows(self) -> list[dict]:
        c = self.comparison
        if c is None:
            return []
        return [{"label": d.label, "images": d.total, "zero_shot": d.zero_shot,
                 "fine_tuned": d.fine_tuned, "change": d.delta} for d in c.deltas]

    def table1_rows(self) -> list[dict]:
        c = self.comparison
        if c is None:
            return []
        return [
            {"label": zs.truth, "image": zs.rel_path, "zero_shot": zs.text,
             "zero_shot_match": zs.kind, "fine_tuned": ft.text, "fine_tuned_match": ft.kind}
            for zs, ft in c.table1
        ]

    def caption_rows(self) -> list[dict]:
        return [{"grader": g.grader, "model": g.model, "condition": g.condition,
                 "acceptable": g.acceptable, "graded": g.graded} for g in self.captions]

    def column(self, g: GroupResult) -> str:
        """A condition's column name; the model is added when the report has several."""
        if len({x.condition.model for x in self.groups}) > 1:
            return f"{g.condition.name} [{g.condition.model}]"
        return g.condition.name

    def to_json(self) -> dict:
        c = self.comparison
        return {
            "split": self.split,
            "labelled_images": self.split_size,
            "vocabulary": self.vocabulary_size,
            "accuracy": self.accuracy_rows(),
            "per_label": self.per_label_rows(),
            "confusions": self.confusion_rows(),
            "fine_tuning": None if c is None else {
                "zero_shot": c.zero_shot.name,
                "fine_tuned": c.fine_tuned.name,
                "model": c.zero_shot.model,
                "per_label": self.delta_rows(),
                "helped": [d.label for d in c.helped],
                "worse": [d.label for d in c.worse],
                "table1_labels": c.table1_labels,
                "table1": self.table1_rows(),
            },
            "captions": self.caption_rows(),
            "tutorial": TUTORIAL,
        }


def build_report(db: Database, *, split: str = "test", labels: list[str] | None = None,
                 model: str | None = None, adapter: str | None = None,
                 confusion_limit: int = 10) -> Report:
    """Score every label condition on `split`, compare zero-shot with fine-tuned, and collect
    the caption grades. `labels` picks Table 1's labels; `model`/`adapter` pick what to compare."""
    matcher = LabelMatcher(vocabulary(db))
    conditions = label_conditions(db, split)
    if model is not None:
        conditions = [c for c in conditions if c.model == model]
    groups = [group_result(db, split, c, matcher) for c in conditions]
    comparison = None
    if groups:
        if model is None:
            counts: dict[str, int] = {}
            for g in groups:
                counts[g.condition.model] = counts.get(g.condition.model, 0) + g.overall.total
            model = max(sorted(counts), key=lambda m: counts[m])
        by_condition = {g.condition: g for g in groups}
        zs = by_condition.get(Condition(model, "", "zero-shot"))
        ft_cond = choose_fine_tuned(db, conditions, model, adapter)
        if zs is not None and ft_cond is not None:
            comparison = compare(zs, by_condition[ft_cond], labels)
    return Report(split, len(labelled_split(db, split)), len(matcher.vocabulary), groups,
                  comparison, caption_results(db, split), confusion_limit)


# ---- terminal ---------------------------------------------------------------------------


def _bar(n: int, total: int, width: int = BAR_WIDTH) -> Text:
    filled = round(width * n / total) if total else 0
    bar = Text("█" * filled, style="green") + Text("░" * (width - filled), style="grey37")
    return bar + Text(f" {n}/{total}")


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def render(report: Report, console: Console) -> None:
    """Print the report with rich; every value from the data goes in as plain Text."""
    console.print(Text(f"split {report.split}: {report.split_size} labelled images, "
                       f"{report.vocabulary_size} labels", style="bold"))
    if not report.groups:
        console.print(Text("no label predictions on this split yet (sportvlm predict)"))
    else:
        models = sorted({g.condition.model for g in report.groups})
        one_model = len(models) == 1
        title = "Label accuracy (exact = the tutorial's rule; lenient forgives naming only)"
        if one_model:
            title += f"\nmodel: {models[0]}"
        t = Table(title=Text(title), title_justify="left")
        columns = ["condition"] + ([] if one_model else ["model"]) + [
            "exact", "%", "lenient", "naming", "not a label", "not predicted"]
        for col in columns:
            t.add_column(col)
        for r in report.accuracy_rows():
            t.add_row(Text(r["condition"]), *([] if one_model else [Text(r["model"])]),
                      Text(f"{r['exact']} / {r['total']}"), Text(_pct(r["exact"], r["total"])),
                      Text(f"{r['lenient']} / {r['total']}"), Text(str(r["naming_errors"])),
                      Text(str(r["not_a_label"])), Text(str(r["not_predicted"])))
        console.print(t)
    c = report.comparison
    if c is not None:
        for title, items in (("Fine-tuning helped most", c.helped[:10]),
                             ("Fine-tuning made worse", c.worse)):
            t = Table(title=Text(f"{title} ({c.zero_shot.name} -> {c.fine_tuned.name})"),
                      title_justify="left")
            for col in ("label", "zero-shot", "fine-tuned", "change"):
                t.add_column(col)
            for d in items:
                t.add_row(Text(d.label), Text(f"{d.zero_shot}/{d.total}"),
                          Text(f"{d.fine_tuned}/{d.total}"), Text(f"{d.delta:+d}"))
            if not items:
                t.add_row(Text("(none)"), Text(""), Text(""), Text(""))
            console.print(t)
        t = Table(title="Table 1: zero-shot and fine-tuned answers side by side "
                  "(✓ exact, ≈ right sport by another name, ✗ wrong)", title_justify="left")
        for col in ("label", "image", c.zero_shot.name, c.fine_tuned.name):
            t.add_column(Text(col))
        for zs, ft in c.table1:
            t.add_row(Text(zs.truth), Text(zs.rel_path), Text(f"{MARKS[zs.kind]} {zs.text}"),
                      Text(f"{MARKS[ft.kind]} {ft.text}"))
        console.print(t)
    if report.groups:
        t = Table(title="Per-label accuracy (exact match)", title_justify="left")
        t.add_column("label")
        for g in report.groups:
            t.add_column(Text(report.column(g)))
        for label in sorted({lb for g in report.groups for lb in g.per_label}):
            cells = []
            for g in report.groups:
                s = g.per_label.get(label)
                cells.append(_bar(s.exact, s.total) if s else Text("-"))
            t.add_row(Text(label), *cells)
        console.print(t)
        for g in report.groups:
            conf = g.confusions(report.confusion_limit)
            t = Table(title=Text(f"Most frequent mistakes: {report.column(g)}"),
                      title_justify="left")
            for col in ("label", "answer", "kind", "count"):
                t.add_column(col)
            for label, ans, kind, n in conf:
                t.add_row(Text(label), Text(ans), Text(kind), Text(str(n)))
            if conf:
                console.print(t)
    console.print(_caption_table(report))
    console.print(Text(_tutorial_line(), style="dim"))


def _tutorial_line() -> str:
    labels = ", ".join(f"{k} {v}" for k, v in TUTORIAL["labels"].items())
    captions = ", ".join(f"{k} {v}" for k, v in TUTORIAL["captions"].items())
    return (f"The tutorial ({TUTORIAL['model']}, 100SIC test): labels exact match {labels}; "
            f"captions acceptable {captions}.")


def _caption_table(report: Report):
    if not report.captions:
        return Text("captions: no blind grades yet (sportvlm grade)")
    t = Table(title="Captions, blind-graded", title_justify="left")
    for col in ("grader", "model", "condition", "acceptable"):
        t.add_column(col)
    for g in report.captions:
        t.add_row(Text(g.grader), Text(g.model), Text(g.condition),
                  Text(f"{g.acceptable} / {g.graded}"))
    return Group(t)


# ---- Markdown + CSV ----------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\|*_`[]<>#"})


def md(text: object) -> str:
    """A value as literal Markdown table-cell text."""
    return " ".join(str(text).split()).translate(_MD_SPECIAL)


def _md_table(header: list[str], body: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in body]
    return lines + [""]


def _md_bar(n: int, total: int) -> str:
    filled = round(BAR_WIDTH * n / total) if total else 0
    return "█" * filled + "░" * (BAR_WIDTH - filled) + f" {n}/{total}"


def to_markdown(report: Report, csv_names: dict[str, str] | None = None) -> str:
    """The report as Markdown (the same tables as the terminal)."""
    out = [f"# Evaluation: split {md(report.split)}", "",
           f"{report.split_size} labelled images, {report.vocabulary_size} labels. Exact match "
           "is the tutorial's rule (the parsed answer equals the dataset label as written); "
           "lenient also forgives naming (case, punctuation, spacing, an added \"-ing\", "
           "plural, one slip of spelling, a few listed other names such as \"ping pong\"), "
           "never a different sport. \"Not a label\" counts "
           "answers that name no label of the dataset (an unknown sport, or no sport).", ""]
    if csv_names:
        out += ["Tables as CSV: " + ", ".join(f"[{md(k)}]({v})" for k, v in csv_names.items()),
                ""]
    out += ["## Label accuracy", ""]
    if report.groups:
        out += _md_table(
            ["condition", "model", "exact", "%", "lenient", "naming errors", "not a label",
             "not predicted"],
            [[r["condition"], r["model"], f"{r['exact']} / {r['total']}",
              _pct(r["exact"], r["total"]), f"{r['lenient']} / {r['total']}",
              r["naming_errors"], r["not_a_label"], r["not_predicted"]]
             for r in report.accuracy_rows()])
    else:
        out += ["No label predictions on this split.", ""]
    c = report.comparison
    if c is not None:
        out += [f"## Fine-tuning: {md(c.zero_shot.name)} vs {md(c.fine_tuned.name)}", "",
                "### Helped most", ""]
        out += _md_table(["label", "zero-shot", "fine-tuned", "change"],
                         [[d.label, f"{d.zero_shot}/{d.total}", f"{d.fine_tuned}/{d.total}",
                           f"{d.delta:+d}"] for d in c.helped[:10]]) if c.helped else [
            "(none)", ""]
        out += ["### Made worse", ""]
        out += _md_table(["label", "zero-shot", "fine-tuned", "change"],
                         [[d.label, f"{d.zero_shot}/{d.total}", f"{d.fine_tuned}/{d.total}",
                           f"{d.delta:+d}"] for d in c.worse]) if c.worse else ["(none)", ""]
        out += ["## Table 1: answers side by side", "",
                "✓ exact, ≈ right sport by another name, ✗ wrong.", ""]
        out += _md_table(["label", "image", c.zero_shot.name, c.fine_tuned.name],
                         [[zs.truth, zs.rel_path, f"{MARKS[zs.kind]} {zs.text}",
                           f"{MARKS[ft.kind]} {ft.text}"] for zs, ft in c.table1])
    if report.groups:
        out += ["## Per-label accuracy (exact match)", ""]
        labels = sorted({lb for g in report.groups for lb in g.per_label})
        body = []
        for label in labels:
            row: list[object] = [label]
            for g in report.groups:
                s = g.per_label.get(label)
                row.append(_md_bar(s.exact, s.total) if s else "-")
            body.append(row)
        out += _md_table(["label"] + [report.column(g) for g in report.groups], body)
        out += ["## Most frequent mistakes", ""]
        for g in report.groups:
            conf = g.confusions(report.confusion_limit)
            out += [f"### {md(report.column(g))}", ""]
            out += _md_table(["label", "answer", "kind", "count"],
                             [[t, a, k, n] for t, a, k, n in conf]) if conf else [
                "(none)", ""]
    out += ["## Captions, blind-graded", ""]
    if report.captions:
        out += _md_table(["grader", "model", "condition", "acceptable"],
                         [[g.grader, g.model, g.condition, f"{g.acceptable} / {g.graded}"]
                          for g in report.captions])
    else:
        out += ["No grades yet (`sportvlm grade`).", ""]
    out += ["## The tutorial, for comparison", "", md(_tutorial_line()), ""]
    return "\n".join(out)


def write_report(report: Report, path: str | Path) -> list[Path]:
    """Write `path` (Markdown) and one CSV per table beside it (`<stem>.<table>.csv`).
    Returns every file written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = {
        "accuracy": report.accuracy_rows(),
        "per_label": report.per_label_rows(),
        "confusions": report.confusion_rows(),
        "fine_tuning": report.delta_rows(),
        "table1": report.table1_rows(),
        "captions": report.caption_rows(),
    }
    written, names = [], {}
    for name, body in tables.items():
        target = path.with_name(f"{path.stem}.{name}.csv")
        with target.open("w", newline="", encoding="utf-8") as f:
            if body:
                w = csv.DictWriter(f, fieldnames=list(body[0]))
                w.writeheader()
                w.writerows(body)
        written.append(target)
        names[name] = target.name
    # Markdown last, written whole then renamed, so a reader never sees half a report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_markdown(report, names) + "\n", encoding="utf-8")
    tmp.replace(path)
    return [path, *written]
