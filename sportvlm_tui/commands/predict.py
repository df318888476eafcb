"""`sportvlm predict`: batched, resumable label/caption prediction into the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from ..errors import UserError
from .options import db_option, json_option, model_option

REPO_SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "fewshot_captions.jsonl"


def _default_examples() -> Path | None:
    for candidate in (Path("sample_data") / "fewshot_captions.jsonl", REPO_SAMPLE):
        if candidate.is_file():
            return candidate
    return None


def _relaunch_with_accelerate(num_gpus: int) -> None:
    """Re-run this very command under `accelerate launch`, one process per GPU."""
    argv = sys.argv[sys.argv.index("predict"):] if "predict" in sys.argv else ["predict"]
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--num-gpus":
            skip = True
            continue
        if a.startswith("--num-gpus="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_gpus),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "sportvlm_tui.commands.predict", *args]
    raise SystemExit(subprocess.call(cmd))


def _distributed():
    """PartialState when started by accelerate/torchrun with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState()


class _Progress:
    """A stderr progress bar with images/s, drawn on a terminal only (logs stay clean); it
    starts with the first finished batch, when the number of images to do is known."""

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.last = 0

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=p.total, label=self.label, file=sys.stderr,
                                         show_pos=True, show_eta=True,
                                         item_show_func=lambda s: s)
            self.bar.__enter__()
        self.bar.update(p.done - self.last, f"{p.images_per_s:.1f} img/s")
        self.last = p.done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command()
@click.option("--task", type=click.Choice(["label", "caption"]), default="label",
              show_default=True, help="What to ask: the sport (label) or a caption.")
@click.option("--mode", type=click.Choice(["zero-shot", "few-shot"]), default="zero-shot",
              show_default=True, help="Few-shot puts worked examples before each image.")
@model_option
@click.option("--adapter", default=None,
              help="LoRA adapter: a registered name (see `sportvlm adapters`) or a folder.")
@click.option("--quant", type=click.Choice(["auto", "nf4", "bf16", "fp16", "fp32"]),
              default="auto", show_default=True,
              help="Weights: auto = nf4 (4-bit, the tutorial's) on a GPU, fp32 on CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per batch (default 256 on a GPU, 8 on CPU).")
@click.option("--split", default=None, help="Only images of this split (default: all).")
@click.option("--examples", "examples_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Few-shot examples, JSONL {image, caption} (default for captions: "
                   "sample_data/fewshot_captions.jsonl; for labels: 4 train images).")
@click.option("--constrain-labels", is_flag=True,
              help="Answer with the most likely label of the vocabulary instead of free text.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Longest answer in tokens (default 10 for labels, 32 for captions).")
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True,
              help="Alternative labels stored with their probabilities.")
@click.option("--rank-candidates", type=click.IntRange(min=0), default=5, show_default=True,
              help="Labels scored exactly per image (those whose first token is most likely, "
                   "plus the answer); 0 scores every label (exact top-k, slower).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Predict at most this many images (of those not done yet).")
@click.option("--keep-4bit", is_flag=True,
              help="With nf4 on a GPU, keep bitsandbytes' 4-bit layers (least memory) instead "
                   "of dequantising them once to bf16 (same NF4 values; faster at big batches).")
