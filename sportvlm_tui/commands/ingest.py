"""`sportvlm ingest DIR`: validate images and store them (100SIC layout or any folder)."""

from __future__ import annotations

import json
import sqlite3
import sys
import warnings
from pathlib import Path

import click

from ..errors import UserError
from .options import db_option, json_option


class _ErrorPrinter:
    """Writes `path: reason` lines to stderr without garbling a progress bar drawn there."""

    def __init__(self, bar_active: bool) -> None:
        self.bar_active = bar_active

    def __call__(self, path: str, reason: str) -> None:
        prefix = "\r\x1b[K" if self.bar_active else ""
        click.echo(f"{prefix}{printable(path)}: {printable(reason)}", err=True)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {printable(str(message))}", err=True)


def printable(text: str) -> str:
    """`text` with control characters escaped: a file name holding a newline or a terminal
    escape sequence stays on one line and cannot drive the terminal."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


@click.command()
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path)
)
@click.option(
    "--split",
    default=None,
    help="Only this split (100SIC layout), or the split to record for a plain folder.",
)
@db_option
@json_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Images validated in parallel threads (default: one per CPU core, at most 8).",
)
def ingest(directory: Path, split: str | None, db_path: str, as_json: bool,
           workers: int | None) -> None:
    """Validate the images in DIRECTORY and store them; duplicates are skipped.

    \b
    DIRECTORY may be a 100SIC dataset (sports.csv with `class id,filepaths,labels,data set`,
    or train/valid/test/<label>/ folders) or any folder of images (searched recursively,
    stored without a label). Each bad file is reported as `path: reason` and skipped.
    Exit status 1 only when no usable image was found.
    """
    from ..data import SourceError, discover
    from ..storage.db import connect

    try:
        listing = discover(directory, split)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    if not listing.candidates and not listing.errors:
        where = f" with split {split!r}" if split else ""
        found = sorted(listing.splits_found)
        hint = f" (splits here: {', '.join(found)})" if split and found else ""
        raise UserError(f"{directory}: no image files found{where}{hint}")

    try:
        db = connect(db_path)
    except (OSError, sqlite3.Error) as exc:
        raise UserError(f"{db_path}: cannot open the database ({exc})") from None
    show_bar = sys.stderr.isatty() and bool(listing.candidates)
    try:
        with warnings.catch_warnings():
            # Other decoder warnings (odd metadata and the like) become one line each too.
            warnings.showwarning = _warning_line
            summary = _run(db, directory, split, workers, listing, show_bar)
    except sqlite3.Error as exc:
        # Batches committed before the failure stay; a re-run picks up from there.
        raise UserError(f"{db_path}: database error while storing images ({exc})") from None

    note = summary.relabelled_note()
    if note:
        click.echo(printable(note), err=True)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        click.echo(printable(summary.line()))
    if not summary.ok:
        raise UserError(f"{directory}: nothing ingested ({len(summary.errors)} bad files)")


def _run(db, directory: Path, split: str | None, workers: int | None, listing, show_bar: bool):
    """The ingest itself, with a progress bar on stderr when it is a terminal."""
    from ..data import ingest as run_ingest

    printer = _ErrorPrinter(show_bar)
    if show_bar:
        with click.progressbar(length=len(listing.candidates), label="ingest", file=sys.stderr,
                               show_pos=True, show_eta=True) as bar:
            last = [0]

            def progress(done: int, _total: int) -> None:
                bar.update(done - last[0])
                last[0] = done

            return run_ingest(db, directory, split, workers=workers, listing=listing,
                              on_error=printer, on_progress=progress)
    return run_ingest(db, directory, split, workers=workers, listing=listing, on_error=printer)
