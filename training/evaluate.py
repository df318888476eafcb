"""Evaluating a candidate adapter on a held-out split, against the promoted one (or the base).

Predictions go through the predictor's `predict_images` (label task, constrained to the label
vocabulary, i.e. rank classification), into a private in-memory COPY of the database: an
evaluation never writes to the real database, so a crash here changes nothing, and a
rejected candidate leaves no rows behind. The parent process records the result.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass

DEFAULT_TOLERANCE = 0.02  # accuracy points (as a fraction) a candidate may lose and still pass
CANDIDATE = "eval:candidate"
REFERENCE = "eval:reference"


@dataclass(frozen=True)
class HeldOut:
    image_id: int
    truth: str


def _norm(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def memory_copy(db_path: str):
    """A sqlite-utils Database holding a private in-memory copy of the file at `db_path`."""
    from sqlite_utils import Database

    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    dst = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    try:
        src.backup(dst)
    finally:
        src.close()
    dst.execute("PRAGMA foreign_keys = ON")
    return Database(dst)


def held_out_images(db, split: str, exclude: set[int], limit: int | None) -> list[HeldOut]:
    """Images of `split` with a known label (a live label decision wins over the dataset's),
    minus `exclude` (the training images), in id order, at most `limit`."""
    found = db.execute(
        "SELECT i.id, coalesce(s.value, i.label) FROM images i LEFT JOIN image_state s"
        " ON s.image_id = i.id AND s.task = 'label' AND s.decision = 'correct'"
        " WHERE i.split = ? AND coalesce(s.value, i.label) IS NOT NULL ORDER BY i.id",
        (split,),
    ).fetchall()
    out = [HeldOut(int(i), str(t)) for i, t in found if int(i) not in exclude]
    return out[:limit] if limit is not None else out


def accuracy(db, *, model: str, adapter: str, items: list[HeldOut]) -> dict:
    """{accuracy, correct, total, per_label: {label: {correct, total, accuracy}}}."""
    texts = {
        r[0]: r[1]
        for r in db.execute(
            "SELECT image_id, text FROM predictions WHERE task = 'label' AND model = ?"
            " AND adapter = ?", (model, adapter),
        ).fetchall()
    }
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for it in items:
        ok = _norm(texts.get(it.image_id)) == _norm(it.truth)
        per[it.truth][0] += int(ok)
        per[it.truth][1] += 1
    correct = sum(c for c, _ in per.values())
    total = sum(n for _, n in per.values())
    return {
        "accuracy": correct / total if total else None,
        "correct": correct,
        "total": total,
        "per_label": {
            k: {"correct": c, "total": n, "accuracy": c / n} for k, (c, n) in sorted(per.items())
        },
    }


def compare(candidate: dict, reference: dict, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """The promotion verdict: pass unless the candidate is worse than the reference by more
    than `tolerance`; labels that got worse are listed either way."""
    ca, ra = candidate["accuracy"], reference["accuracy"]
    regressions = []
    for label, c in candidate["per_label"].items():
        r = reference["per_label"].get(label)
        if r and c["correct"] < r["correct"]:
            regressions.append({"label": label, "candidate": c["correct"],
                                "reference": r["correct"], "total": c["total"]})
    if ca is None or ra is None:
        passed, why = True, "no held-out images with labels: nothing to compare"
    else:
        passed = ca >= ra - tolerance
        why = (f"candidate {ca:.3f} vs reference {ra:.3f} "
               f"({'within' if passed else 'beyond'} tolerance {tolerance:.3f})")
    return {"passed": passed, "reason": why, "delta": (ca - ra) if None not in (ca, ra) else None,
            "tolerance": tolerance, "regressions": regressions}


def _predict(db, loaded, adapter_label: str, items: list[HeldOut], batch_size: int) -> None:
    from sportvlm_tui.model.predict import predict_images

    loaded.adapter_name = adapter_label
    predict_images(db, loaded, task="label", mode="zero-shot",
                   image_ids=[it.image_id for it in items], batch_size=batch_size,
                   constrain_labels=True, workers=2)


def evaluate_model(
    db_path: str,
    peft_model,
    processor,
    device,
    *,
    model_name: str,
    reference_path: str | None,
    split: str,
    exclude: set[int],
    limit: int | None,
    batch_size: int,
    tolerance: float = DEFAULT_TOLERANCE,
    candidate_name: str = "",
    reference_name: str = "",
) -> dict:
    """Accuracy of the active adapter of `peft_model` and of the reference (another adapter
    folder, or the base with adapters disabled) on the held-out images; plus the verdict."""
    from sportvlm_tui.model.loading import LoadedModel

    db = memory_copy(db_path)
    items = held_out_images(db, split, exclude, limit)
    report: dict = {"split": split, "images": len(items), "candidate_name": candidate_name,
                    "reference_name": reference_name or "(base model)"}
    if not items:
        report |= {"candidate": accuracy(db, model=model_name, adapter=CANDIDATE, items=[]),
                   "reference": accuracy(db, model=model_name, adapter=REFERENCE, items=[])}
        report["verdict"] = compare(report["candidate"], report["reference"], tolerance)
        return report
    peft_model.config.use_cache = True
    loaded = LoadedModel(model=peft_model, processor=processor, model_name=model_name,
                         adapter_name="", device=device)
    active = peft_model.active_adapter
    _predict(db, loaded, CANDIDATE, items, batch_size)
    if reference_path:
        peft_model.load_adapter(reference_path, adapter_name="reference")
        peft_model.set_adapter("reference")
        try:
            _predict(db, loaded, REFERENCE, items, batch_size)
        finally:
            peft_model.set_adapter(active)
            peft_model.delete_adapter("reference")
    else:
        with peft_model.disable_adapter():
            _predict(db, loaded, REFERENCE, items, batch_size)
    report["candidate"] = accuracy(db, model=model_name, adapter=CANDIDATE, items=items)
    report["reference"] = accuracy(db, model=model_name, adapter=REFERENCE, items=items)
    report["verdict"] = compare(report["candidate"], report["reference"], tolerance)
    return report


def evaluate_after_training(config, peft_model, processor, device, pairs, progress) -> dict:
    """Called by the trainer with the model still in memory (no second load)."""
    progress.emit("note", message=f"evaluating on split {config.eval_split!r}")
    report = evaluate_model(
        config.eval_db, peft_model, processor, device, model_name=config.model,
        reference_path=config.eval_reference, split=config.eval_split,
        exclude={p.image_id for p in pairs}, limit=config.eval_limit,
        batch_size=config.eval_batch_size, candidate_name=config.adapter_name,
        reference_name=config.extra.get("reference_name", ""),
    )
    progress.emit("eval", report=_summary(report))
    return report


def _summary(report: dict) -> dict:
    return {
        "images": report["images"],
        "candidate": report["candidate"]["accuracy"],
        "reference": report["reference"]["accuracy"],
        "passed": report["verdict"]["passed"],
        "reason": report["verdict"]["reason"],
    }


def evaluate_adapter_folder(db_path: str, *, model: str, adapter_path: str,
                            reference_path: str | None, split: str, exclude: set[int],
                            limit: int | None, batch_size: int, quant: str = "auto",
                            tolerance: float = DEFAULT_TOLERANCE, candidate_name: str = "",
                            reference_name: str = "") -> dict:
    """Evaluate a saved adapter (`sportvlm adapters evaluate`): loads the model once."""
    from sportvlm_tui.model.loading import load_model

    loaded = load_model(model, quant=quant, adapter=adapter_path)
    return evaluate_model(db_path, loaded.model, loaded.processor, loaded.device,
                          model_name=model, reference_path=reference_path, split=split,
                          exclude=exclude, limit=limit, batch_size=batch_size,
                          tolerance=tolerance, candidate_name=candidate_name,
                          reference_name=reference_name)
