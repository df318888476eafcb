"""Batched prediction with builtin:tiny on CPU: decoding, rank classification, resume, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from sportvlm_tui.cli import main
from sportvlm_tui.prompts import FewShotExample, build_prompt, load_examples
from sportvlm_tui.storage import connect
from sportvlm_tui.storage.images import ImageRecord, add_images
from sportvlm_tui.storage.predictions import list_predictions

LABELS = ["air hockey", "tennis", "tug of war", "bobsled", "figure skating women"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny model's matmuls are too small to split; threads only contend (2-core CI)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _make_images(folder: Path, n: int, *, split: str = "valid", seed: int = 0) -> list[ImageRecord]:
    """Small random-colour JPEGs with labels (different sizes: the processor resizes)."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = folder / f"{split}_{i:03d}.jpg"
        size = (rng.randrange(40, 90), rng.randrange(40, 90))
        img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        # A stripe, so that images differ in more than their mean colour.
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (0, 0, size[0] // 2, size[1] // 3))
        img.save(path, quality=90)
        data = path.read_bytes()
        records.append(ImageRecord(
            sha256=hashlib.sha256(data).hexdigest(), root=str(folder), rel_path=path.name,
            split=split, label=LABELS[i % len(LABELS)], width=size[0], height=size[1],
            mode="RGB", bytes=len(data),
        ))
    return records


@pytest.fixture
def image_db(tmp_path):
    db = connect(tmp_path / "p.db")
    add_images(db, _make_images(tmp_path / "imgs", 11))
    add_images(db, _make_images(tmp_path / "imgs", 6, split="train", seed=1))
    return db


@pytest.fixture
def caption_examples(tmp_path) -> list[FewShotExample]:
    """The repo's few-shot captions when present, else a local fixture in the same format."""
    sample = Path(__file__).resolve().parents[1] / "sample_data" / "fewshot_captions.jsonl"
    if sample.is_file():
        return load_examples(sample)
    recs = _make_images(tmp_path / "ex", 2, split="train", seed=7)
    lines = [json.dumps({"image": r.rel_path, "caption": f"A photo number {i}."})
             for i, r in enumerate(recs)]
    (tmp_path / "ex" / "fewshot.jsonl").write_text("\n".join(lines))
    return load_examples(tmp_path / "ex" / "fewshot.jsonl")


def _rows(db, task="label", mode="zero-shot"):
    return {p.image_id: p for p in list_predictions(db, task=task, mode=mode)}


# -- decoding ---------------------------------------------------------------------------------


def test_greedy_decoding_matches_transformers_generate(tiny_loaded, image_db):
    """Our cached decode loop gives the tokens model.generate gives (one image, greedy)."""
    import torch

    from sportvlm_tui.model.generation import Runner
    from sportvlm_tui.model.predict import PromptEncoder
    from sportvlm_tui.storage.images import list_images

    runner = Runner(tiny_loaded.model, tiny_loaded.tokenizer, tiny_loaded.device)
    enc_ = PromptEncoder(tiny_loaded.processor)
    for im in list_images(image_db, split="valid")[:3]:
        prompt = build_prompt("caption", im.path)
        from PIL import Image

        inputs = tiny_loaded.processor(text=[[Image.open(im.path), prompt[1]]],
                                       return_tensors="pt")
        enc = enc_.encode([prompt])
        # The cached template encoding is what the processor gives for the whole prompt.
        for key in ("input_ids", "attention_mask", "image_attention_mask"):
            assert torch.equal(getattr(enc, key), inputs[key].to(getattr(enc, key).dtype))
        px = enc_.pixels(im.path)
        assert torch.allclose(px, inputs["pixel_values"][0])
        # The fast path (uint8 in loader threads, normalised batched on the device) agrees.
        fast = enc_.normalize(enc_.raw_pixels(im.path), "cpu", torch.float32)
        assert torch.allclose(fast, px, atol=1e-5)
        feats = runner.image_features(px)
        # Through the per-batch cross-attention table, as predict_images runs it.
        with runner.image_table(feats, 1):
            first, cache = runner.prefill(enc, feats)
            ours = runner.greedy(enc, feats, first, cache, max_new_tokens=12)
        ref = tiny_loaded.model.generate(
            **inputs, max_new_tokens=12, do_sample=False,
            bad_words_ids=[[i] for i in runner.ids.banned], eos_token_id=runner.ids.stop,
            pad_token_id=runner.ids.pad,
        )[0, inputs["input_ids"].shape[1]:].tolist()
        ref = [t for t in ref if t != runner.ids.pad]
        if ref and ref[-1] in runner.ids.stop:
            ref = ref[:-1]
        assert ours.token_ids[0] == ref


def test_rank_scores_equal_a_full_forward_per_label(tiny_loaded, image_db):
    """Cached scoring = log P(label tokens, then an end token) from a plain uncached forward."""
    import torch
    import torch.nn.functional as F

    from sportvlm_tui.model.generation import Runner, _cache_kv
    from sportvlm_tui.model.predict import PromptEncoder
    from sportvlm_tui.storage.images import list_images

    runner = Runner(tiny_loaded.model, tiny_loaded.tokenizer, tiny_loaded.device)
    encoder = PromptEncoder(tiny_loaded.processor)
    ims = list_images(image_db, split="valid")[:2]
    enc = encoder.encode([build_prompt("label", None)] * 2)
    feats = runner.image_features(torch.cat([encoder.pixels(im.path) for im in ims]))
    with runner.image_table(feats, 1):
        first, cache = runner.prefill(enc, feats)
        scores = runner.score_labels(enc, feats, first, _cache_kv(cache), LABELS, max_rows=3)
    tok = runner.label_tokens("label", tuple(LABELS))
    key = next(iter(feats))
    for b in range(2):
        brute = {}
        for label, toks in zip(LABELS, tok, strict=True):
            ids = torch.cat([enc.input_ids[b], torch.tensor(toks)])[None]
            img = enc.image_attention_mask[b : b + 1]
            img = torch.cat([img, img[:, -1:].expand(-1, len(toks), -1)], dim=1)
            with torch.no_grad():
                out = runner.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                   image_attention_mask=img, **{key: feats[key][b : b + 1]})
            lp = F.log_softmax(out.logits[0].float(), -1)
            n = enc.input_ids.shape[1]
            total = sum(lp[n - 1 + j, t].item() for j, t in enumerate(toks))
            total += torch.logsumexp(lp[-1, runner.ids.stop], 0).item()
            brute[label] = total
        z = math.log(sum(math.exp(v) for v in brute.values()))
        for label in LABELS:
            assert scores[b].probs[label] == pytest.approx(math.exp(brute[label] - z), abs=1e-4)
        assert scores[b].exact


