"""Export: live decisions -> training pairs (JSONL), --new-only, replay, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

from sportvlm_tui.cli import main as cli
from sportvlm_tui.export import export_pairs, parse_replay, read_pairs, stratified_sample
from sportvlm_tui.export.pairs import TrainingPair, prompt_text
from sportvlm_tui.prompts import LABEL_QUESTION
from sportvlm_tui.storage import images, predictions, reviews


def _add_image(db, root, n, label, split="train"):
    rel = f"{split}/{label}/{n}.jpg"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (8, 8), (n * 7 % 255, 0, 0)).save(path)
    images.add_images(db, [images.ImageRecord(
        sha256=f"{n:064x}", root=str(root), rel_path=rel, split=split, label=label,
        width=8, height=8, mode="RGB", bytes=path.stat().st_size)])
    return int(db.execute("SELECT id FROM images WHERE sha256 = ?", (f"{n:064x}",)).fetchone()[0])


def _predict(db, image_id, text, task="label"):
    predictions.add_predictions(db, [predictions.NewPrediction(
        image_id=image_id, task=task, mode="zero-shot", model="m", adapter="", text=text,
        raw=" " + text)])
    return predictions.latest_prediction(db, image_id, task).id


@pytest.fixture
def decided(db, tmp_path):
    """Four images: accept, correct, skip, reject-caption + an undone correction."""
    root = tmp_path / "data"
    ids = [_add_image(db, root, n, lab) for n, lab in enumerate(
        ["archery", "bobsled", "curling", "tug of war"], 1)]
    p1 = _predict(db, ids[0], "archery")
    reviews.save_decision(db, image_id=ids[0], task="label", decision="accept",
                          annotator="ann", prediction_id=p1)
    p2 = _predict(db, ids[1], "bobsledding")
    reviews.save_decision(db, image_id=ids[1], task="label", decision="correct",
                          value="bobsled", annotator="bob", prediction_id=p2)
    reviews.save_decision(db, image_id=ids[2], task="image", decision="skip", annotator="ann")
    pc = _predict(db, ids[3], "A man.", task="caption")
    reviews.save_decision(db, image_id=ids[3], task="caption", decision="reject",
                          annotator="ann", prediction_id=pc)
    p4 = _predict(db, ids[3], "rowing")
    reviews.save_decision(db, image_id=ids[3], task="label", decision="correct",
                          value="tug of war", annotator="ann", prediction_id=p4)
    reviews.undo_last(db, "ann")  # the tug-of-war correction is no longer live
    return db, root, ids


def test_accept_and_correct_become_pairs_skip_reject_undo_do_not(decided, tmp_path):
    db, root, ids = decided
    out = tmp_path / "pairs.jsonl"
    result = export_pairs(db, out, tasks=["label", "caption"])
    got = {(p.image_id, p.task): p for p in read_pairs(out)}
    assert set(got) == {(ids[0], "label"), (ids[1], "label")}
    assert got[(ids[0], "label")].answer == "archery"  # accept: the proposal's value
    assert got[(ids[1], "label")].answer == "bobsled"  # correct: the corrected value
    assert got[(ids[1], "label")].annotator == "bob" and got[(ids[1], "label")].decision == \
        "correct"
    p = got[(ids[1], "label")]
    assert p.prompt == prompt_text("label") and p.prompt.endswith(LABEL_QUESTION)
    assert p.image == str((root / p.rel_path).resolve()) and p.root == str(root.resolve())
    assert result.new == 2 and result.refused == []
    row = db.execute("SELECT pairs, max_review_id, tasks FROM exports").fetchone()
    live_max = db.execute("SELECT max(review_id) FROM image_state").fetchone()[0]
    assert row[0] == 2 and row[1] == live_max
    assert row[2] == "label,caption"


def test_datasets_load_dataset_reads_an_export(decided, tmp_path):
    datasets = pytest.importorskip("datasets")
    db, _, _ = decided
    out = tmp_path / "pairs.jsonl"
    export_pairs(db, out, tasks=["label"])
    ds = datasets.load_dataset("json", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 2
    assert {"image", "task", "prompt", "answer", "label", "image_id", "review_id",
            "annotator"} <= set(ds.column_names)
    assert sorted(ds["answer"]) == ["archery", "bobsled"]


def test_new_only_exports_only_newer_decisions(decided, tmp_path):
    db, root, ids = decided
    first = export_pairs(db, tmp_path / "a.jsonl", tasks=["label"])
    assert first.new == 2
    again = export_pairs(db, tmp_path / "b.jsonl", tasks=["label"], new_only=True)
    assert again.pairs == []
    reviews.save_decision(db, image_id=ids[2], task="label", decision="correct",
                          value="curling", annotator="ann")
    third = export_pairs(db, tmp_path / "c.jsonl", tasks=["label"], new_only=True)
    assert [(p.image_id, p.answer) for p in third.pairs] == [(ids[2], "curling")]


def test_replay_adds_earlier_pairs_marked(decided, tmp_path):
    db, _, ids = decided
    export_pairs(db, tmp_path / "a.jsonl", tasks=["label"])
    reviews.save_decision(db, image_id=ids[2], task="label", decision="correct",
                          value="curling", annotator="ann")
    res = export_pairs(db, tmp_path / "b.jsonl", tasks=["label"], new_only=True, replay=1.0)
    assert res.new == 1 and res.replayed == 2
    lines = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert sorted(x["replay"] for x in lines) == [False, True, True]


def test_replay_without_new_only_is_refused(decided, tmp_path):
    db, _, _ = decided
    with pytest.raises(ValueError, match="--replay needs --new-only"):
        export_pairs(db, tmp_path / "x.jsonl", replay=10)
    assert not (tmp_path / "x.jsonl").exists()


def _pair(i, label):
    return TrainingPair(image=f"/x/{i}.jpg", root="/x", rel_path=f"{i}.jpg", task="label",
                        prompt="p", answer=label, label=label, image_id=i, review_id=i,
                        decision="correct", annotator="a", split="train", sha256=str(i))


def test_stratified_sample_keeps_label_shares_and_every_label():
    pairs = [_pair(i, "big") for i in range(80)] + [_pair(100 + i, "mid") for i in range(18)]
    pairs += [_pair(200, "rare"), _pair(201, "rare")]
    got = stratified_sample(pairs, 10, seed=3)
    counts = Counter(p.label for p in got)
    # shares 8 / 1.8 / 0.2: largest remainder gives 8/2/0, then "rare" takes one from "big"
    assert counts == {"big": 7, "mid": 2, "rare": 1}
    assert got == stratified_sample(pairs, 10, seed=3)  # deterministic
    assert [p.review_id for p in got] == sorted(p.review_id for p in got)


def test_parse_replay():
    assert parse_replay("0.25") == 0.25 and parse_replay("500") == 500
    assert parse_replay(None) is None
    for bad in ("1.5", "-3", "lots"):
        with pytest.raises(ValueError, match="--replay"):
            parse_replay(bad)


def test_image_outside_ingested_roots_is_refused(decided, tmp_path):
    db, root, ids = decided
    outside = tmp_path / "elsewhere.jpg"
    PILImage.new("RGB", (8, 8)).save(outside)
    db.execute("UPDATE images SET rel_path = '../elsewhere.jpg' WHERE id = ?", (ids[0],))
    res = export_pairs(db, tmp_path / "p.jsonl", tasks=["label"])
    assert [p.image_id for p in res.pairs] == [ids[1]]
    assert len(res.refused) == 1 and "outside the ingested roots" in res.refused[0]


def test_cli_export_and_bad_replay(decided, tmp_path):
    db, _, _ = decided
    dbfile = tmp_path / "f.db"
    # copy the in-memory db to a file so the CLI can open it
    db.conn.execute(f"VACUUM INTO '{dbfile}'")
    out = tmp_path / "cli.jsonl"
    r = CliRunner().invoke(cli, ["export", "--db", str(dbfile), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote 2 pairs" in r.output and len(out.read_text().splitlines()) == 2
    r = CliRunner().invoke(cli, ["export", "--db", str(dbfile), "--replay", "2.5"])
    assert r.exit_code == 1 and "--replay '2.5'" in r.output and "Traceback" not in r.output


def test_read_pairs_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.jpg", "task": "label", "answer": "x"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_pairs(bad)


def test_export_does_not_import_torch_or_textual():
    code = ("import sys; import sportvlm_tui.export, sportvlm_tui.commands.export;"
            "from sportvlm_tui.cli import main;"
            "bad=[m for m in ('torch','textual','transformers') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
