"""The QLoRA training loop: `main(config)`.

One process per device (`accelerate launch -m training ...` for several GPUs: DDP with one
4-bit replica per GPU). Everything the run produces is written into a hidden partial folder
and renamed to `config.out_dir` at the very end, so an interrupt or a crash never leaves a
half-written adapter behind.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import time
from pathlib import Path

from .config import ConfigError, TrainConfig
from .progress import ProgressWriter

# LoRA on the language model and its gated cross-attention, never the vision tower or the
# perceiver resampler (PEFT full-matches a string target against module names).
TEXT_SCOPE_PATTERN = r"^(?!.*(?:vision_model|perceiver_resampler)).*\.(?:{names})$"


class TrainingError(RuntimeError):
    """A run that cannot start or finish; the message is one line for the user."""


def lora_targets(config: TrainConfig):
    """What `LoraConfig(target_modules=...)` gets for the config's scope."""
    if config.lora_scope == "all":
        return list(config.target_modules)
    import re

    return TEXT_SCOPE_PATTERN.format(names="|".join(re.escape(n) for n in config.target_modules))


def _prepare_out_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"{out}: already exists and is not empty; choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


def checkpoint_dir(config: TrainConfig) -> Path:
    """Where a run's resumable checkpoint lives (beside its out folder, hidden)."""
    out = Path(config.out_dir)
    return out.parent / f".{out.name}.checkpoint"


