"""The whole loop on CPU with builtin:tiny: ingest -> predict -> decisions (storage API and the
review TUI) -> export -> train (separate process) -> candidate with changed weights ->
evaluation -> promotion -> predict again with the promoted adapter -> more corrected labels.
Plus: a crash in training leaves the database as it was; training from the TUI (key t)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

from sportvlm_tui.cli import main as cli
from sportvlm_tui.storage import connect, images, predictions, reviews
from sportvlm_tui.storage.adapters import get_adapter, list_adapters, promoted_adapter

TINY = "builtin:tiny"
COLOURS = {"archery": (220, 30, 30), "bobsled": (30, 200, 40), "curling": (40, 60, 220),
           "tug of war": (230, 220, 40)}
# Enough steps for the tiny model to learn colour -> label (checked: deterministic with seeds).
TRAIN = {"max_steps": 60, "learning_rate": 1e-2, "lr_schedule": "constant",
         "micro_batch_size": 12, "device": "cpu", "quant": "fp32", "eval_limit": 8,
         "eval_batch_size": 8, "lora_dropout": 0.0}


def _dataset(root: Path, per_label_train: int = 3, per_label_valid: int = 2) -> None:
    """A 100SIC-style folder: each sport a colour, with a little per-image variation."""
    for split, n in (("train", per_label_train), ("valid", per_label_valid)):
        for li, (label, rgb) in enumerate(COLOURS.items()):
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                shade = tuple(max(0, min(255, c + 9 * k - 9)) for c in rgb)
                im = PILImage.new("RGB", (32, 32), shade)
                # distinct content per file, across splits too (ingest stores content once)
                im.putpixel((k + (16 if split == "valid" else 0), li), (255 - shade[0], 0, 0))
                im.save(d / f"{split}_{li}_{k}.png")


def _labelled(db, split):
    return {im.id: im.label for im in images.list_images(db, split=split)}


def _correct_count(db, adapter: str, ids: dict[int, str]) -> int:
    got = {p.image_id: p.text for p in predictions.list_predictions(
        db, task="label", model=TINY, adapter=adapter)}
    return sum(got.get(i) == lab for i, lab in ids.items())


@pytest.fixture
def loop_db(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _dataset(root)
    db_path = tmp_path / "loop.db"
    monkeypatch.chdir(tmp_path)  # exports and adapters land under tmp_path
    r = CliRunner().invoke(cli, ["ingest", str(root), "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    return db_path


def _predict(db, adapter: str | None = None, split: str = "train"):
    from sportvlm_tui.model.loading import load_model
    from sportvlm_tui.model.predict import predict_images

    loaded = load_model(TINY, quant="fp32", device="cpu", adapter=adapter, db=db)
    return predict_images(db, loaded, task="label", split=split, constrain_labels=True,
                          batch_size=8, workers=1)


def _table_snapshot(path) -> dict:
    with sqlite3.connect(path) as c:
        return {t: c.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("adapters", "predictions", "reviews", "image_state", "exports")}


def _decide_by_storage(db, ids: dict[int, str], skip: set[int]) -> None:
    """The annotator's work: accept right proposals, correct wrong ones."""
    for image_id, truth in ids.items():
        if image_id in skip:
            continue
        pred = predictions.latest_prediction(db, image_id, "label")
        if pred.text == truth:
            reviews.save_decision(db, image_id=image_id, task="label", decision="accept",
                                  annotator="ann", prediction_id=pred.id)
        else:
            reviews.save_decision(db, image_id=image_id, task="label", decision="correct",
                                  value=truth, annotator="ann", prediction_id=pred.id)


