"""The review queue and session without the UI: order, filters, paging, claims, undo, resume."""

from __future__ import annotations

import random

import pytest

from sportvlm_tui.storage import connect
from sportvlm_tui.storage import review_queue as rq
from sportvlm_tui.storage.predictions import NewPrediction, add_predictions
from sportvlm_tui.storage.reviews import claim, save_decision, state
from sportvlm_tui.ui.session import Action, ReviewSession, StaleAction
from sportvlm_tui.ui.synthetic import populate, write_images


@pytest.fixture
def qdb(tmp_path):
    db = connect(tmp_path / "q.db")
    populate(db, write_images(tmp_path / "img", 3), 40)
    return db


def _conf(db) -> dict[int, float]:
    return {r[0]: r[1] for r in db.execute(
        "SELECT image_id, confidence FROM predictions WHERE task='label'")}


def walk(db, spec, annotator=None, limit=7) -> list[int]:
    """Every image id of the queue, paging `limit` at a time by sort key."""
    out, after = [], None
    while True:
        got = rq.page(db, spec, annotator=annotator, after=after, limit=limit)
        if not got:
            return out
        out += [i for _, i in got]
        after = got[-1][0]


def test_least_confident_first_pages_match_a_full_sort(qdb):
    conf = _conf(qdb)
    expected = sorted(conf, key=lambda i: (conf[i], i))
    assert walk(qdb, rq.QueueSpec()) == expected
    assert len(rq.page(qdb, rq.QueueSpec(), limit=5)) == 5


def test_images_without_prediction_come_last_in_confidence_order(qdb):
    qdb.execute("DELETE FROM predictions WHERE image_id IN (3, 5)")
    order = walk(qdb, rq.QueueSpec())
    assert order[-2:] == [3, 5] and len(order) == 40
    # a filter on the prediction leaves them out
    assert 3 not in walk(qdb, rq.QueueSpec(min_conf=0.0))


def test_newest_prediction_decides_confidence(qdb):
    add_predictions(qdb, [NewPrediction(image_id=7, task="label", mode="few-shot", model="m",
                                        adapter="", text="golf", raw="golf", confidence=0.001)])
    order = walk(qdb, rq.QueueSpec())
    assert order[0] == 7 and order.count(7) == 1


def test_dataset_and_random_orders(qdb):
    assert walk(qdb, rq.QueueSpec(order="dataset")) == list(range(1, 41))
    r1 = walk(qdb, rq.QueueSpec(order="random", seed=1))
    r1_again = walk(qdb, rq.QueueSpec(order="random", seed=1))
    r2 = walk(qdb, rq.QueueSpec(order="random", seed=2))
    assert r1 == r1_again and sorted(r1) == list(range(1, 41))
    assert r1 != r2 and r1 != list(range(1, 41))


def test_status_label_and_confidence_filters(qdb):
    save_decision(qdb, image_id=1, task="label", decision="accept", value="x", annotator="a")
    save_decision(qdb, image_id=2, task="label", decision="correct", value="golf",
                  annotator="a")
    save_decision(qdb, image_id=3, task="image", decision="skip", annotator="a")
    spec = rq.QueueSpec(order="dataset")
    assert walk(qdb, spec.with_(status="accepted")) == [1]
    assert walk(qdb, spec.with_(status="corrected")) == [2]
    assert walk(qdb, spec.with_(status="skipped")) == [3]
    assert walk(qdb, spec.with_(status="decided")) == [1, 2, 3]
    assert 1 not in walk(qdb, spec) and len(walk(qdb, spec)) == 37
    assert len(walk(qdb, spec.with_(status="all"))) == 40
    proposed = {r[0]: r[1] for r in qdb.execute(
        "SELECT image_id, text FROM predictions WHERE task='label'")}
    label = proposed[10]
    assert walk(qdb, spec.with_(status="all", label=label)) == sorted(
        i for i, t in proposed.items() if t == label)
    conf = _conf(qdb)
    got = walk(qdb, spec.with_(status="all", min_conf=0.2, max_conf=0.3))
    assert got == sorted(i for i, c in conf.items() if 0.2 <= c <= 0.3)
    assert rq.count(qdb, spec.with_(status="all", min_conf=0.2, max_conf=0.3)) == len(got)


def test_parse_filter_and_order():
    spec = rq.parse_filter(rq.QueueSpec(), "conf=0.1-0.5")
    assert (spec.min_conf, spec.max_conf) == (0.1, 0.5)
    assert rq.parse_filter(spec, "label=tug of war").label == "tug of war"
    assert rq.parse_filter(spec, "accepted").status == "accepted"
    assert rq.parse_order("random:7") == ("random", 7)
    for bad in ("nonsense", "conf=abc-1", "conf=0.5"):
        with pytest.raises(ValueError, match="--filter"):
            rq.parse_filter(spec, bad)
    with pytest.raises(ValueError, match="--order"):
        rq.parse_order("sideways")
    with pytest.raises(ValueError, match="empty"):
        rq.QueueSpec(min_conf=0.9, max_conf=0.1)


def test_claimed_images_are_left_out_for_others(qdb):
    first = walk(qdb, rq.QueueSpec())[0]
    assert claim(qdb, first, "bob")
    assert first not in walk(qdb, rq.QueueSpec(), annotator="ann")
    assert first in walk(qdb, rq.QueueSpec(), annotator="bob")


