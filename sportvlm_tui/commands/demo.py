"""`sportvlm demo`: offline end to end: sample_data -> builtin:tiny predictions -> review."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError

DEMO_DB = "sportvlm-demo.db"
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"
DEMO_MODEL = "builtin:tiny"


def prepare_demo(db_path: str, *, sample_dir: Path = SAMPLE_DATA, tasks=("label", "caption"),
                 echo=click.echo) -> None:
    """Ingest the sample images and predict with the tiny model. Both steps skip what is
    already in the database, so a re-run only opens the review."""
    from ..data import SourceError, ingest
    from ..storage.db import connect

    if not sample_dir.is_dir():
        raise UserError(f"{sample_dir}: not a folder of images")
    db = connect(db_path)
    try:
        summary = ingest(db, sample_dir)
    except SourceError as exc:
        raise UserError(f"{sample_dir}: {exc}") from None
    echo(f"ingest: {summary.added} new images from {sample_dir}"
         + (f", {len(summary.errors)} bad files" if summary.errors else ""))
    from ..model.loading import load_model
    from ..model.predict import predict_images

    loaded = None
    for task in tasks:
        from ..storage.images import label_vocabulary, list_images
        from ..storage.predictions import predicted_image_ids

        have = predicted_image_ids(db, task=task, mode="zero-shot", model=DEMO_MODEL,
                                   adapter="")
        todo = len([i for i in list_images(db) if i.id not in have])
        if not todo:
            echo(f"predict {task}: already done")
            continue
        if loaded is None:
            echo(f"loading {DEMO_MODEL} …")
            loaded = load_model(DEMO_MODEL, quant="fp32", device="cpu", db=db)
        with click.progressbar(length=todo, label=f"predict {task}") as bar:
            last = [0]

            def progress(p, bar=bar, last=last) -> None:
                bar.update(p.done - last[0])
                last[0] = p.done

            # The tiny model's free text is noise: ranking the dataset's labels gives the demo
            # sensible proposals, confidences and alternatives (when there are labels).
            constrain = task == "label" and bool(label_vocabulary(db))
            try:
                result = predict_images(db, loaded, task=task, mode="zero-shot",
                                        constrain_labels=constrain, on_progress=progress)
            except ValueError as exc:
                raise UserError(f"predict {task}: {exc}") from None
        echo(f"predict {task}: {result.predicted} new predictions"
             + (f", {len(result.failed)} failed" if result.failed else ""))
    db.conn.close()


@click.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=DEMO_DB,
              show_default=True, help="Demo database (re-running reuses it).")
@click.option("--annotator", help="Your name on decisions (default: $SPORTVLM_ANNOTATOR or "
              "your login name).")
@click.option("--graphics", type=click.Choice(("auto", "kitty", "sixel", "halfblock")),
              default="auto", show_default=True, help="How to draw images.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              default=SAMPLE_DATA, show_default="the bundled sample_data/",
              help="Images to ingest (100SIC layout or any folder).")
@click.option("--no-review", is_flag=True, help="Prepare the database but do not open the TUI.")
def demo(db_path: str, annotator: str | None, graphics: str, data_dir: Path,
         no_review: bool) -> None:
    """Offline demo: ingest sample_data/, predict with the tiny built-in model, review."""
    from .review import build_spec, run_review

    prepare_demo(db_path, sample_dir=data_dir)
    if no_review:
        click.echo(f"ready: sportvlm review --db {db_path}")
        return
    run_review(db_path, annotator=annotator, graphics=graphics, blind=False,
               spec=build_spec((), "confidence", None))
