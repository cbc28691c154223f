"""Rules over the tokens of a text window: which tokens a rule picks out, and how strongly.

One implementation of each rule, shared by the synthetic neurons (`training/synthetic.py`, where a rule is a neuron
with known behaviour) and the compositional-search explainer (`explainers/search.py`, where a rule is a primitive whose
mask is `rule(tokens) > 0`). A rule is a frozen dataclass (hashable, so evaluations cache per window) called
on a window's token strings; it returns one activation per token, 0 where silent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .wordnet import concepts_of

# --- words of a window ----------------------------------------------------------------------------


def _boundary(prev: str, tok: str) -> bool:
    return not tok or not prev or tok[0].isspace() or not tok[0].isalnum() or not prev[-1].isalnum()


def word_spans(tokens: Sequence[str]) -> list[tuple[int, int, str]]:
    """Words as (first token, end token, text): a word starts at a token that begins with a space or a
    non-alphanumeric character, or follows one that ends with one. Cached: every rule reads the same windows."""
    return _word_spans(tuple(tokens))


@lru_cache(maxsize=8192)
def _word_spans(tokens: tuple[str, ...]) -> list[tuple[int, int, str]]:
    spans, start = [], 0
    for i in range(1, len(tokens) + 1):
        if i == len(tokens) or _boundary(tokens[i - 1], tokens[i]):
            spans.append((start, i, "".join(tokens[start:i]).strip()))
            start = i
    return spans


@lru_cache(maxsize=8192)
def _lower_spans(tokens: tuple[str, ...]) -> list[tuple[int, int, str]]:
    return [(a, b, text.lower()) for a, b, text in _word_spans(tokens)]


@lru_cache(maxsize=65536)
def _strength(word: str, low: float = 0.5) -> float:
    """A graded strength in [low, 1] that a word always gets (hash-based, so rules stay pure)."""
    h = int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16) / 2**32
    return low + (1 - low) * h


# --- rules ------------------------------------------------------------------------------------------


Rule = Callable[[Sequence[str]], np.ndarray]
"""Tokens of a window -> the neuron's activation on each (0 where silent)."""


@dataclass(frozen=True)
class WordSet:
    """Fires on words of a set (with simple inflections), each at its own graded strength."""

    words: frozenset[str]

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(tokens))
        for a, b, w in _lower_spans(tuple(tokens)):
            if w in self.words:
                out[a:b] = _strength(w)
        return out


@dataclass(frozen=True)
class WordPattern:
    """Fires on words that match a regular expression as a whole."""

    pattern: str
    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out, rx = np.zeros(len(tokens)), re.compile(self.pattern)
        for a, b, text in word_spans(tokens):
            if rx.fullmatch(text):
                out[a:b] = self.strength
        return out


@dataclass(frozen=True)
class Punctuation:
    """Fires on tokens that are (or hold) a given punctuation mark."""

    mark: str
    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self.strength if self.mark in t and not t.strip().isalnum() else 0.0 for t in tokens])


@dataclass(frozen=True)
class LineStart:
    """Fires on the first word of each line (after a newline)."""

    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(tokens))
        after_newline = False
        for a, b, text in word_spans(tokens):
            if after_newline and text:
                out[a:b] = self.strength
            after_newline = "\n" in "".join(tokens[a:b]) or (after_newline and not text)
        return out


@dataclass(frozen=True)
class After:
    """Fires on the word right after a given word (`of` -> the word after `of`)."""

    word: str
    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        return _next_to(tokens, self.word, self.strength, before=False)


def _next_to(tokens: Sequence[str], word: str, strength: float, before: bool) -> np.ndarray:
    """Marks the word right after (or right before) each occurrence of `word`."""
    out = np.zeros(len(tokens))
    words = [s for s in word_spans(tokens) if s[2]]
    for left, right in zip(words, words[1:], strict=False):
        anchor, target = (right, left) if before else (left, right)
        if anchor[2].lower() == word:
            out[target[0] : target[1]] = strength
    return out


@dataclass(frozen=True)
class Inside:
    """Fires on tokens between an opening and a closing mark (quotes, brackets), not on the marks."""

    open: str
    close: str
    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out, depth = np.zeros(len(tokens)), 0
        for i, t in enumerate(tokens):
            if t.startswith("<|"):  # a document boundary closes whatever was open
                depth = 0
                continue
            if self.open == self.close and self.open in t:
                depth = 1 - depth
                continue
            if self.close in t and depth:
                depth -= 1
                continue
            if self.open in t:
                depth += 1
                continue
            if depth:
                out[i] = self.strength
        return out


NEGATIONS = frozenset({"not", "never", "no", "nobody", "nothing", "n't", "cannot", "without"})


@dataclass(frozen=True)
class AfterNegation:
    """Fires on the two words after a negation (not, never, no, n't, ...)."""

    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(tokens))
        words = [s for s in word_spans(tokens) if s[2]]
        for i, (_, _, text) in enumerate(words):
            if text.lower() in NEGATIONS or text.lower().endswith("n't"):
                for a, b, _ in words[i + 1 : i + 3]:
                    out[a:b] = self.strength
        return out


@dataclass(frozen=True)
class Repeat:
    """Fires on a word (of three letters or more) the second and later times it occurs in the window."""

    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out, seen = np.zeros(len(tokens)), set()
        for a, b, text in word_spans(tokens):
            w = text.lower()
            if len(w) >= 3 and w.isalpha():
                if w in seen:
                    out[a:b] = self.strength
                seen.add(w)
        return out


@dataclass(frozen=True)
class Mixture:
    """Two rules at once (a polysemantic neuron): the stronger of the two at each token."""

    a: Rule
    b: Rule
    weight_b: float = 0.7

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        return np.maximum(self.a(tokens), self.weight_b * self.b(tokens))


@dataclass(frozen=True)
class TokenIs:
    """Fires on one exact token string (`" of"`), wherever it stands in a word."""

    token: str
    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self.strength if t == self.token else 0.0 for t in tokens])


@dataclass(frozen=True)
class Before:
    """Fires on the word right before a given word (`of` -> the word before `of`)."""

    word: str
    strength: float = 1.0

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        return _next_to(tokens, self.word, self.strength, before=True)


@dataclass(frozen=True)
class Concept:
    """Fires on words that WordNet puts under a noun or verb synset (any sense of the word, inflections included
    through WordNet's morphology); `graded` gives each word its own strength in [0.5, 1], as a synthetic neuron
    does, else every such word fires at 1."""

    synset: str
    graded: bool = False

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(tokens))
        for a, b, w in _lower_spans(tuple(tokens)):
            if self.synset in concepts_of(w):
                out[a:b] = _strength(w) if self.graded else 1.0
        return out


@lru_cache(maxsize=1_000_000)
def _cached_mask(rule: Rule, tokens: tuple[str, ...]) -> np.ndarray:
    mask = rule(tokens) > 0
    mask.setflags(write=False)
    return mask


def mask(rule: Rule, tokens: Sequence[str]) -> np.ndarray:
    """Where `rule` fires on a window, as a read-only boolean array; computed once per (rule, window) and cached,
    since the same corpus windows come back for many neurons."""
    return _cached_mask(rule, tuple(tokens))
