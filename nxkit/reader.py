"""How nxkit-sim reads an explanation: the frozen SmolLM2 is asked to list words for it, and each window token is
read off that list.

For an explanation E and each prompt template ("Words for E:"), the model's next-token log-probabilities are
compared with the same template without E: the difference (pointwise mutual information, PMI) is high for tokens
the explanation makes likely, whatever E is about (a concept, a suffix, punctuation). A window token is looked up
in that table through its whole word (first piece of " word", as written and lower-cased), its own first piece,
and its neighbours' words; these numbers, a frequency prior and a few surface flags are the token's features.
Nothing here is trained: `train.py` fits a small head on these features.

One forward pass per template reads an explanation; windows are then table look-ups, so simulating many windows,
or many candidate explanations on fixed windows, costs almost nothing beyond that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .rules import word_spans

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


def n_features(n_templates: int = len(TEMPLATES)) -> int:
    """Features per token: per template, the word, its own piece and each neighbour word; then their means, the
    prior and the flags."""
    per = 2 + 2 * N_NEIGHBOURS
    return n_templates * per + per + 1 + len(FLAGS)


@dataclass
class WindowIds:
    """A window's tokens as vocabulary ids of the reading model: per token, its word (as written and lower-cased),
    its own first piece and the neighbouring words, and its surface flags."""

    ids: np.ndarray
    """[tokens, 3 + 2 * N_NEIGHBOURS] ids: word, lower-cased word, own piece, previous words..., next words (-1: none)."""
    flags: np.ndarray
    """[tokens, len(FLAGS)] 0/1."""


class Reader:
    """The frozen language model and its tokenizer, turning explanations into PMI tables and windows into ids."""

    def __init__(self, lm, tokenizer, templates: Sequence[tuple[str, str]] = TEMPLATES, batch_size: int = 32):
        self.lm, self.tok, self.templates, self.batch_size = lm, tokenizer, tuple(templates), batch_size
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "right"
        self._first: dict[str, int] = {}
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
        neighbours = []
        for d in (*range(-N_NEIGHBOURS, 0), *range(1, N_NEIGHBOURS + 1)):
            j = span_of + d
            ok = (j >= 0) & (j < len(spans))
            neighbours.append(np.where(ok, span_ids[np.clip(j, 0, len(span_ids) - 1)], -1))
        ids = np.stack([word_id, lower_id, own_id, *neighbours], axis=1) if n else np.zeros((0, 3 + 2 * N_NEIGHBOURS))
        return WindowIds(ids.astype(np.int64), flags)


def features(table: torch.Tensor, prior: torch.Tensor, window: WindowIds) -> torch.Tensor:
    """[tokens, n_features] reading features of one window under one explanation's PMI `table` [K, V]."""
    ids = torch.from_numpy(window.ids)
    missing = ids < 0
    safe = ids.clamp(min=0)
    per = table[:, safe]  # [K, T, 2 + 2N]
    word = torch.maximum(per[:, :, 0], per[:, :, 1])  # as written or lower-cased, whichever reads higher
    cols = torch.cat([word[..., None], per[:, :, 2:]], dim=-1).masked_fill(missing[None, :, 1:], 0.0)  # [K,T,1+1+2N]
    k, t, c = cols.shape
    scaled = cols / 4.0
    mean = scaled.mean(0)  # [T, c]
    flat = scaled.permute(1, 0, 2).reshape(t, k * c)
    p = (prior[safe[:, 1]] / 10.0)[:, None]
    return torch.cat([flat, mean, p, torch.from_numpy(window.flags)], dim=1)
