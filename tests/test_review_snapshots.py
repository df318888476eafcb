"""Screenshots of the review TUI (halfblock graphics, deterministic data, fixed clock).

Update after an intended change with: pytest tests/test_review_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from sportvlm_tui.storage import connect
from sportvlm_tui.storage.review_queue import QueueSpec
from sportvlm_tui.ui.app import ReviewApp
from sportvlm_tui.ui.review_screen import ReviewConfig
from sportvlm_tui.ui.synthetic import populate, write_images


@pytest.fixture
def snap_app(tmp_path):
    path = tmp_path / "snap.db"
    db = connect(path)
    populate(db, write_images(tmp_path / "img", 4), 8, seed=11)
    db.conn.close()

    def make(**kw) -> ReviewApp:
        # extensions=(): the screenshots show this app's own keys, whatever modules add keys
        return ReviewApp(ReviewConfig(str(path), "snap", QueueSpec(), graphics="halfblock",
                                      **kw), clock=lambda: 0.0, extensions=())

    return make


async def settle(pilot) -> None:
    await pilot.app.settled()
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


class TestReviewScreen:
    def test_first_image(self, snap_app, snap_compare):
        assert snap_compare(snap_app(), run_before=settle)

    def test_caption_rejected_then_next(self, snap_app, snap_compare):
        async def run(pilot):
            await settle(pilot)
            await pilot.press("x")
            await settle(pilot)

        assert snap_compare(snap_app(), run_before=run)

    def test_large_terminal_blind(self, snap_app, snap_compare):
        assert snap_compare(snap_app(blind=True), terminal_size=(200, 60), run_before=settle)


class TestReviewModals:
    def test_help(self, snap_app, snap_compare):
        async def run(pilot):
            await settle(pilot)
            await pilot.press("question_mark")
            await settle(pilot)

        assert snap_compare(snap_app(), terminal_size=(100, 36), run_before=run)

    def test_label_picker_search(self, snap_app, snap_compare):
        async def run(pilot):
            await settle(pilot)
            await pilot.press("l")
            await settle(pilot)
            await pilot.press("t", "e")
            await settle(pilot)

        assert snap_compare(snap_app(), run_before=run)
