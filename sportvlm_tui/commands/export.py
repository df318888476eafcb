"""`sportvlm export`: live decisions -> training pairs (JSONL)."""

from __future__ import annotations

import click

from ..errors import UserError
from .options import db_option


@click.command()
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="JSONL file to write [default: runs/exports/pairs-<time>.jsonl].")
@click.option("--tasks", default="label", show_default=True,
              help="Comma-separated tasks to export: label, caption.")
@click.option("--new-only", is_flag=True,
              help="Only decisions newer than the last export.")
@click.option("--replay", default=None, metavar="FRACTION|N",
              help="With --new-only: add this share (0.2) or number (500) of earlier pairs, "
                   "stratified by label, so training on new pairs does not forget old ones.")
@click.option("--seed", default=0, show_default=True, help="Seed of the replay sample.")
@db_option
def export(out, tasks, new_only, replay, seed, db_path) -> None:
    """Write accepted and corrected decisions as training pairs (JSONL)."""
    from ..export import export_pairs, parse_replay
    from ..storage.db import connect

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    try:
        replay_n = parse_replay(replay)
        db = connect(db_path)
        result = export_pairs(db, out, tasks=task_list, new_only=new_only, replay=replay_n,
                              seed=seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{out}: cannot write ({exc.strerror or exc})") from None
    for line in result.refused:
        click.secho(f"refused: {line}", fg="yellow", err=True)
    click.echo(
        f"wrote {len(result.pairs)} pairs to {result.path} "
        f"({result.new} new, {result.replayed} replayed, {len(result.refused)} refused)"
    )
