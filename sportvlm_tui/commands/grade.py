"""`sportvlm grade`: blind grading of zero-shot, few-shot and fine-tuned captions in the TUI."""

from __future__ import annotations

import click

from ..errors import UserError
from ..storage.db import connect
from .options import db_option


@click.command()
@click.option("--n", "n", default=20, show_default=True, type=click.IntRange(min=1),
              help="Images to grade (the tutorial graded 20).")
@click.option("--split", default="test", show_default=True, help="Split to draw images from.")
@click.option("--grader", default=None,
              help="Your name, stored with each grade (default: $SPORTVLM_ANNOTATOR or login).")
@click.option("--model", default=None, help="Grade this model's captions (default: most captions).")
@click.option("--adapter", default=None,
              help="Fine-tuned adapter whose captions to include (default: promoted, else newest).")
@click.option("--graphics", type=click.Choice(("auto", "kitty", "sixel", "halfblock")),
              default="auto", show_default=True,
              help="How to draw the image: kitty/sixel graphics, or half blocks (any terminal).")
@click.option("--new", "new_session_flag", is_flag=True,
              help="Start a new session even if your last one is unfinished.")
@click.option("--session", "session_arg", default=None,
              help="Continue this session id (default: your last unfinished one).")
@db_option
def grade(n: int, split: str, grader: str | None, model: str | None, adapter: str | None,
          graphics: str, new_session_flag: bool, session_arg: str | None, db_path: str) -> None:
    """Grade captions blind: each image's captions unnamed, in random order; y/n per caption.

    Each grade is saved on the key press; `sportvlm eval` shows K / N acceptable per mode.
    """
    from ..evaluation.grading import (
        caption_conditions,
        current_grades,
        grading_items,
        latest_session,
        new_session,
    )
    from ..storage.reviews import default_annotator

    grader = default_annotator(grader)
    db = connect(db_path)
    conditions = caption_conditions(db, split, model, adapter)
    if not conditions:
        raise UserError(f"--split {split}: no captions to grade "
                        "(run `sportvlm predict --task caption` first)")
    session = session_arg
    if session is None and not new_session_flag:
        last = latest_session(db, grader)
        if last is not None:
            items = grading_items(db, split=split, n=n, session=last, grader=grader,
                                  conditions=conditions)
            grades = current_grades(db, last, grader)
            if any(c.prediction_ids[0] not in grades for it in items for c in it.captions):
                session = last
    session = session or new_session()
    items = grading_items(db, split=split, n=n, session=session, grader=grader,
                          conditions=conditions)
    if not items:
        raise UserError(f"--split {split}: no image has a caption from every mode "
                        f"({', '.join(c.name for c in conditions)})")
    click.echo(f"session {session}: {len(items)} images, grader {grader}", err=True)

    from ..ui.grading import GradingApp
    from ..ui.imaging import detect_graphics

    # Before the app starts: the terminal can only be asked about graphics until Textual owns it.
    mode = detect_graphics(graphics)
    GradingApp(db, items, session=session, grader=grader, graphics=mode).run()
    click.echo(f"grades saved (session {session}); `sportvlm eval --split {split}` shows them",
               err=True)
