"""Training pairs -> examples: reading the export, checking images, and the data manifest."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from sportvlm_tui.export import TrainingPair, read_pairs


def load_training_pairs(path: str | Path, tasks: tuple[str, ...]) -> tuple[list[TrainingPair],
                                                                           list[str]]:
    """Pairs of `tasks` whose image exists, plus one line per pair left out (and why)."""
    kept: list[TrainingPair] = []
    dropped: list[str] = []
    for p in read_pairs(path):
        if p.task not in tasks:
            continue
        if not Path(p.image).is_file():
            dropped.append(f"{p.image}: image file missing; pair left out")
            continue
        kept.append(p)
    return kept, dropped


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(path: str | Path, pairs: list[TrainingPair], dropped: list[str]) -> dict:
    """What the adapter was trained on: the file, its hash, counts, and the image ids."""
    return {
        "pairs_file": str(Path(path).resolve()),
        "pairs_sha256": file_sha256(path),
        "pairs": len(pairs),
        "replayed": sum(1 for p in pairs if p.replay),
        "by_task": dict(Counter(p.task for p in pairs)),
        "by_label": dict(sorted(Counter(p.label or "" for p in pairs if p.task == "label")
                                .items())),
        "image_ids": sorted({p.image_id for p in pairs}),
        "max_review_id": max((p.review_id for p in pairs), default=0),
        "dropped": dropped,
    }


class PairDataset:
    """Map-style dataset of (PIL image, pair); opened lazily so workers share nothing big."""

    def __init__(self, pairs: list[TrainingPair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        from PIL import Image

        p = self.pairs[i]
        with Image.open(p.image) as im:
            return im.convert("RGB"), p
