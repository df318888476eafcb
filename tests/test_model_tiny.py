"""builtin:tiny: deterministic, atomic to build, and loadable like the real model."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

BUILD = "from sportvlm_tui.model.tiny import tiny_model_path; print(tiny_model_path())"


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_concurrent_builds_agree_and_leave_one_folder(tmp_path):
    shared, other = tmp_path / "shared", tmp_path / "other"
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILD], stdout=subprocess.PIPE, text=True,
                         env={**__import__("os").environ, "SPORTVLM_CACHE": str(cache)})
        for cache in (shared, shared, shared, other)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs[:3])) == 1
    # Exactly the finished folder: no temporary build left behind by the losers of the race.
    assert [p.name for p in shared.iterdir()] == [outs[0].rsplit("/", 1)[1]]
    built = next(shared.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(_digests(built))
    # Same bytes from an independent build: the weights and tokenizer are deterministic.
    assert _digests(built) == _digests(next(other.iterdir()))


def test_tiny_has_the_idefics_special_tokens(tiny_loaded):
    tok = tiny_loaded.processor.tokenizer
    ids = tok.convert_tokens_to_ids(["<fake_token_around_image>", "<image>", "<end_of_utterance>"])
    assert tok.unk_token_id not in ids
    cfg = tiny_loaded.model.config
    # Like idefics-9b, the image tokens live in the decoupled "additional" vocabulary.
    assert cfg.additional_vocab_size > 0 and min(ids) >= cfg.vocab_size
    assert tiny_loaded.processor.image_processor.image_size == cfg.vision_config.image_size
