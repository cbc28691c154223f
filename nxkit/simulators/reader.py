"""How nxkit-sim reads an explanation: the frozen SmolLM2 is asked to list words for it, and each window token is
read off that list.

For an explanation E and each prompt template ("Words for E:"), the model's next-token log-probabilities are
compared with the same template without E: the difference (pointwise mutual information, PMI) is high for tokens
the explanation makes likely, whatever E is about (a concept, a suffix, punctuation). A window token is looked up
in that table through its whole word (first piece of " word", as written and lower-cased), its own first piece,
and its neighbours' words; these numbers, a frequency prior and a few surface flags are the token's features.
The explanation is also read literally (`Terms`): which of the window's words (and neighbours) it uses or quotes,
which suffixes and prefixes it names, and how close each word's input embedding is to its words'.
Nothing here is trained: `training/train.py` fits a small head on these features.

One forward pass per template reads an explanation; windows are then table look-ups, so simulating many windows,
or many candidate explanations on fixed windows, costs almost nothing beyond that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..rules import word_spans

TEMPLATES: tuple[tuple[str, str], ...] = (
    ("Here are some words for {}:", "Here are some words:"),
    ("Examples of {}:", "Examples:"),
    ("Words related to {} include", "Words include"),
)
"""Prompt templates (with and without the explanation) whose next-token distributions are compared: our own
wording."""

FLAGS = ("word_start", "alpha", "capital", "digit", "punct", "space", "upper")
"""Surface flags of a token, appended to its reading features."""

N_NEIGHBOURS = 2
"""Words read on each side besides the token's own (the previous and next word)."""


READING = 2
"""Version of the reading features (1: PMI tables only; 2: also the explanation's own words and embedding
similarity). Weights record the version they were trained on, and load with the features of that version."""

STOPWORDS = frozenset(
    "a an the and or of for to in on at by with from as such like that this these those is are be it its "
    "word words any some other than into".split()
)
"""Function words left out of an explanation's terms (they match almost any text)."""


def n_features(n_templates: int = len(TEMPLATES), reading: int = READING) -> int:
    """Features per token: per template, the word, its own piece and each neighbour word; then their means, the
    prior and the flags; from version 2 also the embedding similarity (same columns) and the word matches
    (`N_LEXICAL`)."""
    per = 2 + 2 * N_NEIGHBOURS
    base = n_templates * per + per + 1 + len(FLAGS)
    return base + (per + N_LEXICAL if reading >= 2 else 0)


N_LEXICAL = 2 * (1 + 2 * N_NEIGHBOURS) + 2
"""Word-match features: the token's word and each neighbour's matching a word of the explanation, and matching a
quoted one; the word ending in a suffix (-ful) or starting with a prefix (un-) the explanation names."""


def stem(word: str) -> str:
    """A crude stem for matching an explanation's words to a window's: lower-cased, one inflection ending off and
    a final e (follows, followed, following -> follow; cities -> city; hoped, hope -> hop)."""
    w = word.lower()
    for end, put in (("ing", ""), ("ies", "y"), ("ied", "y"), ("es", ""), ("ed", ""), ("s", "")):
        if w.endswith(end) and len(w) - len(end) >= 3:
            w = w[: -len(end)] + put
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


@dataclass
class Terms:
    """What an explanation names literally: its words, the ones it quotes, and the word pieces it names."""

    words: frozenset[str] = field(default_factory=frozenset)
    """Stems of its words (function words left out)."""
    quoted: frozenset[str] = field(default_factory=frozenset)
    """Stems of the words and marks in quotes ('of', "the"), function words included: 'the word after "of"'."""
    suffixes: tuple[str, ...] = ()
    """Endings it names as "-ful"."""
    prefixes: tuple[str, ...] = ()
    """Beginnings it names as "un-"."""


def terms(explanation: str) -> Terms:
    """The literal terms of an explanation."""
    words = {stem(w) for w in re.findall(r"[A-Za-z]+", explanation) if w.lower() not in STOPWORDS}
    quoted = {stem(q.strip()) for q in re.findall(r"""['"‘“]([^'"’”]{1,30})['"’”]""", explanation) if q.strip()}
    suffixes = tuple(m.lower() for m in re.findall(r"(?<![A-Za-z])-([A-Za-z]{2,6})\b", explanation))
    prefixes = tuple(m.lower() for m in re.findall(r"\b([A-Za-z]{2,6})-(?![A-Za-z])", explanation))
    return Terms(frozenset(words), frozenset(quoted), suffixes, prefixes)


