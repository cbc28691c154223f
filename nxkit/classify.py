"""Detection and fuzzing: cheaper scorers beside simulation, one LLM request per neuron each.

*Detection*: the LLM reads the explanation and a shuffled mix of the neuron's held-out top windows and its
held-out random windows, and says which ones make the neuron fire. *Fuzzing*: the LLM reads the explanation and
the held-out top windows twice, once with the tokens where the neuron fires marked and once with as many tokens
marked at random, and says which markings fit the explanation. Each gives accuracy, balanced accuracy and AUC
(`score.classification_scores`); items the answer leaves out are recorded as failed, never scored as wrong.
"""

from __future__ import annotations

import random

from . import prompts
from .llm import Backend
from .records import RANDOM, ClassifierScore, Failure, HeldOutWindow
from .score import classification_scores
from .seeds import mix_seed

SCORERS = ("simulation", "detection", "fuzzing")
"""Scorers `--explain.scorers` picks from: simulation always runs (it chooses among candidates)."""
FIRING = 0.3
"""A token fires when its activation reaches this fraction of the neuron's maximum (and a window fires when one of
its tokens does)."""


def detection_items(windows: list[HeldOutWindow], max_activation: float, seed: int) -> list[tuple[str, int]]:
    """(text, 1 if the window makes the neuron fire) for each held-out window, shuffled with `seed`."""
    items = [
        ("".join(w.tokens).replace("\n", " "), int(max(w.activations, default=0.0) >= FIRING * max_activation))
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
        right = [a >= FIRING * max_activation for a in w.activations]
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
    answer = await backend.chat(messages, max_tokens=6 * len(items) + 8)
    said = prompts.parse_labels(answer.text, len(items))
    kept = [(label, s) for (_, label), s in zip(items, said, strict=True) if s is not None]
    values, flag = classification_scores([label for label, _ in kept], [s for _, s in kept])
    failures = []
    if len(kept) < len(items):
        failures.append(Failure(kind, f"no 0/1 answer for {len(items) - len(kept)} of {len(items)} items", answer.text))
    score = ClassifierScore(
        kind,
        **values,
        flag=flag,
        n_items=len(items),
        n_positive=sum(lbl for _, lbl in items),
        n_failed=len(items) - len(kept),
    )
    return score, failures


def scorer_backend(explainer, simulator) -> Backend | None:
    """The LLM the classification scorers ask: the simulator's when it has one, else the explainer's, else None."""
    for component in (simulator, explainer):
        backend = getattr(component, "backend", None)
        if backend is not None and callable(getattr(backend, "chat", None)):
            return backend
    return None


def seed_for(seed: int, layer: int, neuron: int, kind: str) -> int:
    return mix_seed(seed, layer, neuron, SCORERS.index(kind))
