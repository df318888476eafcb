"""Batched greedy generation and rank classification for IDEFICS, sharing one prompt pass.

Why not `model.generate`: with `use_resampler` (idefics-9b) generate re-runs the perceiver
resampler at every step, and rank classification needs the prompt's key/value cache, which
generate does not hand back. Here the prompt is run once per batch (vision tower and resampler
included), and both greedy decoding and label scoring continue from that cache.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..prompts import END_OF_ANSWER, answer_text, question

IMAGE_TOKENS = ("<image>", "<fake_token_around_image>")


def core_model(model):
    """The IdeficsForVisionText2Text inside a PeftModel (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class Encoded:
    """Model inputs for a batch; image features are computed later, once per batch."""

    input_ids: torch.Tensor  # (B, L), left padded
    attention_mask: torch.Tensor  # (B, L)
    image_attention_mask: torch.Tensor  # (B, L, N)


@dataclass
class GenerationResult:
    token_ids: list[list[int]]  # generated tokens, stop token excluded
    texts: list[str]
    logprobs: list[list[float]]  # log-prob of each generated token (stop token included)
    stopped: list[bool]  # ended on a stop token (not on max_new_tokens)


@dataclass
class LabelScores:
    """Rank classification over a label vocabulary for one image."""

    probs: dict[str, float]  # label -> probability (over the vocabulary)
    exact: bool  # every label scored exactly (False: some at their first-token upper bound)
    ranked: list[tuple[str, float]] = field(default_factory=list)


class SpecialIds:
    """Token ids the decoding needs: what to ban and where to stop."""

    def __init__(self, tokenizer):
        vocab = tokenizer.get_vocab()
        self.banned = [vocab[t] for t in IMAGE_TOKENS if t in vocab]
        self.end_of_utterance = vocab.get(END_OF_ANSWER)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Every token that starts or is a line break ends an answer (LLaMA's <0x0A>, "\n").
        newline = {i for t, i in vocab.items() if t in ("\n", "<0x0A>", "Ċ", "▁\n")}
        newline |= set(tokenizer.encode("\n", add_special_tokens=False)[-1:])
        self.newline = sorted(newline)
        ends = {self.eos, self.end_of_utterance, *self.newline}
        self.stop = sorted(i for i in ends if i is not None)


def _cache_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # older transformers


def _fresh_cache(kv: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


@lru_cache(maxsize=8)
def _cache_kwarg(cls) -> str:
    # transformers renamed past_key_values -> cache (5.2x); the GPU box may run an older one.
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


@lru_cache(maxsize=8)
def _perceiver_wants_4d(cls) -> bool:
    # transformers <= 5.1x unpacks (batch, images, latents, dim); later ones take it flattened.
    try:
        return "= perceiver_embeddings.size()" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def _table_forward(runner, orig, table):
    def forward(x):
        t = table if runner.table_rows is None else table[runner.table_rows]
        # Anything but the batch's own image states (other callers) goes the normal way.
        return t if t.shape[:-1] == x.shape[:-1] else orig(x)

    return forward


def _out_cache(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else (
        out.past_key_values
    )


class Runner:
    """Runs one model on batches: image features once, prompt once, then decode / score."""

    def __init__(self, model, tokenizer, device):
        self.model = core_model(model)
        self.tokenizer = tokenizer
        self.device = device
        self.ids = SpecialIds(tokenizer)
        self.cache_kw = _cache_kwarg(type(self.model))
        self.perceiver_4d = _perceiver_wants_4d(type(self.model.model))
        # The vision tower is never quantised: its dtype is the one pixels must have.
        self.dtype = self.model.model.vision_model.embeddings.patch_embedding.weight.dtype
        self._label_tokens: dict[tuple[str, tuple[str, ...]], list[list[int]]] = {}
        # With pruned scoring, how many of the best labels must be exact (the stored top-k).
        self.certify_top = 5
        self.table_rows: torch.Tensor | None = None  # see image_table

    # -- cross-attention keys/values, once per batch ----------------------------------------
    def _projections(self):
        layers = getattr(self.model.model, "gated_cross_attn_layers", None) or []
        return [getattr(layer.cross_attn, name) for layer in layers for name in ("k_proj",
                                                                                  "v_proj")]

    @contextlib.contextmanager
    def image_table(self, feats: dict[str, torch.Tensor], n_img: int):
        """Within this block, cross-attention key/value projections of the batch's image
        features are computed once and looked up (rows selected by `self.table_rows`), instead
        of being recomputed at every decoding step and for every scored label.
        (IDEFICS' cross-attention has no cache of its own.)"""
        ((_, flat),) = feats.items()
        states = flat.reshape(-1, n_img * flat.shape[1], flat.shape[2])  # (B, N*S, D)
        projs = self._projections()
        with torch.inference_mode():
            for proj in projs:
                orig = proj.__dict__.get("_sportvlm_forward") or proj.forward
                proj.__dict__["_sportvlm_forward"] = orig
                table = orig(states)
                proj.forward = _table_forward(self, orig, table)
        try:
            yield
        finally:
            for proj in projs:
                proj.forward = proj.__dict__["_sportvlm_forward"]
            self.table_rows = None

    # -- image features ---------------------------------------------------------------------
    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Vision tower (and resampler) over (K, 3, H, W) -> the forward kwarg and (K, S, D)."""
        inner = self.model.model
        pixel_values = pixel_values.to(self.device, self.dtype, non_blocking=True)
        hidden = inner.vision_model(pixel_values=pixel_values).last_hidden_state
        if inner.config.use_resampler:
            return {"perceiver_embeddings": inner.perceiver_resampler(hidden)}
        return {"image_encoder_embeddings": hidden}

    def _forward(self, input_ids, attention_mask, image_attention_mask, feats, cache,
                 last_only=True):
        kwargs = {self.cache_kw: cache}
        (key, flat), = feats.items()  # (B*N, S, D)
        if key == "image_encoder_embeddings" or self.perceiver_4d:
            n_img = image_attention_mask.shape[-1]
            feats = {key: flat.view(-1, n_img, *flat.shape[1:])}
        if last_only:
            kwargs["logits_to_keep"] = 1
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_attention_mask=image_attention_mask,
            use_cache=True,
            **feats,
            **kwargs,
        )

    # -- the prompt pass ----------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, enc: Encoded, feats: dict[str, torch.Tensor]):
        """Run the prompt; returns (last-position log-probs (B, V), cache)."""
        out = self._forward(
            enc.input_ids.to(self.device),
            enc.attention_mask.to(self.device),
            enc.image_attention_mask.to(self.device),
            feats,
            None,
        )
        logits = out.logits[:, -1, :].float()
        return F.log_softmax(logits, dim=-1), _out_cache(out)

    # -- greedy decoding ----------------------------------------------------------------------
    @torch.inference_mode()
    def greedy(self, enc: Encoded, feats, first_logprobs, cache, max_new_tokens: int,
               stop_on_newline: bool = True) -> GenerationResult:
        """Greedy decoding from the prompt cache; image tokens are banned, stops per sequence."""
        dev = self.device
        bsz = enc.input_ids.shape[0]
        attn = enc.attention_mask.to(dev)
        img_row = enc.image_attention_mask[:, -1:, :].to(dev)
        stop = torch.tensor(
            self.ids.stop if stop_on_newline else
            [i for i in self.ids.stop if i not in self.ids.newline], device=dev)
        banned = torch.tensor(self.ids.banned, device=dev, dtype=torch.long)
        finished = torch.zeros(bsz, dtype=torch.bool, device=dev)
        tokens, logps = [], []
        logprobs = first_logprobs
        for step in range(max_new_tokens):
            masked = logprobs.index_fill(1, banned, -math.inf) if len(banned) else logprobs
            nxt = masked.argmax(dim=-1)
            nxt = torch.where(finished, torch.full_like(nxt, self.ids.pad), nxt)
            tokens.append(nxt)
            logps.append(logprobs.gather(1, nxt[:, None])[:, 0])
            finished = finished | torch.isin(nxt, stop)
            # One sync per step to end early: labels usually stop after a few tokens.
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            attn = torch.cat([attn, attn.new_ones(bsz, 1)], dim=1)
            out = self._forward(nxt[:, None], attn, img_row, feats, cache)
            cache = _out_cache(out)
            logprobs = F.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        toks = torch.stack(tokens, dim=1).tolist()
        lps = torch.stack(logps, dim=1).tolist()
        stops = set(stop.tolist())
        ids_out, lp_out, stopped = [], [], []
        for row, lp in zip(toks, lps, strict=True):
            keep, kept_lp, hit = [], [], False
            for t, p in zip(row, lp, strict=True):
                kept_lp.append(p)
                if t in stops:
                    hit = True
                    break
                keep.append(t)
            ids_out.append(keep)
            lp_out.append(kept_lp)
            stopped.append(hit)
        texts = self.tokenizer.batch_decode(ids_out, skip_special_tokens=True)
        return GenerationResult(ids_out, texts, lp_out, stopped)

    # -- rank classification ------------------------------------------------------------------
    def label_tokens(self, task: str, labels: tuple[str, ...]) -> list[list[int]]:
        """Each label's tokens as they follow the question in training text (answer_text)."""
        key = (task, labels)
        if key not in self._label_tokens:
            q = self.tokenizer.encode(question(task), add_special_tokens=False)
            out = []
            for label in labels:
                full = self.tokenizer.encode(question(task) + answer_text(label),
                                             add_special_tokens=False)
                n = 0
                while n < min(len(q), len(full)) and q[n] == full[n]:
                    n += 1
                toks = full[n:]
                if toks and toks[-1] == self.ids.end_of_utterance:
                    toks = toks[:-1]
                out.append(toks or [self.ids.pad])
            self._label_tokens[key] = out
        return self._label_tokens[key]

    @torch.inference_mode()
    def score_labels(self, enc: Encoded, feats, first_logprobs, prompt_kv, labels: list[str],
                     *, task: str = "label", candidates: int | None = None,
                     max_rounds: int = 2, include: list[int | None] | None = None,
                     max_rows: int = 512) -> list[LabelScores]:
        """Log-likelihood of each label after the prompt (not length-normalised), softmaxed over
        the vocabulary. A label's score is log P(tokens) + log P(answer ends right after), the
        end being <end_of_utterance>, </s> or a newline, so "hockey" does not win by being short.

        `candidates`: instead of every label, score best-first in rounds of `candidates` labels
        per image, ranked by log P(first token) (an upper bound, free from the prompt pass),
        until the best `certify_top` labels are exact (then their ranking is exact: no unscored
        label can overtake them) or `max_rounds` rounds are done. `include[i]`: a label index
        scored for image i in any case (the generated answer, so its confidence is exact).
        Unscored labels keep their bound, which only inflates the normaliser: the scored labels'
        probabilities are then lower bounds, never over-confident. Only scored labels appear in
        `probs` and `ranked`; `exact` says whether the top was certified.
        """
        if not labels:
            return []
        dev = self.device
        ltoks = self.label_tokens(task, tuple(labels))
        bsz, n_lab = first_logprobs.shape[0], len(labels)
        first = torch.tensor([t[0] for t in ltoks], device=dev)
        scores = first_logprobs[:, first].clone()  # (B, n_lab): upper bounds until scored
        lmax = max(len(t) for t in ltoks)
        tok_table = torch.full((n_lab, lmax), self.ids.pad, dtype=torch.long)
        for i, t in enumerate(ltoks):
            tok_table[i, : len(t)] = torch.tensor(t)
        tok_table = tok_table.to(dev)
        len_table = torch.tensor([len(t) for t in ltoks], device=dev)
        ends = torch.tensor(self.ids.stop, device=dev)
        attn_p = enc.attention_mask.to(dev)
        img_row = enc.image_attention_mask[:, -1:, :].to(dev)
        n_img = enc.image_attention_mask.shape[-1]
        feat_key, feat = next(iter(feats.items()))
        feat = feat.view(bsz, n_img, *feat.shape[1:])

        def exact_scores(rows_b: torch.Tensor, rows_l: torch.Tensor) -> torch.Tensor:
            """log P(label tokens + end | prompt) for (image, label) rows, chunked by length."""
            out_scores = torch.empty(rows_b.shape[0], device=dev)
            order = torch.argsort(len_table[rows_l], stable=True)  # similar lengths together
            for s in range(0, order.shape[0], max_rows):
                idx = order[s : s + max_rows]
                rb, rl = rows_b[idx], rows_l[idx]
                r, lens = rb.shape[0], len_table[rl]
                width = int(lens.max())
                toks = tok_table[rl, :width]  # right padded
                valid = torch.arange(width, device=dev)[None, :] < lens[:, None]
                attn = torch.cat([attn_p[rb], valid.to(attn_p.dtype)], dim=1)
                cache = _fresh_cache([(k[rb], v[rb]) for k, v in prompt_kv])
                self.table_rows = rb
                try:
                    out = self._forward(
                        toks, attn, img_row[rb].expand(-1, width, -1),
                        {feat_key: feat[rb].flatten(0, 1)}, cache, last_only=False,
                    )
                finally:
                    self.table_rows = None
                lp = F.log_softmax(out.logits.float(), dim=-1)  # (r, width, V)
                # Tokens 2..n are predicted at positions 1..n-1; the end after the last one.
                nxt = lp[:, :-1, :].gather(2, toks[:, 1:, None])[:, :, 0]
                nxt = torch.where(valid[:, 1:], nxt, torch.zeros_like(nxt))
                last = lp[torch.arange(r, device=dev), lens - 1]  # (r, V)
                end = torch.logsumexp(last[:, ends], dim=1)
                out_scores[idx] = first_logprobs[rb, tok_table[rl, 0]] + nxt.sum(1) + end
            return out_scores

        scored = torch.zeros(bsz, n_lab, dtype=torch.bool, device=dev)
        if candidates is None or candidates >= n_lab:
            rows_b = torch.arange(bsz, device=dev).repeat_interleave(n_lab)
            rows_l = torch.arange(n_lab, device=dev).repeat(bsz)
            scores[rows_b, rows_l] = exact_scores(rows_b, rows_l)
            scored[:] = True
        else:
            # Best-first: score the most promising labels (by upper bound) in rounds until
            # the top `certify` of every image are exact scores, i.e. no unscored label (whose
            # bound is below them) can overtake them.
            certify = min(self.certify_top, n_lab)
            forced = torch.zeros(bsz, n_lab, dtype=torch.bool, device=dev)
            for i, lab in enumerate(include or []):
                if lab is not None:
                    forced[i, lab] = True
            for _ in range(max_rounds):
                top = scores.topk(certify, dim=1).indices
                open_rows = ~scored.gather(1, top).all(dim=1) | (forced & ~scored).any(dim=1)
                if not bool(open_rows.any()):
                    break
                pending = scores.masked_fill(scored, -math.inf)
                want = torch.zeros_like(scored)
                want.scatter_(1, pending.topk(min(candidates, n_lab), dim=1).indices, True)
                want = (want | forced) & ~scored & open_rows[:, None]
                rows_b, rows_l = want.nonzero(as_tuple=True)
                scores[rows_b, rows_l] = exact_scores(rows_b, rows_l)
                scored |= want
        top = scores.topk(min(self.certify_top, n_lab), dim=1).indices
        certified = scored.gather(1, top).all(dim=1).cpu().tolist()
        probs = torch.softmax(scores, dim=1).masked_fill(~scored, -1.0).cpu().tolist()
        result = []
        for row, ok in zip(probs, certified, strict=True):
            p = {lab: q for lab, q in zip(labels, row, strict=True) if q >= 0}
            ranked = sorted(p.items(), key=lambda kv: (-kv[1], kv[0]))
            result.append(LabelScores(probs=p, exact=ok, ranked=ranked))
        return result
