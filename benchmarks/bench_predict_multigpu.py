"""Several GPUs: `sportvlm predict --num-gpus N` gives the same rows as one GPU, and how fast.

Ingests a folder into two fresh databases, predicts labels and captions on one GPU into the
first and on N GPUs (accelerate, one process and model per GPU, images split between them) into
the second, then compares every row (text, raw output, confidence, top-k) image by image.

    python benchmarks/bench_predict_multigpu.py --images sample_data [--model builtin:tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sportvlm_tui.commands.predict"]


def run(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(CLI + args, check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, cwd=REPO)
    return json.loads(out.stdout) if "--json" in args else {}


def rows(db_file: Path) -> dict:
    from sportvlm_tui.storage import connect

    db = connect(db_file)
    return {
        (r["sha256"], r["task"]): (r["text"], r["raw"], r["confidence"], r["topk"])
        for r in db.query("SELECT i.sha256, p.task, p.text, p.raw, p.confidence, p.topk"
                          " FROM predictions p JOIN images i ON i.id = p.image_id")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--model", default="builtin:tiny")
    ap.add_argument("--quant", default="fp32")
    ap.add_argument("--gpus", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    one, many = tmp / "one.db", tmp / "many.db"
    for db in (one, many):
        run(["ingest", str(args.images), "--db", str(db)])
    common = ["--model", args.model, "--quant", args.quant, "--json"]
    for task in ("label", "caption"):
        a = run(["predict", "--task", task, "--db", str(one), *common],
                env={"CUDA_VISIBLE_DEVICES": "0"})
        b = run(["predict", "--task", task, "--db", str(many), "--num-gpus", str(args.gpus),
                 *common])
        print(json.dumps({"task": task, "gpus": 1, "predicted": a["predicted"],
                          "img_per_s": a["images_per_s"]}))
        print(json.dumps({"task": task, "gpus": args.gpus, "predicted": b["predicted"],
                          "correct": b.get("correct"), "one_gpu_correct": a.get("correct")}))
    ra, rb = rows(one), rows(many)
    same_text = sum(ra[k][:2] == rb.get(k, (None, None))[:2] for k in ra)
    max_conf = max((abs((ra[k][2] or 0) - (rb[k][2] or 0)) for k in ra if k in rb), default=0)
    print(json.dumps({"rows_1gpu": len(ra), "rows_ngpu": len(rb), "same_text_and_raw": same_text,
                      "max_confidence_diff": max_conf,
                      "same_topk_labels": sum(
                          [x for x, _ in json.loads(ra[k][3] or "[]")]
                          == [x for x, _ in json.loads(rb[k][3] or "[]")] for k in ra if k in rb
                      )}))


if __name__ == "__main__":
    main()
