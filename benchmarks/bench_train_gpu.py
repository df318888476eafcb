"""QLoRA training speed and memory on the IDEFICS-9b shape, and the time to a promoted adapter.

Random weights of the real shape (ml-notes): built in bf16 on the GPU, saved, loaded back in
NF4 through the project's loader, so speed and memory are honest while nothing is downloaded.
The tokenizer is a BPE trained here on the project's corpus (whole common words, like LLaMA's
for these prompts), so sequence lengths are close to the real ones.

    python benchmarks/bench_train_gpu.py [--work runs/bench9b] [--stages smoke,build,sweep,e2e]

Stages:
  smoke  builtin:tiny through the NF4 QLoRA path on the GPU (4-bit backward works at all)
  build  the random 9b-shape checkpoint (skipped when already there)
  sweep  samples/s and peak memory per (micro-batch, LoRA scope), one base loaded once
  e2e    `sportvlm train --new-only --replay 1000` on a database with 1000 earlier and 100
         new corrections: seconds from the command's start to a promoted adapter
Prints one JSON line per result; writes them all to --json too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS: list[dict] = []


def report(**kw) -> None:
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def labels() -> list[str]:
    text = (REPO / "sportvlm_tui" / "model" / "tiny_assets" / "labels.txt").read_text()
    return [x.strip() for x in text.splitlines() if x.strip()]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (REPO / "sportvlm_tui" / "model" / "tiny_assets" / "corpus.txt").read_text()
    lines = corpus.splitlines() + labels()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=32000, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=[chr(c) for c in range(32, 127)] + ["\n"],
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<unk>", padding_side="left")
    fast.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<end_of_utterance>"]})
    return fast


def build_checkpoint(folder: Path) -> None:
    import torch
    from transformers import (
        IdeficsConfig,
        IdeficsForVisionText2Text,
        IdeficsImageProcessor,
        IdeficsProcessor,
    )

    if (folder / "config.json").is_file():
        report(stage="build", skipped=True, path=str(folder))
        return
    t0 = time.monotonic()
    config = IdeficsConfig(
        vocab_size=32000, additional_vocab_size=2, hidden_size=4096, intermediate_size=11008,
        num_hidden_layers=32, num_attention_heads=32, cross_layer_interval=4,
        use_resampler=True, max_position_embeddings=2048,
        perceiver_config={"use_resampler": True, "resampler_n_latents": 64,
                          "resampler_depth": 6, "resampler_n_heads": 16,
                          "resampler_head_dim": 96},
        vision_config={"embed_dim": 1280, "image_size": 224, "patch_size": 14,
                       "num_hidden_layers": 32, "num_attention_heads": 16,
                       "intermediate_size": 5120},
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = IdeficsForVisionText2Text(config)
    finally:
        torch.set_default_dtype(old)
    n = sum(p.numel() for p in model.parameters())
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, max_shard_size="4GB")
    del model
    torch.cuda.empty_cache()
    tok = build_tokenizer()
    IdeficsProcessor(IdeficsImageProcessor(image_size=224), tok).save_pretrained(tmp)
    os.replace(tmp, folder)
    report(stage="build", params_b=round(n / 1e9, 3), seconds=round(time.monotonic() - t0, 1))


def make_images(root: Path, per_label_train: int, per_label_valid: int) -> None:
    """A 100SIC-style folder of random 224x224 JPEGs (100 labels)."""
    import numpy as np
    from PIL import Image

    if (root / ".done").exists():
        return
    rng = np.random.default_rng(0)
    for split, n in (("train", per_label_train), ("valid", per_label_valid)):
        for li, lab in enumerate(labels()):
            d = root / split / lab
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                base = rng.integers(0, 255, size=(1, 1, 3))
                noise = rng.integers(-40, 40, size=(224, 224, 3))
                arr = np.clip(base + noise, 0, 255).astype("uint8")
                Image.fromarray(arr).save(d / f"{li:03d}_{k:03d}.jpg", quality=85)
    (root / ".done").write_text("ok")


def pairs_file(root: Path, out: Path, n: int) -> Path:
    from sportvlm_tui.export.pairs import prompt_text

    files = sorted((root / "train").glob("*/*.jpg"))[:n]
    with open(out, "w") as f:
        for i, p in enumerate(files):
            lab = p.parent.name
            f.write(json.dumps({"image": str(p), "task": "label", "prompt": prompt_text("label"),
                                "answer": lab, "label": lab, "image_id": i + 1,
                                "review_id": i + 1}) + "\n")
    return out


def smoke(work: Path) -> None:
    from training.config import TrainConfig
    from training.progress import ProgressWriter
    from training.trainer import main

    make_images(work / "imgs", 11, 2)
    pf = pairs_file(work / "imgs", work / "smoke.jsonl", 64)
    out = work / f"smoke-{int(time.time())}"
    m = main(TrainConfig(pairs=str(pf), out_dir=str(out), model="builtin:tiny", quant="nf4",
                         max_steps=4, micro_batch_size=16),
             progress=ProgressWriter(None, enabled=False))
    report(stage="smoke", quant=m["quant"], steps=m["steps"], first_loss=m["first_loss"],
           final_loss=m["final_loss"], adapter=(out / "adapter").is_dir())


def sweep(work: Path, ckpt: Path, variants: list[tuple[int, str, bool]], steps: int,
          quant: str = "nf4") -> None:
    import io

    import torch

    from training.config import TrainConfig
    from training.progress import ProgressWriter
    from training.trainer import load_base, main

    make_images(work / "imgs", 11, 2)
    pf = pairs_file(work / "imgs", work / "sweep.jsonl", 1100)
    t0 = time.monotonic()
    base_cfg = TrainConfig(pairs=str(pf), out_dir=str(work / "unused"), model=str(ckpt),
                           quant=quant)
    gpu = torch.cuda.is_available()
    base = load_base(base_cfg, torch.device("cuda", 0) if gpu else torch.device("cpu"))
    report(stage="load", quant=quant, seconds=round(time.monotonic() - t0, 1),
           weights_gib=round(torch.cuda.memory_allocated() / 2**30, 2) if gpu else None,
           device=torch.cuda.get_device_name(0) if gpu else "cpu")
    for mbs, scope, ckpting in variants:
        out = work / f"sweep-{mbs}-{scope}-{int(ckpting)}-{int(time.time())}"
        buf = io.StringIO()
        try:
            torch.cuda.empty_cache()
            m = main(TrainConfig(pairs=str(pf), out_dir=str(out), model=str(ckpt), quant=quant,
                                 micro_batch_size=mbs, lora_scope=scope, max_steps=steps,
                                 gradient_checkpointing=ckpting),
                     progress=ProgressWriter(None, stream=buf), base=base)
            report(stage="sweep", micro_batch=mbs, lora_scope=scope, checkpointing=ckpting,
                   steps=m["steps"],
                   samples_per_s=m["steady_samples_per_s"], peak_gib=m["peak_mem_gib"],
                   trainable_params=m["trainable_params"], device=m["device"],
                   final_loss=m["final_loss"])
        except Exception as exc:  # one variant failing (OOM) must not stop the others
            report(stage="sweep", micro_batch=mbs, lora_scope=scope, checkpointing=ckpting,
                   error=f"{type(exc).__name__}: {str(exc)[:200]}")
            torch.cuda.empty_cache()
    del base
    torch.cuda.empty_cache()


def seq_lengths(ckpt: Path) -> None:
    from transformers import AutoProcessor

    from training.collator import training_prompt

    proc = AutoProcessor.from_pretrained(ckpt)
    from PIL import Image

    im = Image.new("RGB", (224, 224))
    for lab in ("archery", "tug of war", "ampute football"):
        ids = proc(text=[training_prompt("label", im, lab)], return_tensors="pt")["input_ids"]
        report(stage="seq", answer=lab, tokens=int(ids.shape[1]))


def improc(ckpt: Path) -> None:
    """What the image processor returns here (torchvision present or not)."""
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(ckpt)
    out = proc.image_processor([Image.new("RGB", (224, 224))], return_tensors="pt")
    report(stage="improc", cls=type(proc.image_processor).__name__, out=type(out).__name__,
           shape=list(getattr(out, "shape", [])) or {k: list(v.shape) for k, v in out.items()})


def ddp(work: Path, ckpt: Path, steps: int, mbs: int, quant: str = "nf4") -> None:
    """`accelerate launch -m training` on 1 and on all GPUs: samples/s (all processes)."""
    import torch

    from training.progress import parse_progress_line

    make_images(work / "imgs", 11, 2)
    pf = pairs_file(work / "imgs", work / "ddp.jsonl", 1100)
    n_gpus = max(torch.cuda.device_count(), 1)
    for procs in sorted({1, n_gpus}):
        out = work / f"ddp-{procs}-{int(time.time())}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
               str(procs), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no"]
        cmd += ["--multi_gpu"] if procs > 1 else []
        cmd += ["-m", "training", "--pairs", str(pf), "--out-dir", str(out), "--model",
                str(ckpt), "--quant", quant, "--max-steps", str(steps), "--micro-batch-size",
                str(mbs)]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
        events = [e for e in map(parse_progress_line, r.stdout.splitlines()) if e]
        done = next((e for e in events if e["event"] == "done"), None)
        m = done["metrics"] if done else {}
        report(stage="ddp", processes=procs, rc=r.returncode, micro_batch=mbs,
               samples_per_s=m.get("steady_samples_per_s"), peak_gib_rank0=m.get("peak_mem_gib"),
               world_size=m.get("world_size"), wall_s=round(time.monotonic() - t0, 1),
               device=m.get("device"),
               error=None if done else (r.stderr.strip().splitlines() or ["?"])[-1][:300])


def e2e(work: Path, ckpt: Path | str, extra: list[str]) -> None:
    """1000 earlier corrections (already exported) + 100 new: time to a promoted adapter."""
    from sportvlm_tui.storage import connect, images, reviews
    from sportvlm_tui.storage.adapters import promoted_adapter

    root = work / "imgs"
    make_images(root, 11, 2)
    db_path = work / f"e2e-{int(time.time())}.db"
    env = {**os.environ, "SPORTVLM_DB": str(db_path)}
    sv = [sys.executable, "-c", "from sportvlm_tui.cli import main; main()"]
    subprocess.run(sv + ["ingest", str(root)], check=True, env=env, capture_output=True)
    db = connect(db_path)
    train = images.list_images(db, split="train")
    assert len(train) >= 1100, len(train)
    for im in train[:1000]:
        reviews.save_decision(db, image_id=im.id, task="label", decision="correct",
                              value=im.label or im.path.parent.name, annotator="bench")
    subprocess.run(sv + ["export", "--out", str(work / "first.jsonl")], check=True, env=env,
                   capture_output=True)
    for im in train[1000:1100]:
        reviews.save_decision(db, image_id=im.id, task="label", decision="correct",
                              value=im.label or im.path.parent.name, annotator="bench")
    t0 = time.monotonic()
    r = subprocess.run(sv + ["train", "--new-only", "--replay", "1000", "--model", str(ckpt),
                             "--out", str(work / f"e2e-adapter-{int(t0)}"), *extra],
                       env=env, capture_output=True, text=True, cwd=str(work))
    seconds = time.monotonic() - t0
    tail = (r.stdout + r.stderr).strip().splitlines()
    promoted = promoted_adapter(connect(db_path))
    report(stage="e2e", seconds=round(seconds, 1), rc=r.returncode, args=extra,
           promoted=promoted.name if promoted else None,
           metrics={k: (promoted.metrics.get(k) if promoted else None)
                    for k in ("steps", "samples", "train_s", "load_s", "samples_per_s",
                              "steady_samples_per_s", "peak_mem_gib")},
           eval=(promoted.metrics.get("eval", {}).get("verdict", {}).get("reason")
                 if promoted else None),
           tail=[x for x in tail if "step" not in x][-8:])
    if r.returncode:
        for log in sorted(work.glob("e2e-adapter-*.log"))[-1:]:
            print(log.read_text()[-3000:], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(REPO / "runs" / "bench9b"))
    ap.add_argument("--stages", default="smoke,build,seq,sweep,e2e")
    ap.add_argument("--variants", default="8:all,32:all,32:text,64:text",
                    help="micro-batch:scope[:nogc] list for the sweep (nogc: no gradient "
                         "checkpointing)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--e2e-args", default="",
                    help="extra `sportvlm train` flags for the e2e stage")
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None,
                    help="use this model instead of the built checkpoint (builtin:tiny for a "
                         "CPU dry run of the stages)")
    ap.add_argument("--quant", default="nf4", help="base weights for the sweep")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.model) if args.model else work / "idefics9b-random"
    stages = args.stages.split(",")
    variants = [(int(v.split(":")[0]), v.split(":")[1], not v.endswith(":nogc"))
                for v in args.variants.split(",")]
    for stage in stages:
        t0 = time.monotonic()
        try:
            if stage == "smoke":
                smoke(work)
            elif stage == "build":
                build_checkpoint(ckpt)
            elif stage == "seq":
                seq_lengths(ckpt)
            elif stage == "sweep":
                sweep(work, ckpt, variants, args.steps, args.quant)
            elif stage == "e2e":
                e2e(work, ckpt, args.e2e_args.split())
            elif stage == "ddp":
                ddp(work, ckpt, args.steps, int(args.variants.split(",")[0].split(":")[0]),
                    args.quant)
            elif stage == "improc":
                improc(ckpt)
        except Exception as exc:
            traceback.print_exc()
            report(stage=stage, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        print(f"# stage {stage}: {time.monotonic() - t0:.1f}s", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(RESULTS, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
