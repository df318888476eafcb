"""The tutorial end to end on a dataset root, resumable step by step.

    ingest -> zero-shot labels (eval split) -> zero-shot and few-shot captions (a sample of it)
    -> QLoRA on N train images per label -> QLoRA on caption pairs -> fine-tuned labels ->
    fine-tuned captions -> the report

Every step looks at what the database and the output folder already hold and does only what
is missing, so an interrupted run goes on where it stopped when started again. Prediction uses
the predictor's `predict_images` (it skips what is stored), training the loop's
`TrainingProcess` (a separate process, so a crash there never takes this one down).

Importing this module is light: the model and the trainer are imported by the steps that run
them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from ..errors import UserError
from ..export.pairs import write_jsonl_atomic
from ..storage import adapters as adapter_store
from ..storage.images import Image, list_images
from ..storage.predictions import predicted_image_ids

DEFAULT_MODEL = "HuggingFaceM4/idefics-9b"
FEW_SHOT_EXAMPLES = 4  # the tutorial's in-context examples


@dataclass
class ExperimentConfig:
    """What one experiment run needs (the CLI's options)."""

    root: Path
    """Dataset root (100SIC layout: sports.csv or split folders)."""
    db_path: str
    """Database the experiment writes to (and resumes from)."""
    out_dir: Path
    """Folder for training pairs, adapters and the report."""
    model: str = DEFAULT_MODEL
    """Base model id or path (`builtin:tiny` for tests)."""
    split: str = "test"
    """Split the labels and captions are evaluated on."""
    train_split: str = "train"
    """Split the label training images come from."""
    per_label: int = 10
    """Training images per label (the tutorial: 10)."""
    captions: Path | None = None
    """JSONL of {"image", "caption"} pairs for caption fine-tuning (None: no caption adapter)."""
    examples: Path | None = None
    """JSONL of few-shot caption examples (None: the first 4 caption pairs)."""
    caption_images: int = 20
    """Eval-split images to caption (the tutorial graded 20)."""
    name: str = "experiment"
    """Adapter name prefix: `<name>-labels`, `<name>-captions`."""
    quant: str = "auto"
    """Base weights for prediction and training (auto: nf4 on a GPU, fp32 on CPU)."""
    batch_size: int | None = None
    """Prediction batch size (None: the predictor's default for the device)."""
    seed: int = 0
    """Seeds the choice of training and caption images."""
    train_options: dict = field(default_factory=dict)
    """Extra TrainConfig fields (e.g. micro_batch_size, max_steps)."""

    @property
    def label_adapter(self) -> str:
        return f"{self.name}-labels"

    @property
    def caption_adapter(self) -> str:
        return f"{self.name}-captions"

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.md"


class Reporter:
    """Where the experiment tells what it does; the CLI prints, tests collect."""

    def step(self, title: str) -> None:
        """A step starts."""

    def note(self, message: str) -> None:
        """One line of information (a skip, a count, a warning)."""

    def progress(self, what: str, done: int, total: int) -> None:
        """Progress within a step."""


@dataclass
class _Collector(Reporter):
    lines: list[str] = field(default_factory=list)

    def step(self, title: str) -> None:
        self.lines.append(f"== {title}")

    def note(self, message: str) -> None:
        self.lines.append(message)


class Experiment:
    """Runs the steps of one experiment against one database."""

    def __init__(self, config: ExperimentConfig, db: Database,
                 reporter: Reporter | None = None) -> None:
        self.config = config
        self.db = db
        self.out = reporter or _Collector()
        self.root = str(Path(config.root).resolve())

    # ---- selections (deterministic, so a resumed run picks the same images) ---------------

    def _root_images(self, split: str) -> list[Image]:
        return [im for im in list_images(self.db, split=split) if im.root == self.root]

    def eval_images(self) -> list[Image]:
        """Labelled images of the eval split under this root."""
        return [im for im in self._root_images(self.config.split) if im.label]

    def training_images(self) -> list[Image]:
        """`per_label` train images per label, drawn with the seed."""
        by_label: dict[str, list[Image]] = {}
        for im in self._root_images(self.config.train_split):
            if im.label:
                by_label.setdefault(im.label, []).append(im)
        rng = random.Random(self.config.seed)
        chosen: list[Image] = []
        for label in sorted(by_label):
            group = by_label[label]
            chosen += rng.sample(group, min(self.config.per_label, len(group)))
        return sorted(chosen, key=lambda im: im.id)

    def caption_image_ids(self) -> list[int]:
        ids = [im.id for im in self.eval_images()]
        rng = random.Random(f"captions:{self.config.seed}")
        return sorted(rng.sample(ids, min(self.config.caption_images, len(ids))))

    def caption_pairs(self):
        """(training pairs, few-shot examples) from the JSONL files; images of the eval split
        are left out of both, so nothing is trained or prompted on what is evaluated."""
        from ..prompts import load_examples

        c = self.config
        held_out = {im.path.resolve() for im in self._root_images(c.split)}
        try:
            pairs = load_examples(c.captions) if c.captions else []
            examples = load_examples(c.examples) if c.examples else None
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from None
        kept = [p for p in pairs if Path(p.image).resolve() not in held_out]
        if len(kept) < len(pairs):
            self.out.note(f"{len(pairs) - len(kept)} caption pairs show {c.split} images: "
                          "left out of training")
        if examples is None:
            examples = kept[:FEW_SHOT_EXAMPLES]
        else:
            shown = [e for e in examples if Path(e.image).resolve() not in held_out]
            if len(shown) < len(examples):
                self.out.note(f"{len(examples) - len(shown)} few-shot examples show {c.split} "
                              "images: left out")
            examples = shown
        return kept, examples

    # ---- the run -------------------------------------------------------------------------

    def run(self):
        """Every step in order; returns the Report."""
        c = self.config
        self.ingest()
        evals = self.eval_images()
        if not evals:
            have = sorted({im.split or "(none)" for im in list_images(self.db)
                           if im.root == self.root})
            raise UserError(f"--split {c.split}: no labelled images under {c.root} "
                            f"(splits there: {', '.join(have) or 'none'})")
        eval_ids = [im.id for im in evals]
        cap_ids = self.caption_image_ids()
        cap_pairs, examples = self.caption_pairs()
        label_pairs = [self._label_pair(im) for im in self.training_images()]
        if not label_pairs and adapter_store.get_adapter(self.db, c.label_adapter) is None:
            # Found now rather than after an hour of zero-shot prediction.
            raise UserError(f"--per-label: split {c.train_split!r} under {c.root} has no "
                            "labelled images to train on")
        untrained = sorted({im.label for im in evals} - {p["label"] for p in label_pairs})
        if untrained and label_pairs:
            # Often duplicates: the same file under train/ and the eval split is stored once,
            # under the split ingested first (test, then valid), and never trained on.
            self.out.note(f"{len(untrained)} of {len({im.label for im in evals})} {c.split} "
                          f"labels have no {c.train_split} images to train on (e.g. "
                          f"{', '.join(untrained[:3])})")
        if not examples:
            self.out.note("no few-shot examples (--examples or --captions): few-shot captions "
                          "are skipped")
        if not cap_pairs:
            self.out.note("no caption pairs (--captions): no caption adapter, no fine-tuned "
                          "captions")

        self.out.step(f"zero-shot: labels on {c.split}, captions on {len(cap_ids)} images")
        jobs = [("label", "zero-shot", eval_ids, None), ("caption", "zero-shot", cap_ids, None)]
        if examples:
            jobs.append(("caption", "few-shot", cap_ids, examples))
        self.predict(None, jobs)

        self.out.step(f"QLoRA on labels: {len(label_pairs)} {c.train_split} images "
                      f"(at most {c.per_label} per label)")
        self.train(c.label_adapter, c.out_dir / "pairs" / "labels.jsonl", label_pairs, "label")
        if cap_pairs:
            self.out.step(f"QLoRA on captions: {len(cap_pairs)} pairs")
            records = [{"image": str(Path(p.image).resolve()), "task": "caption",
                        "answer": p.caption} for p in cap_pairs]
            self.train(c.caption_adapter, c.out_dir / "pairs" / "captions.jsonl", records,
                       "caption")

        self.out.step(f"fine-tuned: labels on {c.split}" + (
            f", captions on {len(cap_ids)} images" if cap_pairs else ""))
        self.predict(c.label_adapter, [("label", "zero-shot", eval_ids, None)])
        if cap_pairs:
            self.predict(c.caption_adapter, [("caption", "zero-shot", cap_ids, None)])

        self.out.step("report")
        return self.report()

    def ingest(self) -> None:
        from ..data import SourceError, ingest

        self.out.step(f"ingest {self.config.root}")
        try:
            summary = ingest(
                self.db, self.config.root,
                on_progress=lambda done, total: self.out.progress("ingest", done, total))
        except SourceError as exc:
            raise UserError(str(exc)) from None
        self.out.note(summary.line())
        for path, reason in summary.errors[:20]:
            self.out.note(f"  {path}: {reason}")

    def _label_pair(self, im: Image) -> dict:
        return {"image": str(im.path), "root": im.root, "rel_path": im.rel_path,
                "task": "label", "answer": im.label, "label": im.label, "image_id": im.id,
                "split": im.split, "sha256": im.sha256}

    def predict(self, adapter: str | None, jobs: list[tuple]) -> None:
        """Run the (task, mode, image ids, examples) jobs with one model load, skipping any
        already complete."""
        c = self.config
        todo = []
        for task, mode, ids, examples in jobs:
            done = predicted_image_ids(self.db, task=task, mode=mode, model=c.model,
                                       adapter=adapter or "")
            missing = [i for i in ids if i not in done]
            what = f"{task} {mode}" + (f" ({adapter})" if adapter else "")
            if not missing:
                self.out.note(f"{what}: all {len(ids)} images done before; skipped")
            else:
                todo.append((task, mode, ids, examples, what))
        if not todo:
            return
        from ..model.loading import load_model
        from ..model.predict import predict_images

        loaded = load_model(c.model, quant=c.quant, adapter=adapter, db=self.db)
        try:
            for task, mode, ids, examples, what in todo:
                summary = predict_images(
                    self.db, loaded, task=task, mode=mode, split=c.split, image_ids=ids,
                    batch_size=c.batch_size, examples=examples,
                    on_progress=lambda p, w=what: self.out.progress(w, p.done, p.total))
                line = f"{what}: {summary.predicted} new, {summary.skipped} done before"
                if summary.correct is not None:
                    line += f"; exact match {summary.correct} / {summary.labelled}"
                self.out.note(line)
                for image_id, error in summary.failed[:20]:
                    self.out.note(f"  image {image_id}: {error}")
        finally:
            del loaded
            _free_accelerator_memory()

    def train(self, name: str, pairs_path: Path, records: list[dict], task: str) -> None:
        """Train adapter `name` on `records` unless it is registered already."""
        c = self.config
        existing = adapter_store.get_adapter(self.db, name)
        if existing is not None:
            if existing.base_model and existing.base_model != c.model:
                raise UserError(f"adapter {name} exists for model {existing.base_model}, not "
                                f"{c.model}; choose another --name")
            self.out.note(f"adapter {name} trained before; skipped")
            return
        if not records:
            raise UserError(f"no {task} training pairs (split {c.train_split!r} under "
                            f"{c.root} has no labelled images)")
        from training.config import TrainConfig
        from training.runs import TrainingProcess

        write_jsonl_atomic(pairs_path, records)
        out_dir = c.out_dir / "adapters" / name
        options = {"pairs": str(pairs_path.resolve()), "out_dir": str(out_dir.resolve()),
                   "model": c.model, "name": name, "quant": c.quant, "tasks": (task,),
                   "seed": 42 + c.seed, "extra": {"experiment": str(c.out_dir)}}
        config = TrainConfig.from_dict(options | c.train_options)
        self.out.note(f"training {name} on {len(records)} {task} pairs -> {out_dir}")
        proc = TrainingProcess(self.db, config)
        try:
            for event in proc.events():
                if event["event"] == "step":
                    self.out.progress(f"train {name}", int(event["step"]), int(event["total"]))
                elif event["event"] in ("note", "error"):
                    self.out.note(f"  {event.get('message', '')}")
        except KeyboardInterrupt:
            proc.cancel()
            proc.finish()
            raise
        outcome = proc.finish()
        if outcome.status != "done":
            raise UserError(f"training {name} {outcome.status}: {outcome.message} "
                            f"(log: {proc.log_path})")
        metrics = outcome.metrics
        self.out.note(f"{name}: {metrics.get('steps')} steps, loss "
                      f"{metrics.get('first_loss')} -> {metrics.get('final_loss')}")

    def report(self):
        from .report import build_report, write_report

        c = self.config
        tuned = adapter_store.get_adapter(self.db, c.label_adapter)
        report = build_report(self.db, split=c.split, model=c.model,
                              adapter=tuned.name if tuned else None)
        for path in write_report(report, c.report_path):
            self.out.note(f"wrote {path}")
        return report


def _free_accelerator_memory() -> None:
    """Give GPU memory back before the trainer (another process) needs it."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass

