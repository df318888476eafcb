"""The bundled trainer on CPU with builtin:tiny: config, collator masking, loss, a full run,
resume from an adapter, interrupt safety, the subprocess protocol."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image as PILImage

from training.config import ConfigError, TrainConfig
from training.progress import ProgressWriter, parse_progress_line

TINY = "builtin:tiny"
LABELS = ["archery", "bobsled", "curling", "tug of war"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """16 label pairs over 4 labels, each image a flat colour per label."""
    d = tmp_path_factory.mktemp("pairs")
    lines = []
    for li, lab in enumerate(LABELS):
        for k in range(4):
            p = d / f"{li}_{k}.png"
            PILImage.new("RGB", (32, 32), (60 * li, 255 - 60 * li, 20 * k)).save(p)
            lines.append({"image": str(p), "task": "label", "answer": lab, "label": lab,
                          "image_id": li * 4 + k + 1, "review_id": li * 4 + k + 1})
    f = d / "pairs.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return f


@pytest.fixture(scope="module")
def tiny_processor():
    from sportvlm_tui.model.loading import load_model

    return load_model(TINY, quant="fp32", device="cpu").processor


def _config(pairs, out, **kw):
    base = dict(pairs=str(pairs), out_dir=str(out), model=TINY, device="cpu",
                micro_batch_size=4, max_steps=3, learning_rate=5e-3, lr_schedule="constant")
    return TrainConfig(**(base | kw))


# --- config ----------------------------------------------------------------------------------


def test_config_defaults_are_the_tutorials():
    c = TrainConfig(pairs="p.jsonl", out_dir="out")
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (16, 32, 0.05)
    assert c.target_modules == ("q_proj", "k_proj", "v_proj")
    assert c.learning_rate == 2e-4 and c.epochs == 1.0 and c.quant == "auto"
    assert c.gradient_checkpointing


@pytest.mark.parametrize("field,value", [
    ("lora_r", 0), ("lora_dropout", 1.0), ("learning_rate", 0.0), ("quant", "int3"),
    ("optimizer", "sgd"), ("max_steps", 0), ("micro_batch_size", -1), ("tasks", ("vqa",)),
    ("lora_scope", "vision"), ("target_modules", ()),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(pairs="p.jsonl", out_dir="out", **{field: value})


def test_config_roundtrips_through_json(tmp_path):
    c = TrainConfig(pairs="p.jsonl", out_dir="out", lora_r=8, tasks=("label",))
    c.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == c
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({"pairs": "p", "out_dir": "o", "lora_rank": 3})


def test_cli_flags_cover_the_config():
    from training.cli import config_from_args

    c = config_from_args(["--pairs", "p.jsonl", "--out-dir", "o", "--lora-r", "4",
                          "--target-modules", "q_proj,v_proj", "--no-gradient-checkpointing",
                          "--max-steps", "7"])
    assert c.lora_r == 4 and c.target_modules == ("q_proj", "v_proj")
    assert c.gradient_checkpointing is False and c.max_steps == 7


# --- collator and loss ---------------------------------------------------------------------


def test_collator_masks_everything_but_the_answer(pairs_file, tiny_processor):
    from sportvlm_tui.export import read_pairs
    from sportvlm_tui.prompts import END_OF_ANSWER
    from training.collator import AnswerOnlyCollator
    from training.data import PairDataset

    pairs = read_pairs(pairs_file)
    ds = PairDataset([pairs[0], pairs[-1]])  # "archery" and the longer "tug of war"
    batch = AnswerOnlyCollator(tiny_processor)([ds[0], ds[1]])
    tok = tiny_processor.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert mask[0].sum() < mask[1].sum()  # the first row is padded
    for row, answer in ((0, "archery"), (1, "tug of war")):
        kept = labels[row][labels[row] != -100]
        assert tok.decode(kept).replace(" ", "") == (answer + END_OF_ANSWER).replace(" ", "")
        # what is kept is exactly the tail of the real (unpadded) tokens
        real = ids[row][mask[row] == 1]
        assert kept.tolist() == real[-len(kept):].tolist()
    for t in ("<image>", "<fake_token_around_image>"):
        tid = tok.convert_tokens_to_ids(t)
        assert (ids == tid).any() and not (labels == tid).any()
    assert (labels[mask == 0] == -100).all()
    assert int(batch["n_answer_tokens"]) == int((labels != -100).sum())


def test_loss_is_shifted_cross_entropy_over_the_full_logit_width():
    import torch

    from training.loss import causal_lm_loss

    torch.manual_seed(0)
    vocab = 515  # 512 + 3 additional tokens, as in the tiny model (and 32000 + 2 in 9b)
    logits = torch.randn(2, 5, vocab)
    labels = torch.tensor([[-100, -100, 7, 514, -100], [-100, 3, 513, -100, -100]])
    got = causal_lm_loss(logits, labels)
    # by hand: position t predicts labels[t + 1]
    terms = [-torch.log_softmax(logits[b, t], -1)[labels[b, t + 1]]
             for b in range(2) for t in range(4) if labels[b, t + 1] != -100]
    assert torch.allclose(got, torch.stack(terms).mean())


# --- full runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_writes_adapter_config_manifest_metrics_and_weights_change(pairs_file, tmp_path):
    import io

    import torch
    from safetensors.torch import load_file

    from training.trainer import main

    out = tmp_path / "run1"
    buf = io.StringIO()
    metrics = main(_config(pairs_file, out, max_steps=8),
                   progress=ProgressWriter(tmp_path / "p.jsonl", stream=buf))
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter", "manifest.json", "metrics.json", "train_config.json"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pairs"] == 16 and manifest["by_label"]["archery"] == 4
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["quant"] == "fp32" and saved["optimizer"] == "adamw"
    assert metrics["steps"] == 8 and metrics["final_loss"] < metrics["first_loss"]
    events = [parse_progress_line(x) for x in buf.getvalue().splitlines()]
    kinds = [e["event"] for e in events if e]
    assert kinds[0] == "start" and kinds.count("step") == 8 and kinds[-1] == "done"
    step = next(e for e in events if e and e["event"] == "step")
    assert {"step", "total", "loss", "eta_s", "samples_per_s"} <= set(step)


@pytest.mark.slow
def test_same_seed_same_adapter(pairs_file, tmp_path):
    import torch
    from safetensors.torch import load_file

    from training.trainer import main

    quiet = dict(progress=ProgressWriter(None, enabled=False))
    main(_config(pairs_file, tmp_path / "a"), **quiet)
    main(_config(pairs_file, tmp_path / "b"), **quiet)
    wa = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resume_from_adapter_starts_from_its_weights_and_trains_them(pairs_file, tmp_path):
    import torch
    from safetensors.torch import load_file

    from training.trainer import build_model, main

    quiet = dict(progress=ProgressWriter(None, enabled=False))
    main(_config(pairs_file, tmp_path / "a", max_steps=4), **quiet)
    saved = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    cfg = _config(pairs_file, tmp_path / "b", max_steps=2,
                  from_adapter=str(tmp_path / "a" / "adapter"))
    model, _, _ = build_model(cfg, torch.device("cpu"))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == len(saved)
    for key, value in saved.items():  # saved keys drop the adapter name ("default")
        match = [p for n, p in trainable.items() if n.replace(".default", "") == key]
        assert len(match) == 1 and torch.equal(match[0].detach(), value)
    main(cfg, **quiet)
    after = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert after.keys() == saved.keys()
    assert any(not torch.equal(after[k], saved[k]) for k in saved)


def test_lora_scope_text_leaves_the_vision_tower_alone(pairs_file, tmp_path):
    import torch

    from training.trainer import build_model

    model, _, _ = build_model(_config(pairs_file, tmp_path / "x", lora_scope="text"),
                              torch.device("cpu"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and not any("vision_model" in n for n in names)
    assert any("gated_cross_attn_layers" in n for n in names)
    model, _, _ = build_model(_config(pairs_file, tmp_path / "y"), torch.device("cpu"))
    assert any("vision_model" in n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.slow
def test_interrupt_leaves_nothing_half_written(pairs_file, tmp_path, monkeypatch):
    from training import trainer

    class Interrupting(ProgressWriter):
        def step(self, step, *a, **k):
            if step == 2:
                raise KeyboardInterrupt
            return super().step(step, *a, **k)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        trainer.main(_config(pairs_file, out, max_steps=5),
                     progress=Interrupting(None, enabled=False))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_out_dir_that_is_not_empty_is_refused(pairs_file, tmp_path):
    from training.trainer import TrainingError, main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(TrainingError, match="not empty"):
        main(_config(pairs_file, tmp_path / "run"), progress=ProgressWriter(None, enabled=False))
    assert (tmp_path / "run" / "keep.txt").read_text() == "x"


def test_subprocess_bad_pairs_is_one_line_and_an_error_event(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = subprocess.run(
        [sys.executable, "-m", "training", "--pairs", str(bad), "--out-dir",
         str(tmp_path / "o"), "--model", TINY, "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:1: not JSON")
    events = [e for e in map(parse_progress_line, r.stdout.splitlines()) if e]
    assert events[-1]["event"] == "error" and not (tmp_path / "o").exists()


def test_import_training_is_light():
    code = ("import sys, training, training.runs, training.config;"
            "bad=[m for m in ('torch','transformers','peft','textual') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_checkpoint(pairs_file, tmp_path):
    import io

    from training import trainer

    class InterruptAt5(ProgressWriter):
        def step(self, step, *a, **k):
            if step == 5:
                raise KeyboardInterrupt
            return super().step(step, *a, **k)

    out = tmp_path / "run"
    cfg = _config(pairs_file, out, max_steps=6, checkpoint_every=2)
    buf = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        trainer.main(cfg, progress=InterruptAt5(None, stream=buf))
    ckpt = trainer.checkpoint_dir(cfg)
    assert not out.exists() and (ckpt / "state.pt").is_file()
    last = [e for e in map(parse_progress_line, buf.getvalue().splitlines()) if e][-1]
    assert last["event"] == "interrupted" and "--resume" in last["message"]

    buf = io.StringIO()
    resumed = _config(pairs_file, out, max_steps=6, checkpoint_every=2, resume=True)
    metrics = trainer.main(resumed, progress=ProgressWriter(None, stream=buf))
    steps = [e["step"] for e in map(parse_progress_line, buf.getvalue().splitlines())
             if e and e["event"] == "step"]
    assert steps == [5, 6]  # the checkpoint was at step 4; nothing before it is redone
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == 4
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not ckpt.exists()  # a finished run leaves no checkpoint behind


def test_resume_without_checkpoint_is_one_line(pairs_file, tmp_path):
    from training.trainer import TrainingError, main

    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        main(_config(pairs_file, tmp_path / "never", resume=True),
             progress=ProgressWriter(None, enabled=False))


def test_collator_caption_pairs_use_the_caption_prompt(pairs_file, tiny_processor):
    from dataclasses import replace

    from sportvlm_tui.export import read_pairs
    from sportvlm_tui.prompts import CAPTION_QUESTION, END_OF_ANSWER
    from training.collator import AnswerOnlyCollator, training_prompt
    from training.data import PairDataset

    label_pair = read_pairs(pairs_file)[0]
    caption = replace(label_pair, task="caption", answer="An archer draws a bow.")
    im, _ = PairDataset([label_pair])[0]
    assert training_prompt("caption", im, caption.answer)[-1] == (
        f"{CAPTION_QUESTION} An archer draws a bow.{END_OF_ANSWER}")
    batch = AnswerOnlyCollator(tiny_processor)([(im, caption), (im, label_pair)])
    tok = tiny_processor.tokenizer
    kept = batch["labels"][0][batch["labels"][0] != -100]
    assert tok.decode(kept).replace(" ", "") == ("An archer draws a bow." + END_OF_ANSWER
                                                 ).replace(" ", "")
