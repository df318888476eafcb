"""`python -m training.repredict`: predict the still-pending images again with an adapter.

Started by the review app after a promotion, as its own process (the app never loads a
model). Pending: images without any live decision. Progress goes to stdout as JSON lines
(the trainer's format); predictions are written batch by batch, so an interrupt keeps what
is done and the same command resumes.
"""

from __future__ import annotations

import argparse
import sys

from sportvlm_tui.storage.db import connect, rows

from .progress import ProgressWriter


def pending_image_ids(db, split: str | None = None) -> list[int]:
    """Images no annotator has decided anything about yet, in id order."""
    sql = ("SELECT i.id FROM images i WHERE NOT EXISTS (SELECT 1 FROM image_state s"
           " WHERE s.image_id = i.id)")
    params: tuple = ()
    if split is not None:
        sql, params = sql + " AND i.split = ?", (split,)
    return [r["id"] for r in rows(db, sql + " ORDER BY i.id", params)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.repredict", description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True, help="registered adapter name")
    ap.add_argument("--task", default="label", choices=["label", "caption"])
    ap.add_argument("--split", default=None)
    ap.add_argument("--quant", default="auto")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--constrain-labels", action="store_true")
    args = ap.parse_args(argv)
    progress = ProgressWriter(None)
    try:
        from sportvlm_tui.errors import UserError
        from sportvlm_tui.model.loading import load_model
        from sportvlm_tui.model.predict import predict_images

        db = connect(args.db)
        ids = pending_image_ids(db, args.split)
        progress.emit("start", total=len(ids), pairs=0, device=args.device or "auto",
                      quant=args.quant, optimizer="-")
        if not ids:
            progress.emit("done", predicted=0)
            return 0
        loaded = load_model(args.model, quant=args.quant, adapter=args.adapter, db=db,
                            device=args.device)

        def on_progress(p) -> None:
            progress.emit("step", step=p.done, total=p.total, loss=0.0, lr=0.0,
                          samples=p.done, samples_per_s=round(p.images_per_s, 2),
                          eta_s=round((p.total - p.done) / max(p.images_per_s, 1e-9), 1))

        summary = predict_images(db, loaded, task=args.task, image_ids=ids,
                                 batch_size=args.batch_size,
                                 constrain_labels=args.constrain_labels,
                                 on_progress=on_progress)
        progress.emit("done", predicted=summary.predicted, failed=len(summary.failed),
                      adapter=args.adapter)
        return 0
    except KeyboardInterrupt:
        progress.emit("interrupted", message="interrupted; finished batches are saved")
        return 130
    except (UserError, ValueError, OSError) as exc:
        progress.emit("error", message=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
