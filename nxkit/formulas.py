"""Primitives and formulas over the rules of `rules.py`, rendered in English."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .rules import CONTEXT, SURFACE, After, Before, Concept, Punctuation, Rule, TokenIs, WordSet, mask
from .wordnet import concept_label

if TYPE_CHECKING:
    pass


PUNCTUATION = {
    ",": ("commas", "it is a comma"),
    ".": ("full stops", "it is a full stop"),
    ":": ("colons", "it is a colon"),
    ";": ("semicolons", "it is a semicolon"),
    "?": ("question marks", "it is a question mark"),
    "!": ("exclamation marks", "it is an exclamation mark"),
    "-": ("hyphens and dashes", "it is a hyphen or dash"),
    "'": ("apostrophes and single quotes", "it holds an apostrophe"),
    '"': ("double quotation marks", "it is a quotation mark"),
    "(": ("opening brackets", "it opens a bracket"),
    ")": ("closing brackets", "it closes a bracket"),
}
"""Punctuation primitives: mark -> (noun phrase, predicate)."""


SEARCHED = {
    "surface": {name: r for name, r in SURFACE.items() if r.noun is not None},
    "context": {name: r for name, r in CONTEXT.items() if r.noun is not None},
}
"""The named rules of `rules.py`'s catalogue that the search uses as primitives (those with a noun and a predicate)."""

KINDS = ("word", "token", "surface", "after", "before", "context", "concept")
"""Primitive kinds, in the order ties are broken (a plain word before a concept with the same mask)."""


class SearchError(ValueError):
    """A formula or search setting that cannot be used."""


@dataclass(frozen=True, order=True)
class Primitive:
    """One rule as a term of a formula: `kind` (one of `KINDS`) and its argument."""

    kind: str
    """`word`, `token`, `surface`, `after`, `before`, `context` or `concept`."""
    arg: str
    """The word, token string, surface or context name, or WordNet synset name (`edible_fruit.n.01`)."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SearchError(f"unknown primitive kind {self.kind!r}; known: {KINDS}")

    @cached_property
    def rule(self) -> Rule:
        """The rule this primitive reads (the one implementation the synthetic neurons use too)."""
        kind, arg = self.kind, self.arg
        if kind == "word":
            return WordSet(frozenset({arg}))
        if kind == "token":
            return TokenIs(arg)
        if kind == "after":
            return After(arg)
        if kind == "before":
            return Before(arg)
        if kind == "concept":
            return Concept(arg)
        if kind == "surface" and arg.startswith("punct:") and arg[6:] in PUNCTUATION:
            return Punctuation(arg[6:])
        if kind in ("surface", "context") and arg in SEARCHED[kind]:
            return SEARCHED[kind][arg].rule
        raise SearchError(f"no rule for primitive {self}")

    def mask(self, tokens: Sequence[str]) -> np.ndarray:
        """Where it holds on a window (cached per window)."""
        return mask(self.rule, tokens)

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}"

    def noun(self, examples: Sequence[str] = ()) -> str:
        """What it picks out, as a noun phrase (with example words where it has several)."""
        ex = f" ({', '.join(examples)})" if examples else ""
        if self.kind == "word":
            return f'the word "{self.arg}"'
        if self.kind == "token":
            return _token_noun(self.arg, examples)
        if self.kind == "after":
            return f'the word after "{self.arg}"{ex}'
        if self.kind == "before":
            return f'the word before "{self.arg}"{ex}'
        if self.kind == "concept":
            return f"words for {concept_label(self.arg)}{ex}"
        if self.kind == "surface" and self.arg.startswith("punct:"):
            return PUNCTUATION[self.arg[6:]][0]
        noun = SEARCHED[self.kind][self.arg].noun
        return noun + (ex if self.kind == "surface" and self.arg != "line_start" else "")

    def predicate(self) -> str:
        """The same as a clause about a token (`it follows "of"`), for AND and AND NOT."""
        if self.kind in ("word", "token"):
            return f"it is {self.noun()}"
        if self.kind == "after":
            return f'it follows "{self.arg}"'
        if self.kind == "before":
            return f'it comes before "{self.arg}"'
        if self.kind == "concept":
            return f"it is a word for {concept_label(self.arg)}"
        if self.kind == "surface" and self.arg.startswith("punct:"):
            return PUNCTUATION[self.arg[6:]][1]
        return SEARCHED[self.kind][self.arg].predicate


def _token_noun(token: str, examples: Sequence[str] = ()) -> str:
    """A token as a reader names it: a sub-word piece as part of the words it was seen in (`words starting with "Yog"
    (Yoga, Yogi)`), a whole word as itself; its leading space shown when there are no examples to show it by."""
    piece = token.strip()
    longer = [w for w in examples if w.lower() != piece.lower()]
    if not piece.isalnum() or not longer:
        shown = token.replace("\n", "\\n")  # its leading space kept: " th" and "th" are two tokens
        return f'the token "{shown}"' if token.strip() else f"the token {token!r}"
    low = piece.lower()
    ex = f" ({', '.join(examples)})"
    if token[:1].isspace() or all(w.lower().startswith(low) for w in longer):
        return f'words starting with "{piece}"{ex}'
    if all(w.lower().endswith(low) for w in longer):
        return f'words ending in "{piece}"{ex}'
    return f'"{piece}" inside words{ex}'


def fixed_primitives() -> list[Primitive]:
    """The surface and context primitives every neuron's search tries."""
    out = [Primitive("surface", name) for name in SEARCHED["surface"]]
    out += [Primitive("surface", f"punct:{mark}") for mark in PUNCTUATION]
    return out + [Primitive("context", name) for name in SEARCHED["context"]]


