"""`sportvlm review` and `sportvlm demo` from the command line (the TUI itself is replaced by
a recorder where a test only checks what would be started)."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_DATA

from sportvlm_tui.cli import main
from sportvlm_tui.storage import connect
from sportvlm_tui.ui.synthetic import populate, write_images


@pytest.fixture
def started(monkeypatch):
    """Replace ReviewApp.run: record the config the command built instead of opening a TUI."""
    from sportvlm_tui.ui import app as app_mod

    seen = []
    monkeypatch.setattr(app_mod.ReviewApp, "run", lambda self: seen.append(self.config))
    return seen


def test_review_on_an_empty_database_is_one_clear_line(tmp_path, started):
    res = CliRunner().invoke(main, ["review", "--db", str(tmp_path / "empty.db")])
    assert res.exit_code == 1 and "no images yet" in res.output and "Traceback" not in res.output
    assert started == []


def test_review_rejects_a_bad_filter_or_order(tmp_path, started):
    for args in (["--filter", "sideways"], ["--order", "upside"], ["--filter", "conf=x-1"]):
        res = CliRunner().invoke(main, ["review", "--db", str(tmp_path / "x.db"), *args])
        assert res.exit_code == 1 and "error:" in res.output, args
        assert "Traceback" not in res.output


def test_review_builds_the_session_from_options(tmp_path, started, monkeypatch):
    db = connect(tmp_path / "r.db")
    populate(db, write_images(tmp_path / "img", 2), 3)
    monkeypatch.setenv("SPORTVLM_ANNOTATOR", "from-env")
    res = CliRunner().invoke(main, [
        "review", "--db", str(tmp_path / "r.db"), "--graphics", "halfblock", "--blind",
        "--split", "valid", "--filter", "accepted", "--filter", "conf=0.1-0.4",
        "--order", "random:9"])
    assert res.exit_code == 0, res.output
    cfg = started[0]
    assert cfg.annotator == "from-env" and cfg.blind and cfg.graphics == "halfblock"
    s = cfg.spec
    assert (s.status, s.split, s.min_conf, s.max_conf, s.order, s.seed) == (
        "accepted", "valid", 0.1, 0.4, "random", 9)
    res = CliRunner().invoke(main, ["review", "--db", str(tmp_path / "r.db"), "--annotator",
                                    "cli", "--graphics", "halfblock"])
    assert started[1].annotator == "cli"


@pytest.mark.slow
def test_demo_ingests_predicts_and_reuses_the_database(tmp_path, started):
    # a few of the sample images keep the tiny model's CPU time short
    sample = tmp_path / "sample"
    sample.mkdir()
    for src in sorted(SAMPLE_DATA.rglob("*.jpg"))[:3]:
        shutil.copy(src, sample / src.name)
    db_path = tmp_path / "demo.db"
    res = CliRunner().invoke(main, ["demo", "--db", str(db_path), "--graphics", "halfblock",
                                    "--data", str(sample)])
    assert res.exit_code == 0, res.output
    db = connect(db_path)
    assert db.execute("SELECT count(*) FROM images").fetchone()[0] == 3
    by_task = dict(db.execute("SELECT task, count(*) FROM predictions WHERE model ="
                              " 'builtin:tiny' GROUP BY task").fetchall())
    assert by_task == {"label": 3, "caption": 3}
    assert started and started[0].db_path == str(db_path)
    again = CliRunner().invoke(main, ["demo", "--db", str(db_path), "--no-review",
                                      "--data", str(sample)])
    assert again.exit_code == 0 and "already done" in again.output
    assert "ingest: 0 new" in again.output


def test_queue_session_and_commands_import_neither_textual_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import sportvlm_tui.storage.review_queue, sportvlm_tui.ui.session\n"
        "import sportvlm_tui.commands.review, sportvlm_tui.commands.demo\n"
        "bad = sorted(m for m in ('textual', 'torch', 'transformers') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
