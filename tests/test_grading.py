"""Blind caption grading: the order hides the mode, identical captions are graded once, and
key presses in the TUI are committed to caption_grades."""

from __future__ import annotations

import html
import re
from collections import Counter

from click.testing import CliRunner
from PIL import Image as PILImage

from sportvlm_tui.cli import main
from sportvlm_tui.evaluation.grading import (
    blind_order,
    caption_conditions,
    caption_results,
    current_grades,
    grading_items,
    save_grade,
)
from sportvlm_tui.storage import adapters, connect, images, predictions

MODEL = "org/secret-model-name"
ADAPTER = "adapter-xyz"
MODES = [("zero-shot", ""), ("few-shot", ""), ("zero-shot", ADAPTER)]


def test_positions_are_uniform_whatever_the_mode():
    # Texts sort in mode order, and ids rise in mode order: neither may leak into position.
    caps = [{"id": 1, "text": "a zs"}, {"id": 2, "text": "b fs"}, {"id": 3, "text": "c ft"}]
    counts = Counter()
    n = 3000
    for k in range(n):
        shown = blind_order(f"session-{k % 7}", k, caps)
        for pos, c in enumerate(shown):
            counts[(c.prediction_ids[0], pos)] += 1
    # Binomial(3000, 1/3): sd ~ 26, so +-110 is > 4 sd.
    for mode in (1, 2, 3):
        for pos in range(3):
            assert abs(counts[(mode, pos)] - n / 3) < 110, counts
    # The order depends on (session, image) alone, not on how the rows came in.
    assert blind_order("s", 5, caps) == blind_order("s", 5, list(reversed(caps)))
    orders = {tuple(c.prediction_ids[0] for c in blind_order(f"s{k}", 5, caps))
              for k in range(60)}
    assert len(orders) == 6  # every permutation occurs


def test_identical_captions_shown_once_and_graded_together(db):
    images.add_images(db, [_record(1)])
    ids = _captions(db, 1, ["a man on a sled", "a  man on a sled", "two men"])
    shown = blind_order("s", 1, [{"id": i, "text": t} for i, t in zip(ids, [
        "a man on a sled", "a  man on a sled", "two men"], strict=True)])
    assert sorted(len(c.prediction_ids) for c in shown) == [1, 2]
    merged = next(c for c in shown if len(c.prediction_ids) == 2)
    save_grade(db, session="s", grader="ann", image_id=1, caption=merged, acceptable=True)
    assert current_grades(db, "s", "ann") == {ids[0]: True, ids[1]: True}
    res = {g.condition: (g.acceptable, g.graded) for g in caption_results(db)}
    assert res == {"zero-shot": (1, 1), "few-shot": (1, 1)}


def test_items_only_images_with_every_mode_and_resume_keeps_them(db):
    images.add_images(db, [_record(i) for i in range(1, 31)])
    for i in range(1, 31):
        _captions(db, i, [f"zs {i}", f"fs {i}", f"ft {i}"][: 2 if i % 10 == 0 else 3])
    adapters.register_adapter(db, name=ADAPTER, path="/a")
    conds = caption_conditions(db, "test")
    assert [c.name for c in conds] == ["zero-shot", "few-shot", f"fine-tuned ({ADAPTER})"]
    items = grading_items(db, split="test", n=20, session="s1", grader="ann", conditions=conds)
    assert len(items) == 20 and len({it.image_id for it in items}) == 20
    assert all(it.image_id % 10 for it in items)  # the three without a fine-tuned caption: out
    assert all(len(it.captions) == 3 for it in items)
    # Grading a few then asking again (even for fewer images) keeps the graded ones first.
    for it in items[5:8]:
        save_grade(db, session="s1", grader="ann", image_id=it.image_id,
                   caption=it.captions[0], acceptable=False)
    again = grading_items(db, split="test", n=20, session="s1", grader="ann", conditions=conds)
    assert [it.image_id for it in again] == [it.image_id for it in items]
    fewer = grading_items(db, split="test", n=2, session="s1", grader="ann", conditions=conds)
    assert [it.image_id for it in fewer] == [it.image_id for it in items[5:8]]
    other = grading_items(db, split="test", n=20, session="s2", grader="ann", conditions=conds)
    assert [it.image_id for it in other] != [it.image_id for it in items]


