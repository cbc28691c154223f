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
from ..rules import (
    After,
    AfterNegation,
    Before,
    Concept,
    Inside,
    LineStart,
    Mixture,
    Punctuation,
    Repeat,
    Rule,
    WordPattern,
    word_spans,
)
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


SURFACE = {
    "number": (
        WordPattern(r"\d+(?:[.,]\d+)?"),
        ("numbers", "numerals written with digits", "digits in numbers like 42"),
    ),
    "year": (
        WordPattern(r"(?:1[5-9]|20)\d\d"),
        ("years", "four-digit years", "years such as 1984 or 2001", "dates given as years"),
    ),
    "capitalised": (
        WordPattern(r"[A-Z][a-z]+", 0.8),
        ("capitalised words", "words starting with a capital letter", "proper nouns and other capitalised words"),
    ),
    "allcaps": (
        WordPattern(r"[A-Z]{2,}"),
        ("words in all capitals", "upper-case words and acronyms", "SHOUTED or all-caps words"),
    ),
    "suffix:ing": (WordPattern(r"[A-Za-z]+ing"), ("words ending in -ing", "-ing forms of verbs", "words like running")),
    "suffix:ly": (WordPattern(r"[A-Za-z]+ly"), ("words ending in -ly", "adverbs ending in -ly", "words like quickly")),
    "suffix:tion": (
        WordPattern(r"[A-Za-z]+tions?"),
        ("words ending in -tion", "nouns ending in -tion", "words like nation and station"),
    ),
    "line_start": (LineStart(), ("the first word of a line", "words right after a line break", "line beginnings")),
    "comma": (Punctuation(","), ("commas", "the comma punctuation mark")),
    "question": (Punctuation("?"), ("question marks", "the end of a question")),
    "period": (Punctuation("."), ("full stops", "periods at the end of sentences", "the end of a sentence")),
    "colon": (Punctuation(":"), ("colons", "the colon punctuation mark")),
}
"""Surface rules: name -> (rule, phrasings)."""
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
    "quotes": (Inside('"', '"'), ("text inside quotation marks", "quoted words", "words between double quotes")),
    "brackets": (Inside("(", ")"), ("text inside parentheses", "words in brackets", "parenthetical remarks")),
    "after_negation": (
        AfterNegation(),
        ("words right after a negation", "what follows 'not' or 'never'", "negated words"),
    ),
    "repeat": (
        Repeat(),
        ("a word that already appeared earlier in the text", "the second occurrence of a repeated word"),
    ),
}
"""Context rules: name -> (rule, phrasings)."""
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
        for name, (rule, phrasings) in table.items():
            out.append(SyntheticNeuron(name, family, rule, phrasings, held_out=name in HELD_OUT_KINDS))
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