def _save_checkpoint(config: TrainConfig, model, optimizer, scheduler, state: dict) -> Path:
    import torch

    final = checkpoint_dir(config)
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "adapter"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                **state}, tmp / "state.pt")
    config.save(tmp / "train_config.json")
    old = final.with_name(final.name + f".old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)  # a checkpoint is either the previous one or the new one, whole
    shutil.rmtree(old, ignore_errors=True)
    return final


def _lr_lambda(config: TrainConfig, total: int):
    def f(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        span = max(total - config.warmup_steps, 1)
        return max(0.0, 1.0 - (step - config.warmup_steps) / span)

    return f


def _optimizer(config: TrainConfig, params, device):
    name = config.optimizer
    if name == "auto":
        name = "paged_adamw_8bit" if device.type == "cuda" else "adamw"
    if name == "paged_adamw_8bit":
        if device.type != "cuda":
            raise TrainingError("optimizer=paged_adamw_8bit needs a CUDA GPU; use adamw on CPU")
        import bitsandbytes as bnb

        opt = bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate,
                                       weight_decay=config.weight_decay)
    else:
        import torch

        opt = torch.optim.AdamW(params, lr=config.learning_rate,
                                weight_decay=config.weight_decay)
    return opt, name


def load_base(config: TrainConfig, device):
    """The base model per `quant` through the predictor's loader. Returns (model, processor,
    resolved quant)."""
    import torch

    from sportvlm_tui.errors import UserError
    from sportvlm_tui.model.loading import load_model

    if device.type == "cuda" and device.index is None:
        # accelerate says "cuda"; the loader's device_map needs the index.
        device = torch.device("cuda", torch.cuda.current_device())
    try:
        loaded = load_model(config.model, quant=config.quant, device=str(device))
    except UserError as exc:
        raise TrainingError(str(exc)) from None
    return loaded.model, loaded.processor, loaded.quant


def build_model(config: TrainConfig, device, base=None):
    """Base model (loaded, or `base` = load_base's result) + a trainable LoRA adapter (fresh
    or continued). Returns (peft model, processor, resolved quant)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    model, processor, quant = base if base is not None else load_base(config, device)
    model.config.use_cache = False
    import warnings

    with warnings.catch_warnings():
        # 5.2x renames these (activation_checkpointing_*) with another signature; the GPU
        # machine's 5.17 has only the old names.
        warnings.simplefilter("ignore", FutureWarning)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        elif getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()  # a lent base may come with it on
    start_from = config.from_adapter
    if config.resume:
        start_from = str(checkpoint_dir(config) / "adapter")
    if start_from:
        path = Path(start_from)
        if not (path / "adapter_config.json").is_file():
            raise TrainingError(f"{path}: not an adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    else:
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=lora_targets(config),
            bias="none",
        )
        model = get_peft_model(model, lora)
    return model, processor, quant


def _gpu_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def main(config: TrainConfig, progress: ProgressWriter | None = None, *, base=None) -> dict:
    """Train one adapter as `config` says; returns the metrics (also in out_dir/metrics.json).

    Raises TrainingError (one line) for bad input, KeyboardInterrupt when interrupted; in
    both cases nothing is left in `out_dir`. `base`: an already loaded (model, processor,
    quant) from `load_base` (benchmarks reuse one base for several runs).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from .data import load_training_pairs, manifest

    cpu = config.device == "cpu"
    accelerator = Accelerator(
        cpu=cpu,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    is_main = accelerator.is_main_process
    out = Path(config.out_dir)
    partial = _prepare_out_dir(out) if is_main else None
    own_progress = progress is None
    if progress is None:
        progress = ProgressWriter(partial / "progress.jsonl" if partial else None,
                                  enabled=is_main)
    old_term = signal.getsignal(signal.SIGTERM)
    if is_main:
        # A parent that cancels with SIGTERM gets the same clean exit as Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if config.resume and not (checkpoint_dir(config) / "state.pt").is_file():
            raise TrainingError(f"{config.out_dir}: no checkpoint to resume from "
                                f"({checkpoint_dir(config)} is missing)")
        try:
            pairs, dropped = load_training_pairs(config.pairs, config.tasks)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        for line in dropped:
            progress.emit("note", message=line)
        if not pairs:
            raise TrainingError(f"{config.pairs}: no usable pairs for tasks "
                                f"{', '.join(config.tasks)}")
        metrics = _train(config, accelerator, pairs, progress, partial, base)
        if is_main:
            assert partial is not None
            (partial / "manifest.json").write_text(
                _dumps(manifest(config.pairs, pairs, dropped)), encoding="utf-8")
            (partial / "metrics.json").write_text(_dumps(metrics), encoding="utf-8")
            if own_progress:
                progress.close()
            os.replace(partial, out)  # the one step that makes the run visible
            shutil.rmtree(checkpoint_dir(config), ignore_errors=True)
            progress.emit("done", out_dir=str(out.resolve()), adapter=config.adapter_name,
                          metrics=metrics)
        accelerator.wait_for_everyone()
        return metrics
    except KeyboardInterrupt:
        ckpt = checkpoint_dir(config) / "state.pt"
        if ckpt.is_file():
            progress.emit("interrupted", message="interrupted; the adapter was not saved, but "
                          f"a checkpoint was: run again with --resume ({ckpt.parent})")
        else:
            progress.emit("interrupted", message="interrupted; nothing was saved")
        raise
    except TrainingError as exc:
        progress.emit("error", message=str(exc))
        raise
    except Exception as exc:  # the parent shows this line; the traceback goes to stderr
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        kind = "out of GPU memory" if "out of memory" in msg.lower() else type(exc).__name__
        progress.emit("error", message=f"{kind}: {msg}")
        raise
    finally:
        if is_main:
            signal.signal(signal.SIGTERM, old_term)
        if partial is not None and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        if own_progress:
            progress.close()


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _train(config: TrainConfig, accelerator, pairs, progress: ProgressWriter,
           partial: Path | None, base=None) -> dict:
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from .collator import AnswerOnlyCollator
    from .data import PairDataset
    from .loss import causal_lm_loss

    set_seed(config.seed)
    device = accelerator.device
    t_load = time.monotonic()
    model, processor, quant = build_model(config, device, base)
    load_s = time.monotonic() - t_load
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrainingError(f"target_modules={list(config.target_modules)}: no module of the "
                            "model matched; nothing to train")
    optimizer, opt_name = _optimizer(config, trainable, device)
    resumed: dict = {}
    if config.resume:
        resumed = torch.load(checkpoint_dir(config) / "state.pt", map_location="cpu",
                             weights_only=False)
        optimizer.load_state_dict(resumed["optimizer"])

    workers = config.num_workers
    if workers is None:
        workers = 4 if device.type == "cuda" else 0
    # After a resume the order is reshuffled from a new seed (no pair is lost, none is
    # replayed on purpose; the step count continues).
    generator = torch.Generator().manual_seed(config.seed + resumed.get("step", 0))
    loader = DataLoader(
        PairDataset(pairs),
        batch_size=config.micro_batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=AnswerOnlyCollator(processor),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    world = accelerator.num_processes
    steps_per_epoch = max(1, math.ceil(len(pairs) / (config.micro_batch_size * world)
                                       / config.grad_accum))
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total))
    if resumed:
        scheduler.load_state_dict(resumed["scheduler"])
    # The scheduler stays outside `prepare`: accelerate would step it once per process, and
    # `total` already counts optimizer steps of the whole DDP group.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    resolved = config.to_dict() | {"quant": quant, "optimizer": opt_name}
    if partial is not None:
        (partial / "train_config.json").write_text(_dumps(resolved), encoding="utf-8")
    n_trainable = sum(p.numel() for p in trainable)
    progress.emit("start", total=total, pairs=len(pairs), world_size=world,
                  device=_gpu_name(device), quant=quant, optimizer=opt_name,
                  trainable_params=n_trainable, load_s=round(load_s, 2))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model.train()
    step, samples = resumed.get("step", 0), resumed.get("samples", 0)
    micro = step * config.grad_accum
    start_samples = samples
    if resumed:
        progress.emit("note", message=f"resumed at step {step}/{total}")
    losses: list[float] = list(resumed.get("losses", []))
    window: list[float] = []
    marks: list[tuple[float, int]] = []  # (time, samples) after each step
    t0 = time.monotonic()
    progress.t0 = t0  # ETA from the first step, not from model loading
    while step < total:
        for batch in loader:
            batch.pop("n_answer_tokens", None)
            labels = batch.pop("labels")
            with accelerator.no_sync(model) if (micro + 1) % config.grad_accum else _null():
                logits = model(**batch, use_cache=False).logits
                loss = causal_lm_loss(logits, labels)
                accelerator.backward(loss / config.grad_accum)
            window.append(float(loss.detach()))
            samples += labels.size(0) * world
            micro += 1
            if micro % config.grad_accum:
                continue
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_loss = float(accelerator.reduce(
                torch.tensor(sum(window) / len(window), device=device), "mean"))
            window.clear()
            losses.append(step_loss)
            marks.append((time.monotonic(), samples))
            if step % config.log_every == 0 or step == total:
                progress.step(step, total, step_loss, scheduler.get_last_lr()[0], samples)
            if step >= total:
                break
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                if accelerator.is_main_process:
                    where = _save_checkpoint(
                        config, accelerator.unwrap_model(model), optimizer, scheduler,
                        {"step": step, "samples": samples, "losses": losses})
                    progress.emit("note", message=f"checkpoint at step {step}: {where}")
                accelerator.wait_for_everyone()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.monotonic() - t0
    accelerator.wait_for_everyone()
    metrics = {
        "adapter": config.adapter_name,
        "steps": step,
        "samples": samples,
        "pairs": len(pairs),
        "first_loss": losses[0] if losses else None,
        "final_loss": (sum(losses[-10:]) / len(losses[-10:])) if losses else None,
        "train_s": round(train_s, 3),
        "load_s": round(load_s, 3),
        "samples_per_s": round((samples - start_samples) / max(train_s, 1e-9), 3),
        "resumed_from_step": resumed.get("step"),
        # After two warm-up steps (allocator, cuBLAS heuristics, worker start-up).
        "steady_samples_per_s": (
            round((marks[-1][1] - marks[1][1]) / max(marks[-1][0] - marks[1][0], 1e-9), 3)
            if len(marks) > 3 else None),
        "peak_mem_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                         if device.type == "cuda" else None),
        "device": _gpu_name(device),
        "world_size": world,
        "quant": quant,
        "trainable_params": n_trainable,
    }
    if accelerator.is_main_process:
        assert partial is not None
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(str(partial / "adapter"))
        progress.emit("saved", path=str(partial / "adapter"))
        if config.eval_db:
            from .evaluate import evaluate_after_training

            unwrapped.eval()
            report = evaluate_after_training(config, unwrapped, processor, device, pairs,
                                             progress)
            (partial / "eval.json").write_text(_dumps(report), encoding="utf-8")
            metrics["eval"] = report
    if base is not None:
        # A lent base goes back as it came: LoRA layers taken out again.
        accelerator.unwrap_model(model).unload()
        accelerator.free_memory()
    return metrics


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


__all__ = ["ConfigError", "TrainConfig", "TrainingError", "main"]
