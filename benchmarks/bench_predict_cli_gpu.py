"""`sportvlm predict` end to end on a GPU with the IDEFICS-9b shape (random weights).

Times the real command (model load included) on the 100SIC valid split for labels at nf4
(dequantised once, the default) and nf4 with --keep-4bit, and captions at bf16; checks that the
two nf4 variants store the same answers.

    python benchmarks/bench_predict_cli_gpu.py --images ../shared/data/100sic
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
CLI = [sys.executable, "-m", "sportvlm_tui.commands.predict"]


def cli(*args: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{args}: exit {out.returncode}: {out.stderr[-2000:]}")
    res = json.loads(out.stdout) if "--json" in args else {}
    res["command_seconds"] = round(time.perf_counter() - t0, 1)
    return res


def answers(db_file: Path, task: str) -> dict:
    from sportvlm_tui.storage import connect

    db = connect(db_file)
    return {r["image_id"]: (r["raw"], r["topk"]) for r in db.query(
        "SELECT image_id, raw, topk FROM predictions WHERE task = ?", (task,))}


def main() -> None:
    from bench_predict_gpu import build_9b

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/idefics9b-random"))
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        build_9b(args.model_dir)
    tmp = Path(tempfile.mkdtemp())
    a, b = tmp / "a.db", tmp / "b.db"
    cli("ingest", str(args.images), "--split", "valid", "--db", str(a))
    shutil.copy(a, b)
    model = ["--model", str(args.model_dir), "--split", "valid", "--json"]
    for name, db, extra in (("labels nf4 (dequantised once)", a, []),
                            ("labels nf4 --keep-4bit", b, ["--keep-4bit"])):
        r = cli("predict", *model, "--db", str(db), *extra)
        print(json.dumps({"run": name, **{k: r[k] for k in (
            "predicted", "images_per_s", "seconds", "load_seconds", "command_seconds")}}))
    la, lb = answers(a, "label"), answers(b, "label")
    print(json.dumps({"same_raw": sum(la[i][0] == lb[i][0] for i in la),
                      "same_topk": sum(la[i][1] == lb[i][1] for i in la), "of": len(la)}))
    r = cli("predict", *model, "--db", str(a), "--task", "caption", "--quant", "bf16")
    print(json.dumps({"run": "captions bf16", **{k: r[k] for k in (
        "predicted", "images_per_s", "seconds", "load_seconds", "command_seconds")}}))


if __name__ == "__main__":
    main()
