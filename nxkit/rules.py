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
from typing import NamedTuple

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

# --- the catalogue of named rules -------------------------------------------------------------------------------


class NamedRule(NamedTuple):
    """A named rule with its English: how synthetic neurons phrase it, and, for the rules the compositional search uses
    as primitives, its noun phrase and its predicate (a clause about a token, for AND and AND NOT)."""

    rule: Rule
    """The rule (one implementation, above)."""
    phrasings: tuple[str, ...]
    """Ways a synthetic neuron's explanation names it (our own words)."""
    noun: str | None = None
    """What it picks out as a noun phrase, when the search uses it (`numbers written in digits`)."""
    predicate: str | None = None
    """The same as a clause about a token (`it is a number`), when the search uses it."""


SURFACE = {
    "number": (
        WordPattern(r"\d+(?:[.,]\d+)?"),
        ("numbers", "numerals written with digits", "digits in numbers like 42"),
        "numbers written in digits",
        "it is a number",
    ),
    "year": (
        WordPattern(r"(?:1[5-9]|20)\d\d"),
        ("years", "four-digit years", "years such as 1984 or 2001", "dates given as years"),
        "four-digit years",
        "it is a year",
    ),
    "capitalised": (
        WordPattern(r"[A-Z][a-z]+", 0.8),
        ("capitalised words", "words starting with a capital letter", "proper nouns and other capitalised words"),
        "capitalised words",
        "it is capitalised",
    ),
    "allcaps": (
        WordPattern(r"[A-Z]{2,}"),
        ("words in all capitals", "upper-case words and acronyms", "SHOUTED or all-caps words"),
        "words in capital letters",
        "it is in capitals",
    ),
    "suffix:ing": (
        WordPattern(r"[A-Za-z]+ing"),
        ("words ending in -ing", "-ing forms of verbs", "words like running"),
        "words ending in -ing",
        "it ends in -ing",
    ),
    "suffix:ly": (
        WordPattern(r"[A-Za-z]+ly"),
        ("words ending in -ly", "adverbs ending in -ly", "words like quickly"),
        "words ending in -ly",
        "it ends in -ly",
    ),
    "suffix:tion": (
        WordPattern(r"[A-Za-z]+tions?"),
        ("words ending in -tion", "nouns ending in -tion", "words like nation and station"),
        "words ending in -tion",
        "it ends in -tion",
    ),
    "line_start": (
        LineStart(),
        ("the first word of a line", "words right after a line break", "line beginnings"),
        "the first word of a line",
        "it starts a line",
    ),
    "comma": (Punctuation(","), ("commas", "the comma punctuation mark")),
    "question": (Punctuation("?"), ("question marks", "the end of a question")),
    "period": (Punctuation("."), ("full stops", "periods at the end of sentences", "the end of a sentence")),
    "colon": (Punctuation(":"), ("colons", "the colon punctuation mark")),
}
"""Surface rules: name -> (rule, phrasings[, noun, predicate]), read as `NamedRule`s below."""
SURFACE_FIRST = tuple(SURFACE)
"""The first twelve surface kinds (what bench/search.py plants)."""


def _suffix(suffix: str, examples: str) -> tuple[Rule, tuple[str, ...]]:
    return WordPattern(rf"[A-Za-z]{{2,}}{suffix}"), (
        f"words ending in -{suffix}",
        f"words with the suffix -{suffix}",
        f"words such as {examples}",
    )


def _prefix(prefix: str, examples: str) -> tuple[Rule, tuple[str, ...]]:
    return WordPattern(rf"(?i:{prefix})[a-z]{{3,}}"), (
        f"words beginning with {prefix}-",
        f"words that start with the prefix {prefix}-",
        f"words such as {examples}",
    )


def _mark(mark: str, name: str, more: str) -> tuple[Rule, tuple[str, ...]]:
    return Punctuation(mark), (name, f"the {name} punctuation mark", more)


