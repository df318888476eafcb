"""The review TUI driven by Pilot: every key path, checked in SQLite through a separate
connection while the app is still running."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from textual.widgets import Input, OptionList, Static

from sportvlm_tui.storage import connect
from sportvlm_tui.storage.images import ImageRecord, add_images
from sportvlm_tui.storage.predictions import NewPrediction, add_predictions
from sportvlm_tui.storage.review_queue import QueueSpec
from sportvlm_tui.ui.app import ReviewApp
from sportvlm_tui.ui.keys import REVIEW_BINDINGS
from sportvlm_tui.ui.modals import ConfirmScreen, HelpScreen, LabelPicker
from sportvlm_tui.ui.review_screen import ReviewConfig
from sportvlm_tui.ui.synthetic import populate, write_images


@pytest.fixture
def review_db(tmp_path) -> str:
    path = tmp_path / "review.db"
    db = connect(path)
    populate(db, write_images(tmp_path / "img", 4), 12)
    db.conn.close()
    return str(path)


def make_app(path: str, annotator: str = "ann", **kw) -> ReviewApp:
    spec = kw.pop("spec", QueueSpec(order="dataset"))
    kw.setdefault("graphics", "halfblock")
    return ReviewApp(ReviewConfig(path, annotator, spec, **kw),
                     clock=lambda: 0.0)


def reviews(path: str) -> list[tuple]:
    """Decision events as another process sees them."""
    with sqlite3.connect(path) as c:
        return c.execute(
            "SELECT image_id, task, decision, value, annotator FROM reviews ORDER BY id"
        ).fetchall()


def live(path: str, task: str = "label") -> dict[int, tuple]:
    with sqlite3.connect(path) as c:
        return {r[0]: r[1:] for r in c.execute(
            "SELECT image_id, decision, value FROM image_state WHERE task = ?", (task,))}


def screen_text(app) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


async def press(app, pilot, *keys: str) -> None:
    for k in keys:
        await pilot.press(k)
        await app.settled()


def proposal(path: str, image_id: int) -> str:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT text FROM predictions WHERE image_id=? AND task='label'",
                         (image_id,)).fetchone()[0]


async def test_accept_is_committed_before_the_screen_moves_on(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        assert app.review.item.image.id == 1
        await press(app, pilot, "a")
        assert reviews(review_db)[:2] == [
            (1, "label", "accept", proposal(review_db, 1), "ann"),
            (1, "caption", "accept", app.review.session.db.execute(
                "SELECT text FROM predictions WHERE image_id=1 AND task='caption'"
            ).fetchone()[0], "ann"),
        ]
        assert app.review.item.image.id == 2
        await press(app, pilot, "enter")
        assert live(review_db)[2] == ("accept", proposal(review_db, 2))
        assert app.review.item.image.id == 3


async def test_alternative_number_corrects_the_label(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        item = app.review.item
        alt2 = [lab for lab, _ in item.label.topk if lab != item.label.text][1]
        await press(app, pilot, "2")
        assert live(review_db)[1] == ("correct", alt2)
        assert live(review_db, "caption")[1][0] == "accept"
        before = len(reviews(review_db))
        await press(app, pilot, "9")  # synthetic top-k has 4 alternatives
        assert len(reviews(review_db)) == before
        assert app.review.item.image.id == 2


async def test_undo_brings_the_image_back_and_clears_its_state(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "a", "u")
        assert app.review.item.image.id == 1
        assert live(review_db) == {} and live(review_db, "caption") == {}
        assert [r[2] for r in reviews(review_db)] == ["accept", "accept", "undo", "undo"]


async def test_skip_records_an_image_decision(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "space")
        assert reviews(review_db) == [(1, "image", "skip", None, "ann")]
        assert app.review.item.image.id == 2


async def test_reject_caption_stays_and_accept_then_keeps_the_rejection(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "x")
        assert live(review_db, "caption")[1] == ("reject", None)
        assert app.review.item.image.id == 1
        assert "unacceptable" in screen_text(app)
        await press(app, pilot, "a")
        assert live(review_db, "caption")[1] == ("reject", None)
        assert live(review_db)[1][0] == "accept"


async def test_caption_editing_swallows_review_keys_and_saves_with_ctrl_s(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "e")
        editor = app.review.query_one("#caption-editor")
        assert editor.has_focus
        editor.clear()
        # every one of these is a review key outside the editor
        await press(app, pilot, *"a1 nxu", "space", "q", "enter", "left")
        assert reviews(review_db) == [] and app.review.item.image.id == 1
        assert "a1 nxu q" in editor.text
        editor.load_text("Two teams pull a rope")
        await press(app, pilot, "ctrl+s")
        assert live(review_db, "caption")[1] == ("correct", "Two teams pull a rope")
        assert not editor.display and app.review.item.image.id == 1
        # esc cancels without saving
        await press(app, pilot, "e")
        app.review.query_one("#caption-editor").load_text("something else")
        await press(app, pilot, "escape")
        assert live(review_db, "caption")[1] == ("correct", "Two teams pull a rope")
        await press(app, pilot, "a")  # keys work again after the editor closed
        assert live(review_db)[1][0] == "accept"


async def test_label_picker_fuzzy_search(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "l")
        assert isinstance(app.screen, LabelPicker)
        await press(app, pilot, *"tugwr")
        options = app.screen.query_one(OptionList)
        assert options.get_option_at_index(0).prompt.plain == "tug of war"
        await press(app, pilot, "enter")
        assert live(review_db)[1] == ("correct", "tug of war") or (
            proposal(review_db, 1) == "tug of war" and live(review_db)[1][0] == "accept")
        assert app.review.item.image.id == 2


async def test_a_new_label_needs_confirmation(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "l")
        app.screen.query_one(Input).value = "chuckwagon racing"
        await press(app, pilot, "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "n")
        assert isinstance(app.screen, LabelPicker) and reviews(review_db) == []
        await press(app, pilot, "enter", "y")
        assert live(review_db)[1] == ("correct", "chuckwagon racing")
        # the new label is in the vocabulary now: no confirmation the second time
        await press(app, pilot, "l")
        app.screen.query_one(Input).value = "chuckwagon racing"
        await press(app, pilot, "enter")
        assert live(review_db)[2] == ("correct", "chuckwagon racing")


async def test_navigation_and_goto(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "n", "right")
        assert app.review.item.image.id == 3
        await press(app, pilot, "p", "left", "left")
        assert app.review.item.image.id == 1
        await press(app, pilot, "g")
        app.screen.query_one(Input).value = "7"
        await press(app, pilot, "enter")
        assert app.review.item.image.id == 7 and app.review.item.position == 7
        assert "#7 of 12" in screen_text(app)
        assert reviews(review_db) == []


async def test_filter_accepted_and_by_label(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "a", "n", "a")  # accept 1, pass 2, accept 3
        await press(app, pilot, "f")
        app.screen.query_one("#status").value = "accepted"
        await press(app, pilot, "ctrl+s")
        assert app.review.spec.status == "accepted"
        assert app.review.item.image.id == 1
        await press(app, pilot, "n")
        assert app.review.item.image.id == 3
        await press(app, pilot, "n")
        assert app.review.item is None
        assert "Nothing left" in screen_text(app)
        label = proposal(review_db, 5)
        await press(app, pilot, "f")
        app.screen.query_one("#status").value = "all"
        app.screen.query_one("#label", Input).value = label
        await press(app, pilot, "ctrl+s")
        seen = []
        while app.review.item is not None and len(seen) < 20:
            seen.append(app.review.item.image.id)
            assert app.review.item.label.text == label
            await press(app, pilot, "n")
        assert 5 in seen


async def test_filter_confidence_range(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "f")
        app.screen.query_one("#min", Input).value = "0.25"
        app.screen.query_one("#max", Input).value = "0.35"
        await press(app, pilot, "ctrl+s")
        while app.review.item is not None:
            assert 0.25 <= app.review.item.label.confidence <= 0.35
            await press(app, pilot, "n")


async def test_order_least_confident_first_then_dataset(review_db):
    app = make_app(review_db, spec=QueueSpec())
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        with sqlite3.connect(review_db) as c:
            lowest = c.execute("SELECT image_id FROM predictions WHERE task='label'"
                               " ORDER BY confidence, image_id LIMIT 1").fetchone()[0]
        assert app.review.item.image.id == lowest
        await press(app, pilot, "s")
        await press(app, pilot, "down", "enter")  # confidence -> dataset
        assert app.review.spec.order == "dataset"
        assert app.review.item.image.id == 1
        await press(app, pilot, "s", "down", "tab")
        app.screen.query_one("#seed", Input).value = "5"
        await press(app, pilot, "enter")
        assert (app.review.spec.order, app.review.spec.seed) == ("random", 5)


async def test_two_apps_on_one_database_never_share_an_image(review_db):
    one, two = make_app(review_db, "ann"), make_app(review_db, "bob")
    async with one.run_test(size=(80, 24)) as p1, two.run_test(size=(80, 24)) as p2:
        await asyncio.gather(one.settled(), two.settled())
        shown_one, shown_two = set(), set()
        for _ in range(4):
            a, b = one.review.item.image.id, two.review.item.image.id
            assert a != b
            shown_one.add(a)
            shown_two.add(b)
            await asyncio.gather(p1.press("a"), p2.press("a"))
            await asyncio.gather(one.settled(), two.settled())
        assert not shown_one & shown_two
        state = live(review_db)
        assert sorted(state) == sorted(shown_one | shown_two)
        assert {i for i, r in state.items()} == shown_one | shown_two
        with sqlite3.connect(review_db) as c:
            by = dict(c.execute("SELECT annotator, count(*) FROM image_state"
                                " WHERE task='label' GROUP BY annotator").fetchall())
        assert by == {"ann": 4, "bob": 4}


async def test_markup_like_text_is_shown_literally(tmp_path):
    path = tmp_path / "markup.db"
    db = connect(path)
    files = write_images(tmp_path / "img", 1)
    add_images(db, [ImageRecord(sha256="1" * 64, root=str(files[0].parent),
                                rel_path="[red]file[/].png", split="valid", label="[b]gt[/b]",
                                width=224, height=224, mode="RGB", bytes=1)])
    add_predictions(db, [
        NewPrediction(image_id=1, task="label", mode="zero-shot", model="m", adapter="",
                      text="[/]", raw="[/]", confidence=0.5,
                      topk=[("[/]", 0.5), ("[link=x]y[/link]", 0.3)]),
        NewPrediction(image_id=1, task="caption", mode="zero-shot", model="m", adapter="",
                      text="[bold red]x[/]", raw="[bold red]x[/]"),
    ])
    db.conn.close()
    app = make_app(str(path), "[i]ann[/i]")
    async with app.run_test(size=(120, 30)) as pilot:
        await app.settled()
        text = screen_text(app)
        for literal in ("[bold red]x[/]", "[/]", "[link=x]y[/link]", "[b]gt[/b]",
                        "[red]file[/].png", "[i]ann[/i]"):
            assert literal in text, literal
        await press(app, pilot, "l")
        assert "[link=x]y[/link]" in screen_text(app) or "[b]gt[/b]" in screen_text(app)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_layout_fits_small_and_large_terminals(review_db, size):
    app = make_app(review_db)
    async with app.run_test(size=size) as pilot:
        await app.settled()
        image = app.review.query_one("#image")
        assert image.size.width >= size[0] // 2 and image.size.height >= size[1] - 4
        text = screen_text(app)
        assert "Proposed label" in text and "Accept" in text and "done 0/12" in text
        rendered = app.review.cache.get(app.review._key_for(1))
        assert rendered is not None and rendered.strips
        assert len(rendered.strips) <= image.content_size.height
        assert max(s.cell_length for s in rendered.strips) <= image.content_size.width
        await pilot.resize_terminal(size[0] + 20, size[1] + 6)
        await app.settled()
        assert app.review.cache.get(app.review._key_for(1)) is not None


async def test_dataset_label_toggle_and_blind(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        gt = app.review.item.image.label
        truth = app.review.query_one("#truth", Static)
        assert truth.content.plain.startswith(f"Dataset label  {gt}")
        await press(app, pilot, "d")
        assert "hidden (d shows)" in truth.content.plain and gt not in truth.content.plain
        await press(app, pilot, "d")
        assert gt in truth.content.plain
    blind = make_app(review_db, blind=True)
    async with blind.run_test(size=(80, 24)) as pilot:
        await blind.settled()
        truth = blind.review.query_one("#truth", Static)
        gt = blind.review.item.image.label
        assert "hidden (--blind)" in truth.content.plain
        await press(blind, pilot, "d")
        assert "hidden (--blind)" in truth.content.plain and gt not in truth.content.plain


async def test_help_lists_every_key(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settled()
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for b in REVIEW_BINDINGS:
            assert b.tooltip in text
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)


def test_every_binding_has_an_id_and_a_tooltip():
    from sportvlm_tui.ui import modals
    from sportvlm_tui.ui.widgets import CaptionEditor

    every = list(REVIEW_BINDINGS) + list(CaptionEditor.BINDINGS)
    for cls in (modals.HelpScreen, modals.ConfirmScreen, modals.LabelPicker,
                modals.GotoScreen, modals.FilterScreen, modals.OrderScreen):
        every += list(cls.BINDINGS)
    for b in every:
        assert b.id and b.tooltip, b


async def test_resume_where_the_annotator_stopped_and_quit_releases_claims(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        await press(app, pilot, "n", "n", "a")  # decided image 3
        await pilot.press("q")
        await pilot.pause(0.5)
    assert not app.is_running
    with sqlite3.connect(review_db) as c:
        assert c.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
    again = make_app(review_db)
    async with again.run_test(size=(80, 24)):
        await again.settled()
        assert again.review.item.image.id == 4


async def test_database_errors_become_notifications(review_db, monkeypatch):
    from sportvlm_tui.ui import session as session_mod

    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        real = session_mod.save_decision

        def locked(*a, **kw):
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(session_mod, "save_decision", locked)
        await press(app, pilot, "a")
        assert app.is_running and app.review.item.image.id == 1
        notes = [str(n.message) for n in app._notifications]
        assert any("database is locked" in n for n in notes)
        monkeypatch.setattr(session_mod, "save_decision", real)
        await press(app, pilot, "a")
        assert live(review_db)[1][0] == "accept"


async def test_a_writer_holding_the_lock_delays_but_does_not_lose_a_decision(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        other = sqlite3.connect(review_db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        await pilot.press("a")
        await asyncio.sleep(0.5)
        assert reviews(review_db) == []  # still waiting for the lock, screen alive
        assert app.review.item.image.id == 1
        other.execute("COMMIT")
        await app.settled()
        assert live(review_db)[1][0] == "accept" and app.review.item.image.id == 2


async def test_keys_meant_for_an_earlier_image_are_ignored(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        other = sqlite3.connect(review_db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the store thread waits: image 1 stays on screen
        await pilot.press("a", "a", "a")
        other.execute("COMMIT")
        await app.settled()
        # one decision: the other two presses were aimed at image 1 too, never at image 2
        assert list(live(review_db)) == [1] and app.review.item.image.id == 2


@pytest.mark.parametrize("mode", ["kitty", "sixel"])
async def test_graphics_protocols_get_a_picture_scaled_off_the_ui_thread(review_db, mode):
    app = make_app(review_db, graphics=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        pic = app.review.query_one("#picture")
        first = pic.image
        area = app.review.image_area.cells()
        assert first is not None and first.width <= area[0] * 10 and first.height <= area[1] * 20
        await press(app, pilot, "n")
        assert app.review.item.image.id == 2 and pic.image is not first


async def test_ctrl_q_also_gives_the_lease_back(review_db):
    app = make_app(review_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settled()
        with sqlite3.connect(review_db) as c:
            assert c.execute("SELECT image_id FROM claims").fetchall() == [(1,)]
        await pilot.press("ctrl+q")
        await pilot.pause(0.3)
    with sqlite3.connect(review_db) as c:
        assert c.execute("SELECT count(*) FROM claims").fetchone()[0] == 0


async def test_a_missing_or_broken_image_file_is_reported_on_screen(tmp_path):
    path = tmp_path / "broken.db"
    db = connect(path)
    populate(db, write_images(tmp_path / "img", 2), 2)
    (tmp_path / "img" / "img00.png").unlink()
    (tmp_path / "img" / "img01.png").write_bytes(b"not a png")
    db.conn.close()
    app = make_app(str(path))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.settled()
        assert "img00.png" in screen_text(app) and "No such file" in screen_text(app)
        await press(app, pilot, "a")  # deciding still works: the label is about the row
        assert live(str(path))[1][0] == "accept"
        assert "img01.png" in screen_text(app) and "cannot identify" in screen_text(app)
