"""`builtin:tiny`: a tiny random IDEFICS, built locally from a config, for tests and the demo.

It has the real model's structure (decoupled embeddings with extra vocabulary, gated
cross-attention, a vision tower) at ~0.3 M parameters, and a fast tokenizer trained here on a
small committed corpus. It is saved with ``save_pretrained`` so that it loads through exactly the
same ``from_pretrained`` path as HuggingFaceM4/idefics-9b. Output is random but deterministic.

Nothing is downloaded. The build is atomic (temporary folder + rename), because several test
workers may ask for it at the same moment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

BUILTIN_TINY = "builtin:tiny"
# Bump when anything that changes the saved files changes (config, corpus, tokenizer recipe).
TINY_VERSION = 1
SEED = 1234
SPECIAL_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
BASE_VOCAB = 512  # trained vocabulary; the three special tokens come after it (additional vocab)
IMAGE_SIZE = 32


def cache_root() -> Path:
    """`$SPORTVLM_CACHE`, else ~/.cache/sportvlm."""
    env = os.environ.get("SPORTVLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sportvlm"


def _assets() -> dict[str, str]:
    base = resources.files("sportvlm_tui.model") / "tiny_assets"
    return {
        name: (base / name).read_text(encoding="utf-8") for name in ("corpus.txt", "labels.txt")
    }


def _fingerprint(assets: dict[str, str]) -> str:
    # This module's own source is part of the key, so a changed recipe never reuses a stale build.
    h = hashlib.sha256(Path(__file__).read_bytes())
    for name in sorted(assets):
        h.update(name.encode() + b"\0" + assets[name].encode() + b"\0")
    return h.hexdigest()[:12]


def tiny_model_path() -> Path:
    """The folder holding the tiny model, tokenizer and processor (built on first use)."""
    assets = _assets()
    target = cache_root() / f"tiny-idefics-v{TINY_VERSION}-{_fingerprint(assets)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build(tmp, assets)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (rename onto a non-empty folder fails): use theirs.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _training_lines(assets: dict[str, str]) -> list[str]:
    labels = [x.strip() for x in assets["labels.txt"].splitlines() if x.strip()]
    lines = [x.strip() for x in assets["corpus.txt"].splitlines() if x.strip()]
    # Labels appear both bare and the way answers are written, so they tokenise compactly.
    lines += labels + [f"Answer: {x}" for x in labels] + [x.title() for x in labels]
    # The prompt questions come often in real use: weight them so they become few tokens.
    lines += [lines[0], lines[2]] * 50
    return lines


def build_tokenizer(assets: dict[str, str] | None = None):
    """A Llama-like (SentencePiece-style `▁` word marks, BPE) fast tokenizer, trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    assets = assets or _assets()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(_training_lines(assets), trainer=trainer)
    if tok.get_vocab_size() != BASE_VOCAB:
        # Pad with unused pieces so ids of the special tokens do not depend on the corpus size.
        missing = BASE_VOCAB - tok.get_vocab_size()
        tok.add_tokens([f"<unused{i}>" for i in range(missing)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",  # as in idefics-9b (LLaMA has no pad token)
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return fast


def _config(n_text_vocab: int, n_extra: int):
    from transformers import IdeficsConfig

    return IdeficsConfig(
        vocab_size=n_text_vocab,
        additional_vocab_size=n_extra,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        cross_layer_interval=1,
        max_position_embeddings=1024,
        use_resampler=False,
        # The real model's gates start at 0 (images ignored until trained); a random test model
        # needs open gates and larger weights so that its answers depend on the image at all.
        alpha_initializer="ones",
        initializer_range=0.5,
        vision_config={
            "embed_dim": 64,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "initializer_range": 0.5,
            "initializer_factor": 5.0,
        },
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _build(folder: Path, assets: dict[str, str]) -> None:
    import torch
    from transformers import IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor

    tokenizer = build_tokenizer(assets)
    n_extra = len(tokenizer) - BASE_VOCAB
    config = _config(BASE_VOCAB, n_extra)
    # A private generator keeps the caller's global RNG state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = IdeficsForVisionText2Text(config)
    model.eval()
    model.save_pretrained(folder)
    processor = IdeficsProcessor(
        image_processor=IdeficsImageProcessor(image_size=IMAGE_SIZE), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
