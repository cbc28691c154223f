"""The compositional-search explainer: explanations as formulas of primitives, found by beam search, rendered in
English and simulated exactly.

After Network Dissection (Bau et al. 2017) and Compositional Explanations of Neurons (Mu and Andreas 2020),
brought to the kit's records and scores. A *primitive* is a rule over a window's tokens (a word, a token, a
WordNet concept, a surface form, a context; one implementation each, in `rules.py`), read as a mask. A *formula*
joins up to three primitives left to right with OR, AND and AND NOT. For one neuron the search takes its
candidate primitives from the neuron's top windows (the words that fire, the concepts above them, their
neighbours) beside a fixed set of surface and context primitives, and keeps the formulas whose masks correlate
best with the neuron's real activations on its explanation windows (the kit's own correlation score). It needs
no LLM. Each formula renders to an explanation in our own templates and is kept with it, so `FormulaSimulator`
simulates it exactly (the held-out score, random-only score and shuffled control work as for any explanation),
while any other simulator can score the rendered text.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..formulas import KINDS, SEARCHED, Formula, Primitive, SearchError, fixed_primitives
from ..heldout import top_splits
from ..llm.base import count
from ..records import (
    ActivationRecord,
    Candidate,
    Component,
    Failure,
    NeuronRecord,
    Usage,
)
from ..rules import word_spans
from ..wordnet import concept_depth, concept_size, concepts_of

if TYPE_CHECKING:
    from .base import ExplainConfig

# --- primitives ---------------------------------------------------------------------------------------


# --- formulas -----------------------------------------------------------------------------------------


# --- the search -----------------------------------------------------------------------------------------


@dataclass
class SearchConfig:
    """Settings of the compositional search (saved in the run manifest)."""

    beam: int = 10
    """Formulas kept at each step."""
    max_terms: int = 3
    """Primitives a formula may join."""
    min_gain: float = 0.02
    """A term joins a formula only if it raises the correlation by at least this much (simpler formulas win ties)."""
    firing_fraction: float = 0.4
    """Tokens at or above this fraction of their own window's peak (in the top windows) seed the candidate primitives:
    a share of each window's peak that picks where to look, not whether a token fires (`records.FIRES`)."""
    max_per_kind: int = 40
    """Candidate primitives of each seeded kind (words, tokens, neighbours), the most frequent among firing tokens."""
    max_concepts: int = 80
    """Candidate WordNet concepts, those covering the most distinct firing words first."""
    min_concept_depth: int = 4
    """Noun concepts closer than this to their tree's root (entity, object, act ...) are too general to read."""
    min_verb_depth: int = 1
    """The same for verb concepts, whose trees are shallow (only the roots, such as move or change, are left out)."""
    n_examples: int = 3
    """Example words shown in a rendered concept or context term."""
    min_support: int = 2
    """A term joins a formula by OR only if it holds where the neuron fires in at least this many search windows
    (one window's stray word does not generalise); the first term is exempt."""
    graded: bool = False
    """Also fit the graded form: a weight per term (the neuron's mean activation on the search windows where the
    formula holds through that term), so the exact simulator predicts how strongly, not only where."""

    def __post_init__(self):
        if self.beam < 1 or not 1 <= self.max_terms <= 3 or self.n_examples < 0:
            raise SearchError("beam must be >= 1, max_terms between 1 and 3, n_examples >= 0")
        if not 0 < self.firing_fraction <= 1 or self.min_gain < 0:
            raise SearchError("firing_fraction must be in (0, 1] and min_gain >= 0")


@dataclass
class Found:
    """One formula the search scored."""

    formula: Formula
    """The formula."""
    score: float
    """Its correlation with the neuron on the search windows."""
    text: str = ""
    """Its rendering."""
    cost: int = 0
    """Its terms, a sub-word fragment counting twice (`Candidate.cost`)."""
    weights: list[float] | None = None
    """Its graded form's weights (`SearchConfig.graded`), one per term, None for a gate."""