def test_pruned_candidates_never_overstate_the_scored_labels(tiny_loaded, image_db):
    import torch

    from sportvlm_tui.model.generation import Runner, _cache_kv
    from sportvlm_tui.model.predict import PromptEncoder
    from sportvlm_tui.storage.images import list_images

    runner = Runner(tiny_loaded.model, tiny_loaded.tokenizer, tiny_loaded.device)
    encoder = PromptEncoder(tiny_loaded.processor)
    ims = list_images(image_db, split="valid")[:3]
    enc = encoder.encode([build_prompt("label", None)] * 3)
    feats = runner.image_features(torch.cat([encoder.pixels(im.path) for im in ims]))
    first, cache = runner.prefill(enc, feats)
    kv = _cache_kv(cache)
    full = runner.score_labels(enc, feats, first, kv, LABELS)
    runner.certify_top = 2
    pruned = runner.score_labels(enc, feats, first, kv, LABELS, candidates=1, max_rounds=9)
    for f, p in zip(full, pruned, strict=True):
        # The best two are exact, in the exact order; probabilities never overstated.
        assert [lab for lab, _ in p.ranked[:2]] == [lab for lab, _ in f.ranked[:2]]
        for label, prob in p.ranked[:2]:
            assert prob <= f.probs[label] + 1e-6
        assert p.exact and sum(p.probs.values()) <= 1 + 1e-6


# -- the prediction run -----------------------------------------------------------------------


