"""Schema, as an ordered list of migrations. Never edit an applied one: add a new one."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("sportvlm")


@migrations()
def m001_initial(db: Database) -> None:
    db["roots"].create(
        {"id": int, "path": str, "added_at": str},
        pk="id",
        not_null={"path", "added_at"},
    )
    db["roots"].create_index(["path"], unique=True)

    # One row per distinct image content (sha256). `label` is the dataset's label as written.
    db["images"].create(
        {
            "id": int,
            "sha256": str,
            "root_id": int,
            "rel_path": str,
            "split": str,
            "label": str,
            "width": int,
            "height": int,
            "mode": str,
            "bytes": int,
            "added_at": str,
        },
        pk="id",
        foreign_keys=[("root_id", "roots", "id")],
        not_null={"sha256", "root_id", "rel_path", "width", "height", "mode", "bytes", "added_at"},
    )
    db["images"].create_index(["sha256"], unique=True)
    db["images"].create_index(["split", "id"])
    db["images"].create_index(["label"])

    # adapter '' means the base model alone (kept non-NULL so the unique key works).
    db["predictions"].create(
        {
            "id": int,
            "image_id": int,
            "task": str,
            "mode": str,
            "model": str,
            "adapter": str,
            "text": str,
            "raw": str,
            "confidence": float,
            "topk": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("image_id", "images", "id")],
        not_null={"image_id", "task", "mode", "model", "adapter", "text", "raw", "created_at"},
    )
    db["predictions"].create_index(
        ["image_id", "task", "mode", "model", "adapter"], unique=True
    )
    db["predictions"].create_index(["task", "model", "adapter", "mode"])

    # Append-only decision events. task NULL = about the image as a whole (skip).
    db["reviews"].create(
        {
            "id": int,
            "image_id": int,
            "task": str,
            "prediction_id": int,
            "annotator": str,
            "decision": str,
            "value": str,
            "undoes": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[
            ("image_id", "images", "id"),
            ("prediction_id", "predictions", "id"),
            ("undoes", "reviews", "id"),
        ],
        not_null={"image_id", "annotator", "decision", "created_at"},
    )
    db["reviews"].create_index(["image_id", "task"])
    db["reviews"].create_index(["annotator", "id"])
    db["reviews"].create_index(["undoes"])

    # Derived from `reviews` in the same transaction as each event (rebuildable; see
    # storage.reviews.rebuild_state). One row per (image, task) with a live decision.
    db["image_state"].create(
        {
            "image_id": int,
            "task": str,
            "review_id": int,
            "decision": str,
            "value": str,
            "annotator": str,
            "updated_at": str,
        },
        pk=("image_id", "task"),
        foreign_keys=[("image_id", "images", "id"), ("review_id", "reviews", "id")],
    )
    db["image_state"].create_index(["task", "decision"])

    # Short leases so two annotators are never handed the same pending image.
    db["claims"].create(
        {"image_id": int, "annotator": str, "expires_at": str},
        pk="image_id",
        foreign_keys=[("image_id", "images", "id")],
    )

    db["adapters"].create(
        {
            "id": int,
            "name": str,
            "path": str,
            "parent": str,
            "base_model": str,
            "status": str,  # candidate | promoted | retired | rejected
            "pairs": int,
            "metrics": str,
            "training_run_id": int,
            "created_at": str,
            "promoted_at": str,
        },
        pk="id",
        not_null={"name", "path", "status", "created_at"},
    )
    db["adapters"].create_index(["name"], unique=True)

    db["training_runs"].create(
        {
            "id": int,
            "adapter_name": str,
            "status": str,  # running | done | failed | interrupted
            "config": str,
            "pairs_path": str,
            "out_dir": str,
            "pid": int,
            "progress": str,
            "error": str,
            "started_at": str,
            "finished_at": str,
        },
        pk="id",
        not_null={"status", "started_at"},
    )

    db["exports"].create(
        {
            "id": int,
            "path": str,
            "tasks": str,
            "pairs": int,
            "max_review_id": int,
            "created_at": str,
        },
        pk="id",
        not_null={"path", "pairs", "max_review_id", "created_at"},
    )

    db["caption_grades"].create(
        {
            "id": int,
            "session": str,
            "image_id": int,
            "prediction_id": int,
            "grader": str,
            "acceptable": int,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("image_id", "images", "id"), ("prediction_id", "predictions", "id")],
        not_null={"session", "image_id", "prediction_id", "grader", "acceptable", "created_at"},
    )


@migrations()
def m002_review_queue_index(db: Database) -> None:
    # The review queue walks label predictions least-confident first with keyset paging
    # (storage.review_queue); without this index every page would sort the whole table.
    db.execute(
        "CREATE INDEX IF NOT EXISTS predictions_review_order ON predictions"
        " (task, ifnull(confidence, -1.0), image_id)"
    )
