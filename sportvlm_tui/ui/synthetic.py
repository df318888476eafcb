"""Deterministic review data for tests, snapshots and the review benchmark (no Textual here).

Rows go through the storage API; many rows may point at a few real image files, which is
what lets the benchmark build a 100,000-image queue from a handful of JPEGs.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from sqlite_utils import Database

from ..storage.images import ImageRecord, add_images
from ..storage.predictions import NewPrediction, add_predictions

LABELS = ("archery", "tennis", "tug of war", "bobsled", "air hockey", "golf", "rowing",
          "ampute football", "barell racing", "snow boarding", "surfing", "fencing")


def write_images(folder: Path, n: int = 6, size: tuple[int, int] = (224, 224)) -> list[Path]:
    """Write `n` distinct deterministic PNG images (colour fields with a diagonal band)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        img = Image.new("RGB", size, ((40 * k) % 256, (90 + 50 * k) % 256, (200 - 30 * k) % 256))
        draw = ImageDraw.Draw(img)
        w, h = size
        draw.polygon([(0, h), (w // 3, 0), (w // 2, 0), (w // 5, h)], fill=(250, 240, 220))
        draw.ellipse([w // 2, h // 2, w // 2 + w // 4, h // 2 + h // 4], fill=(20, 20, 20))
        path = folder / f"img{k:02d}.png"
        img.save(path)
        out.append(path)
    return out


def populate(
    db: Database,
    files: Sequence[Path],
    n: int,
    *,
    labels: Sequence[str] = LABELS,
    split: str = "valid",
    captions: bool = True,
    seed: int = 0,
    batch: int = 10_000,
    model: str = "builtin:tiny",
) -> None:
    """Add `n` images cycling over `files` (root = their folder), each with a label prediction
    (confidence and top-5) and, if `captions`, a caption prediction."""
    rng = random.Random(seed)
    paths = [Path(f).resolve() for f in files]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        recs = []
        for k in range(start, stop):
            f = paths[k % len(paths)]
            recs.append(ImageRecord(
                sha256=f"{k:064x}", root=str(root), rel_path=f.relative_to(root).as_posix(),
                split=split,
                label=labels[k % len(labels)], width=224, height=224, mode="RGB", bytes=1000,
            ))
        add_images(db, recs)
        first_id = db.execute("SELECT id FROM images WHERE sha256 = ?",
                              (f"{start:064x}",)).fetchone()[0]
        preds = []
        for j, k in enumerate(range(start, stop)):
            image_id = first_id + j
            probs = sorted((rng.random() for _ in range(5)), reverse=True)
            total = sum(probs) * 1.2
            names = rng.sample(list(labels), 5)
            topk = [(name, round(p / total, 4)) for name, p in zip(names, probs, strict=True)]
            preds.append(NewPrediction(
                image_id=image_id, task="label", mode="zero-shot", model=model, adapter="",
                text=topk[0][0], raw=f" {topk[0][0]}.", confidence=topk[0][1], topk=topk))
            if captions:
                text = f"A photo of {topk[0][0]} number {k}."
                preds.append(NewPrediction(
                    image_id=image_id, task="caption", mode="zero-shot", model=model,
                    adapter="", text=text, raw=text))
        add_predictions(db, preds)
