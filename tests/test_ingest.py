"""Ingest: 100SIC layouts, plain folders, content dedup, every kind of bad file, the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, SAMPLE_DATA
from PIL import Image, ImageChops

from sportvlm_tui.cli import main
from sportvlm_tui.data import SourceError, discover, ingest, validate
from sportvlm_tui.data import pipeline as ingest_module
from sportvlm_tui.storage import connect, images


def csv_rows(root: Path) -> dict[str, tuple[str, str]]:
    """rel_path -> (split, label), read independently of the code under test."""
    with (root / "sports.csv").open(newline="", encoding="utf-8") as fh:
        return {r["filepaths"]: (r["data set"], r["labels"]) for r in csv.DictReader(fh)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored(db) -> dict[str, images.Image]:
    return {i.rel_path: i for i in images.list_images(db)}


def good_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    """Copy `n` distinct sample images into `folder` (`start` picks other ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(SAMPLE_DATA.glob("valid/*/*.jpg"))[start:start + n]
    out = []
    for k, src in enumerate(sources, start):
        dst = folder / f"good{k}.jpg"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- 100SIC layouts ------------------------------------------------------------------------

def test_sample_data_matches_its_sports_csv(db):
    expected = csv_rows(SAMPLE_DATA)
    summary = ingest(db, SAMPLE_DATA)
    assert summary.errors == [] and summary.layout == "sports.csv"
    assert summary.seen == len(expected) and summary.added == len(expected)
    got = stored(db)
    assert {k: (v.split, v.label) for k, v in got.items()} == expected
    for rel, img in got.items():
        path = SAMPLE_DATA / rel
        with Image.open(path) as im:
            assert (img.width, img.height, img.mode) == (*im.size, im.mode)
        assert img.sha256 == sha(path)
        assert img.path == path.resolve()
    labels = {label for _, label in expected.values()}
    assert {"air hockey", "tug of war"} <= labels  # labels with spaces survive as written

    again = ingest(db, SAMPLE_DATA)
    assert (again.added, again.duplicates, again.errors) == (0, len(expected), [])
    assert again.decoded == 0  # known content is hashed, not decoded again
    assert len(images.list_images(db)) == len(expected)


def test_split_folders_without_csv_give_same_labels(db, tmp_path):
    root = tmp_path / "sic"
    shutil.copytree(SAMPLE_DATA, root, ignore=shutil.ignore_patterns("*.csv", "*.jsonl"))
    expected = {k: v for k, v in csv_rows(SAMPLE_DATA).items() if v[0] == "valid"}
    summary = ingest(db, root, "valid")
    assert summary.layout == "folders" and summary.errors == []
    assert {k: (v.split, v.label) for k, v in stored(db).items()} == expected


def test_split_option_takes_only_that_split(db):
    rows = csv_rows(SAMPLE_DATA)
    summary = ingest(db, SAMPLE_DATA, "test")
    assert summary.added == sum(1 for s, _ in rows.values() if s == "test")
    assert images.splits(db) == {"test": summary.added}


def test_sample_captions_cover_every_train_image():
    from sportvlm_tui.prompts import load_examples

    train = {k for k, (s, _) in csv_rows(SAMPLE_DATA).items() if s == "train"}
    captions = load_examples(SAMPLE_DATA / "captions.jsonl")
    assert {str(c.image.relative_to(SAMPLE_DATA)) for c in captions} == train
    assert all(len(c.caption.split()) >= 5 for c in captions)
    fewshot = load_examples(SAMPLE_DATA / "fewshot_captions.jsonl")
    assert len(fewshot) == 4
    assert len({c.image.parent.name for c in fewshot}) == 4  # four different sports


def test_sample_data_is_what_the_script_draws(tmp_path):
    """The committed folder is reproducible from scripts/make_sample_data.py."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_data.py"),
                    str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / "sports.csv").read_text() == (SAMPLE_DATA / "sports.csv").read_text()
    assert (tmp_path / "captions.jsonl").read_text() == (
        SAMPLE_DATA / "captions.jsonl").read_text()
    for rel in csv_rows(SAMPLE_DATA):
        with Image.open(tmp_path / rel) as a, Image.open(SAMPLE_DATA / rel) as b:
            # Pixels, not bytes: another libjpeg may encode the same drawing differently.
            extrema = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getextrema()
            assert max(hi for _, hi in extrema) <= 8, rel
    size = sum(p.stat().st_size for p in SAMPLE_DATA.rglob("*") if p.is_file())
    assert size < 1.5e6


@pytest.mark.realdata
def test_real_100sic_every_row_stored_with_its_split_and_label(real_100sic, tmp_path):
    rows = csv_rows(real_100sic)
    by_hash: dict[str, list[tuple[str, str, str]]] = {}
    for rel, (split, label) in rows.items():
        by_hash.setdefault(sha(real_100sic / rel), []).append((rel, split, label))

    db = connect(tmp_path / "real.db")
    summary = ingest(db, real_100sic)
    assert summary.errors == [] and summary.seen == len(rows)
    assert summary.added == len(by_hash)  # one row per distinct content
    assert summary.added + summary.duplicates == len(rows)
    got = {img.sha256: img for img in images.list_images(db)}
    assert set(got) == set(by_hash)
    for digest, copies in by_hash.items():
        img = got[digest]
        assert (img.rel_path, img.split, img.label) in copies
        # Held-out splits win when the same content is listed under several splits.
        if any(split == "valid" for _, split, _ in copies):
            assert img.split == "valid"
    valid_contents = {h for h, c in by_hash.items() if any(s == "valid" for _, s, _ in c)}
    assert images.splits(db)["valid"] == len(valid_contents)
    cross = sum(len(c) - 1 for c in by_hash.values() if len({(s, lab) for _, s, lab in c}) > 1)
    assert len(summary.relabelled) == cross

    again = ingest(db, real_100sic)
    assert (again.added, again.duplicates, again.errors) == (0, len(rows), [])


@pytest.mark.realdata
def test_real_100sic_split_valid_via_cli(real_100sic, tmp_path):
    valid = [rel for rel, (s, _) in csv_rows(real_100sic).items() if s == "valid"]
    n_valid = len({sha(real_100sic / rel) for rel in valid})
    db_file = tmp_path / "v.db"
    result = CliRunner().invoke(
        main, ["ingest", str(real_100sic), "--split", "valid", "--db", str(db_file), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["added"], info["seen"], info["errors"]) == (n_valid, len(valid), [])
    assert images.splits(connect(db_file)) == {"valid": n_valid}


# --- plain folders, duplicates, parallel kinds -----------------------------------------------

def test_plain_folder_recursive_without_labels(db, tmp_path):
    root = tmp_path / "photos"
    good_images(root / "a" / "b", 2)
    good_images(root, 1, start=2)
    (root / "README.txt").write_text("not an image, not a .jpg either")
    (root / ".hidden.jpg").write_bytes(b"ignored because hidden")
    summary = ingest(db, root)
    assert summary.layout == "plain" and summary.errors == []
    assert (summary.added, summary.ignored) == (3, 1)
    got = stored(db)
    assert set(got) == {"good2.jpg", "a/b/good0.jpg", "a/b/good1.jpg"}
    assert all(i.label is None and i.split is None for i in got.values())
    assert all(i.path.is_file() for i in got.values())


def test_plain_folder_split_is_recorded(db, tmp_path):
    good_images(tmp_path / "new", 2)
    ingest(db, tmp_path / "new", "unlabelled")
    assert images.splits(db) == {"unlabelled": 2}


def test_same_content_twice_is_stored_once_and_noted(db, tmp_path):
    root = tmp_path / "sic"
    for split, label in (("train", "archery"), ("valid", "bowling")):
        d = root / split / label
        d.mkdir(parents=True)
        shutil.copyfile(SAMPLE_DATA / "train" / "archery" / "001.jpg", d / "x.jpg")
    summary = ingest(db, root)
    assert (summary.added, summary.duplicates) == (1, 1)
    (img,) = images.list_images(db)
    assert (img.split, img.label) == ("valid", "bowling")  # held-out split first
    assert summary.relabelled == [("train/archery/x.jpg", "valid/bowling/x.jpg")]
    assert "train/archery/x.jpg" in summary.relabelled_note()


def test_threads_and_processes_agree(tmp_path):
    results = {}
    for kind in ("threads", "processes"):
        db = connect(":memory:")
        s = ingest(db, SAMPLE_DATA, "valid", workers=2, parallel=kind)
        results[kind] = (s.added, [(i.sha256, i.rel_path, i.label) for i in images.list_images(db)])
    assert results["threads"] == results["processes"]


# --- bad input --------------------------------------------------------------------------------

@pytest.fixture
def bad_folder(tmp_path) -> Path:
    """Three good images and one file of each bad kind that needs no special privileges."""
    root = tmp_path / "mixed"
    good = good_images(root, 3)
    data = good[0].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is a text file renamed to .jpg\n")
    (root / "bomb.png").write_bytes(png_claiming_size(20_000, 20_000))  # PIL: error
    (root / "bomb_warn.png").write_bytes(png_claiming_size(12_000, 12_000))  # PIL: warning
    return root


BAD_REASONS = {
    "truncated.jpg": "truncated",
    "empty.jpg": "empty file",
    "notes.jpg": "not an image",
    "bomb.png": "decompression bomb",
    "bomb_warn.png": "decompression bomb",
}


def test_each_bad_file_reported_once_and_good_ones_stored(db, bad_folder):
    seen = []
    summary = ingest(db, bad_folder, on_error=lambda p, r: seen.append((p, r)))
    assert summary.errors == seen
    reasons = {Path(p).name: r for p, r in summary.errors}
    assert set(reasons) == set(BAD_REASONS)
    for name, words in BAD_REASONS.items():
        assert words in reasons[name], (name, reasons[name])
    assert all("\n" not in r for r in reasons.values())
    assert summary.added == 3 and len(images.list_images(db)) == 3
    assert summary.ok


def test_bomb_between_one_and_two_times_the_limit_is_an_error(db, tmp_path, monkeypatch):
    # A real, decodable image just over a lowered limit: PIL only warns here, ingest refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    Image.new("RGB", (120, 120), "red").save(tmp_path / "big.png")
    Image.new("RGB", (90, 90), "blue").save(tmp_path / "small.png")
    summary = ingest(db, tmp_path, workers=1)
    assert [(Path(p).name, "decompression bomb" in r) for p, r in summary.errors] == [
        ("big.png", True)]
    assert summary.added == 1


def test_unreadable_file_chmod(db, tmp_path):
    good_images(tmp_path, 1)
    locked = tmp_path / "locked.jpg"
    shutil.copyfile(SAMPLE_DATA / "test" / "bowling" / "001.jpg", locked)
    locked.chmod(0)
    try:
        try:
            locked.open("rb").close()
        except PermissionError:
            pass
        else:
            pytest.skip("chmod 000 does not block reads here (running as root); "
                        "test_unreadable_file_permission_error covers the reporting")
        summary = ingest(db, tmp_path)
    finally:
        locked.chmod(0o644)
    assert [(Path(p).name, "permission denied" in r) for p, r in summary.errors] == [
        ("locked.jpg", True)]
    assert summary.added == 1


def test_unreadable_file_permission_error(db, tmp_path, monkeypatch):
    """Same as the chmod test, by making the open refuse, so it also runs as root."""
    good_images(tmp_path, 2)
    real_open = validate._open_for_read

    def refusing_open(path):
        if Path(path).name == "good1.jpg":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(validate, "_open_for_read", refusing_open)
    summary = ingest(db, tmp_path)
    assert [(Path(p).name, r) for p, r in summary.errors] == [
        ("good1.jpg", "permission denied (cannot read)")]
    assert summary.added == 1


def test_file_vanished_between_listing_and_reading(db, tmp_path, monkeypatch):
    victims = good_images(tmp_path, 3)
    real_discover = ingest_module.discover

    def discover_then_delete(root, split=None):
        listing = real_discover(root, split)
        victims[1].unlink()
        return listing

    monkeypatch.setattr(ingest_module, "discover", discover_then_delete)
    summary = ingest(db, tmp_path)
    assert [(Path(p).name, r) for p, r in summary.errors] == [
        ("good1.jpg", "vanished after listing (file not found)")]
    assert summary.added == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_named_like_an_image_does_not_hang(db, tmp_path):
    good_images(tmp_path, 1)
    os.mkfifo(tmp_path / "pipe.jpg")
    summary = ingest(db, tmp_path)
    assert [(Path(p).name, r) for p, r in summary.errors] == [("pipe.jpg", "not a regular file")]
    assert summary.added == 1


def test_csv_row_pointing_at_missing_file(db, tmp_path):
    root = tmp_path / "sic"
    shutil.copytree(SAMPLE_DATA / "valid" / "archery", root / "valid" / "archery")
    present = sorted(p.name for p in (root / "valid" / "archery").iterdir())
    lines = ["class id,filepaths,labels,data set"]
    lines += [f"2,valid/archery/{n},archery,valid" for n in present]
    lines += ["2,valid/archery/gone.jpg,archery,valid", "2,../outside.jpg,archery,valid"]
    (root / "sports.csv").write_text("\n".join(lines) + "\n")
    summary = ingest(db, root)
    reasons = {p: r for p, r in summary.errors}
    gone = str(root / "valid" / "archery" / "gone.jpg")
    assert reasons[gone] == "listed in sports.csv but missing"
    assert any("outside" in p and "outside the dataset root" in r for p, r in reasons.items())
    assert summary.added == len(present) and len(summary.errors) == 2


def test_csv_without_expected_columns_is_one_error(tmp_path):
    (tmp_path / "sports.csv").write_text("path,label\nx.jpg,archery\n")
    with pytest.raises(SourceError, match="missing column"):
        discover(tmp_path)
    with pytest.raises(SourceError, match="not a directory"):
        discover(tmp_path / "nowhere")
    result = CliRunner().invoke(main, ["ingest", str(tmp_path), "--db", str(tmp_path / "d.db")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "sports.csv: missing column" in result.stderr


def test_interrupt_keeps_validated_images_and_rerun_finishes(tmp_path):
    db = connect(tmp_path / "i.db")

    def interrupt_at_20(done, total):
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(db, SAMPLE_DATA, workers=2, batch_size=8, on_progress=interrupt_at_20)
    kept = len(images.list_images(db))
    assert kept == 20  # every image validated before the interrupt is stored, none half-way
    summary = ingest(db, SAMPLE_DATA)
    assert (summary.added, summary.duplicates) == (96 - kept, kept)


# --- the command line -----------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from sportvlm_tui.cli import main; main()",
                           *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_reports_bad_files_one_line_each_and_exits_zero(bad_folder, tmp_path):
    proc = run_cli("ingest", str(bad_folder), "--db", str(tmp_path / "c.db"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == len(BAD_REASONS)
    for name, words in BAD_REASONS.items():
        (line,) = [ln for ln in lines if ln.startswith(str(bad_folder / name) + ": ")]
        assert words in line
    assert "3 added" in proc.stdout and f"{len(BAD_REASONS)} errors" in proc.stdout


def test_cli_exit_status_only_bad_files_or_nothing(tmp_path):
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "empty.jpg").write_bytes(b"")
    (only_bad / "notes.jpg").write_text("text")
    db = str(tmp_path / "e.db")
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", str(only_bad), "--db", db])
    assert result.exit_code == 1
    assert "nothing ingested" in result.stderr and "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["ingest", str(empty), "--db", db])
    assert result.exit_code == 1 and "no image files found" in result.stderr
    result = runner.invoke(main, ["ingest", str(SAMPLE_DATA), "--split", "nope", "--db", db])
    assert result.exit_code == 1 and "splits here: test, train, valid" in result.stderr
    # All duplicates is success: a re-run must not fail scripts that call it.
    good_images(tmp_path / "ok", 2)
    for _ in range(2):
        result = runner.invoke(main, ["ingest", str(tmp_path / "ok"), "--db", db, "--json"])
        assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["duplicates"] == 2


def test_cli_json_summary(tmp_path):
    result = CliRunner().invoke(
        main, ["ingest", str(SAMPLE_DATA), "--db", str(tmp_path / "j.db"), "--json",
               "--workers", "1"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["added"], info["duplicates"], info["errors"]) == (96, 0, [])
    assert info["layout"] == "sports.csv" and info["images_per_s"] > 0


def test_unreadable_root_or_file_argument(tmp_path):
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
    f = tmp_path / "f.jpg"
    f.write_bytes(b"x")
    assert CliRunner().invoke(main, ["ingest", str(f)]).exit_code == 2



def test_cli_database_that_cannot_be_opened(tmp_path):
    bad_db = tmp_path / "not.db"
    bad_db.write_text("this is not an SQLite database, just text padded out" * 40)
    result = CliRunner().invoke(main, ["ingest", str(SAMPLE_DATA), "--db", str(bad_db)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad_db}: cannot open the database")
    assert "Traceback" not in result.output


def test_file_names_that_would_break_a_line_or_the_database(tmp_path):
    root = tmp_path / "odd"
    good_images(root, 1)
    (root / "two\nlines.jpg").write_text("text, and a newline in the name")
    (root / "esc\x1b[31m.jpg").write_text("text, and a terminal escape in the name")
    fd = os.open(os.fsencode(root) + b"/latin1-\xe9.jpg", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    db = str(tmp_path / "o.db")
    result = CliRunner().invoke(main, ["ingest", str(root), "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and "Traceback" not in result.output
    assert any(ln.startswith(f"{root}/two\\nlines.jpg: not an image") for ln in lines)
    assert any("esc\\x1b[31m.jpg: not an image" in ln for ln in lines)
    assert any("file name is not valid UTF-8" in ln for ln in lines)
    assert "\x1b" not in result.stderr
    assert len(images.list_images(connect(db))) == 1


def test_other_formats_and_modes_are_recorded(db, tmp_path):
    made = {
        "rgba.png": Image.new("RGBA", (30, 20), (1, 2, 3, 4)),
        "palette.gif": Image.new("P", (16, 16)),
        "grey.jpg": Image.new("L", (24, 24), 128),
        "cmyk.jpg": Image.new("CMYK", (24, 24), (0, 50, 100, 0)),
        "photo.webp": Image.new("RGB", (40, 30), "green"),
        "scan.tif": Image.new("RGB", (12, 10), "blue"),
        "old.bmp": Image.new("RGB", (8, 8), "red"),
    }
    for name, im in made.items():
        im.save(tmp_path / name)
    summary = ingest(db, tmp_path)
    assert summary.errors == [] and summary.added == len(made)
    for rel, img in stored(db).items():
        with Image.open(tmp_path / rel) as im:
            assert (img.width, img.height, img.mode) == (*im.size, im.mode), rel


def test_cli_decoder_warnings_are_one_line(tmp_path, monkeypatch):
    good_images(tmp_path / "w", 2)
    real_decode = validate.decode

    def warning_decode(data):
        import warnings

        warnings.warn("odd metadata\nsecond line", UserWarning, stacklevel=1)
        return real_decode(data)

    monkeypatch.setattr(validate, "decode", warning_decode)
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "w"), "--db",
                                       str(tmp_path / "w.db"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()  # Python may show a repeated warning only once
    assert lines and set(lines) == {"warning: odd metadata\\nsecond line"}
