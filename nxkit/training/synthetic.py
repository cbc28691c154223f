"""Synthetic neurons: rules over the tokens of text windows whose right explanation is known.

Each `SyntheticNeuron` is a rule (which tokens fire, how strongly) and several phrasings of its
explanation written by our own templates. `SyntheticNeuron.record` turns it into a `NeuronRecord` over
real corpus windows, exactly as collection would (top windows, a random sample, quantile samples,
moments), so the same pipeline explains and scores it, and trained simulators and explainers learn
from it. Families: concept words from WordNet, surface forms, context, and two-rule mixtures, with
graded strengths and noise. A held-out set of rule kinds and whole WordNet subtrees is never used in
training (`held_out`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..collection.collect import CollectConfig
from ..records import ActivationRecord, NeuronId, NeuronRecord
from ..rules import CONTEXT, CONTEXT_FIRST, SURFACE, SURFACE_FIRST, Concept, Mixture, Rule, word_spans  # noqa: F401  (read as synthetic.X too)  # noqa: F401  (what bench/search.py plants, read here)
from ..wordnet import LEXNAMES_MAN, WORDNET_DIR, WordNetError, concept_words, wordnet  # noqa: F401

HELD_OUT_LEXNAMES = frozenset({"noun.food", "noun.animal", "verb.motion", "noun.body"})
"""WordNet subtrees (lexicographer files) whose concepts never appear in training."""
HELD_OUT_KINDS = frozenset(
    {"repeat", "allcaps", "after_negation", "suffix:ly"}
    | {"suffix:ful", "prefix:un", "exclamation", "long_word", "after:with", "after:my", "before:is", "quotes"}
)
"""Rule kinds that never appear in training: six surface and six context kinds."""


SyntheticError = WordNetError
"""Synthetic neurons that cannot be made (no WordNet database)."""


# --- neurons ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticNeuron:
    """A neuron with known behaviour: a rule, and several phrasings of its right explanation."""

    name: str
    """What it is, e.g. `concept:edible_fruit.n.01` or `after:of`."""
    family: str
    """`concept`, `surface`, `context` or `mixture`."""
    rule: Rule
    """Tokens -> activations."""
    explanations: tuple[str, ...]
    """Phrasings of the right explanation (short and long, general and specific)."""
    held_out: bool = False
    """True when its kind or concept is never used in training."""

    def activations(self, tokens: Sequence[str]) -> np.ndarray:
        return self.rule(tokens)

    def record(
        self,
        windows: Sequence[Sequence[str]],
        neuron_id: NeuronId | None = None,
        collection: CollectConfig | None = None,
        noise: float = 0.03,
        seed: int = 0,
    ) -> NeuronRecord:
        """The neuron's record over `windows` (token strings), as a collection with the settings `collection` (default
        `CollectConfig()`) keeps it: top windows strongest first, a uniform random sample, quantile samples and
        moments. `noise` (a fraction of the maximum) is added to every activation, seeded by `seed`, then clipped at 0
        like a ReLU."""
        cfg = collection or CollectConfig()
        rng = np.random.default_rng(seed)
        acts = [self.rule(w) for w in windows]
        peak = max((float(a.max()) for a in acts if a.size), default=0.0) or 1.0
        acts = [np.clip(a + rng.normal(0, noise * peak, a.shape), 0, None) for a in acts]
        maxima = np.array([a.max() if a.size else 0.0 for a in acts])

        def rec(i: int) -> ActivationRecord:  # only the windows kept become records
            return ActivationRecord(list(windows[i]), [round(float(v), 4) for v in acts[i]])

        top = [rec(i) for i in np.argsort(-maxima, kind="stable")[: cfg.top_k]]
        rand = [rec(i) for i in rng.choice(len(windows), size=min(cfg.n_random, len(windows)), replace=False)]
        levels = list(cfg.quantile_levels)
        bounds = [float(b) for b in np.quantile(maxima, levels)]
        bands = np.searchsorted(bounds, maxima, side="right")
        by_quantile = [[rec(i) for i in np.flatnonzero(bands == k)[: cfg.per_quantile]] for k in range(len(levels) + 1)]
        flat = np.concatenate(acts) if acts else np.zeros(1)
        mean, var = float(flat.mean()), float(flat.var())
        sd = var**0.5 or 1.0
        return NeuronRecord(
            neuron_id=neuron_id or NeuronId(0, 0),
            random_sample=rand,
            random_sample_by_quantile=by_quantile,
            quantile_boundaries=bounds,
            mean=mean,
            variance=var,
            skewness=float(((flat - mean) ** 3).mean() / sd**3),
            kurtosis=float(((flat - mean) ** 4).mean() / sd**4 - 3),
            most_positive_activation_records=top,
        )


# --- explanation templates (our own wording) ------------------------------------------------------------


def _examples(words: Sequence[str], k: int, rng: random.Random) -> list[str]:
    return rng.sample(sorted(words), min(k, len(words)))


def concept_explanations(concept: str, examples: Sequence[str], rng: random.Random) -> tuple[str, ...]:
    """Phrasings for a concept neuron: bare, described, and with examples."""
    a, b, c = (_examples(examples, 3, rng) + ["", "", ""])[:3]
    return (
        concept,
        f"words for {concept}",
        f"mentions of {concept}, such as {a} or {b}",
        f"the names of kinds of {concept} ({a}, {b}, {c})",
        f"{concept}-related words",
    )


def concept_neurons(vocabulary: set[str], min_hits: int = 6, max_words: int = 1000) -> list[SyntheticNeuron]:
    """One neuron per noun or verb synset whose words occur at least `min_hits` times in `vocabulary` (the
    corpus's lower-case words), with at most `max_words` words, inflections counted (so it stays a concept, not a
    part of speech)."""
    wn = wordnet()
    rng = random.Random(0)
    best: dict[frozenset[str], tuple[int, object, set[str]]] = {}
    for pos in ("n", "v"):
        for synset in wn.all_synsets(pos):
            words = concept_words(synset)
            if not 3 <= len(words) <= max_words:
                continue
            hits = frozenset(words & vocabulary)
            # among synsets with the same words in the corpus, keep the most specific (fewest words)
            if len(hits) >= min_hits and (hits not in best or len(words) < best[hits][0]):
                best[hits] = (len(words), synset, words)
    out = []
    for hits, (_, synset, _words) in sorted(best.items(), key=lambda kv: kv[1][1].name()):
        concept = synset.lemmas()[0].name().replace("_", " ")
        out.append(
            SyntheticNeuron(
                f"concept:{synset.name()}",
                "concept",
                Concept(synset.name(), graded=True),
                concept_explanations(concept, sorted(hits), rng),
                held_out=synset.lexname() in HELD_OUT_LEXNAMES,
            )
        )
    return out


def rule_neurons() -> list[SyntheticNeuron]:
    """Every surface and context neuron."""
    out = []
    for family, table in (("surface", SURFACE), ("context", CONTEXT)):
        for name, entry in table.items():
            out.append(SyntheticNeuron(name, family, entry.rule, entry.phrasings, held_out=name in HELD_OUT_KINDS))
    return out


def mixtures(neurons: Sequence[SyntheticNeuron], n: int, seed: int = 0) -> list[SyntheticNeuron]:
    """`n` polysemantic neurons, each two neurons of the same held-out side at once."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(list(neurons), 2)
        if a.held_out != b.held_out:
            continue
        text = (f"{rng.choice(a.explanations)}, and also {rng.choice(b.explanations)}",
                f"two things: {a.explanations[0]} and {b.explanations[0]}")  # fmt: skip
        out.append(SyntheticNeuron(f"mix:{a.name}+{b.name}", "mixture", Mixture(a.rule, b.rule), text, a.held_out))
    return out


def corpus_vocabulary(windows: Sequence[Sequence[str]]) -> set[str]:
    """The lower-case words of token windows."""
    return {text.lower() for w in windows for _, _, text in word_spans(w) if text}