def test_batched_predictions_equal_one_by_one(tiny_loaded, image_db, tmp_path):
    from sportvlm_tui.model.predict import predict_images

    predict_images(image_db, tiny_loaded, task="label", split="valid", batch_size=4)
    batched = _rows(image_db)
    single_db = connect(tmp_path / "single.db")
    add_images(single_db, _make_images(tmp_path / "imgs", 11))
    predict_images(single_db, tiny_loaded, task="label", split="valid", batch_size=1)
    single = {p.image_id: p for p in list_predictions(single_db, task="label")}
    assert len(batched) == len(single) == 11
    for iid, p in batched.items():
        q = single[iid]
        assert (p.raw, p.text) == (q.raw, q.text)
        assert p.confidence == pytest.approx(q.confidence, abs=1e-4)
        assert [a for a, _ in p.topk[:3]] == [a for a, _ in q.topk[:3]]
    # The model's answer depends on the image (else this test would prove nothing).
    assert len({p.raw for p in batched.values()}) > 1


def test_left_padding_gives_the_same_tokens_as_unpadded(tiny_loaded, image_db):
    """Prompts of different lengths in one batch decode as they do alone."""
    import torch

    from sportvlm_tui.model.generation import Runner
    from sportvlm_tui.model.predict import PromptEncoder
    from sportvlm_tui.storage.images import list_images

    runner = Runner(tiny_loaded.model, tiny_loaded.tokenizer, tiny_loaded.device)
    encoder = PromptEncoder(tiny_loaded.processor)
    ims = list_images(image_db, split="valid")[:2]
    prompts = [build_prompt("label", None), build_prompt("caption", None)]
    prompts[1][1] = "Question: Which sport, and who is winning in this photo?\nAnswer:"
    px = torch.cat([encoder.pixels(im.path) for im in ims])
    enc = encoder.encode(prompts)
    assert (enc.attention_mask[0] == 0).any()  # the shorter one is padded on the left
    feats = runner.image_features(px)
    first, cache = runner.prefill(enc, feats)
    both = runner.greedy(enc, feats, first, cache, 10)
    for i in range(2):
        e = encoder.encode([prompts[i]])
        f = runner.image_features(px[i : i + 1])
        fi, ci = runner.prefill(e, f)
        assert runner.greedy(e, f, fi, ci, 10).token_ids[0] == both.token_ids[i]


def test_topk_is_a_sorted_distribution_consistent_with_confidence(tiny_loaded, image_db):
    from sportvlm_tui.model.predict import predict_images

    predict_images(image_db, tiny_loaded, task="label", split="valid", topk=5,
                   constrain_labels=True)
    rows = _rows(image_db)
    assert rows
    for p in rows.values():
        probs = [q for _, q in p.topk]
        assert len(p.topk) == 5 and sum(probs) <= 1 + 1e-6
        assert probs == sorted(probs, reverse=True)
        assert {a for a, _ in p.topk} <= set(LABELS)
        # Constrained: the answer is the best label and its confidence is its probability.
        assert p.text == p.topk[0][0] and p.confidence == pytest.approx(p.topk[0][1])


def test_free_answers_keep_raw_output_and_parse_it(tiny_loaded, image_db):
    from sportvlm_tui.model.predict import predict_images
    from sportvlm_tui.prompts import parse_label

    summary = predict_images(image_db, tiny_loaded, task="label", split="valid")
    assert summary.predicted == 11 and summary.labelled == 11
    for p in _rows(image_db).values():
        assert p.text == parse_label(p.raw)
        top = dict(p.topk)
        # Confidence is the answer's probability among the labels (0 if not a label).
        assert p.confidence == pytest.approx(top.get(p.text, 0.0) if p.text in top else
                                             p.confidence)
        if p.text not in LABELS:
            assert p.confidence == 0.0
    assert summary.correct == sum(p.text == lab for p, lab in _with_labels(image_db))


def _with_labels(db):
    labels = {r["id"]: r["label"] for r in db.query("SELECT id, label FROM images")}
    return [(p, labels[p.image_id]) for p in list_predictions(db, task="label")]