async def _decide_first_in_tui(db_path: str, truth: str) -> int:
    """One decision through the review app: pick the true label with the label picker."""
    from textual.widgets import Input

    from sportvlm_tui.storage.review_queue import QueueSpec
    from sportvlm_tui.ui.app import ReviewApp
    from sportvlm_tui.ui.review_screen import ReviewConfig

    app = ReviewApp(ReviewConfig(db_path, "tui-ann", QueueSpec(order="dataset", split="train"),
                                 graphics="halfblock"), clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        first = app.review.item.image.id
        await pilot.press("l")
        await app.settled()
        app.screen.query_one(Input).value = truth
        await pilot.press("enter")
        await app.settled()
    return first


@pytest.mark.slow
async def test_the_whole_loop_learns_the_corrections(loop_db):
    from safetensors.torch import load_file

    from sportvlm_tui.export import export_pairs
    from training.runs import TrainingProcess, plan_config, promote_checked

    db = connect(loop_db)
    train_ids = _labelled(db, "train")
    _predict(db)
    before = _correct_count(db, "", train_ids)
    assert before < len(train_ids)  # the random model gets some wrong: there is work to do

    first = await _decide_first_in_tui(str(loop_db), train_ids[min(train_ids)])
    assert first == min(train_ids)
    state = reviews.state(db, first)["label"]
    assert state["annotator"] == "tui-ann"
    assert (state["decision"], state["value"]) in (("correct", train_ids[first]),
                                                   ("accept", train_ids[first]))
    _decide_by_storage(db, train_ids, skip={first})

    res = export_pairs(db, Path("pairs.jsonl"), tasks=["label"])
    assert {p.image_id: p.answer for p in res.pairs} == train_ids

    config = plan_config(db, str(loop_db), pairs="pairs.jsonl", name="cand-1", model=TINY,
                         overrides=TRAIN)
    proc = TrainingProcess(db, config)
    steps = [e for e in proc.events() if e["event"] == "step"]
    outcome = proc.finish()
    assert outcome.status == "done", outcome.message
    assert len(steps) == TRAIN["max_steps"] and steps[-1]["loss"] < steps[0]["loss"]
    cand = get_adapter(db, "cand-1")
    assert cand.status == "candidate" and cand.pairs == len(train_ids)
    weights = load_file(Path(cand.path) / "adapter_model.safetensors")
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)
    run = db.execute("SELECT status, adapter_name FROM training_runs").fetchall()
    assert [tuple(r) for r in run] == [("done", "cand-1")]

    report = cand.metrics["eval"]
    assert report["split"] == "valid" and report["images"] == 8
    assert report["reference_name"] == "(base model)"
    # Held-out images of the same sports: the trained adapter does better than the base.
    assert report["candidate"]["correct"] > report["reference"]["correct"]
    assert set(report["candidate"]["per_label"]) == set(COLOURS)
    # The evaluation ran on a copy: no rows for it in the real database.
    assert not predictions.list_predictions(db, split="valid")

    ok, why = promote_checked(db, "cand-1")
    assert ok, why
    assert promoted_adapter(db).name == "cand-1"

    summary = _predict(db, adapter="cand-1")
    assert summary.adapter == "cand-1" and summary.predicted == len(train_ids)
    after_rows = predictions.list_predictions(db, task="label", adapter="cand-1")
    assert {p.image_id for p in after_rows} == set(train_ids)
    after = _correct_count(db, "cand-1", train_ids)
    assert after > before, (before, after)


@pytest.mark.slow
def test_crash_in_training_changes_nothing_but_the_run_record(loop_db, tmp_path):
    from training.runs import TrainingProcess, plan_config

    db = connect(loop_db)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")  # decoding fails inside the trainer's data loader
    pairs = tmp_path / "crash.jsonl"
    pairs.write_text(json.dumps({"image": str(broken), "task": "label", "answer": "archery"})
                     + "\n")
    before = _table_snapshot(loop_db)
    config = plan_config(db, str(loop_db), pairs=str(pairs), name="doomed", model=TINY,
                         overrides=TRAIN)
    outcome = TrainingProcess(db, config).finish()
    assert outcome.status == "failed" and outcome.adapter is None
    assert "cannot identify image" in outcome.message or "UnidentifiedImage" in outcome.message
    assert _table_snapshot(loop_db) == before
    assert not Path(config.out_dir).exists()
    row = db.execute("SELECT status, error FROM training_runs").fetchone()
    assert row[0] == "failed" and row[1]


