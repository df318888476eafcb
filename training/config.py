"""The trainer's configuration: one dataclass, validated on construction, saved with the adapter.

Defaults are the tutorial's QLoRA recipe (r=16, alpha=32, dropout 0.05 on q/k/v projections,
lr 2e-4, one epoch, an NF4 base with bf16 compute where the card supports it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "HuggingFaceM4/idefics-9b"
QUANTS = ("auto", "nf4", "bf16", "fp16", "fp32")
OPTIMIZERS = ("auto", "paged_adamw_8bit", "adamw")
SCHEDULES = ("constant", "linear")
LORA_SCOPES = ("all", "text")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the reason."""


@dataclass
class TrainConfig:
    """Everything one training run needs. `main(config)` takes nothing else."""

    pairs: str
    """JSONL training pairs (`sportvlm export`); image paths in it must exist."""
    out_dir: str
    """Folder to create for the run: adapter/, train_config.json, manifest.json, metrics.json,
    progress.jsonl. It must not exist yet, or be empty (a run never overwrites another)."""
    model: str = DEFAULT_MODEL
    """Base model: a hub id, a local folder, or `builtin:tiny`."""
    from_adapter: str | None = None
    """Folder of an existing LoRA adapter to continue training (else a fresh adapter)."""
    quant: str = "auto"
    """Base weights: `nf4` (QLoRA), `bf16`, `fp16`, `fp32`; `auto` is nf4 on a GPU, fp32 on
    CPU."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    """Module names that get LoRA matrices."""
    lora_scope: str = "all"
    """`all`: every module with a target name (the tutorial: language model, cross-attention,
    vision tower, resampler); `text`: only the language model and its cross-attention, so the
    backward pass never enters the vision tower (faster)."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    lr_schedule: str = "linear"
    """`linear`: warm up, then decay to zero at the last step; `constant`: warm up, then flat."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 disables it)."""
    epochs: float = 1.0
    """Passes over the pairs (fractions allowed); ignored when `max_steps` is set."""
    max_steps: int | None = None
    """Optimizer steps to run, overriding `epochs` (cycles through the data as needed)."""
    micro_batch_size: int = 64
    """Pairs per forward/backward pass on one device. IDEFICS-9b in NF4 is launch-bound at
    small batches (a step takes about as long at 8 as at 64), so large micro-batches are
    nearly free: 64 ran at 68 samples/s in 10 GiB on an H200 (benchmarks/bench_train_gpu.py)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (non-reentrant) to save memory."""
    optimizer: str = "auto"
    """`paged_adamw_8bit` (bitsandbytes, GPU), `adamw` (torch); `auto` picks the first on a GPU,
    the second on CPU."""
    seed: int = 42
    """Seeds torch, python and the data order."""
    num_workers: int | None = None
    """DataLoader worker processes that open images and run the processor (None: 4 on a
    GPU, where image preprocessing would otherwise starve it; 0 on CPU)."""
    tasks: tuple[str, ...] = ("label", "caption")
    """Tasks of the pairs file to train on."""
    device: str | None = None
    """Force a device (`cpu`, `cuda:0`); default: this process's GPU if any, else CPU."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint (adapter, optimizer, step) every N optimizer steps, beside
    the out folder as `.<name>.checkpoint`; 0: never. Removed when the run finishes."""
    resume: bool = False
    """Continue an interrupted run from its checkpoint (same out_dir). The data order after
    the resume point is reshuffled, so it is not bit-identical to an uninterrupted run."""
    log_every: int = 1
    """Write a progress line every this many optimizer steps."""
    name: str | None = None
    """Adapter name recorded in the run's files (default: the out folder's name)."""
    eval_db: str | None = None
    """Database to evaluate the new adapter against after training (None: no evaluation)."""
    eval_split: str = "valid"
    """Held-out split for the evaluation (images in the pairs are left out of it)."""
    eval_limit: int | None = 200
    """Evaluate on at most this many held-out images (None: all)."""
    eval_reference: str | None = None
    """Adapter folder to compare against (the promoted one); None compares with the base."""
    eval_batch_size: int = 32
    """Images per prediction batch during evaluation."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes saved with the config (who started the run, from where)."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        if not str(self.pairs).strip():
            raise bad("pairs", "a JSONL file of training pairs is needed")
        if not str(self.out_dir).strip():
            raise bad("out_dir", "an output folder is needed")
        if self.quant not in QUANTS:
            raise bad("quant", f"expected one of {', '.join(QUANTS)}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"expected one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in SCHEDULES:
            raise bad("lr_schedule", f"expected one of {', '.join(SCHEDULES)}")
        if self.lora_scope not in LORA_SCOPES:
            raise bad("lora_scope", f"expected one of {', '.join(LORA_SCOPES)}")
        for name in ("lora_r", "lora_alpha", "micro_batch_size", "grad_accum", "log_every",
                     "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise bad("lora_dropout", "must be in [0, 1)")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError("warmup_steps, weight_decay and max_grad_norm must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise bad("max_steps", "must be >= 1 (or unset to use epochs)")
        if self.max_steps is None and not self.epochs > 0:
            raise bad("epochs", "must be > 0")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "must be >= 0 (0: no checkpoints)")
        if self.num_workers is not None and self.num_workers < 0:
            raise bad("num_workers", "must be >= 0")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise bad("eval_limit", "must be >= 1 (or unset for the whole split)")
        self.target_modules = tuple(self.target_modules)
        self.tasks = tuple(self.tasks)
        if not self.target_modules:
            raise bad("target_modules", "name at least one module")
        unknown = [t for t in self.tasks if t not in ("label", "caption")]
        if unknown or not self.tasks:
            raise bad("tasks", "expected label and/or caption")

    @property
    def adapter_name(self) -> str:
        return self.name or Path(self.out_dir).name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["tasks"] = list(self.tasks)
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
