"""`sportvlm eval`: label accuracy, zero-shot vs fine-tuned, caption grades."""

from __future__ import annotations

import json

import click

from ..errors import UserError
from ..storage.db import connect
from .options import db_option, json_option


def parse_labels(value: str | None, vocabulary: list[str]) -> list[str] | None:
    """`--labels a,b` as a list, every name checked against the dataset's labels."""
    if value is None:
        return None
    labels = [v.strip() for v in value.split(",") if v.strip()]
    if not labels:
        raise UserError("--labels: no label given (expected e.g. --labels 'bobsled,tug of war')")
    known = set(vocabulary)
    for label in labels:
        if label not in known:
            raise UserError(f"--labels: {label!r} is not a label of this dataset")
    return labels


def check_split(db, split: str) -> None:
    """A clear error when the split holds no labelled images (naming the splits there are)."""
    from ..storage.images import splits

    n = db.execute("SELECT count(*) FROM images WHERE split = ? AND label IS NOT NULL",
                   (split,)).fetchone()[0]
    if not n:
        have = ", ".join(f"{k}={v}" for k, v in splits(db).items()) or "none"
        raise UserError(f"--split {split}: no labelled images in that split (images: {have})")


@click.command("eval")
@click.option("--split", default="test", show_default=True, help="Labelled split to score.")
@click.option("--labels", "labels_arg", metavar="A,B",
              help="Labels for Table 1 (default: where fine-tuning helped and hurt most).")
@click.option("--model", default=None, help="Only this model's predictions.")
@click.option("--adapter", default=None,
              help="Fine-tuned adapter to compare (default: promoted, else newest).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write the report as Markdown, with a CSV per table beside it.")
@json_option
@db_option
def eval_command(split: str, labels_arg: str | None, model: str | None, adapter: str | None,
                 out_path: str | None, as_json: bool, db_path: str) -> None:
    """Accuracy N/total (exact and lenient), per label, mistakes, zero-shot vs fine-tuned
    (Table 1), and blind caption grades."""
    from rich.console import Console

    from ..evaluation.labels import vocabulary
    from ..evaluation.report import build_report, render, write_report

    db = connect(db_path)
    check_split(db, split)
    labels = parse_labels(labels_arg, vocabulary(db))
    report = build_report(db, split=split, labels=labels, model=model, adapter=adapter)
    if adapter is not None and report.comparison is None:
        raise UserError(f"--adapter {adapter}: no label predictions by that adapter on {split}")
    if labels is not None and report.comparison is None:
        raise UserError(f"--labels: Table 1 needs zero-shot and fine-tuned label predictions "
                        f"on {split}; there are none to compare")
    try:
        written = write_report(report, out_path) if out_path else []
    except OSError as exc:
        raise UserError(f"--out {out_path}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        return
    render(report, Console(highlight=False))
    for path in written:
        click.echo(f"wrote {path}")
