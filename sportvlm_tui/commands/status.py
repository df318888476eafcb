"""`sportvlm status`: what the database holds."""

from __future__ import annotations

import json

import click

from ..storage import adapters, images, predictions, reviews
from ..storage.db import connect
from .options import db_option, json_option


def collect_status(db) -> dict:
    return {
        "images": images.splits(db),
        "predictions": predictions.prediction_groups(db),
        "decisions": reviews.decision_counts(db),
        "adapters": [
            {"name": a.name, "status": a.status, "parent": a.parent, "pairs": a.pairs}
            for a in adapters.list_adapters(db)
        ],
    }


@click.command()
@db_option
@json_option
def status(db_path: str, as_json: bool) -> None:
    """Counts: images by split, predictions, decisions, adapters."""
    db = connect(db_path)
    info = collect_status(db)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    total = sum(info["images"].values())
    click.echo(f"database: {db_path}")
    click.echo(f"images: {total}" + "".join(f"  {k}={v}" for k, v in info["images"].items()))
    click.echo("predictions:" + ("" if info["predictions"] else " none"))
    for g in info["predictions"]:
        adapter = g["adapter"] or "(base)"
        click.echo(f"  {g['task']:<8} {g['mode']:<10} {g['model']}  adapter={adapter}  {g['n']}")
    click.echo("decisions:" + ("" if info["decisions"] else " none"))
    for d in info["decisions"]:
        click.echo(f"  {d['task']:<8} {d['decision']:<8} by {d['annotator']}: {d['n']}")
    click.echo("adapters:" + ("" if info["adapters"] else " none"))
    for a in info["adapters"]:
        mark = "*" if a["status"] == "promoted" else " "
        click.echo(f" {mark}{a['name']}  {a['status']}  pairs={a['pairs']}  parent={a['parent']}")
