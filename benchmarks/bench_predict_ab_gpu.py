"""Label throughput before/after a predictor change, side by side on one card, one process.

The same loaded model (IDEFICS-9b shape, random weights, as in bench_predict_gpu.py) is run
through two copies of the predictor: `--before DIR` holds an older `sportvlm_tui` package
renamed `sportvlm_before` (e.g. `git archive <commit> sportvlm_tui | tar -x -C DIR`, then
rename the folder); "after" is this checkout. Runs alternate before/after, so drift on the card
hits both alike.

Two figures per variant, clearly different things:
- `cold 500`: the 100SIC valid split (500 images) as one batch, profiled per phase (the GPU is
  synchronised after each phase): nothing overlaps the loading of that only batch. This is the
  figure bench_predict_gpu.py reports.
- `steady N`: the 500 valid images repeated to N (default 2048, distinct database rows pointing
  at the same files), unprofiled: loading of batch i+1 overlaps the model on batch i; the
  first batch's loading is still in the total.
Also: the host-side loader alone (decode + batch tensor ready for the GPU, no model), and
whether both variants store the same answers (text, raw, top-k labels; largest probability gap).

    python benchmarks/bench_predict_ab_gpu.py --images .benchdata/100sic --before .bench_before
    python benchmarks/bench_predict_ab_gpu.py --tiny --images sample_data --before DIR  # CPU
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RESULTS: list[dict] = []
NAMES = {"sportvlm_before": "before", "sportvlm_tui": "after"}


def report(**kw) -> None:
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "valid").rglob("*") if p.suffix.lower() in
                  (".jpg", ".jpeg", ".png"))


def make_db(pkg: str, root: Path, files: list[Path], n: int):
    """In-memory database of `n` rows cycling over `files` (copies get a distinct sha256: the
    table keeps one row per content; the predictor reads the same file again)."""
    from PIL import Image

    storage = importlib.import_module(f"{pkg}.storage")
    images = importlib.import_module(f"{pkg}.storage.images")
    recs = []
    for i in range(n):
        p = files[i % len(files)]
        data = p.read_bytes()
        with Image.open(p) as im:
            w, h = im.size
        sha = hashlib.sha256(data + str(i // len(files)).encode()).hexdigest()
        recs.append(images.ImageRecord(sha, str(root), str(p.relative_to(root)), "valid",
                                       p.parent.name, w, h, "RGB", len(data)))
    db = storage.connect(":memory:")
    images.add_images(db, recs)
    return db


def run_once(pkg: str, loaded, root, files, n, batch, profile: bool) -> tuple[dict, object]:
    import torch

    predict = importlib.import_module(f"{pkg}.model.predict")
    db = make_db(pkg, root, files, n)
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    os.environ["SPORTVLM_PROFILE"] = "1" if profile else "0"
    predict.PHASES.clear()
    s = predict.predict_images(db, loaded, task="label", batch_size=batch, max_new_tokens=8)
    os.environ["SPORTVLM_PROFILE"] = "0"
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    out = {"img_per_s": round(s.predicted / s.seconds, 1), "images": s.predicted,
           "seconds": round(s.seconds, 3), "peak_gib": round(peak, 1)}
    if profile:
        out["phases_s"] = {k: round(v, 3) for k, v in predict.PHASES.items()}
    return out, db


def answers(db) -> dict:
    rows = db.execute("SELECT i.sha256, p.text, p.raw, p.confidence, p.topk FROM predictions p"
                      " JOIN images i ON i.id = p.image_id").fetchall()
    return {r[0]: r[1:] for r in rows}


def compare(a: dict, b: dict) -> dict:
    same_text = sum(a[k][0] == b[k][0] and a[k][1] == b[k][1] for k in a if k in b)
    same_top = gap = 0.0
    for k in a:
        if k not in b:
            continue
        ta, tb = json.loads(a[k][3] or "[]"), json.loads(b[k][3] or "[]")
        la, lb = [x[0] for x in ta], [x[0] for x in tb]  # stored as [[label, p], ...]
        same_top += la == lb
        if la == lb:
            gap = max([gap] + [abs(x[1] - y[1]) for x, y in zip(ta, tb, strict=True)])
    return {"rows": [len(a), len(b)], "same_text_and_raw": same_text,
            "same_topk_labels": int(same_top), "max_topk_prob_gap": gap}


def loader_rate(pkg: str, loaded, root, files, n, batch, workers) -> float:
    """Host side only: images/s until each batch tensor is ready for the GPU (pinned on CUDA),
    as each variant's loop prepares it."""
    import torch

    predict = importlib.import_module(f"{pkg}.model.predict")
    images = importlib.import_module(f"{pkg}.storage.images")
    encoder = predict.PromptEncoder(loaded.processor)
    db = make_db(pkg, root, files, n)
    todo = images.list_images(db)
    batches = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    pin = loaded.device.type == "cuda"
    t0 = time.perf_counter()
    if pkg == "sportvlm_before":
        for _, got in predict.PixelLoader(encoder, batches, workers=workers):
            raw = torch.cat([px for px, _ in got if px is not None])
            raw = raw.pin_memory() if pin else raw
    else:
        for _ in predict.PixelLoader(encoder, batches, workers=workers, pin=pin):
            pass
    return n / (time.perf_counter() - t0)


