"""`sportvlm review`: the review TUI for one annotator."""

from __future__ import annotations

import sqlite3

import click

from ..errors import UserError
from .options import db_option

GRAPHICS = ("auto", "kitty", "sixel", "halfblock")


def build_spec(filters: tuple[str, ...], order: str, split: str | None):
    """The queue spec from the command line, or a UserError naming the bad value."""
    from ..storage import review_queue as rq

    try:
        name, seed = rq.parse_order(order)
        spec = rq.QueueSpec(order=name, seed=seed, split=split)
        for f in filters:
            spec = rq.parse_filter(spec, f)
        return spec
    except ValueError as exc:
        raise UserError(str(exc)) from None


def open_review_db(db_path: str):
    """Open and migrate the database; a one-line error if it can't be used for review."""
    from ..storage.db import connect, scalar

    try:
        db = connect(db_path)
        n = scalar(db, "SELECT count(*) FROM images")
    except sqlite3.Error as exc:
        raise UserError(f"{db_path}: cannot open the database ({exc})") from None
    if not n:
        raise UserError(f"{db_path}: no images yet; run `sportvlm ingest DIR` first "
                        "(or `sportvlm demo`)")
    return db


def run_review(db_path: str, *, annotator: str | None, graphics: str, blind: bool,
               spec, resume: bool = True) -> None:
    """Start the TUI (imports Textual only here)."""
    from ..storage.reviews import default_annotator
    from ..ui.imaging import detect_graphics

    open_review_db(db_path).conn.close()
    # Must run before Textual takes the terminal (textual-image queries it at import).
    mode = detect_graphics(graphics)
    from ..ui.app import ReviewApp
    from ..ui.review_screen import ReviewConfig

    config = ReviewConfig(db_path=db_path, annotator=default_annotator(annotator), spec=spec,
                          graphics=mode, blind=blind, resume=resume)
    try:
        ReviewApp(config).run()
    finally:
        # The app gives its leases back on the way out; this covers an exit that was too
        # abrupt for its store thread to finish (leases would otherwise block others 5 min).
        from ..storage.db import connect
        from ..storage.reviews import release_claims

        try:
            release_claims(connect(db_path), config.annotator)
        except sqlite3.Error:
            pass


@click.command()
@db_option
@click.option("--annotator", help="Your name on decisions. Default: $SPORTVLM_ANNOTATOR, "
              "else your login name.")
@click.option("--graphics", type=click.Choice(GRAPHICS), default="auto", show_default=True,
              help="How to draw the image: kitty/sixel graphics, or half blocks (any terminal).")
@click.option("--blind", is_flag=True, help="Never show the dataset label.")
@click.option("--split", help="Only images of this split (e.g. valid, test).")
@click.option("--filter", "filters", multiple=True, metavar="F",
              help="pending (default), accepted, corrected, skipped, decided, all, "
              "label=NAME (proposed label), conf=LO-HI. Repeatable.")
@click.option("--order", default="confidence", show_default=True,
              help="confidence (least confident first), dataset, or random[:SEED].")
@click.option("--restart", is_flag=True,
              help="Start at the top of the queue instead of where you stopped.")
def review(db_path: str, annotator: str | None, graphics: str, blind: bool,
           split: str | None, filters: tuple[str, ...], order: str, restart: bool) -> None:
    """Review the model's labels and captions, one image at a time (press ? for keys)."""
    spec = build_spec(filters, order, split)
    run_review(db_path, annotator=annotator, graphics=graphics, blind=blind, spec=spec,
               resume=not restart)
