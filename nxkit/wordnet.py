"""WordNet 3.0 offline: nltk's maintained reader over Debian's `wordnet-base`, and the concept lookups that
synthetic neurons and the compositional-search explainer share (which words sit under which noun or verb synset).
"""

from __future__ import annotations

import gzip
import re
import shutil
import warnings
from functools import cache, lru_cache
from pathlib import Path

from .files import atomic_directory
from .offline import cache_dir

WORDNET_DIR = Path("/usr/share/wordnet")
"""Where Debian's `wordnet-base` puts the WordNet 3.0 database."""
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
"""Its manual page listing the lexicographer files (the database ships without the `lexnames` file)."""
POS = ("n", "v")
"""Parts of speech whose synsets are concepts (nouns and verbs: their hypernym trees are deep)."""


class WordNetError(RuntimeError):
    """No WordNet database to read."""


def available() -> bool:
    """True when Debian's WordNet database is installed (or a readable copy is already cached)."""
    return (WORDNET_DIR / "data.noun").exists() or (
        cache_dir() / "nltk_data" / "corpora" / "wordnet" / "lexnames"
    ).exists()


def _wordnet_root() -> Path:
    """An nltk-readable copy of Debian's WordNet 3.0 under the cache (made once, with `lexnames` from its man page)."""
    root = cache_dir() / "nltk_data" / "corpora" / "wordnet"
    if (root / "lexnames").exists():
        return root
    if not (WORDNET_DIR / "data.noun").exists():
        raise WordNetError(
            f"no WordNet database under {WORDNET_DIR}: install Debian's `wordnet-base` (`apt-get install wordnet-base`, "
            "which `make setup` does as root), or concept neurons cannot be made"
        )
    lines = []
    with gzip.open(LEXNAMES_MAN, "rt") as man:
        for line in man:
            if m := re.match(r"^(\d\d)\s+([a-z]+)\.(\S+)\s", line):
                pos = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[m.group(2)]
                lines.append(f"{m.group(1)}\t{m.group(2)}.{m.group(3)}\t{pos}\n")
    with atomic_directory(root) as tmp:
        for f in WORDNET_DIR.iterdir():  # nltk refuses files outside its root, so copy rather than link
            if f.is_file() and (f.name.startswith(("data.", "index.")) or f.suffix == ".exc"):
                shutil.copyfile(f, tmp / f.name)
        (tmp / "lexnames").write_text("".join(lines))
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


@lru_cache(maxsize=262_144)
def concepts_of(word: str) -> frozenset[str]:
    """Names of the noun and verb synsets `word` sits under: each sense of the word (or of its base form, through
    WordNet's own morphology, so `apples` and `geese` count) and every hypernym above it. Empty for non-words."""
    if not word.isalpha():
        return frozenset()
    wn = wordnet()
    out: set[str] = set()
    for pos in POS:
        for synset in wn.synsets(word, pos):
            out.add(synset.name())
            out.update(h.name() for h in synset.closure(lambda s: s.hypernyms()))
    return frozenset(out)


@lru_cache(maxsize=65_536)
def concept_depth(name: str) -> int:
    """How deep a synset sits below its tree's root (0 for `entity.n.01`): deeper is more specific."""
    return wordnet().synset(name).min_depth()


@lru_cache(maxsize=65_536)
def concept_size(name: str) -> int:
    """How many distinct lemmas a synset and its hyponyms hold: smaller is narrower."""
    synset = wordnet().synset(name)
    return len({lemma for s in [synset, *synset.closure(lambda x: x.hyponyms())] for lemma in s.lemma_names()})


def concept_label(name: str) -> str:
    """A synset's first lemma as plain words (`edible_fruit.n.01` -> `edible fruit`); when that lemma names other
    synsets of its part of speech too, the synset's hypernym says which (`bank.n.02` -> `bank (a kind of depository
    financial institution)`), so two concepts read differently."""
    synset = wordnet().synset(name)
    lemma = synset.lemmas()[0].name()
    label = lemma.replace("_", " ")
    if len(wordnet().synsets(lemma, pos=synset.pos())) > 1 and (parents := synset.hypernyms()):
        label += f" (a kind of {parents[0].lemmas()[0].name().replace('_', ' ')})"
    return label


def lexname(name: str) -> str:
    """The lexicographer file of a synset (`noun.food`)."""
    return wordnet().synset(name).lexname()


def is_related(a: str, b: str) -> bool:
    """True when synset `a` is `b`, its parent or its child (one hypernym step either way)."""
    if a == b:
        return True
    wn = wordnet()
    sa, sb = wn.synset(a), wn.synset(b)
    return sb in sa.hypernyms() or sa in sb.hypernyms()