def test_interrupted_run_resumes_without_duplicates(tiny_loaded, image_db):
    from sportvlm_tui.model.predict import predict_images

    calls = []

    def stop_after_first(progress):
        calls.append(progress)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_images(image_db, tiny_loaded, task="caption", split="valid", batch_size=4,
                       on_progress=stop_after_first)
    assert len(_rows(image_db, "caption")) == 4 == calls[0].written
    summary = predict_images(image_db, tiny_loaded, task="caption", split="valid", batch_size=4)
    assert (summary.skipped, summary.predicted) == (4, 7)
    rows = list_predictions(image_db, task="caption")
    assert len(rows) == len({p.image_id for p in rows}) == 11
    assert all(p.confidence is not None and 0 < p.confidence <= 1 for p in rows)
    again = predict_images(image_db, tiny_loaded, task="caption", split="valid")
    assert again.predicted == 0 and again.skipped == 11


def test_few_shot_captions_use_examples(tiny_loaded, image_db, caption_examples):
    from sportvlm_tui.model.predict import predict_images

    few = predict_images(image_db, tiny_loaded, task="caption", mode="few-shot", split="valid",
                         examples=caption_examples, batch_size=4, max_new_tokens=8, limit=6)
    zero = predict_images(image_db, tiny_loaded, task="caption", split="valid", batch_size=4,
                          max_new_tokens=8, limit=6)
    assert few.predicted == zero.predicted == 6
    few_rows, zero_rows = _rows(image_db, "caption", "few-shot"), _rows(image_db, "caption")
    # Same images, different context: the examples reach the model.
    assert {i: p.raw for i, p in few_rows.items()} != {i: p.raw for i, p in zero_rows.items()}


def test_few_shot_batched_equals_one_by_one(tiny_loaded, image_db, caption_examples, tmp_path):
    from sportvlm_tui.model.predict import predict_images

    predict_images(image_db, tiny_loaded, task="caption", mode="few-shot", split="valid",
                   examples=caption_examples, batch_size=5, limit=5, max_new_tokens=8)
    other = connect(tmp_path / "o.db")
    add_images(other, _make_images(tmp_path / "imgs", 11))
    predict_images(other, tiny_loaded, task="caption", mode="few-shot", split="valid",
                   examples=caption_examples, batch_size=1, limit=5, max_new_tokens=8)
    a = _rows(image_db, "caption", "few-shot")
    b = {p.image_id: p for p in list_predictions(other, task="caption", mode="few-shot")}
    assert len(a) == 5 and {i: p.raw for i, p in a.items()} == {i: p.raw for i, p in b.items()}


def test_loader_batch_buffer_holds_each_images_pixels_in_order(tiny_loaded, image_db):
    """The loader decodes straight into one batch buffer; a bad file drops only its own row."""
    import torch

    from sportvlm_tui.model.predict import PixelLoader, PromptEncoder
    from sportvlm_tui.storage.images import list_images

    encoder = PromptEncoder(tiny_loaded.processor)
    images = list_images(image_db, split="valid")
    images[1].path.write_bytes(b"not a jpeg")
    got = list(PixelLoader(encoder, [images[:4], images[4:7]], workers=3, prefetch=1))
    assert [len(ok) for ok, _, _ in got] == [3, 3]
    assert [im.id for im, _ in got[0][2]] == [images[1].id] and got[1][2] == []
    for ok, pixels, _ in got:
        want = torch.cat([encoder.raw_pixels(im.path) for im in ok])
        assert pixels.dtype == torch.uint8 and torch.equal(pixels, want)
    assert [im.id for im in got[0][0]] == [images[i].id for i in (0, 2, 3)]


def test_unreadable_image_is_reported_and_the_rest_goes_on(tiny_loaded, image_db, tmp_path):
    from sportvlm_tui.model.predict import predict_images
    from sportvlm_tui.storage.images import list_images

    victim = list_images(image_db, split="valid")[2]
    victim.path.write_bytes(b"not a jpeg")
    summary = predict_images(image_db, tiny_loaded, task="label", split="valid", batch_size=4)
    assert summary.predicted == 10
    assert [i for i, _ in summary.failed] == [victim.id]
    assert str(victim.path) in summary.failed[0][1]
    assert victim.id not in _rows(image_db)