@dataclass
class SearchTrace:
    """What the search did for one neuron: the beam at each step and the best formulas (notebook 02 shows it)."""

    n_windows: int = 0
    """Windows searched over."""
    n_tokens: int = 0
    """Tokens searched over."""
    n_primitives: int = 0
    """Distinct candidate primitives scored (after dropping those that never hold and duplicates of a mask)."""
    beams: list[list[Found]] = field(default_factory=list)
    """The beam after each step (step 1: single primitives)."""
    best: list[Found] = field(default_factory=list)
    """The best distinct formulas overall, best first."""
    seconds: float = 0.0
    """Wall time."""

    def beam_rows(self, per_step: int = 5) -> list[dict]:
        """The first `per_step` formulas of the beam at each step, as table rows."""
        return [
            {"step": i + 1, "formula": str(f.formula), "correlation": round(f.score, 3)}
            for i, beam in enumerate(self.beams)
            for f in beam[:per_step]
        ]

    def best_rows(self, n: int = 5) -> list[dict]:
        """The best `n` distinct formulas with their renderings, as table rows."""
        return [
            {"formula": str(f.formula), "explanation": f.text, "correlation": round(f.score, 3)} for f in self.best[:n]
        ]


def search_windows(record: NeuronRecord) -> list[ActivationRecord]:
    """The windows a neuron's formula is searched on: its training top windows alone (what an explainer is shown).
    The pick among the formulas is made on the calibration windows, the score on the valid ones: nothing is chosen
    on the windows it was fitted on, nor reported on the windows it was chosen on (`heldout`)."""
    return top_splits(record)["train"]


