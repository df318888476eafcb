"""Loading IDEFICS (nf4 / bf16 / fp16 / fp32), its processor, and an optional LoRA adapter."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .tiny import BUILTIN_TINY, tiny_model_path

DEFAULT_MODEL = "HuggingFaceM4/idefics-9b"
QUANTS = ("auto", "nf4", "bf16", "fp16", "fp32")


@dataclass
class LoadedModel:
    """A model ready for prediction, with what identifies its predictions in the database."""

    model: Any  # IdeficsForVisionText2Text, or a PeftModel around one
    processor: Any  # IdeficsProcessor whose tokenizer pads on the left (for generation)
    model_name: str  # as given (`HuggingFaceM4/idefics-9b`, `builtin:tiny`, a path)
    adapter_name: str  # "" for the base model alone
    device: Any  # torch.device
    quant: str = "fp32"

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def pick_device(device: str | None = None):
    """`device` if given, else cuda when present, else CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else (
        torch.device("cpu")
    )


def resolve_quant(quant: str, device) -> str:
    """`auto`: nf4 on a GPU (the tutorial's setting), fp32 on CPU."""
    if quant not in QUANTS:
        raise UserError(f"--quant {quant}: expected one of {', '.join(QUANTS)}")
    if quant == "auto":
        return "nf4" if device.type == "cuda" else "fp32"
    return quant


def _compute_dtype(device):
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def nf4_config(device):
    """The tutorial's 4-bit NF4 setting (bf16 compute where the card supports it)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=_compute_dtype(device),
        # In transformers 5.x an explicit list replaces the default: keep both.
        llm_int8_skip_modules=["lm_head", "embed_tokens"],
    )


def resolve_model_path(model_id: str) -> str:
    """`builtin:tiny` -> its built folder; anything else is given to from_pretrained as is."""
    if model_id == BUILTIN_TINY:
        return str(tiny_model_path())
    if model_id.startswith("builtin:"):
        raise UserError(f"--model {model_id}: unknown built-in model (known: {BUILTIN_TINY})")
    looks_local = model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").replace(
        "/", "", 1
    )
    if looks_local and not Path(model_id).expanduser().is_dir():
        raise UserError(
            f"--model {model_id}: no such folder; give a local IDEFICS checkpoint folder or a hub"
            " id such as HuggingFaceM4/idefics-9b"
        )
    return str(Path(model_id).expanduser()) if looks_local else model_id


def _not_found(model_id: str, exc: BaseException) -> UserError:
    where = "local folder" if Path(model_id).expanduser().exists() else "Hugging Face cache/hub"
    offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return UserError(
        f"--model {model_id}: weights not found in the {where}{offline}: {reason}; point at a"
        " local copy with `--model /path/to/idefics-9b` or set HF_HOME to a cache that holds it"
    )


def load_processor(model_path: str):
    """The IDEFICS processor, padding on the left so batched generation matches one-by-one."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.unk_token
    return processor


def resolve_adapter(adapter: str | None, db=None) -> tuple[str, str | None]:
    """(name stored with predictions, path to load). A registry name needs `db`."""
    if not adapter:
        return "", None
    if db is not None:
        from ..storage.adapters import get_adapter

        found = get_adapter(db, adapter)
        if found is not None:
            if not Path(found.path).exists():
                raise UserError(f"--adapter {adapter}: registered path {found.path} is missing")
            return found.name, found.path
    path = Path(adapter).expanduser()
    if path.is_dir():
        return str(path.resolve()), str(path)
    raise UserError(
        f"--adapter {adapter}: neither a registered adapter name nor an adapter folder"
        " (see `sportvlm adapters`)"
    )


def load_model(
    model_id: str = DEFAULT_MODEL,
    *,
    quant: str = "auto",
    adapter: str | None = None,
    db=None,
    device: str | None = None,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load IDEFICS for inference: weights per `quant`, the processor, and a LoRA adapter.

    `adapter` is a registry name (looked up in `db`) or a folder. Missing weights raise a
    one-line UserError naming what was tried.
    """
    import torch
    from transformers import IdeficsForVisionText2Text

    dev = pick_device(device)
    quant = resolve_quant(quant, dev)
    path = resolve_model_path(model_id)
    adapter_name, adapter_path = resolve_adapter(adapter, db)
    if quant == "nf4" and dev.type != "cuda" and model_id != BUILTIN_TINY:
        raise UserError(
            f"--quant nf4: 4-bit needs a CUDA GPU for {model_id}; use --quant fp32 on CPU"
        )
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if quant == "nf4":
        kwargs["quantization_config"] = nf4_config(dev)
        kwargs["dtype"] = _compute_dtype(dev)
        kwargs["device_map"] = {"": dev.index if dev.type == "cuda" else "cpu"}
    else:
        kwargs["dtype"] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
            quant
        ]
    try:
        processor = load_processor(path)
        model = IdeficsForVisionText2Text.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        # OSError covers "not a folder / no such repo / offline and not cached".
        if isinstance(exc, ValueError) and "quantiz" in str(exc).lower():
            raise UserError(f"--quant {quant}: {str(exc).splitlines()[0]}") from None
        raise _not_found(model_id, exc) from None
    if quant != "nf4":
        model.to(dev)
    if adapter_path is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=False)
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"--adapter {adapter}: cannot load ({reason})") from None
    model.eval()
    return LoadedModel(
        model=model,
        processor=processor,
        model_name=model_id,
        adapter_name=adapter_name,
        device=dev,
        quant=quant,
    )


def dequantize_4bit_weights(model, *, max_fraction_of_free: float = 0.8) -> int:
    """Replace every bitsandbytes 4-bit linear layer by a plain one holding its dequantised
    weights (the NF4 values in the compute dtype). Returns the number of layers replaced, 0
    when the model has none or the GPU lacks the memory for all of them.

    Why: bitsandbytes' fast 4-bit kernels are for batch size 1; at larger batches each matmul
    dequantises the whole weight first, at every forward. Doing it once gives the same numbers
    (the same dequantised values and matmul) at bf16 speed, for bf16 memory.
    """
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, bnb.nn.Linear4bit)
    ]
    if not targets:
        return 0
    dtype = targets[0][2].compute_dtype or torch.bfloat16
    needed = sum(c.in_features * c.out_features for _, _, c in targets) * (
        torch.finfo(dtype).bits // 8
    )
    device = targets[0][2].weight.device
    # On CPU bitsandbytes repacks 4-bit weights at the first forward; the trick is for GPUs.
    if device.type != "cuda" or needed > max_fraction_of_free * torch.cuda.mem_get_info(device)[0]:
        return 0
    for parent, name, child in targets:
        w = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
        plain = torch.nn.Linear(child.in_features, child.out_features,
                                bias=child.bias is not None, device=w.device, dtype=dtype)
        plain.weight = torch.nn.Parameter(w.reshape(child.out_features, child.in_features),
                                          requires_grad=False)
        if child.bias is not None:
            plain.bias = torch.nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
        setattr(parent, name, plain)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return len(targets)
