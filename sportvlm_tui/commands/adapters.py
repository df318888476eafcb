"""`sportvlm adapters`: list, promote, rollback, evaluate."""

from __future__ import annotations

import json

import click

from ..errors import UserError
from .options import db_option, json_option


def _acc(report: dict | None, side: str) -> str:
    if not report or report.get(side, {}).get("accuracy") is None:
        return "-"
    r = report[side]
    return f"{r['correct']}/{r['total']} ({r['accuracy']:.1%})"


@click.group(invoke_without_command=True)
@click.pass_context
def adapters(ctx: click.Context) -> None:
    """LoRA adapters: candidates, the promoted one, rollback."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@adapters.command("list")
@db_option
@json_option
def list_cmd(db_path: str = None, as_json: bool = False) -> None:  # type: ignore[assignment]
    """Every adapter with its status, parent, pairs and held-out accuracy."""
    from ..storage.adapters import list_adapters
    from ..storage.db import connect, default_db_path

    db = connect(db_path or default_db_path())
    found = list_adapters(db)
    if as_json:
        click.echo(json.dumps([a.__dict__ for a in found], indent=2, default=str))
        return
    if not found:
        click.echo("no adapters yet (`sportvlm train`)")
        return
    for a in found:
        mark = "*" if a.status == "promoted" else " "
        ev = a.metrics.get("eval")
        click.echo(f"{mark} {a.name}  {a.status:<9} pairs={a.pairs}  parent={a.parent or '-'}  "
                   f"accuracy={_acc(ev, 'candidate')} vs "
                   f"{(ev or {}).get('reference_name', '-')} {_acc(ev, 'reference')}")
        click.echo(f"    {a.path}")


@adapters.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Promote even if its evaluation does not pass.")
@click.option("--tolerance", type=float, default=None,
              help="Accuracy (fraction) it may lose vs the promoted one [0.02].")
@db_option
def promote(name: str, force: bool, tolerance: float | None, db_path: str) -> None:
    """Make NAME the adapter predictions use (the previous one stays for rollback)."""
    from training.evaluate import DEFAULT_TOLERANCE
    from training.runs import promote_checked

    from ..storage.adapters import get_adapter
    from ..storage.db import connect

    db = connect(db_path)
    if get_adapter(db, name) is None:
        raise UserError(f"{name}: no adapter of that name (see `sportvlm adapters list`)")
    ok, why = promote_checked(db, name, force=force,
                              tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
    if not ok:
        raise UserError(why)
    click.echo(why)


@adapters.command()
@db_option
def rollback(db_path: str) -> None:
    """Promote the previously promoted adapter again (or go back to the base model)."""
    from ..storage.adapters import promoted_adapter
    from ..storage.adapters import rollback as do_rollback
    from ..storage.db import connect

    db = connect(db_path)
    current = promoted_adapter(db)
    if current is None:
        raise UserError("nothing to roll back: no adapter is promoted")
    back = do_rollback(db)
    click.echo(f"{current.name} retired; now using {back.name if back else 'the base model'}")


@adapters.command()
@click.argument("name")
@click.option("--split", default="valid", show_default=True, help="Held-out split.")
@click.option("--limit", type=int, default=200, show_default=True,
              help="At most this many held-out images.")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Images per prediction batch.")
@click.option("--quant", default="auto", show_default=True, help="Base weights.")
@db_option
def evaluate(name: str, split: str, limit: int, batch_size: int, quant: str,
             db_path: str) -> None:
    """Evaluate NAME against the promoted adapter (or the base) and record the result."""
    from training.evaluate import evaluate_adapter_folder

    from ..storage.adapters import get_adapter, promoted_adapter, set_metrics
    from ..storage.db import connect

    db = connect(db_path)
    adapter = get_adapter(db, name)
    if adapter is None:
        raise UserError(f"{name}: no adapter of that name (see `sportvlm adapters list`)")
    current = promoted_adapter(db)
    if current is not None and current.name == name:
        current = None if adapter.parent is None else get_adapter(db, adapter.parent)
    exclude = set()
    run_dir = None
    if adapter.path.endswith("/adapter"):
        run_dir = adapter.path[: -len("/adapter")]
    try:
        manifest = json.loads(open(f"{run_dir}/manifest.json", encoding="utf-8").read())
        exclude = set(manifest.get("image_ids", []))
    except (OSError, TypeError, ValueError):
        pass  # an adapter from elsewhere: no record of its training images
    report = evaluate_adapter_folder(
        db_path, model=adapter.base_model or "HuggingFaceM4/idefics-9b",
        adapter_path=adapter.path, reference_path=current.path if current else None,
        split=split, exclude=exclude, limit=limit, batch_size=batch_size, quant=quant,
        candidate_name=name, reference_name=current.name if current else "",
    )
    set_metrics(db, name, {**adapter.metrics, "eval": report})
    click.echo(f"{name}: {_acc(report, 'candidate')} vs {report['reference_name']} "
               f"{_acc(report, 'reference')} on {report['images']} {split} images")
    click.echo(report["verdict"]["reason"])
    for r in report["verdict"]["regressions"][:10]:
        click.echo(f"  worse on {r['label']}: {r['candidate']}/{r['total']} vs "
                   f"{r['reference']}/{r['total']}")