def diagnose(loaded, root, files, n, batch) -> None:
    """Where steady state loses time (after variant): the steady run profiled per phase, and
    the same run with every image decoded beforehand (the loader threads then only copy), i.e.
    what the model loop reaches when host-side decoding competes with nothing."""
    import torch

    from sportvlm_tui.model import predict

    res, _ = run_once("sportvlm_tui", loaded, root, files, n, batch, True)
    report(stage="label", variant="after", run=f"steady {n} profiled", batch=batch, **res)
    enc = predict.PromptEncoder(loaded.processor)
    cache = {str(Path(p).resolve()): enc.raw_pixels(p)[0] for p in files}
    orig = predict.PromptEncoder.raw_pixels

    def predecoded(self, path, out=None):
        chw = cache[str(Path(path).resolve())]
        if out is None:
            return chw[None].clone()
        out.copy_(chw)
        return out[None]

    predict.PromptEncoder.raw_pixels = predecoded
    try:
        for prof in (False, True):
            res, _ = run_once("sportvlm_tui", loaded, root, files, n, batch, prof)
            report(stage="label", variant="after, images decoded beforehand",
                   run=f"steady {n}" + (" profiled" if prof else ""), batch=batch, **res)
    finally:
        predict.PromptEncoder.raw_pixels = orig
    torch.cuda.synchronize() if loaded.device.type == "cuda" else None


def trace(loaded, root, files, batch, out: Path | None) -> None:
    """One batch of the after variant under torch.profiler: GPU busy time vs wall time, and
    the kernels that take the most GPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sportvlm_tui.model.predict import predict_images

    db = make_db("sportvlm_tui", root, files, batch)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        predict_images(db, loaded, task="label", batch_size=batch, max_new_tokens=8)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    avgs = prof.key_averages()
    busy = sum(getattr(e, "self_device_time_total", 0) for e in avgs
               if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA) / 1e6
    report(stage="trace", images=batch, wall_s=round(wall, 3), gpu_kernel_s=round(busy, 3),
           note="under the profiler (slower than untraced)")
    table = avgs.table(sort_by="self_device_time_total", row_limit=25)
    print(table)
    if out:
        out.write_text(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="100SIC root (valid/<label>/)")
    ap.add_argument("--before", type=Path, required=True, help="folder with sportvlm_before/")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/idefics9b-random"))
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steady", type=int, default=2048, help="images for the steady-state runs")
    ap.add_argument("--weights", default="bf16,nf4-dequantized")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds per weights")
    ap.add_argument("--steady-only", action="store_true", help="skip the cold 500 runs and the"
                    " loader-only figures")
    ap.add_argument("--diagnose", action="store_true", help="after each weights: steady state"
                    " profiled, and with images decoded beforehand (after variant)")
    ap.add_argument("--tiny", action="store_true", help="builtin:tiny on CPU (a dry run)")
    ap.add_argument("--trace", type=Path, default=None, help="profile one batch (after, first"
                    " weights) and write the kernel table here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(args.before.resolve()))

    import torch
    from bench_predict_gpu import build_9b

    from sportvlm_tui.model.loading import dequantize_4bit_weights, load_model

    variants = ("sportvlm_before", "sportvlm_tui")
    for pkg in variants:
        importlib.import_module(f"{pkg}.model.predict")
    files = image_files(args.images)
    if args.tiny:
        model_id, device = "builtin:tiny", "cpu"
    else:
        model_id, device = str(args.model_dir), None
        report(stage="device", name=torch.cuda.get_device_name(0),
               total_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
               torch=torch.__version__)
        if not (args.model_dir / "config.json").is_file():
            build_9b(args.model_dir)

    for i, weights in enumerate(args.weights.split(",")):
        quant = "nf4" if weights.startswith("nf4") else weights
        t0 = time.perf_counter()
        loaded = load_model(model_id, quant=quant, device=device)
        if weights == "nf4-dequantized":
            report(stage="dequantize", layers=dequantize_4bit_weights(loaded.model))
        report(stage="load", weights=weights, seconds=round(time.perf_counter() - t0, 1))
        if i == 0 and not args.steady_only:
            workers = min(8, os.cpu_count() or 1)
            for _ in range(2):
                for pkg in variants:
                    rate = loader_rate(pkg, loaded, args.images, files, args.steady,
                                       args.batch, workers)
                    report(stage="loader only", variant=NAMES[pkg],
                           images=args.steady, workers=workers, img_per_s=round(rate, 1))
        for pkg in variants:  # warm-up: kernels, allocator, page cache
            run_once(pkg, loaded, args.images, files, args.batch, args.batch, False)
        dbs = {}
        for r in range(args.repeats):
            order = variants if r % 2 == 0 else variants[::-1]
            runs = [("cold", len(files), True)] * (not args.steady_only) + [
                ("steady", args.steady, False)]
            for what, n, prof in runs:
                for pkg in order:
                    res, db = run_once(pkg, loaded, args.images, files, n, args.batch, prof)
                    report(stage="label", weights=weights, variant=NAMES[pkg],
                           run=f"{what} {n}", batch=args.batch, round=r, **res)
                    if what == "cold" and r == 0:
                        dbs[pkg] = answers(db)
        if dbs:
            report(stage="same answers", weights=weights, **compare(*dbs.values()))
        if args.diagnose:
            diagnose(loaded, args.images, files, args.steady, args.batch)
        if i == 0 and args.trace and device is None:
            try:
                trace(loaded, args.images, files, args.batch, args.trace)
            except Exception as exc:  # noqa: BLE001 - the figures above matter more
                report(stage="trace", error=str(exc)[:300])
        del loaded
        gc.collect()
        if device is None:
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text("\n".join(json.dumps(r) for r in RESULTS) + "\n")


if __name__ == "__main__":
    main()
