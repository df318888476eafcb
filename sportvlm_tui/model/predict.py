"""Batched, resumable prediction of labels and captions into the database.

`predict_images` is the one entry point (CLI, TUI re-predict, demo, experiments). Each batch is
written in one transaction as soon as it is done, and images that already have a prediction for
the same (model, adapter, task, mode) are skipped, so an interrupted run loses at most the batch
in flight and the same call resumes it.

What is stored:
- label: `raw` = the greedy answer as generated; `text` = `prompts.parse_label(raw)` (the
  tutorial's exact-match rule), or with `constrain_labels` the most likely vocabulary label;
  `topk` = labels with probabilities from rank classification: log P(label tokens, then an end
  of answer) after the prompt, NOT length-normalised, softmaxed over the label vocabulary;
  `confidence` = that probability of `text` (0.0 when `text` is not a vocabulary label).
- caption: `text` = `prompts.parse_caption(raw)`; `confidence` = the geometric mean of the
  generated tokens' probabilities (stop token included), i.e. a length-normalised sequence
  probability from the model's own (unmasked) distribution.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ..prompts import FewShotExample, build_prompt, parse_caption, parse_label
from ..storage.images import Image, label_vocabulary, list_images
from ..storage.predictions import NewPrediction, add_predictions, predicted_image_ids

DEFAULT_MAX_NEW_TOKENS = {"label": 10, "caption": 32}
# Seconds per phase, summed over runs, when SPORTVLM_PROFILE=1 (benchmarks read it). Profiling
# synchronises the GPU after each phase, so it slows the run a little.
PHASES: dict[str, float] = {}


class _phase:
    def __init__(self, name: str, device=None):
        self.name, self.device = name, device
        self.on = os.environ.get("SPORTVLM_PROFILE") == "1"

    def __enter__(self):
        if self.on:
            self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        if self.on:
            if self.device is not None and self.device.type == "cuda":
                import torch

                torch.cuda.synchronize(self.device)
            PHASES[self.name] = PHASES.get(self.name, 0.0) + time.perf_counter() - self.t0
FEW_SHOT_LABEL_EXAMPLES = 4


@dataclass
class PredictProgress:
    """Sent after each batch is committed."""

    done: int  # images predicted (or failed) in this run so far
    total: int  # images this run has to do (already-predicted ones excluded)
    written: int  # rows written so far
    images_per_s: float


@dataclass
class PredictSummary:
    task: str
    mode: str
    model: str
    adapter: str
    requested: int  # images matching the selection
    skipped: int  # already predicted before this run
    predicted: int  # rows written by this run
    failed: list[tuple[int, str]] = field(default_factory=list)  # (image id, "path: reason")
    seconds: float = 0.0
    correct: int | None = None  # exact matches over the labelled requested images (labels)
    labelled: int = 0
    unpredicted: int = 0  # labelled requested images still without a prediction

    @property
    def images_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "task": self.task,
            "mode": self.mode,
            "model": self.model,
            "adapter": self.adapter,
            "requested": self.requested,
            "skipped": self.skipped,
            "predicted": self.predicted,
            "failed": [{"image_id": i, "error": e} for i, e in self.failed],
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 2),
            "correct": self.correct,
            "labelled": self.labelled,
            "unpredicted": self.unpredicted,
        }


# -- inputs ---------------------------------------------------------------------------------


class PromptEncoder:
    """Turns prompts (lists of images and strings) into left-padded model inputs.

    The token side of a prompt depends only on its text parts, so it is computed once per
    distinct template by the processor itself; pixels come from the image processor, per image,
    in loader threads.
    """

    def __init__(self, processor):
        self.processor = processor
        self.size = processor.image_processor.image_size
        self._templates: dict[tuple, tuple] = {}

    def _template(self, key: tuple):
        if key not in self._templates:
            from PIL import Image as PILImage

            blank = PILImage.new("RGB", (self.size, self.size))
            parts = [blank if p is None else p for p in key]
            out = self.processor(text=[parts], return_tensors="pt")
            self._templates[key] = (
                out["input_ids"][0],
                out["attention_mask"][0],
                out["image_attention_mask"][0],
            )
        return self._templates[key]

    def raw_pixels(self, path, out=None) -> Any:
        """(1, 3, S, S) uint8 for one image file, resized as the image processor does (bicubic,
        to the square size). Normalising happens on the device, batched (`normalize`): per image
        on the CPU it was the bottleneck of GPU prediction. With `out` (a (3, S, S) uint8 slot of
        a batch buffer) the pixels are written there, in the loader thread, and it is returned
        as (1, 3, S, S)."""
        import numpy as np
        import torch
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            im = im.convert("RGB")
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), PILImage.Resampling.BICUBIC)
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch warns on read-only
        chw = torch.from_numpy(arr).permute(2, 0, 1)
        if out is None:
            return chw[None]
        out.copy_(chw)
        return out[None]

    def normalize(self, raw, device, dtype):
        """uint8 (K, 3, S, S) -> the image processor's rescaled and normalised pixels."""
        import torch

        ip = self.processor.image_processor
        mean = torch.tensor(ip.image_mean, device=device, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(ip.image_std, device=device, dtype=torch.float32)[None, :, None, None]
        x = raw.to(device, non_blocking=True).float() * float(ip.rescale_factor)
        return ((x - mean) / std).to(dtype)

    def pixels(self, image) -> Any:
        """(1, 3, H, W) for one image (a path or a PIL image); raises on an unreadable file."""
        from PIL import Image as PILImage

        if isinstance(image, (str, Path)):
            with PILImage.open(image) as im:
                im = im.convert("RGB")
        else:
            im = image.convert("RGB")
        return self.processor.image_processor([im], return_tensors="pt")

    def encode(self, prompts: list[list]):
        """Token side of `prompts` (left padded); pixels are handled separately."""
        import torch

        from .generation import Encoded

        keys = [tuple(p if isinstance(p, str) else None for p in prompt) for prompt in prompts]
        parts = [self._template(k) for k in keys]
        length = max(ids.shape[0] for ids, _, _ in parts)
        n_img = max(m.shape[-1] for _, _, m in parts)
        pad = self.processor.tokenizer.pad_token_id or 0
        bsz = len(prompts)
        input_ids = torch.full((bsz, length), pad, dtype=torch.long)
        attention = torch.zeros((bsz, length), dtype=torch.long)
        img_mask = torch.zeros((bsz, length, n_img), dtype=torch.long)
        for i, (ids, att, im) in enumerate(parts):
            n = ids.shape[0]
            input_ids[i, length - n :] = ids
            attention[i, length - n :] = att
            img_mask[i, length - n :, : im.shape[-1]] = im
        return Encoded(input_ids, attention, img_mask)


class PixelLoader:
    """Decodes the images of upcoming batches in worker threads while the model works.

    Each batch is decoded straight into one (K, 3, S, S) uint8 buffer, page-locked when `pin`
    (a CUDA run), so the batch is ready for an asynchronous copy to the GPU. Before, the main
    thread concatenated per-image tensors (a CHW gather) and pinned the result: two copies of
    ~77 MB per 512 images, single-threaded, while the GPU waited.
    Yields (images decoded, their pixels (K, 3, S, S) uint8, [(image, "path: reason")]).
    """

    def __init__(self, encoder: PromptEncoder, batches: list[list[Image]], *, workers: int = 4,
                 prefetch: int = 2, pin: bool = False):
        self.encoder = encoder
        self.batches = batches
        self.workers = workers
        self.prefetch = prefetch
        self.pin = pin

    def _load(self, image: Image, out) -> str | None:
        try:
            self.encoder.raw_pixels(image.path, out=out)
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable image is reported, not fatal
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"{image.path}: {reason}"

    def __iter__(self) -> Iterator[tuple[list[Image], Any, list[tuple[Image, str]]]]:
        import torch

        size = self.encoder.size
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sportvlm-load")
        queue: deque[tuple[list[Image], Any, list[Future]]] = deque()
        upcoming = iter(self.batches)

        def submit(batch: list[Image]) -> None:
            buf = torch.empty((len(batch), 3, size, size), dtype=torch.uint8,
                              pin_memory=self.pin)
            queue.append((batch, buf, [pool.submit(self._load, im, buf[i])
                                       for i, im in enumerate(batch)]))

        try:
            for batch in islice(upcoming, self.prefetch + 1):
                submit(batch)
            while queue:
                batch, buf, futures = queue.popleft()
                following = next(upcoming, None)
                if following is not None:
                    submit(following)
                errors = [f.result() for f in futures]
                failed = [(im, e) for im, e in zip(batch, errors, strict=True) if e is not None]
                if failed:  # rare: keep the readable rows only (a copy, pinned again)
                    keep = [i for i, e in enumerate(errors) if e is None]
                    batch = [batch[i] for i in keep]
                    buf = buf[torch.tensor(keep, dtype=torch.long)]
                    if self.pin and len(keep):
                        buf = buf.pin_memory()
                yield batch, buf, failed
        finally:
            # On Ctrl-C nothing waits for images nobody will use.
            pool.shutdown(wait=False, cancel_futures=True)


# -- the run --------------------------------------------------------------------------------


def default_label_examples(db, exclude: set[int], n: int = FEW_SHOT_LABEL_EXAMPLES):
    """Few-shot label examples: the first train image of each of the first `n` labels."""
    seen: dict[str, Image] = {}
    for im in list_images(db, split="train"):
        if im.label and im.label not in seen and im.id not in exclude:
            seen[im.label] = im
            if len(seen) == n:
                break
    return [FewShotExample(image=im.path, caption=im.label) for im in seen.values()]


def exact_match(db, *, task: str, mode: str, model: str, adapter: str,
                image_ids: list[int]) -> tuple[int, int]:
    """(correct, labelled): predictions equal to the dataset label, over labelled images
    (one without a prediction counts as wrong)."""
    correct, labelled, _ = _match_counts(db, task, mode, model, adapter, image_ids)
    return correct, labelled


def _match_counts(db, task, mode, model, adapter, image_ids) -> tuple[int, int, int]:
    correct = labelled = missing = 0
    for start in range(0, len(image_ids), 500):
        chunk = image_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        row = db.execute(
            "SELECT count(*), coalesce(sum(p.text = i.label), 0), sum(p.id IS NULL)"
            " FROM images i LEFT JOIN"
            " predictions p ON p.image_id = i.id AND p.task = ? AND p.mode = ? AND p.model = ?"
            f" AND p.adapter = ? WHERE i.label IS NOT NULL AND i.id IN ({marks})",
            (task, mode, model, adapter, *chunk),
        ).fetchone()
        labelled += row[0]
        correct += row[1]
        missing += row[2] or 0
    return correct, labelled, missing


def _prob(p: float) -> float:
    """Six decimals, rounded down, so stored top-k probabilities never sum above 1."""
    return math.floor(p * 1e6) / 1e6


def _mean_prob(logprobs: list[float]) -> float | None:
    """Geometric mean of token probabilities (length-normalised sequence probability)."""
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else None


# Vocabularies up to this size are always scored exactly (every label, every image).
EXACT_SCORING_MAX_LABELS = 32


def predict_images(
    db,
    loaded,
    *,
    task: str = "label",
    mode: str = "zero-shot",
    split: str | None = None,
    image_ids: list[int] | None = None,
    batch_size: int | None = None,
    examples: list[FewShotExample] | None = None,
    constrain_labels: bool = False,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    topk: int = 5,
    rank_candidates: int | None = 5,
    rank_rounds: int = 1,
    workers: int | None = None,
    on_progress: Callable[[PredictProgress], None] | None = None,
) -> PredictSummary:
    """Predict `task` for the selected images with `loaded` (a LoadedModel) and store the rows.

    Skips images already predicted for (model, adapter, task, mode); writes one transaction per
    batch; calls `on_progress` after each commit (an exception there stops the run, with every
    finished batch kept). Labels: the raw answer, `parse_label` of it (or, with
    `constrain_labels`, the best vocabulary label), and rank-classification confidence/top-k.
    Captions: confidence is the geometric mean of the generated tokens' probabilities.
    `rank_candidates`: labels scored exactly per round, most likely first token first, plus the
    answer; up to `rank_rounds` rounds while the top `topk` are not provably exact (None or 0:
    score every label exactly, slower).
    """
    if task not in DEFAULT_MAX_NEW_TOKENS:
        raise ValueError(f"unknown task {task!r}")
    if mode not in ("zero-shot", "few-shot"):
        raise ValueError(f"unknown mode {mode!r}")
    model_name, adapter = loaded.model_name, loaded.adapter_name
    batch_size = batch_size or (256 if loaded.device.type == "cuda" else 8)
    max_new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    selected = list_images(db, split=split, ids=image_ids)
    done_ids = predicted_image_ids(db, task=task, mode=mode, model=model_name, adapter=adapter)
    todo = [im for im in selected if im.id not in done_ids]
    if limit is not None:
        todo = todo[:limit]
    summary = PredictSummary(task, mode, model_name, adapter, len(selected),
                             len(selected) - len([i for i in selected if i.id not in done_ids]), 0)

    if mode == "few-shot" and not examples:
        if task == "label":
            examples = default_label_examples(db, exclude={im.id for im in selected})
        if not examples:
            raise ValueError("few-shot prediction needs examples (none given or found)")
    examples = examples if mode == "few-shot" else []
    vocab = label_vocabulary(db) if task == "label" else []
    if constrain_labels and not vocab:
        raise ValueError("--constrain-labels needs labels (the database has none)")
    if len(vocab) <= EXACT_SCORING_MAX_LABELS:
        # Pruned scoring leaves unscored labels at an upper bound that swallows most of the
        # probability mass; with few labels, exact scores cost little and read correctly.
        rank_candidates = None

    start = time.perf_counter()
    with _small_model_threads(loaded):
        if todo:
            _run(db, loaded, todo, summary, start, task=task, mode=mode, batch_size=batch_size,
                 examples=examples, vocab=vocab, constrain=constrain_labels, max_new=max_new,
                 topk=topk, candidates=rank_candidates or None, rounds=rank_rounds,
                 workers=workers, on_progress=on_progress)
    summary.seconds = time.perf_counter() - start
    if task == "label":
        summary.correct, summary.labelled, summary.unpredicted = _match_counts(
            db, task, mode, model_name, adapter, [im.id for im in selected])
        if summary.labelled == 0:
            summary.correct = None
    return summary


@contextlib.contextmanager
def _small_model_threads(loaded):
    """One CPU thread for a small model (builtin:tiny): its matmuls are too small to split,
    and on a busy machine the thread pool's spinning made it ten times slower."""
    import torch

    small = loaded.device.type == "cpu" and sum(
        p.numel() for p in loaded.model.parameters()) < 50_000_000
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def _run(db, loaded, todo, summary, start, *, task, mode, batch_size, examples, vocab,
         constrain, max_new, topk, candidates, rounds, workers, on_progress) -> None:
    """The batch loop: load ahead, predict, commit, report."""
    from .generation import Runner

    runner = Runner(loaded.model, loaded.tokenizer, loaded.device)
    runner.certify_top = topk  # the stored alternatives are ranked exactly
    encoder = PromptEncoder(loaded.processor)
    ex_feats = None
    if examples:
        import torch

        ex_pixels = torch.cat([encoder.pixels(ex.image) for ex in examples])
        ex_feats = runner.image_features(ex_pixels)
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    done = 0
    workers = workers or min(8, os.cpu_count() or 1)
    loader = iter(PixelLoader(encoder, batches, workers=workers,
                              pin=loaded.device.type == "cuda"))
    while True:
        with _phase("wait for images"):
            item = next(loader, None)
        if item is None:
            break
        ok, raw, failed = item
        summary.failed += [(im.id, err) for im, err in failed]
        preds = _predict_batch(runner, encoder, ok, raw, task=task, mode=mode, examples=examples,
                               ex_feats=ex_feats, vocab=vocab, constrain=constrain,
                               max_new=max_new, topk=topk, candidates=candidates,
                               rounds=rounds, model_name=summary.model, adapter=summary.adapter)
        with _phase("database"):
            summary.predicted += add_predictions(db, preds)
        done += len(ok) + len(failed)
        summary.seconds = time.perf_counter() - start
        if on_progress is not None:
            on_progress(PredictProgress(done, len(todo), summary.predicted,
                                        done / max(summary.seconds, 1e-9)))


def _model_passes(runner, enc, feats, task, vocab, candidates, rounds, max_new, dev):
    """Prompt once, then greedy decoding and (labels) rank classification from its cache."""
    from .generation import _cache_kv

    with _phase("prompt", dev):
        first, cache = runner.prefill(enc, feats)
    prompt_kv = _cache_kv(cache) if vocab else None
    with _phase("decode", dev):
        gen = runner.greedy(enc, feats, first, cache, max_new)
    scores = []
    if vocab:
        index = {lab: j for j, lab in enumerate(vocab)}
        answers = [index.get(parse_label(t)) for t in gen.texts]
        with _phase("rank labels", dev):
            scores = runner.score_labels(enc, feats, first, prompt_kv, vocab, task=task,
                                         candidates=candidates, max_rounds=rounds,
                                         include=answers)
    return gen, scores


def _predict_batch(runner, encoder, items, pixels, *, task, mode, examples, ex_feats, vocab,
                   constrain, max_new, topk, candidates, rounds, model_name,
                   adapter) -> list[NewPrediction]:
    """`items`: the batch's images; `pixels`: theirs, (K, 3, S, S) uint8 (PixelLoader)."""
    import torch

    if not items:
        return []
    prompts = [build_prompt(task, None, examples) for _ in items]
    enc = encoder.encode(prompts)
    # Only the target images go through the vision tower; example features are computed once.
    dev = runner.device
    with _phase("vision", dev):
        feats = runner.image_features(encoder.normalize(pixels, dev, runner.dtype))
    if ex_feats is not None:
        key = next(iter(feats))
        tgt, ex = feats[key], ex_feats[key]
        bsz = tgt.shape[0]
        merged = torch.cat([ex[None].expand(bsz, *ex.shape), tgt[:, None]], dim=1)
        feats = {key: merged.flatten(0, 1)}
    with runner.image_table(feats, enc.image_attention_mask.shape[-1]):
        gen, scores = _model_passes(runner, enc, feats, task, vocab, candidates, rounds,
                                    max_new, dev)
    out = []
    for i, im in enumerate(items):
        raw = gen.texts[i]
        conf: float | None
        top: list[tuple[str, float]] = []
        if task == "label":
            text = parse_label(raw)
            if scores:
                ranked = scores[i].ranked
                top = [(lab, _prob(p)) for lab, p in ranked[:topk]]
                if constrain:
                    text = ranked[0][0]
                conf = _prob(scores[i].probs.get(text, 0.0))
            else:
                conf = _mean_prob(gen.logprobs[i])
        else:
            text = parse_caption(raw)
            conf = _mean_prob(gen.logprobs[i])
        out.append(NewPrediction(
            image_id=im.id, task=task, mode=mode, model=model_name, adapter=adapter,
            text=text, raw=raw, confidence=conf, topk=top,
        ))
    return out
