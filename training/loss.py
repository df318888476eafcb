"""The causal-LM loss, computed from the logits.

IDEFICS in transformers 5.x crashes when given `labels=` while `additional_vocab_size > 0`
(the logits are vocab + extra wide, its loss reshapes to vocab), so the trainer never passes
labels to the model and computes the loss here over the full logit width.
"""

from __future__ import annotations

IGNORE_INDEX = -100


def causal_lm_loss(logits, labels):
    """Mean next-token cross-entropy over positions whose label is not IGNORE_INDEX."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:].to(shift_logits.device)
    return F.cross_entropy(
        shift_logits.reshape(-1, logits.size(-1)).float(),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
