"""Storage on an in-memory database: migrations, images, predictions, decision events."""

from __future__ import annotations

import pytest

from sportvlm_tui.storage import adapters, images, predictions, reviews
from sportvlm_tui.storage.migrations import migrations


def _image(n: int, label: str = "archery", split: str = "valid") -> images.ImageRecord:
    return images.ImageRecord(
        sha256=f"{n:064x}", root="/data", rel_path=f"{split}/{label}/{n}.jpg", split=split,
        label=label, width=224, height=224, mode="RGB", bytes=1000,
    )


def test_migrations_applied_once(db):
    assert [m.name for m in migrations.applied(db)] == [m.name for m in migrations._migrations]
    migrations.apply(db)  # idempotent
    assert migrations.pending(db) == []
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_wal_on_file_database(tmp_path):
    from sportvlm_tui.storage import connect

    db = connect(tmp_path / "x.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_images_deduplicate_by_content(db):
    assert images.add_images(db, [_image(1), _image(2)]) == 2
    assert images.add_images(db, [_image(1), _image(3)]) == 1
    assert images.splits(db) == {"valid": 3}
    assert [i.rel_path for i in images.list_images(db)] == [
        "valid/archery/1.jpg", "valid/archery/2.jpg", "valid/archery/3.jpg"]


def test_predictions_unique_and_topk_roundtrip(db):
    images.add_images(db, [_image(1)])
    p = predictions.NewPrediction(
        image_id=1, task="label", mode="zero-shot", model="m", adapter="", text="archery",
        raw=" Archery.", confidence=0.7, topk=[("archery", 0.7), ("bowling", 0.2)],
    )
    assert predictions.add_predictions(db, [p]) == 1
    assert predictions.add_predictions(db, [p]) == 0  # resume never duplicates
    got = predictions.latest_prediction(db, 1, "label")
    assert got.topk == [("archery", 0.7), ("bowling", 0.2)] and got.raw == " Archery."
    assert predictions.predicted_image_ids(
        db, task="label", mode="zero-shot", model="m", adapter="") == {1}


def test_decisions_are_events_and_undo_restores_state(db):
    images.add_images(db, [_image(1)])
    r1 = reviews.save_decision(db, image_id=1, task="label", decision="accept",
                               value="archery", annotator="ann")
    r2 = reviews.save_decision(db, image_id=1, task="label", decision="correct",
                               value="bowling", annotator="ann")
    assert reviews.state(db, 1)["label"]["value"] == "bowling"
    undone = reviews.undo_last(db, "ann")
    assert undone.id == r2
    assert reviews.state(db, 1)["label"]["review_id"] == r1
    assert [r.decision for r in reviews.history(db, 1)] == ["accept", "correct", "undo"]
    reviews.undo_last(db, "ann")
    assert reviews.state(db, 1) == {}
    assert reviews.undo_last(db, "ann") is None
    before = reviews.state(db, 1)
    reviews.rebuild_state(db)
    assert reviews.state(db, 1) == before


def test_bad_decision_rejected_and_nothing_written(db):
    images.add_images(db, [_image(1)])
    with pytest.raises(ValueError):
        reviews.save_decision(db, image_id=1, task="label", decision="correct", value=" ",
                              annotator="a")
    with pytest.raises(ValueError):
        reviews.save_decision(db, image_id=1, task="label", decision="maybe", annotator="a")
    assert reviews.history(db) == []


def test_claims_keep_two_annotators_apart(db):
    images.add_images(db, [_image(1)])
    assert reviews.claim(db, 1, "alice")
    assert not reviews.claim(db, 1, "bob")
    assert reviews.claimed_by_others(db, "bob") == {1}
    reviews.save_decision(db, image_id=1, task="label", decision="accept", value="x",
                          annotator="alice")
    assert reviews.claim(db, 1, "bob")  # a decision releases the claim


def test_adapter_promote_and_rollback(db):
    adapters.register_adapter(db, name="a1", path="/x/a1")
    adapters.register_adapter(db, name="a2", path="/x/a2", parent="a1")
    assert adapters.promote(db, "a1") is None
    assert adapters.promote(db, "a2").name == "a1"
    assert adapters.promoted_adapter(db).name == "a2"
    assert adapters.rollback(db).name == "a1"
    assert adapters.get_adapter(db, "a2").status == "retired"
