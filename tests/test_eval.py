"""Label evaluation and the report, against predictions inserted through the storage API;
every expected figure is computed here, independently, from what was inserted."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import pytest
from click.testing import CliRunner

from sportvlm_tui.cli import main
from sportvlm_tui.evaluation.labels import Condition
from sportvlm_tui.evaluation.report import build_report, to_markdown, write_report
from sportvlm_tui.storage import adapters, connect, images, predictions

LABELS = ["bobsled", "tug of war", "snow boarding", "bowling", "archery", "chuckwagon racing"]
NAMING = {"bobsled": "bobsledding", "snow boarding": "snowboarding", "bowling": "Bowling.",
          "tug of war": "tug-of-war", "archery": "Archery",
          "chuckwagon racing": "chuckwagon  racing"}
MODEL = "HuggingFaceM4/idefics-9b"
ZS, FS, FT = (Condition(MODEL, "", "zero-shot"), Condition(MODEL, "", "few-shot"),
              Condition(MODEL, "ft-a", "zero-shot"))


def _record(n: int, label: str, split: str) -> images.ImageRecord:
    return images.ImageRecord(
        sha256=f"{n:064x}", root="/data", rel_path=f"{split}/{label}/{n:03d}.jpg", split=split,
        label=label, width=224, height=224, mode="RGB", bytes=1000)


def _answer(rng: random.Random, label: str, p_right: float) -> tuple[str, str]:
    """(answer, kind) with the kind decided here, not by the code under test."""
    r = rng.random()
    if r < p_right:
        return label, "exact"
    if r < p_right + 0.15:
        return NAMING[label], "naming"
    if r < p_right + 0.3:
        return rng.choice([x for x in LABELS if x != label]), "other label"
    # None of these names a label here ("bowl" is not "bowling", "curling" is not a label).
    return rng.choice(["bowl", "skiing", "a photo of people", "curling"]), "not a label"


@pytest.fixture
def populated(db):
    """6 labels x 7 test images (+ train images that must be ignored), three conditions, a
    few images left unpredicted; returns (db, expected kinds per condition and image)."""
    rng = random.Random(1234)
    n = 0
    recs = []
    for split, per in (("test", 7), ("train", 3)):
        for label in LABELS:
            for _ in range(per):
                n += 1
                recs.append(_record(n, label, split))
    images.add_images(db, recs)
    expected: dict[Condition, dict[int, tuple[str, str, str]]] = {ZS: {}, FS: {}, FT: {}}
    rows = []
    for im in images.list_images(db):
        for cond, p in ((ZS, 0.3), (FS, 0.45), (FT, 0.75)):
            if cond is FS and im.id % 5 == 0:
                continue  # few-shot did not finish: these count as "not predicted"
            text, kind = _answer(rng, im.label, p)
            if im.split == "test":
                expected[cond][im.id] = (im.label, text, kind)
            rows.append(predictions.NewPrediction(im.id, "label", cond.mode, MODEL, cond.adapter,
                                                  text, f" {text}\n"))
    predictions.add_predictions(db, rows)
    adapters.register_adapter(db, name="ft-a", path="/adapters/ft-a")
    return db, expected


def test_accuracy_matches_inserted_predictions(populated):
    db, expected = populated
    report = build_report(db, split="test")
    acc = {(r["model"], r["adapter"], r["mode"]): r for r in report.to_json()["accuracy"]}
    assert set(acc) == {(c.model, c.adapter, c.mode) for c in expected}
    for cond, answers in expected.items():
        row = acc[(cond.model, cond.adapter, cond.mode)]
        kinds = Counter(kind for _, _, kind in answers.values())
        assert row["exact"] == kinds["exact"]
        assert row["naming_errors"] == kinds["naming"]
        assert row["lenient"] == kinds["exact"] + kinds["naming"]
        assert row["not_a_label"] == kinds["not a label"]
        assert row["total"] == len(answers)
        assert row["not_predicted"] == 7 * len(LABELS) - len(answers)
    assert acc[(MODEL, "", "few-shot")]["not_predicted"] > 0
    md = to_markdown(report)
    for cond, answers in expected.items():
        exact = sum(k == "exact" for _, _, k in answers.values())
        assert f"| {cond.name} | {MODEL} | {exact} / {len(answers)} |" in md


def test_per_label_and_confusions_match(populated):
    db, expected = populated
    report = build_report(db, split="test")
    per = {r["label"]: r for r in report.per_label_rows()}
    for cond, answers in expected.items():
        for label in LABELS:
            mine = [k for t, _, k in answers.values() if t == label]
            assert per[label][f"{cond.name} exact"] == mine.count("exact")
            assert per[label][f"{cond.name} total"] == len(mine)
        wrong = Counter((t, a) for t, a, k in answers.values() if k != "exact")
        kind_of = {(t, a): k for t, a, k in answers.values()}
        got = [r for r in report.confusion_rows() if r["condition"] == cond.name]
        assert [r["count"] for r in got] == sorted(wrong.values(), reverse=True)[:10]
        for r in got:
            assert wrong[(r["label"], r["answer"])] == r["count"]
            assert kind_of[(r["label"], r["answer"])] == r["kind"]


def test_fine_tuning_deltas_and_default_table1(populated):
    db, expected = populated
    report = build_report(db, split="test")
    c = report.comparison
    assert c.zero_shot == ZS and c.fine_tuned == FT
    change = {}
    for label in LABELS:
        ids = [i for i, (t, _, _) in expected[ZS].items() if t == label]
        change[label] = (sum(expected[FT][i][2] == "exact" for i in ids)
                         - sum(expected[ZS][i][2] == "exact" for i in ids))
    assert {d.label: d.delta for d in c.deltas} == change
    helped = sorted((lb for lb in LABELS if change[lb] > 0), key=lambda lb: (-change[lb], lb))
    worse = sorted((lb for lb in LABELS if change[lb] < 0), key=lambda lb: (change[lb], lb))
    assert [d.label for d in c.helped] == helped
    assert [d.label for d in c.worse] == worse
    assert c.table1_labels == helped[:3] + worse[:3]
    # Table 1 rows: every image of those labels, both answers as stored, in label order.
    want = [(i, expected[ZS][i][1], expected[FT][i][1]) for label in c.table1_labels
            for i in sorted(expected[ZS]) if expected[ZS][i][0] == label]
    assert [(zs.image_id, zs.text, ft.text) for zs, ft in c.table1] == want


def test_table1_selection_helped_and_worse(db):
    """Constructed so the answer is known: A +3, B +1, C 0, D -1, E -2."""
    labels = ["a sport", "b sport", "c sport", "d sport", "e sport"]
    zs_right = {"a sport": 0, "b sport": 1, "c sport": 2, "d sport": 3, "e sport": 3}
    ft_right = {"a sport": 3, "b sport": 2, "c sport": 2, "d sport": 2, "e sport": 1}
    images.add_images(db, [_record(10 * k + j, lb, "test") for k, lb in enumerate(labels)
                           for j in range(3)])
    rows = []
    for im in images.list_images(db):
        j = int(im.rel_path.rsplit("/", 1)[1][:3]) % 10  # the j the record was made with
        for adapter, right in (("", zs_right), ("tuned", ft_right)):
            text = im.label if j < right[im.label] else "tug of war"
            rows.append(predictions.NewPrediction(im.id, "label", "zero-shot", "m", adapter,
                                                  text, text))
    predictions.add_predictions(db, rows)
    c = build_report(db, split="test").comparison
    assert [(d.label, d.delta) for d in c.helped] == [("a sport", 3), ("b sport", 1)]
    assert [(d.label, d.delta) for d in c.worse] == [("e sport", -2), ("d sport", -1)]
    assert c.table1_labels == ["a sport", "b sport", "e sport", "d sport"]
    assert [zs.truth for zs, _ in c.table1] == ["a sport"] * 3 + ["b sport"] * 3 + [
        "e sport"] * 3 + ["d sport"] * 3
    chosen = build_report(db, split="test", labels=["c sport", "a sport"]).comparison
    assert chosen.table1_labels == ["c sport", "a sport"]
    assert [zs.truth for zs, _ in chosen.table1] == ["c sport"] * 3 + ["a sport"] * 3


def test_promoted_adapter_is_compared(db):
    images.add_images(db, [_record(1, "golf", "test")])
    rows = [predictions.NewPrediction(1, "label", "zero-shot", "m", a, t, t)
            for a, t in (("", "golf"), ("old", "golf"), ("new", "polo"))]
    predictions.add_predictions(db, rows)
    adapters.register_adapter(db, name="old", path="/a/old")
    adapters.register_adapter(db, name="new", path="/a/new")
    assert build_report(db, split="test").comparison.fine_tuned.adapter == "new"
    adapters.promote(db, "old")
    assert build_report(db, split="test").comparison.fine_tuned.adapter == "old"
    assert build_report(db, split="test", adapter="new").comparison.fine_tuned.adapter == "new"


def test_markdown_and_csv_files(populated, tmp_path):
    db, expected = populated
    report = build_report(db, split="test")
    written = write_report(report, tmp_path / "out" / "report.md")
    names = sorted(p.name for p in written)
    assert names == sorted(["report.md"] + [f"report.{t}.csv" for t in (
        "accuracy", "per_label", "confusions", "fine_tuning", "table1", "captions")])
    md = (tmp_path / "out" / "report.md").read_text()
    for heading in ("## Label accuracy", "## Fine-tuning", "## Table 1", "## Per-label accuracy",
                    "## Most frequent mistakes", "## Captions", "## The tutorial"):
        assert heading in md
    with (tmp_path / "out" / "report.table1.csv").open() as f:
        table1 = list(csv.DictReader(f))
    assert len(table1) == len(report.comparison.table1) > 0
    for row in table1:
        i = next(i for i, (t, a, _) in expected[ZS].items()
                 if row["image"].endswith(f"{i:03d}.jpg"))
        assert (row["zero_shot"], row["fine_tuned"]) == (expected[ZS][i][1], expected[FT][i][1])
    with (tmp_path / "out" / "report.accuracy.csv").open() as f:
        acc = {r["condition"]: r for r in csv.DictReader(f)}
    assert int(acc[FT.name]["exact"]) == sum(k == "exact" for *_, k in expected[FT].values())


def test_markdown_shows_data_literally(db):
    images.add_images(db, [_record(1, "golf", "test")])
    predictions.add_predictions(db, [predictions.NewPrediction(
        1, "label", "zero-shot", "m", "", "*golf* | [x](y)", "raw")])
    md = to_markdown(build_report(db, split="test"))
    assert r"\*golf\* \| \[x\](y)" in md


def _cli_db(tmp_path, populated_db):
    path = tmp_path / "eval.db"
    target = connect(path)
    populated_db.conn.backup(target.conn)
    return path


def test_eval_cli_json_text_and_out(populated, tmp_path):
    db, expected = populated
    path = _cli_db(tmp_path, db)
    runner = CliRunner()
    res = runner.invoke(main, ["eval", "--db", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    ft = next(r for r in data["accuracy"] if r["adapter"] == "ft-a")
    assert ft["exact"] == sum(k == "exact" for *_, k in expected[FT].values())
    assert data["fine_tuning"]["zero_shot"] == "zero-shot"
    res = runner.invoke(main, ["eval", "--db", str(path), "--labels", "bobsled,tug of war",
                               "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert "Table 1" in res.output and (tmp_path / "r.table1.csv").exists()
    exact = sum(k == "exact" for *_, k in expected[ZS].values())
    assert f"{exact} / {len(expected[ZS])}" in res.output


def test_eval_cli_errors(populated, tmp_path):
    path = _cli_db(tmp_path, populated[0])
    runner = CliRunner()
    res = runner.invoke(main, ["eval", "--db", str(path), "--labels", "bobsled,quidditch"])
    assert res.exit_code == 1 and "quidditch" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["eval", "--db", str(path), "--split", "valid"])
    assert res.exit_code == 1 and "valid" in res.output and "test=42" in res.output
    res = runner.invoke(main, ["eval", "--db", str(path), "--adapter", "nope"])
    assert res.exit_code == 1 and "nope" in res.output


def test_table1_falls_back_to_changed_answers_when_accuracy_did_not_move(db):
    images.add_images(db, [_record(k, lb, "test") for k, lb in enumerate(
        ["golf", "golf", "polo", "polo", "luge"], 1)])
    answers = {1: ("x", "y"), 2: ("x", "z"), 3: ("q", "q"), 4: ("q", "r"), 5: ("s", "s")}
    rows = [predictions.NewPrediction(i, "label", "zero-shot", "m", a, t, t)
            for i, (zs, ft) in answers.items() for a, t in (("", zs), ("ft", ft))]
    predictions.add_predictions(db, rows)
    c = build_report(db, split="test").comparison
    assert c.helped == [] and c.worse == []
    assert c.table1_labels == ["golf", "polo", "luge"]  # 2 changed, 1 changed, 0 changed
    assert [(zs.text, ft.text) for zs, ft in c.table1][:2] == [("x", "y"), ("x", "z")]


def test_eval_cli_unwritable_out_is_one_line(populated, tmp_path):
    path = _cli_db(tmp_path, populated[0])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(main, ["eval", "--db", str(path), "--out",
                                    str(blocker / "report.md")])
    assert res.exit_code == 1 and "--out" in res.output and "Traceback" not in res.output


def test_eval_cli_labels_without_fine_tuned_predictions(tmp_path):
    path = tmp_path / "zs.db"
    db = connect(path)
    images.add_images(db, [_record(1, "golf", "test")])
    predictions.add_predictions(db, [predictions.NewPrediction(
        1, "label", "zero-shot", "m", "", "golf", "golf")])
    res = CliRunner().invoke(main, ["eval", "--db", str(path), "--labels", "golf"])
    assert res.exit_code == 1 and "fine-tuned" in res.output
    res = CliRunner().invoke(main, ["eval", "--db", str(path)])
    assert res.exit_code == 0 and "1 / 1" in res.output


def test_two_models_and_markup_in_names_stay_apart_and_literal(db):
    images.add_images(db, [_record(1, "golf", "test"), _record(2, "polo", "test")])
    rows = [predictions.NewPrediction(i, "label", "zero-shot", model, adapter, text, text)
            for i, text in ((1, "golf"), (2, "golf"))
            for model, adapter in (("a", ""), ("b", ""), ("b", "[red]x[/red]"))]
    predictions.add_predictions(db, rows)
    report = build_report(db, split="test")
    per = {r["label"]: r for r in report.per_label_rows()}
    assert per["golf"]["zero-shot [a] exact"] == 1 and per["golf"]["zero-shot [b] exact"] == 1
    assert report.comparison.fine_tuned.adapter == "[red]x[/red]"
    from rich.console import Console

    from sportvlm_tui.evaluation.report import render

    console = Console(record=True, width=200)
    render(report, console)
    assert "fine-tuned ([red]x[/red])" in console.export_text()


def test_caption_grades_in_report_and_cli(populated, tmp_path):
    from sportvlm_tui.evaluation.grading import ShownCaption, save_grade

    db, _ = populated
    test_ids = [im.id for im in images.list_images(db, split="test")][:4]
    graded = {}
    for n, i in enumerate(test_ids):
        for mode, adapter in (("zero-shot", ""), ("few-shot", ""), ("zero-shot", "ft-a")):
            predictions.add_predictions(db, [predictions.NewPrediction(
                i, "caption", mode, MODEL, adapter, f"{mode} {adapter} {i}", "raw")])
            pid = db.execute("SELECT id FROM predictions WHERE image_id=? AND task='caption'"
                             " AND mode=? AND adapter=?", (i, mode, adapter)).fetchone()[0]
            ok = (n + len(mode) + len(adapter)) % 2 == 0
            save_grade(db, session="s", grader="ann", image_id=i,
                       caption=ShownCaption("t", (pid,)), acceptable=not ok)
            save_grade(db, session="s", grader="ann", image_id=i,  # changed mind: newest wins
                       caption=ShownCaption("t", (pid,)), acceptable=ok)
            name = mode if not adapter else f"fine-tuned ({adapter})"
            k, total = graded.get(name, (0, 0))
            graded[name] = (k + ok, total + 1)
    report = build_report(db, split="test")
    assert {r["condition"]: (r["acceptable"], r["graded"]) for r in report.caption_rows()} == (
        graded)
    md = to_markdown(report)
    for name, (k, total) in graded.items():
        assert f"| ann | {MODEL} | {name} | {k} / {total} |" in md
    path = _cli_db(tmp_path, db)
    res = CliRunner().invoke(main, ["eval", "--db", str(path)])
    assert "Captions, blind-graded" in res.output
