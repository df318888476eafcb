"""`sportvlm adapters` (list, promote with its evaluation gate, rollback, evaluate) and
`sportvlm train` on builtin:tiny."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

from sportvlm_tui.cli import main as cli
from sportvlm_tui.storage import connect, images, reviews
from sportvlm_tui.storage.adapters import get_adapter, promoted_adapter, register_adapter
from training.runs import promotion_check


def _eval(cand: int, ref: int, total: int = 10, reference: str = "(base model)") -> dict:
    side = lambda n: {"accuracy": n / total, "correct": n, "total": total,  # noqa: E731
                      "per_label": {"x": {"correct": n, "total": total, "accuracy": n / total}}}
    return {"eval": {"split": "valid", "images": total, "reference_name": reference,
                     "candidate": side(cand), "reference": side(ref)}}


@pytest.fixture
def reg(db_path):
    db = connect(db_path)
    register_adapter(db, name="good", path="/a/good", metrics=_eval(8, 7))
    register_adapter(db, name="worse", path="/a/worse", metrics=_eval(5, 7))
    register_adapter(db, name="unevaluated", path="/a/u")
    return db_path


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_promote_gate_tolerance_force_and_rollback(reg):
    db = connect(reg)
    assert promotion_check(db, "worse")[0] is False
    assert promotion_check(db, "worse", tolerance=0.25)[0] is True  # 0.5 >= 0.7 - 0.25
    r = run("adapters", "promote", "worse", "--db", str(reg))
    assert r.exit_code == 1 and "beyond the tolerance" in r.output
    r = run("adapters", "promote", "unevaluated", "--db", str(reg))
    assert r.exit_code == 1 and "not evaluated" in r.output
    r = run("adapters", "promote", "good", "--db", str(reg))
    assert r.exit_code == 0, r.output
    assert promoted_adapter(db).name == "good"
    # "worse" was evaluated against the base; with "good" promoted that no longer counts
    ok, why = promotion_check(db, "worse", tolerance=1.0)
    assert not ok and "evaluate it again" in why
    r = run("adapters", "promote", "unevaluated", "--force", "--db", str(reg))
    assert r.exit_code == 0 and promoted_adapter(db).name == "unevaluated"
    assert get_adapter(db, "good").status == "retired"
    r = run("adapters", "rollback", "--db", str(reg))
    assert r.exit_code == 0 and "now using good" in r.output
    assert promoted_adapter(db).name == "good"
    r = run("adapters", "list", "--db", str(reg))
    assert r.exit_code == 0 and "* good" in r.output and "8/10 (80.0%)" in r.output
    r = run("adapters", "promote", "nope", "--db", str(reg))
    assert r.exit_code == 1 and "no adapter of that name" in r.output


def test_adapters_list_json(reg):
    r = run("adapters", "list", "--json", "--db", str(reg))
    assert r.exit_code == 0
    assert [a["name"] for a in json.loads(r.output)] == ["good", "worse", "unevaluated"]


def _small_db(tmp_path, db_path):
    db = connect(db_path)
    recs = []
    for split, n in (("train", 4), ("valid", 4)):
        for k in range(n):
            label = ["archery", "curling"][k % 2]
            p = tmp_path / "img" / split / label / f"{k}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            PILImage.new("RGB", (32, 32), (200 * (k % 2), 40 * k, 90 if split == "train"
                                           else 10)).save(p)
            recs.append(images.ImageRecord(
                sha256=f"{split}{k}".ljust(64, "0"), root=str(tmp_path / "img"),
                rel_path=f"{split}/{label}/{k}.png", split=split, label=label, width=32,
                height=32, mode="RGB", bytes=p.stat().st_size))
    images.add_images(db, recs)
    for im in images.list_images(db, split="train"):
        reviews.save_decision(db, image_id=im.id, task="label", decision="correct",
                              value=im.label, annotator="ann")
    return db


@pytest.mark.slow
def test_sportvlm_train_then_adapters_evaluate(tmp_path, db_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = _small_db(tmp_path, db_path)
    r = run("train", "--model", "builtin:tiny", "--device", "cpu", "--max-steps", "3",
            "--micro-batch-size", "4", "--eval-limit", "4", "--name", "first", "--no-promote",
            "--db", str(db_path))
    assert r.exit_code == 0, r.output
    assert "exported 4 pairs" in r.output and "step 3/3" in r.output
    assert "candidate first registered" in r.output
    first = get_adapter(db, "first")
    assert first.status == "candidate" and first.metrics["eval"]["images"] == 4
    assert (tmp_path / "adapters" / "first" / "adapter" / "adapter_config.json").is_file()
    r = run("adapters", "evaluate", "first", "--limit", "2", "--quant", "fp32",
            "--db", str(db_path))
    assert r.exit_code == 0, r.output
    assert get_adapter(db, "first").metrics["eval"]["images"] == 2
    assert "on 2 valid images" in r.output
    r = run("train", "--model", "builtin:tiny", "--name", "first", "--db", str(db_path))
    assert r.exit_code == 1 and "exists" in r.output
    # With an adapter promoted, the next candidate is evaluated against it (loaded as a
    # second adapter beside the candidate) and continues from it when asked.
    assert run("adapters", "promote", "first", "--force", "--db", str(db_path)).exit_code == 0
    r = run("train", "--model", "builtin:tiny", "--device", "cpu", "--max-steps", "2",
            "--micro-batch-size", "4", "--eval-limit", "4", "--name", "second",
            "--from-adapter", "first", "--no-promote", "--db", str(db_path))
    assert r.exit_code == 0, r.output
    second = get_adapter(db, "second")
    assert second.parent == "first" and second.metrics["eval"]["reference_name"] == "first"
    assert second.metrics["eval"]["reference"]["total"] == 4


def test_train_without_decisions_is_one_line(tmp_path, db_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("train", "--model", "builtin:tiny", "--db", str(db_path))
    assert r.exit_code == 1 and "no training pairs" in r.output
    assert "Traceback" not in r.output


def test_runs_left_running_by_a_dead_parent_are_closed(db_path):
    import subprocess
    import sys

    from training.runs import close_stale_runs

    db = connect(db_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid in (gone.pid, None):
        db.execute("INSERT INTO training_runs (status, pid, started_at) VALUES ('running', ?,"
                   " 'x')", (pid,))
    db.execute("INSERT INTO training_runs (status, pid, started_at) VALUES ('running', ?, 'x')",
               (os.getpid(),))  # still alive: left alone
    assert close_stale_runs(db) == 2
    assert [r[0] for r in db.execute("SELECT status FROM training_runs ORDER BY id")] == [
        "failed", "failed", "running"]


def test_train_resume_needs_a_started_run(tmp_path, db_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("train", "--resume", "--db", str(db_path))
    assert r.exit_code == 1 and "--resume: name the run" in r.output
    r = run("train", "--resume", "--name", "ghost", "--db", str(db_path))
    assert r.exit_code == 1 and "ghost.config.json not found" in r.output