@dataclass
class Reading:
    """What the reader takes from one explanation, before any window is seen."""

    table: torch.Tensor
    """[templates, vocabulary] PMI of each next token given the explanation."""
    similarity: torch.Tensor
    """[vocabulary] the highest cosine similarity of each token's input embedding to the explanation's words'."""
    terms: Terms
    """Its literal words, quoted words and named word pieces."""
    kind: torch.Tensor
    """[hidden] its mean input embedding (what kind of explanation it is)."""


@dataclass
class WindowIds:
    """A window's tokens as vocabulary ids of the reading model: per token, its word (as written and lower-cased),
    its own first piece and the neighbouring words, and its surface flags."""

    ids: np.ndarray
    """[tokens, 3 + 2 * N_NEIGHBOURS] ids: word, lower-cased word, own piece, previous words..., next words (-1: none)."""
    flags: np.ndarray
    """[tokens, len(FLAGS)] 0/1."""
    words: list[str] = field(default_factory=list)
    """The window's words, lower-cased (one per word span)."""
    stems: list[str] = field(default_factory=list)
    """Their stems (`stem`), for matching an explanation's words."""
    cols: np.ndarray | None = None
    """[tokens, 1 + 2 * N_NEIGHBOURS] the word span of each token, then of its neighbour words (-1: none)."""


