"""Batches for training: prompt + answer through the IDEFICS processor, loss on the answer only.

Labels are the input ids with everything but the answer set to IGNORE_INDEX: padding, the
prompt text, `<image>` and `<fake_token_around_image>`. The prompt comes from
`sportvlm_tui.prompts.build_prompt`, the same builder prediction uses, so the model is trained
on exactly what it is asked at prediction time.
"""

from __future__ import annotations

from sportvlm_tui.prompts import answer_text, build_prompt

from .loss import IGNORE_INDEX

IMAGE_SPECIAL_TOKENS = ("<image>", "<fake_token_around_image>")


def training_prompt(task: str, image, answer: str | None) -> list:
    """The prediction prompt, with the answer appended to its last text part.

    The processor strips each text part and would put an end-of-utterance token between two
    adjacent ones, so the answer must be part of the question's string, not its own part.
    """
    parts = build_prompt(task, image)
    if answer is not None:
        parts[-1] = parts[-1] + answer_text(answer)
    return parts


class AnswerOnlyCollator:
    """Turns a list of (image, pair) into model inputs plus answer-only `labels`."""

    def __init__(self, processor) -> None:
        self.processor = processor
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id
        self.masked_ids = [tok.convert_tokens_to_ids(t) for t in IMAGE_SPECIAL_TOKENS]
        self._prompt_ids: dict[str, list[int]] = {}

    def _prompt_token_ids(self, task: str, image) -> list[int]:
        # Zero-shot prompts are the same text for every image of a task: tokenise once.
        if task not in self._prompt_ids:
            enc = self.processor(text=[training_prompt(task, image, None)], padding=False,
                                 return_tensors="pt")
            self._prompt_ids[task] = enc["input_ids"][0].tolist()
        return self._prompt_ids[task]

    def __call__(self, batch: list) -> dict:
        import torch

        prompts = [training_prompt(p.task, im, p.answer) for im, p in batch]
        tok = self.processor.tokenizer
        side = tok.padding_side
        tok.padding_side = "right"  # answer positions then start at the same offset
        try:
            enc = self.processor(text=prompts, padding="longest", return_tensors="pt")
        finally:
            tok.padding_side = side
        input_ids = enc["input_ids"]
        labels = input_ids.clone()
        labels[enc["attention_mask"] == 0] = IGNORE_INDEX
        for row, (im, p) in enumerate(batch):
            prefix = self._prompt_token_ids(p.task, im)
            ids = input_ids[row, : len(prefix)].tolist()
            # The answer's first token could merge with the prompt's last: mask the common
            # prefix, which is provably prompt.
            n = 0
            while n < len(ids) and ids[n] == prefix[n]:
                n += 1
            labels[row, :n] = IGNORE_INDEX
        for tid in self.masked_ids:
            labels[input_ids == tid] = IGNORE_INDEX
        if self.pad_id is not None:
            labels[(input_ids == self.pad_id) & (enc["attention_mask"] == 0)] = IGNORE_INDEX
        out = dict(enc)
        out["labels"] = labels
        out["n_answer_tokens"] = torch.tensor(int((labels != IGNORE_INDEX).sum()))
        return out
