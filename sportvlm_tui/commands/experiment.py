"""`sportvlm experiment ROOT`: the tutorial end to end, resumable."""

from __future__ import annotations

from pathlib import Path

import click

from .options import DEFAULT_MODEL, db_option


@click.command()
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Base model: hub id, local path, or `builtin:tiny` (offline test model).")
@click.option("--split", default="test", show_default=True,
              help="Split to evaluate labels and captions on.")
@click.option("--per-label", default=10, show_default=True, type=click.IntRange(min=1),
              help="Train images per label for the label adapter (the tutorial: 10).")
@click.option("--captions", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSONL {image, caption} pairs to fine-tune captions on (image paths relative "
                   "to the file); without it there is no caption adapter.")
@click.option("--examples", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSONL few-shot caption examples (default: the first 4 --captions pairs).")
@click.option("--caption-images", default=20, show_default=True, type=click.IntRange(min=1),
              help="Images of --split to caption (and grade later; the tutorial: 20).")
@click.option("--name", default="experiment", show_default=True,
              help="Adapter name prefix: NAME-labels, NAME-captions.")
@click.option("--quant", default="auto", show_default=True,
              type=click.Choice(["auto", "nf4", "bf16", "fp16", "fp32"]),
              help="Base weights (auto: nf4 on a GPU, fp32 on CPU).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Prediction batch size.")
@click.option("--seed", default=0, show_default=True, help="Seeds the choice of images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/experiment"), show_default=True,
              help="Folder for training pairs, adapters and report.md (+ CSV tables).")
@db_option
def experiment(root: Path, model: str, split: str, per_label: int, captions: Path | None,
               examples: Path | None, caption_images: int, name: str, quant: str,
               batch_size: int | None, seed: int, out_dir: Path, db_path: str) -> None:
    """Reproduce the tutorial on ROOT: ingest, zero-shot labels, QLoRA, fine-tuned labels,
    zero-shot / few-shot / fine-tuned captions, then the report.

    Each step skips what is already done: after an interruption, run the same command again.
    Then `sportvlm grade` grades the captions blind and `sportvlm eval` shows everything.
    """
    from rich.console import Console

    from ..evaluation.experiment import Experiment, ExperimentConfig
    from ..evaluation.report import render
    from ..storage.db import connect

    config = ExperimentConfig(
        root=root, db_path=db_path, out_dir=out_dir, model=model, split=split,
        per_label=per_label, captions=captions, examples=examples,
        caption_images=caption_images, name=name, quant=quant, batch_size=batch_size,
        seed=seed)
    console = Console(highlight=False, stderr=True)
    with _ConsoleReporter(console) as reporter:
        report = Experiment(config, connect(db_path), reporter).run()
    render(report, Console(highlight=False))
    click.echo(f"report: {config.report_path}   next: sportvlm grade --split {split} "
               f"--db {db_path}")


class _ConsoleReporter:
    """Steps and notes as lines, progress as a rich bar (one per task, removed when done)."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), console=console, transient=True)
        self.tasks: dict[str, int] = {}
        self.n = 0

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def step(self, title: str) -> None:
        from rich.text import Text

        self.n += 1
        self.console.print(Text(f"[{self.n}] {title}", style="bold"))

    def note(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text("    " + message))

    def progress(self, what: str, done: int, total: int) -> None:
        if what not in self.tasks:
            self.tasks[what] = self.bars.add_task(what, total=total)
        self.bars.update(self.tasks[what], completed=done, total=total)
        if done >= total:
            self.bars.remove_task(self.tasks.pop(what))
