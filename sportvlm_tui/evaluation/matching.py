"""Exact and lenient matching of a parsed answer against the dataset's label vocabulary.

Exact match is the tutorial's rule: the parsed answer equals the dataset label as written.

Lenient match exists only to tell *naming* errors ("bobsledding" for "bobsled", "snowboarding"
for "snow boarding", "barrel racing" for the dataset's "barell racing") from real mistakes. It
must never turn a wrong sport into a right one, so every rule is one-directional and narrow:

* case, accents, punctuation and whitespace are ignored, a leading article is dropped,
  "&" reads "and", the digits 0-10 read as words ("formula 1" = "formula one");
* the answer may add "-ing" to the label's last word (bobsled -> bobsledding, shot put ->
  shot putting, luge -> luging), never drop it (so "bowl" never names "bowling": lawn bowls is
  another sport);
* the label's last word may gain or lose a plural "s"/"es" when the label has two or more
  words or that word is at least 6 letters ("parallel bar" = "parallel bars"; but "ring" does
  not name "rings");
* one slip in one word of at least 6 letters: two adjacent letters swapped, a letter doubled or
  undoubled, a doubling moved to another letter, or a vowel added or removed ("ampute" =
  "amputee", "barell" = "barrel", "lacross" = "lacrosse"); no substitutions, so "hurling"
  never names "curling" and "pool" never names "polo".

* a short, hand-checked list of other names for 100SIC sports (SYNONYMS: "ping pong" for
  table tennis, "american football" for football, "ice hockey" for hockey...), used only
  for labels in the vocabulary.

A candidate spelling that two labels could both produce is dropped (the answer is then simply
not matched), and a label's own spelling always wins over another label's variant.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten",
}
_ARTICLES = {"a", "an", "the"}
_VOWELS = "aeiou"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# Other names of the same sport, for 100SIC labels. Each entry is the same sport under the
# dataset's rules, never a neighbour: billiards has no "pool"/"snooker", football no "soccer".
SYNONYMS: dict[str, tuple[str, ...]] = {
    "ampute football": ("amputee soccer",),
    "bobsled": ("bobsleigh",),
    "disc golf": ("frisbee golf",),
    "football": ("american football", "gridiron football"),
    "formula 1 racing": ("formula 1", "formula one", "f1", "f1 racing"),
    "gaga": ("gaga ball",),
    "hockey": ("ice hockey",),
    "log rolling": ("birling",),
    "mushing": ("dog sledding", "sled dog racing"),
    "nascar racing": ("nascar", "stock car racing"),
    "sumo wrestling": ("sumo",),
    "table tennis": ("ping pong",),
    "ultimate": ("ultimate frisbee",),
}
# Below these lengths a one-letter change too often makes another real word (polo/pool, ring).
MIN_TYPO_WORD = 6
MIN_SINGLE_WORD_PLURAL = 6


def words(text: str) -> list[str]:
    """Lower-case ASCII words of `text`: accents folded, punctuation and whitespace dropped."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("&", " and ")
    out = [_NUMBER_WORDS.get(w, w) for w in _NON_ALNUM.split(text) if w]
    while len(out) > 1 and out[0] in _ARTICLES:
        out = out[1:]
    return out


def normalise(text: str) -> str:
    """The lenient key: `words(text)` joined without spaces (so "snow boarding" equals
    "snowboarding", "weight-lifting" equals "weightlifting")."""
    return "".join(words(text))


def _ing_forms(word: str) -> set[str]:
    if word.endswith("ing") or not word.isalpha():
        return set()
    forms = {word + "ing"}
    if word.endswith("e") and not word.endswith("ee"):
        forms.add(word[:-1] + "ing")  # skate -> skating, luge -> luging
    if len(word) >= 3 and word[-1] not in _VOWELS + "wxy" and word[-2] in _VOWELS:
        forms.add(word + word[-1] + "ing")  # bobsled -> bobsledding, put -> putting
    return forms


def _plural_forms(word: str, n_words: int) -> set[str]:
    if not word.isalpha():
        return set()
    forms = set()
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
    if not word.endswith("s"):
        forms |= {word + "s", word + "es"}
    if n_words == 1:
        forms = {f for f in forms if min(len(f), len(word)) >= MIN_SINGLE_WORD_PLURAL}
    return forms


def _slips(word: str) -> set[str]:
    """One-slip spellings of `word` (see the module docstring); empty for short words."""
    if len(word) < MIN_TYPO_WORD or not word.isalpha():
        return set()
    out = set()
    for i in range(len(word) - 1):  # adjacent swap
        if word[i] != word[i + 1]:
            out.add(word[:i] + word[i + 1] + word[i] + word[i + 2:])
    for i, c in enumerate(word):
        if c in _VOWELS or (i + 1 < len(word) and word[i + 1] == c):
            out.add(word[:i] + word[i + 1:])  # drop a vowel or one of a doubled pair
        out.add(word[:i + 1] + c + word[i + 1:])  # double a letter
    for i in range(len(word) - 1):  # move a doubling: barell -> barel -> barrel
        if word[i] == word[i + 1]:
            single = word[:i] + word[i + 1:]
            for j, c in enumerate(single):
                out.add(single[:j + 1] + c + single[j + 1:])
    for i in range(len(word) + 1):
        for v in _VOWELS:
            out.add(word[:i] + v + word[i:])  # add a vowel
    out.discard(word)
    return {w for w in out if len(w) >= MIN_TYPO_WORD - 1}


def lenient_forms(label: str) -> set[str]:
    """Every lenient key that names `label` (its own key included)."""
    keys = _spelling_forms(label)
    for other in SYNONYMS.get(label, ()):
        keys |= _spelling_forms(other)
    return keys


def _spelling_forms(label: str) -> set[str]:
    ws = words(label)
    if not ws:
        return set()
    # Spellings of each word: itself, or one slip (at most one word slips, below).
    variants: set[tuple[str, ...]] = {tuple(ws)}
    for i, w in enumerate(ws):
        for s in _slips(w):
            variants.add((*ws[:i], s, *ws[i + 1:]))
    keys = set()
    for v in variants:
        last = v[-1]
        for end in {last} | _ing_forms(last) | _plural_forms(last, len(v)):
            keys.add("".join(v[:-1]) + end)
    return keys


class LabelMatcher:
    """Maps an answer to the vocabulary label it names, exactly or leniently."""

    def __init__(self, vocabulary: Iterable[str]):
        self.vocabulary = sorted(set(vocabulary))
        own: dict[str, str] = {}
        for label in self.vocabulary:
            key = normalise(label)
            if key and key in own and own[key] != label:
                own[key] = ""  # two labels share a key: neither is matched leniently
            else:
                own[key] = label
        claims: dict[str, set[str]] = {}
        for label in self.vocabulary:
            for key in lenient_forms(label):
                claims.setdefault(key, set()).add(label)
        self._index: dict[str, str] = {}
        for key, labels in claims.items():
            if len(labels) == 1:
                self._index[key] = next(iter(labels))
        # A label's own spelling beats any other label's variant.
        for key, label in own.items():
            if label:
                self._index[key] = label
            else:
                self._index.pop(key, None)

    def lenient_label(self, answer: str) -> str | None:
        """The vocabulary label `answer` names under the lenient rules, or None."""
        if answer in self.vocabulary:
            return answer
        return self._index.get(normalise(answer))

    def classify(self, answer: str, truth: str) -> str:
        """'exact' (the tutorial's rule), 'naming' (right sport, other name) or 'wrong'."""
        if answer == truth:
            return "exact"
        if self.lenient_label(answer) == truth:
            return "naming"
        return "wrong"
