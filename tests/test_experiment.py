"""`sportvlm experiment` end to end on sample_data with builtin:tiny (CPU), resumed, and the
report's figures checked against the stored predictions (recomputed here with SQL)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_DATA

from sportvlm_tui.cli import main
from sportvlm_tui.storage import connect

TINY = "builtin:tiny"
PER_LABEL = 2
CAPTION_IMAGES = 4


def _caption_subset(tmp_path: Path, n: int = 8) -> Path:
    """A few of sample_data's caption pairs, image paths made absolute."""
    src = SAMPLE_DATA / "captions.jsonl"
    lines = [json.loads(x) for x in src.read_text().splitlines() if x.strip()][:n]
    out = tmp_path / "captions.jsonl"
    out.write_text("".join(json.dumps({**x, "image": str(SAMPLE_DATA / x["image"])}) + "\n"
                           for x in lines))
    return out


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_experiment_end_to_end_and_resume(tmp_path):
    from sportvlm_tui.evaluation.experiment import Experiment, ExperimentConfig, Reporter
    from sportvlm_tui.evaluation.grading import caption_conditions

    db_path = tmp_path / "exp.db"
    captions = _caption_subset(tmp_path)
    out = tmp_path / "out"
    config = ExperimentConfig(
        root=SAMPLE_DATA, db_path=str(db_path), out_dir=out, model=TINY, per_label=PER_LABEL,
        captions=captions, examples=SAMPLE_DATA / "fewshot_captions.jsonl",
        caption_images=CAPTION_IMAGES, batch_size=8,
        train_options={"micro_batch_size": 4, "max_steps": 2})
    db = connect(db_path)

    class StopAfterOneBatch(Reporter):
        def progress(self, what, done, total):
            if what == "label zero-shot":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Experiment(config, db, StopAfterOneBatch()).run()
    # The batch committed before the interrupt is kept; nothing else was started.
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == 8
    Experiment(config, db).run()

    # What the steps stored.
    groups = {(r["task"], r["mode"], r["adapter"]): r["n"] for r in db.query(
        "SELECT p.task, p.mode, p.adapter, count(*) AS n FROM predictions p"
        " JOIN images i ON i.id = p.image_id WHERE i.split = 'test' GROUP BY 1, 2, 3")}
    n_test = db.execute("SELECT count(*) FROM images WHERE split = 'test'").fetchone()[0]
    assert n_test == 24
    assert groups == {
        ("label", "zero-shot", ""): n_test,
        ("label", "zero-shot", "experiment-labels"): n_test,
        ("caption", "zero-shot", ""): CAPTION_IMAGES,
        ("caption", "few-shot", ""): CAPTION_IMAGES,
        ("caption", "zero-shot", "experiment-captions"): CAPTION_IMAGES,
    }
    adapters = {r["name"]: r for r in db.query("SELECT name, pairs, path FROM adapters")}
    assert adapters["experiment-labels"]["pairs"] == PER_LABEL * 6
    assert adapters["experiment-captions"]["pairs"] == 8
    assert Path(adapters["experiment-labels"]["path"], "adapter_config.json").is_file()
    # Label pairs come from train only, never from the evaluated split.
    pairs = [json.loads(x) for x in (out / "pairs" / "labels.jsonl").read_text().splitlines()]
    assert {p["split"] for p in pairs} == {"train"}
    assert Counter(p["label"] for p in pairs) == {lb: PER_LABEL for lb in {
        p["label"] for p in pairs}}

    # The report: every table, figures recomputed from the stored rows.
    md = (out / "report.md").read_text()
    for heading in ("## Label accuracy", "## Fine-tuning", "## Table 1", "## Per-label accuracy",
                    "## Most frequent mistakes", "## Captions"):
        assert heading in md
    stored = list(db.query(
        "SELECT p.adapter, p.text, i.label, i.rel_path FROM predictions p JOIN images i"
        " ON i.id = p.image_id WHERE p.task = 'label' AND i.split = 'test'"))
    acc = {r["adapter"]: r for r in _read_csv(out / "report.accuracy.csv")}
    assert set(acc) == {"", "experiment-labels"}
    for adapter in ("", "experiment-labels"):
        mine = [r for r in stored if r["adapter"] == adapter]
        exact = sum(r["text"] == r["label"] for r in mine)
        assert (int(acc[adapter]["exact"]), int(acc[adapter]["total"])) == (exact, len(mine))
        name = "zero-shot" if not adapter else "fine-tuned (experiment-labels)"
        assert f"| {name} | {TINY} | {exact} / {len(mine)} |" in md
        per_label = {r["label"]: r for r in _read_csv(out / "report.per_label.csv")}
        for label, row in per_label.items():
            rows_l = [r for r in mine if r["label"] == label]
            assert int(row[f"{name} exact"]) == sum(r["text"] == label for r in rows_l)
            assert int(row[f"{name} total"]) == len(rows_l)
        wrong = Counter((r["label"], r["text"]) for r in mine if r["text"] != r["label"])
        conf = [r for r in _read_csv(out / "report.confusions.csv") if r["condition"] == name]
        assert [int(r["count"]) for r in conf] == sorted(wrong.values(), reverse=True)[:10]
    by_path = {(r["adapter"], r["rel_path"]): r["text"] for r in stored}
    table1 = _read_csv(out / "report.table1.csv")
    assert table1  # never empty: with no accuracy change it shows where answers changed
    for row in table1:
        assert row["zero_shot"] == by_path[("", row["image"])]
        assert row["fine_tuned"] == by_path[("experiment-labels", row["image"])]
    deltas = _read_csv(out / "report.fine_tuning.csv")
    assert sum(int(r["images"]) for r in deltas) == n_test

    # The captions are ready for blind grading: three conditions on the same images.
    names = [c.name for c in caption_conditions(db, "test")]
    assert names == ["zero-shot", "few-shot", "fine-tuned (experiment-captions)"]

    # Run again through the CLI: every step is skipped, nothing is added.
    before = db.execute("SELECT count(*) FROM predictions").fetchone()[0]
    res = CliRunner().invoke(main, [
        "experiment", str(SAMPLE_DATA), "--model", TINY, "--db", str(db_path), "--out", str(out),
        "--per-label", str(PER_LABEL), "--caption-images", str(CAPTION_IMAGES),
        "--captions", str(captions), "--examples", str(SAMPLE_DATA / "fewshot_captions.jsonl")])
    assert res.exit_code == 0, res.output
    assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == before
    assert db.execute("SELECT count(*) FROM adapters").fetchone()[0] == 2
    assert res.output.count("skipped") == 7  # 5 prediction groups + 2 adapters
    assert "Table 1" in res.output


def test_experiment_unknown_split_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["experiment", str(SAMPLE_DATA), "--split", "nope",
                                    "--model", TINY, "--db", str(tmp_path / "x.db"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "--split nope" in res.output and "test" in res.output
    assert "Traceback" not in res.output


def test_experiment_bad_captions_file_is_one_line(tmp_path):
    bad = tmp_path / "caps.jsonl"
    bad.write_text('{"image": "missing.jpg", "caption": "x"}\n')
    res = CliRunner().invoke(main, ["experiment", str(SAMPLE_DATA), "--model", TINY,
                                    "--captions", str(bad), "--db", str(tmp_path / "x.db"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "caps.jsonl:1" in res.output and "missing.jpg" in res.output


def test_evaluation_imports_neither_torch_nor_textual():
    code = ("import sys, sportvlm_tui.evaluation, sportvlm_tui.evaluation.experiment, "
            "sportvlm_tui.commands.eval, sportvlm_tui.commands.grade, "
            "sportvlm_tui.commands.experiment; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'textual')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