@click.option("--num-gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="Split the images over this many GPUs (relaunches under accelerate).")
@db_option
@json_option
def predict(task, mode, model, adapter, quant, batch_size, split, examples_path,
            constrain_labels, max_new_tokens, topk, rank_candidates, limit, keep_4bit, num_gpus,
            db_path, as_json) -> None:
    """Predict labels or captions for the stored images; resumable (Ctrl-C, run again).

    Rows are written per batch; images already predicted with the same model, adapter,
    task and mode are skipped. After a labelled split, prints `N / total correct`.
    """
    if num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        _relaunch_with_accelerate(num_gpus)

    from ..prompts import load_examples
    from ..storage.db import connect
    from ..storage.images import list_images
    from ..storage.predictions import predicted_image_ids

    state = _distributed()
    db = connect(db_path)
    examples = None
    if mode == "few-shot":
        path = examples_path or (_default_examples() if task == "caption" else None)
        if task == "caption" and path is None:
            raise UserError("--mode few-shot --task caption: no examples; pass --examples FILE"
                            " (JSONL lines {\"image\": path, \"caption\": text})")
        if path is not None:
            try:
                examples = load_examples(path)
            except (OSError, ValueError) as exc:
                raise UserError(str(exc).splitlines()[0]) from None
    elif examples_path is not None:
        raise UserError("--examples: only used with --mode few-shot")

    if not list_images(db, split=split, limit=1):
        where = f" in split {split!r}" if split else ""
        raise UserError(f"{db_path}: no images{where}; run `sportvlm ingest DIR` first")

    from ..model.loading import load_model
    from ..model.predict import predict_images

    _quiet_transformers()
    device = str(state.device) if state is not None else None
    t0 = time.perf_counter()
    loaded = load_model(model, quant=quant, adapter=adapter, db=db, device=device)
    if loaded.quant == "nf4" and loaded.device.type == "cuda" and not keep_4bit and (
            batch_size or 256) >= 32:
        from ..model.loading import dequantize_4bit_weights

        # bitsandbytes dequantises every weight at every forward when the batch is > 1.
        if dequantize_4bit_weights(loaded.model) and not as_json:
            click.echo("nf4 weights dequantised once to bf16 for batched speed (--keep-4bit to"
                       " keep 4-bit layers)", err=True)
    load_s = time.perf_counter() - t0

    image_ids, already = None, 0
    if state is not None:
        done = predicted_image_ids(db, task=task, mode=mode, model=loaded.model_name,
                                   adapter=loaded.adapter_name)
        selected = [im.id for im in list_images(db, split=split)]
        already = sum(1 for i in selected if i in done)
        todo = [i for i in selected if i not in done]
        todo = todo[:limit] if limit else todo
        # Everyone must read the same to-do list before anyone writes.
        state.wait_for_everyone()
        with state.split_between_processes(todo) as mine:
            image_ids = list(mine)
    main_process = state is None or state.is_main_process

    # With several processes only the main one draws (its share stands for the whole).
    progress = _Progress(f"predict {task}", main_process and not as_json)
    try:
        if image_ids is not None and not image_ids:
            summary = None
        else:
            summary = predict_images(
                db, loaded, task=task, mode=mode, split=split, image_ids=image_ids,
                batch_size=batch_size, examples=examples, constrain_labels=constrain_labels,
                max_new_tokens=max_new_tokens, limit=None if state else limit, topk=topk,
                rank_candidates=rank_candidates, on_progress=progress,
            )
    except ValueError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    finally:
        progress.close()
    if state is not None:
        state.wait_for_everyone()
        if not main_process:
            return
        summary = _overall(db, loaded, task, mode, split, summary, already)
    for _, err in summary.failed:
        click.echo(err, err=True)
    if as_json:
        out = summary.as_dict()
        out["load_seconds"] = round(load_s, 3)
        click.echo(json.dumps(out, indent=2))
        return
    adapter_txt = f" + {summary.adapter}" if summary.adapter else ""
    click.echo(f"{task} {mode} {summary.model}{adapter_txt}: {summary.predicted} predicted,"
               f" {summary.skipped} already done, {len(summary.failed)} failed"
               f" ({summary.images_per_s:.1f} img/s, model load {load_s:.1f} s)")
    if summary.correct is not None:
        todo = f"; {summary.unpredicted} not predicted yet" if summary.unpredicted else ""
        click.echo(f"{summary.correct} / {summary.labelled} correct (exact match{todo})")


def _overall(db, loaded, task, mode, split, mine, already: int):
    """The main process's summary over every process's rows (they share the database)."""
    from ..model.predict import PredictSummary, _match_counts
    from ..storage.images import list_images
    from ..storage.predictions import list_predictions

    ids = [im.id for im in list_images(db, split=split)]
    rows = list_predictions(db, task=task, mode=mode, model=loaded.model_name,
                            adapter=loaded.adapter_name, split=split)
    s = mine or PredictSummary(task, mode, loaded.model_name, loaded.adapter_name, len(ids), 0, 0)
    s.requested, s.skipped = len(ids), already
    s.predicted = len(rows) - already
    if task == "label":
        s.correct, s.labelled, s.unpredicted = _match_counts(
            db, task, mode, loaded.model_name, loaded.adapter_name, ids)
        s.correct = s.correct if s.labelled else None
    return s


def _quiet_transformers() -> None:
    """Loading chatter (progress bars, the torchvision fallback notice) is not for users."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


if __name__ == "__main__":
    # `accelerate launch -m sportvlm_tui.commands.predict predict ARGS` (what --num-gpus runs).
    from ..cli import main as cli_main

    cli_main()