def test_two_sessions_never_share_a_pending_image_and_both_decisions_land(tmp_path, qdb):
    path = tmp_path / "q.db"
    ann = ReviewSession(connect(path), "ann", rq.QueueSpec(), page_size=5)
    bob = ReviewSession(connect(path), "bob", rq.QueueSpec(), page_size=5)
    a, b = ann.start(), bob.start()
    seen_a, seen_b = set(), set()
    for _ in range(12):
        assert a.image.id != b.image.id
        seen_a.add(a.image.id)
        seen_b.add(b.image.id)
        a = ann.decide(a.image.id, [Action("label", "accept", a.label.text)], advance=True)
        b = bob.decide(b.image.id, [Action("label", "accept", b.label.text)], advance=True)
    assert not seen_a & seen_b
    rows = connect(path).execute(
        "SELECT annotator, count(*) FROM image_state WHERE task='label' GROUP BY annotator")
    assert dict(rows.fetchall()) == {"ann": 12, "bob": 12}


def test_a_page_fetched_before_anothers_decision_does_not_hand_it_out(tmp_path, qdb):
    path = tmp_path / "q.db"
    ann = ReviewSession(connect(path), "ann", rq.QueueSpec(order="dataset"), page_size=10)
    item = ann.start()
    assert item.image.id == 1
    # bob decides image 2 while ann's window already holds it
    save_decision(connect(path), image_id=2, task="label", decision="accept", value="x",
                  annotator="bob")
    assert ann.move(+1).image.id == 3


def test_undo_takes_back_the_whole_key_press_and_returns_to_the_image(qdb):
    s = ReviewSession(qdb, "ann", rq.QueueSpec(order="dataset"))
    first = s.start()
    nxt = s.decide(first.image.id, [Action("label", "accept", "x"),
                                    Action("caption", "accept", "c")], advance=True)
    assert nxt.image.id != first.image.id
    back, undone = s.undo()
    assert back.image.id == first.image.id and len(undone) == 2
    assert state(qdb, first.image.id) == {}
    assert back.leased  # pending again, and ours


def test_stale_key_is_refused(qdb):
    s = ReviewSession(qdb, "ann", rq.QueueSpec(order="dataset"))
    item = s.start()
    s.decide(item.image.id, [Action("image", "skip")], advance=True)
    with pytest.raises(StaleAction):
        s.decide(item.image.id, [Action("image", "skip")], advance=True)


def test_resume_starts_after_the_last_decision(tmp_path, qdb):
    s = ReviewSession(qdb, "ann", rq.QueueSpec(order="dataset"))
    item = s.start()
    for _ in range(3):
        item = s.move(+1)  # looked at 1..4 without deciding
    s.decide(item.image.id, [Action("image", "skip")], advance=True)
    s.close()
    again = ReviewSession(connect(tmp_path / "q.db"), "ann", rq.QueueSpec(order="dataset"))
    assert again.start().image.id == 5
    # a fresh annotator starts at the top
    assert ReviewSession(qdb, "cyd", rq.QueueSpec(order="dataset")).start().image.id == 1


def test_resume_wraps_around_to_earlier_pending_images(qdb):
    for i in range(1, 41):
        if i not in (2, 40):
            save_decision(qdb, image_id=i, task="image", decision="skip", annotator="ann")
    s = ReviewSession(qdb, "ann", rq.QueueSpec(order="dataset"))
    assert s.start().image.id == 40
    assert s.decide(40, [Action("image", "skip")], advance=True).image.id == 2
    assert s.decide(2, [Action("image", "skip")], advance=True) is None


def test_goto_and_positions(qdb):
    s = ReviewSession(qdb, "ann", rq.QueueSpec(order="dataset"), page_size=4)
    item = s.goto(17)
    assert item.image.id == 17 and item.position == 17
    assert s.move(+1).position == 18
    assert s.goto(1000) is None


def test_moving_away_gives_the_lease_back(qdb):
    s = ReviewSession(qdb, "ann", rq.QueueSpec(order="dataset"))
    s.start()
    s.move(+1)
    held = [r[0] for r in qdb.execute("SELECT image_id FROM claims WHERE annotator='ann'")]
    assert held == [2]
    s.close()
    assert qdb.execute("SELECT count(*) FROM claims").fetchone()[0] == 0


def test_a_page_is_bounded_on_a_large_queue(tmp_path):
    db = connect(tmp_path / "big.db")
    populate(db, write_images(tmp_path / "img", 2), 3000, captions=False, seed=3)
    rng = random.Random(0)
    for _ in range(5):
        after = rq.sort_key(db, rq.QueueSpec(), rng.randint(1, 3000))
        got = rq.page(db, rq.QueueSpec(), after=after, limit=20)
        assert len(got) <= 20 and all(k > after for k, _ in got)
    plan = " ".join(str(r) for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT image_id FROM predictions p WHERE p.task = 'label'"
        " ORDER BY ifnull(p.confidence, -1.0), p.image_id LIMIT 5").fetchall())
    assert "predictions_review_order" in plan and "TEMP B-TREE" not in plan
