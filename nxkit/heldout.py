"""The protocol of windows, written down once: which windows a neuron is explained from, chosen on and scored on,
and each scored window's label.

- A neuron's top windows are dealt round-robin into `train / calibration / valid / test`, its random windows into
  `calibration / valid / test` (interleaving gives every split windows from the whole range of strengths, as in the
  public release). A random window is never one of the neuron's own top or most negative windows (the collection
  reader drops those by window id).
- The explainer sees `train` alone, and the compositional search fits its beam on `train` alone.
- Every choice is made on `calibration`: best-of-k among candidates (the search's formulas included), and
  keep-or-revise in revision.
- The headline score is on `valid`, which nothing chose on; the shuffled control is scored on the same valid windows.
- `test` is held back: the kept explanation is scored on it too, for the run's split-half reliability.

Every held-out window carries its label (`top` or `random`) from the moment it is chosen; on disk the labels sit in
the neuron's summary, beside the release-schema explanation file, and `scored_windows` puts them back on.
"""

from __future__ import annotations

from typing import TypeVar

from . import prompts
from .records import (
    RANDOM,
    TOP,
    ActivationRecord,
    HeldOutWindow,
    NeuronRecord,
    NeuronSimulationResults,
    ScoredWindow,
)

T = TypeVar("T")

TOP_SPLITS = ("train", "calibration", "valid", "test")
RANDOM_SPLITS = ("calibration", "valid", "test")


def interleaved_split(items: list[T], names: tuple[str, ...], per_split: int | None = None) -> dict[str, list[T]]:
    """Deal `items` round-robin into named splits: split i gets items i, i+n, i+2n, ..."""
    n = len(names)
    if per_split is None:
        per_split = len(items) // n
    if per_split * n > len(items):
        raise ValueError(f"{len(items)} records cannot fill {n} splits of {per_split}")
    used = items[: per_split * n]
    return {name: used[i::n] for i, name in enumerate(names)}


def top_splits(record: NeuronRecord, per_split: int | None = None) -> dict[str, list[ActivationRecord]]:
    """The top windows dealt into train / calibration / valid / test."""
    return interleaved_split(record.most_positive_activation_records, TOP_SPLITS, per_split)


def random_splits(record: NeuronRecord, per_split: int | None = None) -> dict[str, list[ActivationRecord]]:
    """The random windows dealt into calibration / valid / test."""
    return interleaved_split(record.random_sample, RANDOM_SPLITS, per_split)


def split_records(record: NeuronRecord, split: str, per_split: int | None = None) -> list[ActivationRecord]:
    """Records of one split: `train` is top windows only; the others are top then random, 1:1."""
    if split == "train":
        return top_splits(record, per_split)["train"]
    if split not in RANDOM_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {TOP_SPLITS}")
    return top_splits(record, per_split)[split] + random_splits(record, per_split)[split]


def held_out(record: NeuronRecord, split: str, n: int | None, crop: int | None = None) -> list[HeldOutWindow]:
    """Top windows then random windows of a split, `n` of each (None: all), each labelled with where it came from,
    optionally cropped around their peaks."""
    labelled = [(r, TOP) for r in top_splits(record)[split][:n]] + [
        (r, RANDOM) for r in random_splits(record)[split][:n]
    ]
    out = []
    for r, label in labelled:
        tokens, acts = prompts.crop_window(r.tokens, r.activations, crop)
        ids = r.token_ids
        if ids is not None and len(tokens) < len(r.tokens):
            start = prompts.crop_start(r.activations, crop)
            ids = ids[start : start + len(tokens)]
        out.append(HeldOutWindow(tokens, acts, token_ids=ids, split=label))
    return out


def scored_windows(results: NeuronSimulationResults, splits: list[str]) -> list[HeldOutWindow]:
    """The windows an explanation file was scored on (its first explanation's), each with its label: the one place
    labels stored beside the release-schema file are put back on its windows."""
    return [
        HeldOutWindow(list(w.simulation.simulation.tokens), list(w.simulation.true_activations), split=w.split)
        for w in labelled_simulations(results, splits)
    ]


def labelled_simulations(results: NeuronSimulationResults, splits: list[str]) -> list[ScoredWindow]:
    """The kept explanation's scored windows, each with its label and its simulation (the views and the inspector
    read these; `scored_windows` is the same windows as held-out windows)."""
    seqs = results.scored_explanations[0].scored_simulation.scored_sequence_simulations
    if len(splits) != len(seqs):
        raise ValueError(f"{len(splits)} split labels for {len(seqs)} scored windows")
    return [ScoredWindow(split, s) for s, split in zip(seqs, splits, strict=True)]