def correlations(masks: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each boolean row of `masks` with `y` (NaN where a row is constant)."""
    n = y.size
    yc = y - y.mean()
    syy = float(yc @ yc)
    k = masks.sum(axis=1).astype(np.float64)
    sxy = masks.astype(np.float64) @ yc
    var = k - k * k / n
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sxy / np.sqrt(var * syy)
    r[(var <= 0) | (syy <= 0)] = np.nan
    return r


def _spans_of(tokens: Sequence[str]) -> list[tuple[int, int, str]]:
    return [s for s in word_spans(tokens) if s[2]]


def candidate_primitives(windows: Sequence[ActivationRecord], config: SearchConfig) -> list[Primitive]:
    """Primitives seeded by the tokens that fire in `windows` (their tokens, words, concepts and neighbours) and the
    fixed surface and context ones, most frequent among firing tokens first."""
    tokens, words, after, before, concepts = Counter(), Counter(), Counter(), Counter(), {}
    for rec in windows:
        acts = np.asarray(rec.activations, dtype=np.float64)
        peak = acts.max(initial=0.0)
        if peak <= 0:
            continue
        spans = _spans_of(rec.tokens)
        for j, (a, b, text) in enumerate(spans):
            if acts[a:b].max() < config.firing_fraction * peak:
                continue
            w = text.lower()
            words[w] += 1
            tokens.update(
                t for t, v in zip(rec.tokens[a:b], acts[a:b], strict=True) if v >= config.firing_fraction * peak
            )
            if j > 0:
                after[spans[j - 1][2].lower()] += 1
            if j + 1 < len(spans):
                before[spans[j + 1][2].lower()] += 1
            for c in concepts_of(w):
                concepts.setdefault(c, set()).add(w)
    k = config.max_per_kind
    out = [Primitive("word", w) for w, _ in words.most_common(k)]
    out += [Primitive("token", t) for t, _ in tokens.most_common(k)]
    out += fixed_primitives()
    out += [Primitive("after", w) for w, _ in after.most_common(k)]
    out += [Primitive("before", w) for w, _ in before.most_common(k)]
    deep = [
        c for c in concepts if concept_depth(c) >= (config.min_verb_depth if ".v." in c else config.min_concept_depth)
    ]
    deep.sort(key=lambda c: (-len(concepts[c]), -concept_depth(c), c))
    return out + [Primitive("concept", c) for c in deep[: config.max_concepts]]


def _tie_order(p: Primitive) -> tuple:
    """Among primitives with the same mask, the plainest kind first, and of concepts the narrowest."""
    size = concept_size(p.arg) if p.kind == "concept" else 0
    return (KINDS.index(p.kind), size, p.arg)


def _firing(windows: Sequence[ActivationRecord], fraction: float) -> list[np.ndarray]:
    """Per window, the tokens at or above `fraction` of its own peak (none in a window that never fires)."""
    out = []
    for w in windows:
        acts = np.asarray(w.activations, dtype=np.float64)
        peak = acts.max(initial=0.0)
        out.append(acts >= fraction * peak if peak > 0 else np.zeros(acts.shape, dtype=bool))
    return out


def is_fragment(prim: Primitive, windows: Sequence[ActivationRecord]) -> bool:
    """A token primitive that, in most of its occurrences in `windows`, is part of a longer word (`"Yog"` of Yoga):
    a sub-word fragment, which a reader holds less easily than a word or a concept."""
    if prim.kind != "token":
        return False
    inside = total = 0
    for rec in windows:
        for a, b, _ in word_spans(rec.tokens):
            hits = sum(1 for t in rec.tokens[a:b] if t == prim.arg)
            total += hits
            inside += hits if b - a > 1 else 0
    return total > 0 and inside * 2 > total


def formula_cost(formula: Formula, fragments: set[Primitive]) -> int:
    """Its terms, each sub-word fragment counting twice."""
    return sum(2 if p in fragments else 1 for p in formula.terms)


def _examples(formula: Formula, windows: Sequence[ActivationRecord], firing: list[np.ndarray], n: int) -> dict:
    """For each term that covers many words, the words seen most often where the term holds and the neuron fires
    (for a token, the whole words it is part of)."""
    out = {}
    for prim in formula.terms:
        if prim.kind not in ("concept", "after", "before", "token") and not (
            prim.kind == "surface" and prim.arg in SEARCHED["surface"]
        ):
            continue
        seen = Counter()
        for rec, fires in zip(windows, firing, strict=True):
            m = prim.mask(rec.tokens) & fires
            if m.any():
                seen.update(text for a, b, text in _spans_of(rec.tokens) if m[a:b].any())
        out[prim] = familiar(seen, n, keep_case=prim.kind in ("surface", "token"))
    return out


def familiar(seen: Counter, n: int, keep_case: bool = False) -> list[str]:
    """The `n` words seen most often, each in its most frequent spelling (`Monday` rather than `monday`), case
    folded when counting unless `keep_case`."""
    if keep_case:
        return [w for w, _ in seen.most_common(n)]
    by_word: dict[str, Counter] = {}
    for w, k in seen.items():
        by_word.setdefault(w.lower(), Counter())[w] += k
    ranked = sorted(by_word.values(), key=lambda c: (-sum(c.values()), c.most_common(1)[0][0]))
    return [c.most_common(1)[0][0] for c in ranked[:n]]


def graded_weights(formula: Formula, windows: Sequence[ActivationRecord], y: np.ndarray) -> list[float | None]:
    """The graded form's weights: for each positive term (the first and each OR), the mean activation over the
    search tokens where the formula holds and that term holds (the strongest term wins where several do); None for
    the gates (AND, AND NOT), which say where, not how strongly. Floored just above 0 so a term never reads as
    silent."""
    held = np.concatenate([formula.mask(w.tokens) for w in windows])
    out: list[float | None] = []
    for op, prim in [("", formula.first), *formula.rest]:
        if op not in ("", "or"):
            out.append(None)
            continue
        m = held & np.concatenate([prim.mask(w.tokens) for w in windows])
        out.append(round(max(float(y[m].mean()) if m.any() else 0.0, 1e-3), 4))
    return out


def cost_front(best: Sequence[Found], n: int) -> list[Found]:
    """Up to `n` of `best` for the pick on calibration: at each cost the best-scoring formula, kept only if it beats
    every cheaper one on the search windows (simplest first); when more than `n`, the cheapest `n - 1` and the best
    overall. When fewer, the next best formulas fill the list."""
    front: list[Found] = []
    for f in sorted(best, key=lambda f: (f.cost, -f.score)):
        if not front or f.score > front[-1].score:
            front.append(f)
    if len(front) > n:
        front = front[: n - 1] + [front[-1]] if n > 1 else [front[-1]]
    rest = [f for f in best if f not in front]
    return front + rest[: max(0, n - len(front))]


def search_neuron(record: NeuronRecord, config: SearchConfig | None = None) -> SearchTrace:
    """Beam search for the formulas whose masks correlate best with the neuron on its search windows."""
    config = config or SearchConfig()
    t0 = time.perf_counter()
    windows = [w for w in search_windows(record) if w.tokens]
    trace = SearchTrace(n_windows=len(windows))
    if not windows:
        return trace
    y = np.concatenate([np.asarray(w.activations, dtype=np.float64) for w in windows])
    trace.n_tokens = int(y.size)

    # each candidate's mask over every search token; drop those that never hold, and keep one per distinct mask
    prims = sorted(set(candidate_primitives(windows, config)), key=_tie_order)
    rows, kept, seen = [], [], set()
    for p in prims:
        m = np.concatenate([p.mask(w.tokens) for w in windows])
        key = m.tobytes()
        if m.any() and key not in seen:
            seen.add(key)
            rows.append(m)
            kept.append(p)
    trace.n_primitives = len(kept)
    if not kept:
        return trace
    masks = np.stack(rows)
    single = correlations(masks, y)
    firing = _firing(windows, config.firing_fraction)
    starts = np.cumsum([0] + [len(w.tokens) for w in windows[:-1]])
    support = (np.add.reduceat(masks & np.concatenate(firing), starts, axis=1) > 0).sum(axis=1)

    found: dict[Formula, Found] = {}

    def keep(formula: Formula, score: float, m: np.ndarray) -> None:
        if np.isfinite(score) and formula not in found:
            found[formula] = Found(formula, float(score))
            found_masks[formula] = m

    found_masks: dict[Formula, np.ndarray] = {}
    for i in np.argsort(-np.nan_to_num(single, nan=-2.0), kind="stable")[: max(config.beam * 4, config.beam)]:
        keep(Formula(kept[i]), single[i], masks[i])
    beam = sorted(found.values(), key=lambda f: -f.score)[: config.beam]
    trace.beams.append(beam)

    for _ in range(config.max_terms - 1):
        grown: list[Found] = []
        for parent in beam:
            pm = found_masks[parent.formula]
            used = set(parent.formula.terms)
            for op, combined in (("or", masks | pm), ("and", masks & pm), ("and_not", pm & ~masks)):
                scores = correlations(combined, y)
                for i in np.flatnonzero(scores >= parent.score + config.min_gain):
                    if kept[i] in used or (op == "or" and support[i] < config.min_support):
                        continue
                    formula = parent.formula.extend(op, kept[i])
                    keep(formula, scores[i], combined[i])
                    grown.append(found[formula])
        if not grown:
            break
        beam = sorted({f.formula: f for f in beam + grown}.values(), key=lambda f: -f.score)[: config.beam]
        trace.beams.append(beam)

    fragments = {p for p in kept if is_fragment(p, windows)}
    for f in found.values():
        f.cost = formula_cost(f.formula, fragments)
    ordered = sorted(found.values(), key=lambda f: (-f.score, f.cost))
    best, masks_seen = [], set()
    for f in ordered:
        if f.score <= 0:
            break
        key = found_masks[f.formula].tobytes()
        if key in masks_seen:  # the same tokens as a better (or simpler) formula
            continue
        masks_seen.add(key)
        f.text = f.formula.render(_examples(f.formula, windows, firing, config.n_examples))
        if config.graded:
            f.weights = graded_weights(f.formula, windows, y)
        best.append(f)
        if len(best) >= config.beam:
            break
    for step in trace.beams:
        for f in step:
            f.text = f.text or f.formula.render()
    trace.best = best
    trace.seconds = round(time.perf_counter() - t0, 3)
    return trace


# --- the explainer -------------------------------------------------------------------------------------------


class SearchExplainer:
    """The compositional-search explainer behind `--explainer search`: no LLM; each neuron's best `best_of` distinct
    formulas become its candidates (rendered text, with the structured formula stored beside it: the exact simulator
    reads that)."""

    def __init__(self, config: SearchConfig | None = None):
        self.config = config or SearchConfig()
        self.usage = Usage()
        self.last_trace: SearchTrace | None = None

    def __repr__(self) -> str:
        return f"SearchExplainer(beam={self.config.beam}, max_terms={self.config.max_terms})"

    def describe(self) -> dict[str, Any]:
        return Component("search", model="compositional search", settings=asdict(self.config))

    @property
    def llm(self) -> None:
        return None

    async def explain(self, record: NeuronRecord, config: ExplainConfig) -> tuple[list[Candidate], list[Failure]]:
        """Up to `config.best_of` candidates, best first; a failure (never a made-up explanation) when no formula correlates
        positively with the neuron on its search windows."""
        trace = await asyncio.to_thread(search_neuron, record, self.config)
        self.last_trace = trace
        count(self.usage, requests=1)
        if not trace.best:
            reason = (
                f"no formula of up to {self.config.max_terms} primitives correlates positively with the neuron on its "
                f"{trace.n_windows} search windows ({trace.n_primitives} primitives tried)"
            )
            return [], [Failure("explain", reason)]
        out = []
        for f in sorted(cost_front(trace.best, config.best_of), key=lambda f: -f.score):
            out.append(
                Candidate(
                    f.text, formula=f.formula.to_json(), search_score=round(f.score, 4), cost=f.cost,
                    weights=f.weights,
                )
            )  # fmt: skip
        return out, []
