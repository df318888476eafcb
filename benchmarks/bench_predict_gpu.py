"""Label and caption throughput on the IDEFICS-9b shape: the tutorial's way vs our batched path.

Random weights of the real shape (ml-notes: 8.9 B parameters), built in bf16 on the GPU, saved
to local disk and loaded back through `load_model` at bf16 and nf4, so speed and memory are
honest while nothing is downloaded. Images are the real 100SIC valid split (224 px).
The tokenizer is builtin:tiny's (prompt lengths within a few tokens of LLaMA's for these
prompts: the label prompt is ~20 tokens either way).

    python benchmarks/bench_predict_gpu.py --images ../shared/data/100sic [--model-dir DIR]
    python benchmarks/bench_predict_gpu.py --tiny --images sample_data   # CPU dry run

Random weights never emit a stop token, so every answer runs to max_new_tokens (labels 8,
captions 32): a worst case for our path, whose decode loop stops when all answers have ended.
Prints one JSON line per measurement; --json FILE writes them all.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS: list[dict] = []


def report(**kw) -> None:
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def idefics_9b_config(vocab: int, extra: int):
    from transformers import IdeficsConfig

    return IdeficsConfig(
        vocab_size=32000, additional_vocab_size=2, hidden_size=4096, intermediate_size=11008,
        num_hidden_layers=32, num_attention_heads=32, cross_layer_interval=4,
        use_resampler=True, qk_layer_norms=False, max_position_embeddings=2048,
        perceiver_config={"use_resampler": True, "resampler_n_latents": 64,
                          "resampler_depth": 6, "resampler_n_heads": 16,
                          "resampler_head_dim": 96},
        vision_config={"embed_dim": 1280, "image_size": 224, "patch_size": 14,
                       "num_hidden_layers": 32, "num_attention_heads": 16,
                       "intermediate_size": 5120},
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def build_9b(folder: Path) -> float:
    """Random 9b-shape checkpoint + a processor (tiny's tokenizer, 224 px images)."""
    import torch
    from transformers import IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor

    from sportvlm_tui.model.tiny import build_tokenizer

    t0 = time.perf_counter()
    tok = build_tokenizer()
    cfg = idefics_9b_config(32000, 2)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = IdeficsForVisionText2Text(cfg)
    torch.set_default_dtype(torch.float32)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, max_shard_size="4GB")
    IdeficsProcessor(image_processor=IdeficsImageProcessor(image_size=224),
                     tokenizer=tok).save_pretrained(folder)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    secs = time.perf_counter() - t0
    report(stage="build", params_b=round(n / 1e9, 3), seconds=round(secs, 1))
    return secs


def make_db(images_root: Path, n: int | None):
    """An in-memory database holding the valid split (labels from the folder names)."""
    from PIL import Image

    from sportvlm_tui.storage import connect
    from sportvlm_tui.storage.images import ImageRecord, add_images

    files = sorted(p for p in (images_root / "valid").rglob("*") if p.suffix.lower() in
                   (".jpg", ".jpeg", ".png"))
    files = files[:n] if n else files
    recs = []
    for p in files:
        data = p.read_bytes()
        with Image.open(p) as im:
            w, h = im.size
        recs.append(ImageRecord(hashlib.sha256(data).hexdigest(), str(images_root),
                                str(p.relative_to(images_root)), "valid", p.parent.name, w, h,
                                "RGB", len(data)))
    db = connect(":memory:")
    add_images(db, recs)
    return db, files


def one_per_call(loaded, files, task: str, max_new: int, k: int) -> float:
    """The tutorial's way: processor + model.generate for a single image per call."""
    import torch
    from PIL import Image

    from sportvlm_tui.model.generation import SpecialIds
    from sportvlm_tui.prompts import question

    ids = SpecialIds(loaded.tokenizer)
    model = loaded.model
    times = []
    for i, p in enumerate(files[: k + 1]):
        torch.cuda.synchronize() if loaded.device.type == "cuda" else None
        t0 = time.perf_counter()
        inputs = loaded.processor(text=[[Image.open(p).convert("RGB"), question(task)]],
                                  return_tensors="pt").to(loaded.device)
        out = model.generate(**inputs, max_new_tokens=max_new, min_new_tokens=max_new,
                             do_sample=False, bad_words_ids=[[t] for t in ids.banned],
                             pad_token_id=ids.pad)
        loaded.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                      skip_special_tokens=True)
        torch.cuda.synchronize() if loaded.device.type == "cuda" else None
        if i > 0:  # the first call warms up kernels
            times.append(time.perf_counter() - t0)
    return len(times) / sum(times)


