"""Detection and fuzzing: cheaper scorers beside simulation, one LLM request per neuron each.

*Detection*: the LLM reads the explanation and a shuffled mix of the neuron's held-out top windows and its
held-out random windows, and says which ones make the neuron fire. *Fuzzing*: the LLM reads the explanation and
the held-out top windows twice, once with the tokens where the neuron fires marked and once with as many tokens
marked at random, and says which markings fit the explanation. Each gives accuracy and balanced accuracy (an AUC only from graded answers)
(`classification_scores`, below); items the answer leaves out are recorded as failed, never scored as wrong.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import prompts
from ..llm.base import Backend, unusable
from ..records import FIRES, RANDOM, ClassifierScore, Failure, HeldOutWindow
from .base import ScoringContext

if TYPE_CHECKING:
    import pandas as pd


def detection_items(windows: list[HeldOutWindow], max_activation: float, seed: int) -> list[tuple[str, int]]:
    """(text, 1 if the window makes the neuron fire) for each held-out window, shuffled with `seed`."""
    items = [
        ("".join(w.tokens).replace("\n", " "), int(max(w.activations, default=0.0) >= FIRES * max_activation))
        for w in windows
    ]
    random.Random(seed).shuffle(items)
    return items


def fuzzing_items(windows: list[HeldOutWindow], max_activation: float, seed: int) -> list[tuple[str, int]]:
    """For each held-out top window with a firing token: its text marked where the neuron fires (1) and marked at as
    many random tokens elsewhere (0), shuffled with `seed`."""
    rng = random.Random(seed)
    items = []
    for w in windows:
        if w.split == RANDOM:
            continue
        right = [a >= FIRES * max_activation for a in w.activations]
        k = sum(right)
        others = [i for i, r in enumerate(right) if not r]
        if not k or len(others) < k:
            continue
        chosen = set(rng.sample(others, k))
        items.append((prompts.mark_tokens(w.tokens, right), 1))
        items.append((prompts.mark_tokens(w.tokens, [i in chosen for i in range(len(w.tokens))]), 0))
    rng.shuffle(items)
    return items


async def classify(
    kind: str, backend: Backend | None, explanation: str, windows: list[HeldOutWindow], max_activation: float, seed: int
) -> tuple[ClassifierScore, list[Failure]]:
    """Run one classification scorer (`detection` or `fuzzing`) on a neuron's held-out windows."""
    if backend is None:
        why = f"{kind} needs an LLM that chats: score with a simulator or explainer on a server, or `local`"
        return ClassifierScore(kind, flag="no_llm"), [Failure(kind, why)]
    make_items = detection_items if kind == "detection" else fuzzing_items
    items = make_items(windows, max_activation, seed)
    if not items:
        return ClassifierScore(kind, flag="empty"), []
    texts = [t for t, _ in items]
    if kind == "detection":
        messages = prompts.detection_messages(explanation, texts)
    else:
        messages = prompts.fuzzing_messages(explanation, texts)
    graded = backend.capabilities.generated_logprobs
    answer = await backend.chat(messages, max_tokens=6 * len(items) + 8, top_logprobs=5 if graded else 0)
    said = prompts.parse_label_positions(answer.text, len(items))
    yes = yes_probabilities(answer, [offset for _, offset in said])
    kept = [(label, s, p) for (_, label), (s, _), p in zip(items, said, yes, strict=True) if s is not None]
    values, flag = classification_scores([label for label, _, _ in kept], [s for _, s, _ in kept])
    auc_flag = None
    if kept and all(p is not None for _, _, p in kept):  # a graded answer: the probability of yes ranks the items
        values["auc"] = classification_scores([label for label, _, _ in kept], [p for _, _, p in kept])[0]["auc"]
    elif values.get("auc") is not None:
        values["auc"], auc_flag = None, "binary_answers"  # 0/1 answers: an AUC would repeat the balanced accuracy
    failures = []
    if len(kept) < len(items):
        unusable(answer)
        failures.append(Failure(kind, f"no 0/1 answer for {len(items) - len(kept)} of {len(items)} items", answer.text))
    score = ClassifierScore(
        kind,
        **values,
        flag=flag,
        n_items=len(items),
        n_positive=sum(lbl for _, lbl in items),
        n_failed=len(items) - len(kept),
        auc_flag=auc_flag,
    )
    return score, failures


def yes_probabilities(answer, offsets: list[int | None]) -> list[float | None]:
    """The probability of 1 against 0 at each answer digit (`offsets` into the answer's text), from the answer's
    top log-probabilities; None where the backend gave none there, or neither digit is among them."""
    starts, pos = {}, 0
    for j, t in enumerate(answer.tokens or []):
        starts[pos] = j
        pos += len(t.token)
    out = []
    for offset in offsets:
        j = starts.get(offset) if offset is not None else None
        if j is None:
            out.append(None)
            continue
        tok = answer.tokens[j]
        top = {k.strip(): v for k, v in tok.top.items()}
        if tok.logprob is not None:
            top.setdefault(tok.token.strip(), tok.logprob)
        p1, p0 = math.exp(top["1"]) if "1" in top else 0.0, math.exp(top["0"]) if "0" in top else 0.0
        out.append(p1 / (p1 + p0) if p1 + p0 > 0 else None)
    return out


class ClassifierScorer:
    """Detection or fuzzing as a `Scorer`: one LLM request per neuron, accuracy and balanced accuracy."""

    columns = ("accuracy", "balanced_accuracy", "auc", "flag")

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"ClassifierScorer({self.name!r})"

    async def score(self, context: ScoringContext) -> tuple[ClassifierScore, list[Failure]]:
        return await classify(
            self.name, context.llm, context.explanation.text, context.windows, context.max_activation, context.seed
        )

    def summary_line(self, table: pd.DataFrame) -> str | None:
        auc = table[f"{self.name}_auc"].dropna()
        if not table[f"{self.name}_balanced_accuracy"].notna().any() and not table[f"{self.name}_flag"].notna().any():
            return None
        bal = table[f"{self.name}_balanced_accuracy"].dropna()
        auc_part = f", AUC {_fmt(auc.mean())} over {len(auc)} neurons" if len(auc) else " (no AUC: the answers are 0/1)"
        return f"{self.name}: mean balanced accuracy {_fmt(bal.mean() if len(bal) else None)} over {len(bal)} neurons{auc_part}"


def _fmt(x: float | None) -> str:
    return "    —" if x is None or x != x else f"{x:+.2f}"


DETECTION = ClassifierScorer("detection")
FUZZING = ClassifierScorer("fuzzing")


def classification_scores(labels: Sequence[int], predictions: Sequence[int | float]) -> tuple[dict, str | None]:
    """Accuracy, balanced accuracy and AUC of predictions (0/1, or scores where higher means 1) against 0/1 labels.

    AUC is the chance that a random positive is ranked above a random negative (ties count half). Balanced
    accuracy and AUC are undefined (None, with the flag `one_class`) when the labels hold one class only; all
    three when there is nothing to score (`empty`).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape} vs {p.shape}")
    if y.size == 0:
        return {"accuracy": None, "balanced_accuracy": None, "auc": None}, "empty"
    accuracy = float(((p >= 0.5) == (y == 1)).mean())
    pos, neg = p[y == 1], p[y == 0]
    if not pos.size or not neg.size:
        return {"accuracy": accuracy, "balanced_accuracy": None, "auc": None}, "one_class"
    balanced = float(((pos >= 0.5).mean() + (neg < 0.5).mean()) / 2)
    auc = float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    )
    return {"accuracy": accuracy, "balanced_accuracy": balanced, "auc": auc}, None