OPS = ("or", "and", "and_not")


@dataclass(frozen=True)
class Formula:
    """Primitives joined left to right: `first`, then each (op, primitive) of `rest` applied to what came before."""

    first: Primitive
    """The first term."""
    rest: tuple[tuple[str, Primitive], ...] = ()
    """Further terms with their operator: `or`, `and`, `and_not`."""

    def __post_init__(self):
        bad = [op for op, _ in self.rest if op not in OPS]
        if bad:
            raise SearchError(f"unknown operator {bad[0]!r}; known: {OPS}")

    @property
    def terms(self) -> list[Primitive]:
        return [self.first, *(p for _, p in self.rest)]

    def extend(self, op: str, prim: Primitive) -> Formula:
        return Formula(self.first, (*self.rest, (op, prim)))

    def mask(self, tokens: Sequence[str]) -> np.ndarray:
        """Where the formula holds on a window."""
        out = self.first.mask(tokens).copy()
        for op, prim in self.rest:
            m = prim.mask(tokens)
            out = out | m if op == "or" else out & m if op == "and" else out & ~m
        return out

    def __str__(self) -> str:
        words = {"or": "OR", "and": "AND", "and_not": "AND NOT"}
        return " ".join([str(self.first), *(f"{words[op]} {p}" for op, p in self.rest)])

    def to_json(self) -> list[list[str]]:
        """Its structured form, as stored with a candidate: `[[op, kind, arg], ...]`, the first op empty."""
        return [["", self.first.kind, self.first.arg], *([op, p.kind, p.arg] for op, p in self.rest)]

    @classmethod
    def from_json(cls, terms: Sequence[Sequence[str]]) -> Formula:
        if not terms:
            raise SearchError("a formula needs at least one term")
        (_, kind, arg), *rest = terms
        return cls(Primitive(kind, arg), tuple((op, Primitive(k, a)) for op, k, a in rest))

    def render(self, examples: dict[Primitive, list[str]] | None = None) -> str:
        """The formula as an English explanation, in our own templates (examples: words seen where a term holds); two
        terms never read alike (a repeated phrase names its rule)."""
        examples = examples or {}
        terms = [("", self.first), *self.rest]
        suffixes = [f" ({', '.join(examples[p])})" if examples.get(p) else "" for _, p in terms]
        nouns = [p.noun(examples.get(p, ())) for _, p in terms]
        # phrases compared without their example words: `words starting with "s"` twice reads alike whatever follows
        heads = [n[: len(n) - len(x)] if x and n.endswith(x) else n for n, x in zip(nouns, suffixes, strict=True)]
        preds = [p.predicate() for _, p in terms]
        same_pred = {x for x in preds if preds.count(x) > 1}
        for i, (_, p) in enumerate(terms):
            if heads.count(heads[i]) > 1:
                nouns[i] = f"{heads[i]} ({_rule_name(p)})" + (nouns[i][len(heads[i]) :])
            if preds[i] in same_pred:
                preds[i] += f" ({_rule_name(p)})"
        text = nouns[0]
        for i, (op, _) in enumerate(terms[1:], start=1):
            if op == "or":
                text += f", or {nouns[i]}"
            elif op == "and":
                text += f", when {preds[i]}"
            else:
                text += f", except when {preds[i]}"
        return text


def _rule_name(p: Primitive) -> str:
    """What tells two primitives apart when their phrases coincide: a token's exact string, else kind and argument."""
    if p.kind == "token":
        return f"the exact token {p.arg!r}"
    return f"{p.kind} {p.arg}"


def graded_values(formula: Formula, weights: Sequence[float | None], tokens: Sequence[str]) -> np.ndarray:
    """The graded form on one window: where the formula holds, the largest weight of the positive terms holding
    there; 0 elsewhere."""
    held = formula.mask(tokens)
    out = np.zeros(len(tokens))
    for (_, prim), w in zip([("", formula.first), *formula.rest], weights, strict=True):
        if w is not None:
            out = np.maximum(out, np.where(held & prim.mask(tokens), float(w), 0.0))
    return out