def ours(loaded, images_root, n, task, batch, max_new, **kw) -> dict:
    import torch

    from sportvlm_tui.model.predict import PHASES, predict_images

    warm_db, _ = make_db(images_root, batch)
    predict_images(warm_db, loaded, task=task, batch_size=batch, max_new_tokens=max_new, **kw)
    db, _ = make_db(images_root, n)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    PHASES.clear()
    s = predict_images(db, loaded, task=task, batch_size=batch, max_new_tokens=max_new, **kw)
    phases = {k: round(v, 2) for k, v in PHASES.items()}
    peak = torch.cuda.max_memory_allocated() / 2**30 if loaded.device.type == "cuda" else 0
    return {"img_per_s": round(s.predicted / s.seconds, 1), "images": s.predicted,
            "seconds": round(s.seconds, 2), "peak_gib": round(peak, 1), "phases_s": phases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="100SIC root (valid/<label>/)")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/idefics9b-random"))
    ap.add_argument("--n", type=int, default=None, help="images for the batched runs")
    ap.add_argument("--label-batch", type=int, default=256)
    ap.add_argument("--extra-label-batch", type=int, default=None,
                    help="also measure labels at this batch size")
    ap.add_argument("--caption-batch", type=int, default=256)
    ap.add_argument("--one-per-call", type=int, default=12, help="images, tutorial's way")
    ap.add_argument("--quants", default="nf4,bf16")
    ap.add_argument("--skip", default="", help="comma list: tutorial,captions,dequant")
    ap.add_argument("--tiny", action="store_true", help="builtin:tiny on CPU (a dry run)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import torch

    from sportvlm_tui.model.loading import dequantize_4bit_weights, load_model

    if args.tiny:
        model_id, device = "builtin:tiny", "cpu"
    else:
        model_id, device = str(args.model_dir), None
        report(stage="device", name=torch.cuda.get_device_name(0),
               total_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        if not (args.model_dir / "config.json").is_file():
            build_9b(args.model_dir)
    _, files = make_db(args.images, args.n)

    for quant in args.quants.split(","):
        t0 = time.perf_counter()
        loaded = load_model(model_id, quant=quant, device=device)
        report(stage="load", quant=quant, seconds=round(time.perf_counter() - t0, 1),
               gib=round(torch.cuda.memory_allocated() / 2**30, 1) if device is None else 0)
        variants = [quant]
        if quant == "nf4" and "dequant" not in skip and device is None:
            variants.append("nf4-dequantized")
        for variant in variants:
            if variant == "nf4-dequantized":
                t0 = time.perf_counter()
                n_layers = dequantize_4bit_weights(loaded.model)
                report(stage="dequantize", layers=n_layers,
                       seconds=round(time.perf_counter() - t0, 1),
                       gib=round(torch.cuda.memory_allocated() / 2**30, 1))
            if "tutorial" not in skip and variant != "nf4-dequantized":
                rate = one_per_call(loaded, files, "label", 8, args.one_per_call)
                report(stage="label", way="one image per generate call", weights=variant,
                       img_per_s=round(rate, 2), max_new_tokens=8)
            for lb in filter(None, [args.label_batch, args.extra_label_batch]):
                r = ours(loaded, args.images, args.n, "label", lb, 8)
                report(stage="label", way=f"batched (batch {lb}) + rank top-5",
                       weights=variant, max_new_tokens=8, **r)
            if "captions" not in skip:
                if "tutorial" not in skip and variant != "nf4-dequantized":
                    rate = one_per_call(loaded, files, "caption", 32, max(2, args.one_per_call
                                                                          // 4))
                    report(stage="caption", way="one image per generate call", weights=variant,
                           img_per_s=round(rate, 2), max_new_tokens=32)
                r = ours(loaded, args.images, args.n, "caption", args.caption_batch, 32)
                report(stage="caption", way=f"batched (batch {args.caption_batch})",
                       weights=variant, max_new_tokens=32, **r)
        del loaded
        gc.collect()
        if device is None:
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text("\n".join(json.dumps(r) for r in RESULTS) + "\n")


if __name__ == "__main__":
    main()