SURFACE |= {
    **{f"suffix:{s}": _suffix(s, ex) for s, ex in (
        ("ed", "walked and wanted"), ("er", "teacher and bigger"), ("est", "biggest and oldest"),
        ("ness", "kindness and darkness"), ("ment", "movement and payment"), ("able", "readable and capable"),
        ("ful", "careful and hopeful"), ("less", "careless and endless"), ("ous", "famous and dangerous"),
        ("ism", "realism and tourism"), ("ist", "artist and scientist"), ("ity", "city and quality"),
        ("al", "final and natural"), ("ive", "active and expensive"), ("ic", "magic and public"),
        ("ship", "friendship and leadership"),
    )},
    **{f"prefix:{p}": _prefix(p, ex) for p, ex in (
        ("un", "unhappy and unknown"), ("re", "return and rebuild"), ("dis", "discover and dislike"),
        ("pre", "prepare and present"), ("over", "overcome and overlook"), ("mis", "mistake and misery"),
    )},
    "short_word": (WordPattern(r"[A-Za-z]{1,2}"), ("very short words", "words of one or two letters", "tiny words like a, an, of")),
    "long_word": (WordPattern(r"[A-Za-z]{10,}"), ("long words", "words of ten letters or more", "lengthy words like understanding")),
    "digit": (WordPattern(r"\d"), ("single digits", "one-digit numbers", "numbers from 0 to 9")),
    "vowel_start": (WordPattern(r"[AEIOUaeiou][a-z]+", 0.8), ("words starting with a vowel", "words whose first letter is a vowel")),
    "double_letter": (WordPattern(r"[A-Za-z]*([a-z])\1[A-Za-z]*"), ("words with a double letter", "words like letter, book and all")),
    "semicolon": _mark(";", "semicolons", "a semicolon between clauses"),
    "exclamation": _mark("!", "exclamation marks", "the end of an exclamation"),
    "apostrophe": _mark("'", "apostrophes", "the apostrophe in contractions and possessives"),
    "hyphen": _mark("-", "hyphens and dashes", "dashes between words"),
    "double_quote": _mark('"', "double quotation marks", "the quote marks themselves"),
    "open_bracket": _mark("(", "opening parentheses", "the start of a bracket"),
    "close_bracket": _mark(")", "closing parentheses", "the end of a bracket"),
}  # fmt: skip

CONTEXT = {
    "after:of": (After("of"), ("the word after 'of'", "nouns following 'of'", "what comes right after 'of'")),
    "after:the": (After("the"), ("the word after 'the'", "nouns right after the article 'the'")),
    "after:to": (After("to"), ("the word after 'to'", "verbs and places following 'to'")),
    "after:i": (After("i"), ("the word after 'I'", "verbs that follow 'I'")),
    "quotes": (
        Inside('"', '"'),
        ("text inside quotation marks", "quoted words", "words between double quotes"),
        "words inside quotation marks",
        "it is inside quotation marks",
    ),
    "brackets": (
        Inside("(", ")"),
        ("text inside parentheses", "words in brackets", "parenthetical remarks"),
        "words inside brackets",
        "it is inside brackets",
    ),
    "after_negation": (
        AfterNegation(),
        ("words right after a negation", "what follows 'not' or 'never'", "negated words"),
        "the two words after a negation (not, never, no)",
        "it follows a negation",
    ),
    "repeat": (
        Repeat(),
        ("a word that already appeared earlier in the text", "the second occurrence of a repeated word"),
        "a word repeated from earlier in the text",
        "it repeats an earlier word",
    ),
}
"""Context rules: name -> (rule, phrasings[, noun, predicate]), read as `NamedRule`s below."""
CONTEXT_FIRST = tuple(CONTEXT)
"""The first eight context kinds (what bench/search.py plants)."""


def _after(word: str, what: str) -> tuple[Rule, tuple[str, ...]]:
    return After(word), (
        f"the word after '{word}'",
        f"{what} following '{word}'",
        f"whatever comes right after '{word}'",
    )


def _before(word: str, what: str) -> tuple[Rule, tuple[str, ...]]:
    return Before(word), (
        f"the word before '{word}'",
        f"{what} just ahead of '{word}'",
        f"whatever comes right before '{word}'",
    )


CONTEXT |= {
    **{f"after:{w}": _after(w, what) for w, what in (
        ("in", "places and times"), ("a", "nouns and adjectives"), ("an", "nouns and adjectives"),
        ("and", "words"), ("my", "things someone owns"), ("you", "verbs"), ("he", "verbs"), ("she", "verbs"),
        ("we", "verbs"), ("they", "verbs"), ("is", "adjectives and verbs"), ("was", "adjectives and verbs"),
        ("will", "verbs"), ("can", "verbs"), ("for", "nouns"), ("with", "nouns"), ("on", "nouns"),
        ("at", "places and times"), ("by", "names and nouns"), ("from", "places and nouns"),
        ("his", "things someone owns"), ("your", "things someone owns"), ("this", "nouns"), (",", "words"),
        (".", "sentence openings"),
    )},
    **{f"before:{w}": _before(w, what) for w, what in (
        ("of", "nouns"), ("and", "words"), ("is", "subjects"), ("the", "verbs and prepositions"),
    )},
}  # fmt: skip

SURFACE = {name: NamedRule(*entry) for name, entry in SURFACE.items()}
CONTEXT = {name: NamedRule(*entry) for name, entry in CONTEXT.items()}


def _cached_mask(rule: Rule, tokens: tuple[str, ...]) -> np.ndarray:
    mask = rule(tokens) > 0
    mask.setflags(write=False)
    return mask


def mask(rule: Rule, tokens: Sequence[str]) -> np.ndarray:
    """Where `rule` fires on a window, as a read-only boolean array; computed once per (rule, window) and cached,
    since the same corpus windows come back for many neurons."""
    return _cached_mask(rule, tuple(tokens))