@pytest.mark.slow
async def test_training_from_the_review_app(loop_db):
    """Key t opens the training screen; s trains in a separate process while the review
    screen stays usable; p promotes; r re-predicts the pending images with the adapter."""
    from sportvlm_tui.storage.review_queue import QueueSpec
    from sportvlm_tui.ui.app import ReviewApp
    from sportvlm_tui.ui.review_screen import ReviewConfig
    from sportvlm_tui.ui.training import TrainingScreen

    db = connect(loop_db)
    train_ids = _labelled(db, "train")
    _predict(db)
    decided = dict(list(train_ids.items())[:8])
    _decide_by_storage(db, decided, skip=set())

    app = ReviewApp(ReviewConfig(str(loop_db), "ann", QueueSpec(order="dataset", split="train"),
                                 graphics="halfblock"), clock=lambda: 0.0)
    app.training_overrides = TRAIN | {"max_steps": 10}

    async def wait_for(cond, timeout=240.0):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not cond():
            assert loop.time() < end, "timed out"
            await asyncio.sleep(0.2)

    async with app.run_test(size=(100, 30)) as pilot:
        await app.settled()
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TrainingScreen)
        ctl = app.training_controller
        await pilot.press("s")
        await wait_for(lambda: ctl.state.phase == "training")
        # back to reviewing while it trains: a decision goes through
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, TrainingScreen)
        await app.settled()
        shown = app.review.item.image.id
        await pilot.press("a")
        await app.settled()
        assert reviews.state(connect(loop_db), shown)["label"]["decision"] == "accept"
        await wait_for(lambda: not ctl.state.running)
        assert ctl.state.phase == "done", ctl.state.message
        name = ctl.state.adapter
        assert name and "held-out valid" in ctl.state.eval_summary

        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TrainingScreen)
        text = str(app.screen.query_one("#training-eval").render())
        assert name in text
        await pilot.press("p")
        await wait_for(lambda: ctl.state.promoted or "not promoted" in ctl.state.message)
        assert ctl.state.promoted, ctl.state.message
        assert promoted_adapter(connect(loop_db)).name == name
        await pilot.press("r")
        await wait_for(lambda: ctl.state.repredict.startswith(("re-predicted", "re-prediction f")))
        assert ctl.state.repredict.startswith("re-predicted"), ctl.state.repredict

        # Quitting while a run goes on stops the trainer (what the atexit hook does).
        app.training_controller.overrides["max_steps"] = 100000
        await pilot.press("s")
        await wait_for(lambda: ctl.state.phase == "training" and ctl.state.step > 0)
        await asyncio.get_running_loop().run_in_executor(None, ctl.shutdown)
        await wait_for(lambda: ctl.state.phase == "interrupted")

    db = connect(loop_db)
    pending = [i for i in _labelled(db, None) if not reviews.state(db, i)]
    redone = {p.image_id for p in predictions.list_predictions(db, task="label", adapter=name)}
    assert pending and set(pending) <= redone
    assert [a.name for a in list_adapters(db)] == [name]
    runs = db.execute("SELECT status FROM training_runs ORDER BY id").fetchall()
    assert [r[0] for r in runs] == ["done", "interrupted"]


@pytest.mark.slow
def test_cancel_stops_the_trainer_and_saves_nothing(loop_db, tmp_path):
    from training.runs import TrainingProcess, plan_config

    db = connect(loop_db)
    _decide_by_storage_without_predictions(db)
    from sportvlm_tui.export import export_pairs

    res = export_pairs(db, tmp_path / "p.jsonl", tasks=["label"])
    config = plan_config(db, str(loop_db), pairs=str(res.path), name="cancelled", model=TINY,
                         overrides=TRAIN | {"max_steps": 100000, "eval_limit": None})
    proc = TrainingProcess(db, config)
    for ev in proc.events():
        if ev["event"] == "step":
            proc.cancel()
    outcome = proc.finish()
    assert outcome.status == "interrupted" and outcome.adapter is None
    assert not Path(config.out_dir).exists()
    assert not list(Path(config.out_dir).parent.glob(".cancelled.partial-*"))
    assert list_adapters(db) == []
    assert db.execute("SELECT status FROM training_runs").fetchone()[0] == "interrupted"


def _decide_by_storage_without_predictions(db) -> None:
    for image_id, label in _labelled(db, "train").items():
        reviews.save_decision(db, image_id=image_id, task="label", decision="correct",
                              value=label, annotator="ann")