# -- the command ------------------------------------------------------------------------------


def _cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_cli_predict_json_and_correct_count(tiny_loaded, image_db, tmp_path):
    db_file = str(tmp_path / "p.db")
    res = _cli("predict", "--model", "builtin:tiny", "--split", "valid", "--db", db_file,
               "--batch-size", "4", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["predicted"] == 11 and out["labelled"] == 11
    assert out["correct"] == sum(p.text == lab for p, lab in _with_labels(connect(db_file)))
    res = _cli("predict", "--model", "builtin:tiny", "--split", "valid", "--db", db_file,
               "--task", "label")
    assert res.exit_code == 0
    assert f"{out['correct']} / 11 correct" in res.stdout


def test_cli_missing_model_offline_is_one_line(image_db, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # The hub library reads HF_HUB_OFFLINE when first imported (earlier, in this process).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    res = CliRunner().invoke(
        main,
        ["predict", "--model", "nobody/no-such-idefics", "--db", str(tmp_path / "p.db"),
         "--quant", "fp32"],
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert res.exit_code == 1
    err = res.stderr.strip()
    assert err.startswith("error: --model nobody/no-such-idefics") and "\n" not in err
    assert "Traceback" not in res.output + res.stderr and "--model /path/" in err


# -- real images ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_valid_split_with_tiny(real_100sic, tmp_path):
    """All 500 real valid images: 500 label rows, each with a confidence and top-5.
    (~2 s on an idle 2-core CPU; it took 60 s before the tiny model ran on one thread.)"""
    db_file = tmp_path / "real.db"
    res = _cli("ingest", str(real_100sic), "--split", "valid", "--db", str(db_file))
    assert res.exit_code == 0, res.output
    res = _cli("predict", "--model", "builtin:tiny", "--split", "valid", "--db", str(db_file),
               "--batch-size", "32", "--json")
    assert res.exit_code == 0, res.output
    rows = list_predictions(connect(db_file), task="label")
    assert len(rows) == 500 == json.loads(res.stdout)["predicted"]
    assert all(p.confidence is not None and len(p.topk) == 5 for p in rows)


def test_adapter_by_registry_name_changes_answers(tmp_path, image_db, tiny_loaded):
    from peft import LoraConfig, get_peft_model

    from sportvlm_tui.errors import UserError
    from sportvlm_tui.model.loading import load_model
    from sportvlm_tui.model.predict import predict_images
    from sportvlm_tui.storage.adapters import register_adapter

    fresh = load_model("builtin:tiny", quant="fp32", device="cpu")
    # Random (non-zero) LoRA weights, on the attention projections as the tutorial's QLoRA.
    lora = get_peft_model(fresh.model, LoraConfig(r=4, target_modules=["q_proj", "k_proj",
                                                                       "v_proj"],
                                                  init_lora_weights=False))
    lora.save_pretrained(tmp_path / "lora1")
    register_adapter(image_db, name="lora1", path=str(tmp_path / "lora1"))
    tuned = load_model("builtin:tiny", quant="fp32", device="cpu", adapter="lora1", db=image_db)
    assert tuned.adapter_name == "lora1"
    predict_images(image_db, tuned, task="caption", split="valid", max_new_tokens=6)
    predict_images(image_db, tiny_loaded, task="caption", split="valid", max_new_tokens=6)
    with_adapter = {p.image_id: p.raw for p in list_predictions(image_db, adapter="lora1")}
    base = {p.image_id: p.raw for p in list_predictions(image_db, task="caption", adapter="")}
    assert len(with_adapter) == len(base) == 11 and with_adapter != base
    with pytest.raises(UserError, match="--adapter nope"):
        load_model("builtin:tiny", quant="fp32", device="cpu", adapter="nope", db=image_db)


def test_predict_help_imports_no_torch():
    """`sportvlm predict --help` (and the CLI at large) stays light: torch loads on demand."""
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from sportvlm_tui.cli import main;"
            " r = CliRunner().invoke(main, ['predict', '--help']); assert r.exit_code == 0;"
            " print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
