"""The one prompt builder: shared by prediction, export and training. No torch here.

A prompt is a list of parts, each an image (anything the processor takes: a PIL image or a
path) or a string, the form `IdeficsProcessor(text=[prompt, ...])` expects in transformers 5.x.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABEL_QUESTION = "Question: What sport is in this image?\nAnswer:"
CAPTION_QUESTION = "Question: What is a caption for this photo?\nAnswer:"
QUESTIONS = {"label": LABEL_QUESTION, "caption": CAPTION_QUESTION}
# Ends an answer in training data, and stops generation (the model learns to emit it).
END_OF_ANSWER = "<end_of_utterance>"


@dataclass(frozen=True)
class FewShotExample:
    image: Any  # path or PIL image
    caption: str


def question(task: str) -> str:
    try:
        return QUESTIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(QUESTIONS)}") from None


def build_prompt(task: str, image: Any, examples: list[FewShotExample] | None = None) -> list:
    """`[ex_img, ex_q + ex_answer, ..., image, question]` for the task (few-shot if examples)."""
    parts: list = []
    for ex in examples or []:
        parts += [ex.image, f"{question(task)} {ex.caption.strip()}{END_OF_ANSWER}\n"]
    parts += [image, question(task)]
    return parts


def answer_text(answer: str) -> str:
    """The training target after the prompt: a leading space, the answer, end of answer."""
    return f" {answer.strip()}{END_OF_ANSWER}"


_TRAILING = re.compile(r"[\s\.\,\!\?\;\:\"']+$")
_LEADING = re.compile(r"^[\s\"']+")


def parse_label(raw: str) -> str:
    """The tutorial's rule: the answer stripped to the guessed sport, for exact match.

    First line of the output, cut at the next "Question:" or end-of-answer marker, without
    surrounding quotes or trailing punctuation, lower-cased (100SIC labels are lower case).
    """
    text = raw.split(END_OF_ANSWER, 1)[0]
    text = text.split("Question:", 1)[0]
    text = text.strip().split("\n", 1)[0]
    text = _TRAILING.sub("", _LEADING.sub("", text))
    return text.lower()


def parse_caption(raw: str) -> str:
    """A caption: the text up to the end-of-answer marker or the next question, trimmed."""
    text = raw.split(END_OF_ANSWER, 1)[0].split("Question:", 1)[0]
    return " ".join(text.split())


def load_examples(path: str | Path) -> list[FewShotExample]:
    """Few-shot examples from JSONL lines `{"image": path, "caption": text}`; image paths are
    relative to the file. Raises ValueError naming the file and line on bad input."""
    path = Path(path)
    out: list[FewShotExample] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            image, caption = obj["image"], obj["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            msg = f"{path}:{n}: expected {{'image': ..., 'caption': ...}} ({exc})"
            raise ValueError(msg) from None
        img = Path(image)
        if not img.is_absolute():
            img = path.parent / img
        if not img.is_file():
            raise ValueError(f"{path}:{n}: example image not found: {img}")
        out.append(FewShotExample(image=img, caption=str(caption)))
    return out