class Reader:
    """The frozen language model and its tokenizer, turning explanations into PMI tables and windows into ids."""

    def __init__(self, lm, tokenizer, templates: Sequence[tuple[str, str]] = TEMPLATES, batch_size: int = 32):
        self.lm, self.tok, self.templates, self.batch_size = lm, tokenizer, tuple(templates), batch_size
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "right"
        self._first: dict[str, int] = {}
        self._unit: torch.Tensor | None = None  # unit-length input embeddings, made on first use
        self._baseline = self._logprobs([b for _, b in self.templates])  # [K, V]

    @torch.inference_mode()
    def _logprobs(self, prompts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            hidden = self.lm.model(**enc).last_hidden_state
            last = hidden[torch.arange(len(chunk)), enc["attention_mask"].sum(1) - 1]
            out.append(torch.log_softmax(self.lm.lm_head(last).float(), dim=-1))
        return torch.cat(out)

    def tables(self, explanations: Sequence[str]) -> torch.Tensor:
        """[explanations, templates, vocabulary] PMI: log p(token | template with E) - log p(token | without)."""
        k = len(self.templates)
        prompts = [a.format(e.strip()) for e in explanations for a, _ in self.templates]
        return (self._logprobs(prompts).view(len(explanations), k, -1) - self._baseline).float()

    @torch.inference_mode()
    def similarity(self, explanations: Sequence[str]) -> torch.Tensor:
        """[explanations, vocabulary] each token's highest cosine similarity (input embeddings) to a piece of the
        explanation's content words (0 where it has none)."""
        emb = self.lm.model.embed_tokens.weight
        if self._unit is None:
            self._unit = torch.nn.functional.normalize(emb.float(), dim=-1)
        out = torch.zeros(len(explanations), emb.shape[0])
        for i, e in enumerate(explanations):
            words = [w for w in re.findall(r"[A-Za-z]+", e) if w.lower() not in STOPWORDS]
            pieces = sorted(
                {self.first_piece(" " + w) for w in words} | {self.first_piece(" " + w.lower()) for w in words}
            )
            if pieces:
                out[i] = (self._unit @ self._unit[pieces].T).amax(-1)
        return out

    def read(self, explanations: Sequence[str]) -> list[Reading]:
        """Everything the reader takes from each explanation (three forward passes each, batched)."""
        tables, sims = self.tables(explanations), self.similarity(explanations)
        return [
            Reading(t, s, terms(e), self.explanation_vector(e))
            for t, s, e in zip(tables, sims, explanations, strict=True)
        ]

    @torch.inference_mode()
    def explanation_vector(self, explanation: str) -> torch.Tensor:
        """[hidden] the mean input embedding of the explanation's tokens: what kind of explanation it is (a trained
        projection of it lets the head weigh the features differently for "the word after X" and "kinds of X")."""
        ids = self.tok(explanation.strip() or " ", add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        return self.lm.model.embed_tokens(ids).float().mean(0)

    def prior(self) -> torch.Tensor:
        """[vocabulary] the mean log-probability over the templates without an explanation."""
        return self._baseline.mean(0)

    def first_piece(self, text: str) -> int:
        """The id of the first piece of `text` (cached)."""
        got = self._first.get(text)
        if got is None:
            pieces = self.tok(text, add_special_tokens=False)["input_ids"]
            got = self._first[text] = pieces[0] if pieces else (self.tok.pad_token_id or 0)
        return got

    def window_ids(self, tokens: Sequence[str]) -> WindowIds:
        """Ids and flags of a window's tokens, from any subject tokenizer's token strings."""
        n = len(tokens)
        word_id = np.zeros(n, dtype=np.int64)
        lower_id = np.zeros(n, dtype=np.int64)
        own_id = np.array([self.first_piece(t if t[:1].isspace() else " " + t) if t else 0 for t in tokens])
        flags = np.zeros((n, len(FLAGS)), dtype=np.float32)
        spans = word_spans(tokens)
        span_of = np.zeros(n, dtype=np.int64)
        span_ids = []
        for s, (a, b, text) in enumerate(spans):
            key = text or tokens[a].strip() or "\n"
            wid, lid = self.first_piece(" " + key), self.first_piece(" " + key.lower())
            span_ids.append(wid)
            word_id[a:b], lower_id[a:b], span_of[a:b] = wid, lid, s
            flags[a, 0] = 1.0
            flags[a:b, 1] = float(text.isalpha())
            flags[a:b, 2] = float(text[:1].isupper())
            flags[a:b, 3] = float(any(c.isdigit() for c in text))
            flags[a:b, 4] = float(bool(text) and not any(c.isalnum() for c in text))
            flags[a:b, 5] = float(not text)
            flags[a:b, 6] = float(len(text) > 1 and text.isupper())
        span_ids = np.array(span_ids or [0], dtype=np.int64)
        neighbours, cols = [], [span_of]
        for d in (*range(-N_NEIGHBOURS, 0), *range(1, N_NEIGHBOURS + 1)):
            j = span_of + d
            ok = (j >= 0) & (j < len(spans))
            neighbours.append(np.where(ok, span_ids[np.clip(j, 0, len(span_ids) - 1)], -1))
            cols.append(np.where(ok, j, -1))
        ids = np.stack([word_id, lower_id, own_id, *neighbours], axis=1) if n else np.zeros((0, 3 + 2 * N_NEIGHBOURS))
        cols_a = np.stack(cols, axis=1) if n else np.zeros((0, 1 + 2 * N_NEIGHBOURS))
        words = [(text or tokens[a].strip()).lower() for a, _, text in spans]
        return WindowIds(ids.astype(np.int64), flags, words, [stem(w) for w in words], cols_a.astype(np.int64))


def _lexical(t: Terms, window: WindowIds) -> np.ndarray:
    """[tokens, N_LEXICAL] word matches between an explanation's terms and a window's words."""
    span = np.array(
        [
            [
                s in t.words,
                s in t.quoted or w in t.quoted,
                any(w.endswith(x) and len(w) > len(x) + 1 for x in t.suffixes),
                any(w.startswith(x) and len(w) > len(x) + 1 for x in t.prefixes),
            ]
            for s, w in zip(window.stems, window.words, strict=True)
        ]
        or np.zeros((0, 4)),
        dtype=np.float32,
    ).reshape(-1, 4)
    cols = window.cols
    if span.shape[0] == 0:
        return np.zeros((len(cols), N_LEXICAL), dtype=np.float32)
    missing = cols < 0
    got = span[np.clip(cols, 0, None)]  # [T, 1 + 2N, 4]
    got[missing] = 0.0
    return np.concatenate([got[:, :, 0], got[:, :, 1], got[:, 0, 2:]], axis=1)


def features(reading: Reading, prior: torch.Tensor, window: WindowIds, version: int = READING) -> torch.Tensor:
    """[tokens, n_features] reading features of one window under one explanation's `Reading`: its PMI table alone
    (version 1), then the embedding similarity and the word matches (version 2)."""
    table = reading.table
    ids = torch.from_numpy(window.ids)
    missing = ids < 0
    safe = ids.clamp(min=0)
    per = table[:, safe].float()  # [K, T, 2 + 2N]
    word = torch.maximum(per[:, :, 0], per[:, :, 1])  # as written or lower-cased, whichever reads higher
    cols = torch.cat([word[..., None], per[:, :, 2:]], dim=-1).masked_fill(missing[None, :, 1:], 0.0)  # [K,T,1+1+2N]
    k, t, c = cols.shape
    scaled = cols / 4.0
    mean = scaled.mean(0)  # [T, c]
    flat = scaled.permute(1, 0, 2).reshape(t, k * c)
    p = (prior[safe[:, 1]] / 10.0)[:, None]
    out = [flat, mean, p, torch.from_numpy(window.flags)]
    if version >= 2:
        sim = reading.similarity[safe].float()  # [T, 2 + 2N]
        sim = torch.cat([torch.maximum(sim[:, :1], sim[:, 1:2]), sim[:, 2:]], dim=1).masked_fill(missing[:, 1:], 0.0)
        out += [sim, torch.from_numpy(_lexical(reading.terms, window))]
    return torch.cat(out, dim=1)
