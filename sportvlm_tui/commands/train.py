"""`sportvlm train`: export (unless --pairs), train in a separate process, evaluate, promote."""

from __future__ import annotations

import json

import click

from ..errors import UserError
from .options import db_option


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@click.command()
@click.option("--pairs", type=click.Path(dir_okay=False), default=None,
              help="Training pairs JSONL; default: export the live decisions first.")
@click.option("--new-only", is_flag=True,
              help="When exporting: only decisions newer than the last export.")
@click.option("--replay", default=None, metavar="FRACTION|N",
              help="When exporting with --new-only: add earlier pairs, stratified by label.")
@click.option("--tasks", default="label", show_default=True,
              help="Tasks to export and train on (comma-separated: label, caption).")
@click.option("--from-adapter", default=None, metavar="NAME",
              help="Continue training this registered adapter (default: a fresh adapter).")
@click.option("--model", default=None,
              help="Base model id/path or builtin:tiny [default: HuggingFaceM4/idefics-9b].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder to create [default: adapters/<name>].")
@click.option("--name", default=None, help="Adapter name [default: adapter-<time>].")
@click.option("--epochs", type=float, default=None, help="Passes over the pairs [1].")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (overrides epochs).")
@click.option("--micro-batch-size", type=int, default=None, help="Pairs per step per GPU [8].")
@click.option("--learning-rate", type=float, default=None, help="Peak learning rate [2e-4].")
@click.option("--lora-scope", type=click.Choice(["all", "text"]), default=None,
              help="LoRA on every q/k/v (tutorial) or the language model only (faster).")
@click.option("--quant", type=click.Choice(["auto", "nf4", "bf16", "fp16", "fp32"]),
              default=None, help="Base weights [auto: nf4 on GPU, fp32 on CPU].")
@click.option("--device", default=None, help="Force a device (cpu, cuda:0).")
@click.option("--eval-split", default="valid", show_default=True,
              help="Held-out split the candidate is evaluated on.")
@click.option("--eval-limit", type=int, default=200, show_default=True,
              help="At most this many held-out images.")
@click.option("--tolerance", type=float, default=None,
              help="Accuracy (fraction) a candidate may lose vs the promoted one [0.02].")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Promote the candidate when its evaluation passes.")
@click.option("--force", is_flag=True, help="Promote even if the evaluation does not pass.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run named by --name (or --out) from its last "
                   "checkpoint, with the settings it started with.")
@db_option
def train(pairs, new_only, replay, tasks, from_adapter, model, out_dir, name, epochs, max_steps,
          micro_batch_size, learning_rate, lora_scope, quant, device, eval_split, eval_limit,
          tolerance, promote, force, resume, db_path) -> None:
    """Train a LoRA adapter on the reviewed decisions (QLoRA on IDEFICS), then evaluate it
    against the promoted adapter and promote it if it is not worse.

    The trainer runs as its own process (`python -m training`): a crash or out-of-memory
    there is reported and changes nothing but the run's record.
    """
    from training.config import ConfigError
    from training.evaluate import DEFAULT_TOLERANCE
    from training.runs import RunError, TrainingProcess, plan_config, promote_checked

    from ..export import export_pairs, parse_replay
    from ..storage.db import connect

    tol = DEFAULT_TOLERANCE if tolerance is None else tolerance
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    db = connect(db_path)
    try:
        if resume:
            config = _resume_config(name, out_dir)
        elif pairs is None:
            res = export_pairs(db, None, tasks=task_list, new_only=new_only,
                               replay=parse_replay(replay))
            for line in res.refused:
                click.secho(f"refused: {line}", fg="yellow", err=True)
            if not res.pairs:
                raise UserError("no training pairs: accept or correct some predictions first "
                                "(`sportvlm review`)")
            click.echo(f"exported {len(res.pairs)} pairs ({res.new} new, {res.replayed} "
                       f"replayed) to {res.path}")
            pairs = str(res.path)
        overrides = {"epochs": epochs, "max_steps": max_steps,
                     "micro_batch_size": micro_batch_size, "learning_rate": learning_rate,
                     "lora_scope": lora_scope, "quant": quant, "device": device,
                     "eval_split": eval_split, "eval_limit": eval_limit,
                     "tasks": tuple(task_list)}
        if not resume:
            config = plan_config(db, db_path, pairs=pairs, name=name, out_dir=out_dir,
                                 from_adapter=from_adapter, model=model, overrides=overrides)
    except (ValueError, RunError, ConfigError) as exc:
        raise UserError(str(exc)) from None

    proc = TrainingProcess(db, config)
    click.echo(f"training {config.adapter_name} (run {proc.run_id}); log: {proc.log_path}")
    try:
        for ev in proc.events():
            kind = ev["event"]
            if kind == "start":
                click.echo(f"  {ev['pairs']} pairs, {ev['total']} steps on {ev['device']} "
                           f"({ev['quant']}, {ev['optimizer']})")
            elif kind == "step":
                click.echo(f"  step {ev['step']}/{ev['total']}  loss {ev['loss']:.4f}  "
                           f"{ev['samples_per_s']:.1f} samples/s  ETA {_fmt_eta(ev['eta_s'])}")
            elif kind in ("note", "error"):
                click.echo(f"  {ev.get('message', '')}")
            elif kind == "eval":
                r = ev["report"]
                click.echo(f"  evaluation on {r['images']} held-out images: {r['reason']}")
    except KeyboardInterrupt:
        proc.cancel()
        outcome = proc.finish(tol)
        raise UserError(f"training interrupted; nothing was saved (run {outcome.run_id})") \
            from None
    outcome = proc.finish(tol)
    if outcome.status != "done":
        raise UserError(f"training {outcome.status}: {outcome.message} (log: {proc.log_path})")
    assert outcome.adapter is not None
    click.echo(f"candidate {outcome.adapter.name} registered: {outcome.adapter.path}")
    if promote:
        ok, why = promote_checked(db, outcome.adapter.name, force=force, tolerance=tol)
        click.echo(why)


def _resume_config(name: str | None, out_dir: str | None):
    """The saved configuration of an interrupted run, set to resume."""
    from pathlib import Path

    from training.config import TrainConfig
    from training.runs import DEFAULT_ADAPTER_DIR

    if not (name or out_dir):
        raise UserError("--resume: name the run with --name (or --out)")
    out = Path(out_dir) if out_dir else DEFAULT_ADAPTER_DIR / name
    saved = out.parent / f"{out.name}.config.json"
    if not saved.is_file():
        raise UserError(f"--resume: {saved} not found (no run of that name was started here)")
    data = json.loads(saved.read_text(encoding="utf-8"))
    data["resume"] = True
    return TrainConfig.from_dict(data)