def _screen_text(app) -> str:
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def test_tui_grades_by_keyboard_blind_and_committed(tmp_path):
    from sportvlm_tui.ui.grading import GradingApp, GradingScreen

    path = tmp_path / "g.db"
    db = connect(path)
    root = tmp_path / "imgs"
    (root / "test" / "bobsled").mkdir(parents=True)
    for i in range(1, 4):
        PILImage.new("RGB", (32, 32), (40 * i, 90, 200)).save(root / "test" / "bobsled" /
                                                             f"{i:03d}.jpg")
    images.add_images(db, [_record(i, root=str(root)) for i in range(1, 4)])
    texts = {1: ["[b]bold?[/b] a sled", "a sled on ice", "a bobsled team"],
             2: ["same caption", "same caption", "other caption"],
             3: ["x", "y", "z"]}
    ids = {i: _captions(db, i, t) for i, t in texts.items()}
    adapters.register_adapter(db, name=ADAPTER, path="/a")
    conds = caption_conditions(db, "test")
    items = grading_items(db, split="test", n=3, session="sess", grader="ann", conditions=conds)
    first = items[0]
    messages = []
    app = GradingApp(db, items, session="sess", grader="ann")
    async with app.run_test(size=(140, 45), message_hook=messages.append) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        pictures = [m.rendered for m in messages if isinstance(m, GradingScreen.PictureReady)]
        assert pictures and pictures[-1].error is None  # the image itself is on screen
        assert pictures[-1].key.image_id == first.image_id
        screen = _screen_text(app)
        for shown in first.captions:
            assert shown.text in screen  # literally, markup included
        for secret in ("zero-shot", "few-shot", "fine-tuned", "zero", "few", "fine", "tuned",
                       MODEL, ADAPTER, "shot"):
            assert secret not in screen
        await pilot.press("y", "n", "y")  # the three captions of the first image
        await pilot.pause()
        # Committed: another connection sees the grades at once.
        other = connect(path)
        got = current_grades(other, "sess", "ann")
        assert got == {first.captions[0].prediction_ids[0]: True,
                       first.captions[1].prediction_ids[0]: False,
                       first.captions[2].prediction_ids[0]: True}
        # The app moved on to the second image by itself.
        assert app.grading.index == 1
        second = items[1]
        await pilot.press("down", "n")  # skip to the second caption, reject it
        await pilot.pause()
        got = current_grades(other, "sess", "ann")
        for pid in second.captions[1].prediction_ids:
            assert got[pid] is False
        await pilot.press("left")  # back to the first image, change the first grade
        await pilot.pause()
        assert app.grading.index == 0
        await pilot.press("n")
        await pilot.pause()
        assert current_grades(other, "sess", "ann")[first.captions[0].prediction_ids[0]] is False
        assert app.grading.index == 0  # changing a finished image's grade stays on it
    # Bubbling shows a message to the hook once per node: count distinct messages.
    graded = {id(m): m for m in messages if isinstance(m, GradingScreen.Graded)}
    assert len(graded) == 5
    n_rows = other.execute("SELECT count(*) FROM caption_grades").fetchone()[0]
    assert n_rows == 3 + len(second.captions[1].prediction_ids) + 1
    # Results per mode use the newest grade per caption.
    res = {g.condition: (g.acceptable, g.graded) for g in caption_results(other, "test")}
    by_pid = current_grades(other, "sess", "ann")
    want: dict[str, list[int]] = {}
    for pids in ids.values():
        for (mode, adapter), pid in zip(MODES, pids, strict=True):
            if pid in by_pid:
                name = mode if not adapter else f"fine-tuned ({adapter})"
                want.setdefault(name, [0, 0])
                want[name][0] += by_pid[pid]
                want[name][1] += 1
    assert res == {k: tuple(v) for k, v in want.items()}


def test_grade_cli_without_captions_is_one_line(tmp_path):
    db = connect(tmp_path / "e.db")
    images.add_images(db, [_record(1)])
    res = CliRunner().invoke(main, ["grade", "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 1 and "no captions" in res.output and "Traceback" not in res.output


def _record(n: int, root: str = "/data") -> images.ImageRecord:
    return images.ImageRecord(
        sha256=f"{n:064x}", root=root, rel_path=f"test/bobsled/{n:03d}.jpg", split="test",
        label="bobsled", width=32, height=32, mode="RGB", bytes=100)


def _captions(db, image_id: int, texts: list[str]) -> list[int]:
    """Zero-shot, few-shot and fine-tuned captions (in that order) for one image."""
    rows = [predictions.NewPrediction(image_id, "caption", mode, MODEL, adapter, text, text)
            for (mode, adapter), text in zip(MODES, texts, strict=False)]
    predictions.add_predictions(db, rows)
    return [db.execute("SELECT id FROM predictions WHERE image_id=? AND task='caption' AND "
                       "mode=? AND adapter=?", (image_id, m, a)).fetchone()[0]
            for m, a in MODES[: len(texts)]]


def test_grade_cli_resumes_an_unfinished_session(tmp_path, monkeypatch):
    from sportvlm_tui.ui import grading as ui_grading

    path = tmp_path / "r.db"
    db = connect(path)
    images.add_images(db, [_record(i) for i in range(1, 6)])
    for i in range(1, 6):
        _captions(db, i, [f"zs {i}", f"fs {i}", f"ft {i}"])
    seen = []
    monkeypatch.setattr(ui_grading.GradingApp, "run",
                        lambda self: seen.append((self.grading.session,
                                                  [it.image_id for it in self.grading.items])))
    args = ["grade", "--db", str(path), "--grader", "ann", "--n", "3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    # Nothing graded yet: the next call starts afresh; grade one caption, then it resumes.
    first_session, first_items = seen[-1]
    item = grading_items(db, split="test", n=3, session=first_session, grader="ann",
                         conditions=caption_conditions(db, "test"))[0]
    save_grade(db, session=first_session, grader="ann", image_id=item.image_id,
               caption=item.captions[0], acceptable=True)
    assert CliRunner().invoke(main, args).exit_code == 0
    assert seen[-1] == (first_session, first_items)
    assert CliRunner().invoke(main, args + ["--new"]).exit_code == 0
    assert seen[-1][0] != first_session
    # Someone else's session is not theirs to resume.
    assert CliRunner().invoke(main, ["grade", "--db", str(path), "--grader", "bob"]).exit_code == 0
    assert seen[-1][0] != first_session


async def test_tui_grade_that_cannot_be_saved_is_shown_and_not_counted(tmp_path):
    from sportvlm_tui.ui.grading import GradingApp

    db = connect(tmp_path / "l.db")
    images.add_images(db, [_record(1)])
    _captions(db, 1, ["a", "b", "c"])
    items = grading_items(db, split="test", n=1, session="s", grader="ann",
                          conditions=caption_conditions(db, "test"))
    app = GradingApp(db, items, session="s", grader="ann", graphics=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        db.execute("DROP TABLE caption_grades")  # any write now fails
        await pilot.press("y")
        await pilot.pause()
        assert app.grading.grades == {} and app.grading.selected == 0
        assert any("grade not saved" in str(n.message) for n in app._notifications)
