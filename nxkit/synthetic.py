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

import gzip
import hashlib
import random
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from .offline import cache_dir
from .records import ActivationRecord, NeuronId, NeuronRecord

WORDNET_DIR = Path("/usr/share/wordnet")
"""Where Debian's `wordnet-base` puts the WordNet 3.0 database."""
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
"""Its manual page listing the lexicographer files (the database ships without the `lexnames` file)."""
HELD_OUT_LEXNAMES = frozenset({"noun.food", "noun.animal", "verb.motion", "noun.body"})
"""WordNet subtrees (lexicographer files) whose concepts never appear in training."""
HELD_OUT_KINDS = frozenset({"repeat", "allcaps", "after_negation", "suffix:ly"})
"""Rule kinds that never appear in training."""


class SyntheticError(RuntimeError):
    """Synthetic neurons that cannot be made (for example: no WordNet database)."""


# --- words of a window ------------------------------------------------------------------------------


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
        out = np.zeros(len(tokens))
        words = [s for s in word_spans(tokens) if s[2]]
        for (_, _, prev), (a, b, _) in zip(words, words[1:], strict=False):
            if prev.lower() == self.word:
                out[a:b] = self.strength
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
        top_k: int = 40,
        n_random: int = 30,
        noise: float = 0.03,
        seed: int = 0,
    ) -> NeuronRecord:
        """The neuron's record over `windows` (token strings), as collection keeps it: top windows strongest
        first, a uniform random sample, quantile samples and moments. `noise` (a fraction of the maximum) is
        added to every activation, seeded by `seed`, then clipped at 0 like a ReLU."""
        rng = np.random.default_rng(seed)
        acts = [self.rule(w) for w in windows]
        peak = max((float(a.max()) for a in acts if a.size), default=0.0) or 1.0
        acts = [np.clip(a + rng.normal(0, noise * peak, a.shape), 0, None) for a in acts]
        maxima = np.array([a.max() if a.size else 0.0 for a in acts])

        def rec(i: int) -> ActivationRecord:  # only the windows kept become records
            return ActivationRecord(list(windows[i]), [round(float(v), 4) for v in acts[i]])

        top = [rec(i) for i in np.argsort(-maxima, kind="stable")[:top_k]]
        rand = [rec(i) for i in rng.choice(len(windows), size=min(n_random, len(windows)), replace=False)]
        levels = [0.5, 0.9, 0.99]
        bounds = [float(b) for b in np.quantile(maxima, levels)]
        bands = np.searchsorted(bounds, maxima, side="right")
        by_quantile = [[rec(i) for i in np.flatnonzero(bands == k)[:5]] for k in range(len(levels) + 1)]
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


# --- WordNet ----------------------------------------------------------------------------------------


def _wordnet_root() -> Path:
    """An nltk-readable copy of Debian's WordNet 3.0 under the cache (made once, with `lexnames` from its man page)."""
    root = cache_dir() / "nltk_data" / "corpora" / "wordnet"
    if (root / "lexnames").exists():
        return root
    if not (WORDNET_DIR / "data.noun").exists():
        raise SyntheticError(
            f"no WordNet database under {WORDNET_DIR}: install Debian's `wordnet-base` (`apt-get install wordnet-base`, "
            "which `make setup` does as root), or concept neurons cannot be made"
        )
    tmp = root.with_name("wordnet.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in WORDNET_DIR.iterdir():  # nltk refuses files outside its root, so copy rather than link
        if f.is_file() and (f.name.startswith(("data.", "index.")) or f.suffix == ".exc"):
            shutil.copyfile(f, tmp / f.name)
    lines = []
    with gzip.open(LEXNAMES_MAN, "rt") as man:
        for line in man:
            if m := re.match(r"^(\d\d)\s+([a-z]+)\.(\S+)\s", line):
                pos = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[m.group(2)]
                lines.append(f"{m.group(1)}\t{m.group(2)}.{m.group(3)}\t{pos}\n")
    (tmp / "lexnames").write_text("".join(lines))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


@cache
def wordnet():
    """WordNet 3.0 through nltk's maintained reader, from Debian's `wordnet-base` (no download)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None  # no multilingual data here, so nothing to map between versions

    root = _wordnet_root()
    if str(root.parent.parent) not in nltk.data.path:
        nltk.data.path.insert(0, str(root.parent.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": expected
        return _Reader(str(root), None)


def _inflections(word: str, pos: str) -> set[str]:
    if pos == "n":
        return {word, word + "s", word + "es"}
    if pos == "v":
        stem = word[:-1] if word.endswith("e") else word
        return {word, word + "s", word + "es", word + "d", word + "ed", stem + "ing", stem + "ed"}
    return {word}


def concept_words(synset) -> set[str]:
    """Single-word lemmas of a synset and every hyponym under it, with simple inflections, lower case."""
    out = set()
    for s in [synset, *synset.closure(lambda x: x.hyponyms())]:
        for lemma in s.lemmas():
            name = lemma.name().lower()
            if name.isalpha():
                out |= _inflections(name, synset.pos())
    return out


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
    for hits, (_, synset, words) in sorted(best.items(), key=lambda kv: kv[1][1].name()):
        concept = synset.lemmas()[0].name().replace("_", " ")
        out.append(
            SyntheticNeuron(
                f"concept:{synset.name()}",
                "concept",
                WordSet(frozenset(words)),
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
