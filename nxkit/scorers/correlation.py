"""Scores: how well simulated activations match real ones. Pure numpy over records; imports no stage.

Every score is a `Score(value, flag)`: `value` is None and `flag` says why when the score is
undefined (constant or empty input), so a dead window or a flat prediction never crashes a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ..prompts import SIM_MAX
from ..records import (
    RANDOM,
    SIMULATED_NORMALIZED_ACTIVATIONS,
    UNKNOWN,
    ActivationRecord,
    ScoredSequenceSimulation,
    ScoredSimulation,
    Scores,
    SequenceSimulation,
    SimulationFailure,
)

OFFLINE_NOTE = (
    "Note: the offline SmolLM2-135M is a smoke-level model: as explainer its explanations are generic, and as "
    "prompted simulator (--simulator local) it barely reads them, so scores near 0 and a shuffled-control gap near 0 "
    "are expected from it. nxkit-sim, the offline simulator of free text, does read explanations (README: nxkit-sim)."
)


class Score(NamedTuple):
    """A score, or None with the reason it is undefined."""

    value: float | None
    flag: str | None = None


def _arrays(real: Sequence[float], predicted: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r, p = np.asarray(real, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if r.shape != p.shape:
        raise ValueError(f"real and predicted differ in length: {r.shape} vs {p.shape}")
    return r, p


def correlation_score(real: Sequence[float], predicted: Sequence[float]) -> Score:
    """Pearson correlation; undefined (flagged) when either side is empty or constant."""
    r, p = _arrays(real, predicted)
    if r.size < 2:
        return Score(None, "empty")
    if np.ptp(r) == 0:
        return Score(None, "constant_real")
    if np.ptp(p) == 0:
        return Score(None, "constant_predicted")
    return Score(float(np.corrcoef(r, p)[0, 1]))


def rsquared_score(real: Sequence[float], predicted: Sequence[float]) -> Score:
    """1 - SSE / SST of the prediction taken as is (so it needs predictions in real units)."""
    r, p = _arrays(real, predicted)
    if r.size == 0:
        return Score(None, "empty")
    sst = float(((r - r.mean()) ** 2).sum())
    if sst == 0:
        return Score(None, "constant_real")
    return Score(1 - float(((r - p) ** 2).sum()) / sst)


def absolute_dev_explained_score(real: Sequence[float], predicted: Sequence[float]) -> Score:
    """1 - mean|real - predicted| / mean|real| (needs predictions in real units)."""
    r, p = _arrays(real, predicted)
    if r.size == 0:
        return Score(None, "empty")
    denom = float(np.abs(r).mean())
    if denom == 0:
        return Score(None, "zero_real")
    return Score(1 - float(np.abs(r - p).mean()) / denom)


def aggregate_correlation(
    real_sequences: Sequence[Sequence[float]], predicted_sequences: Sequence[Sequence[float]]
) -> Score:
    """Correlation over all sequences concatenated (not an average of per-sequence correlations)."""
    if len(real_sequences) != len(predicted_sequences):
        raise ValueError(f"{len(real_sequences)} real sequences but {len(predicted_sequences)} predicted")
    real = [v for s in real_sequences for v in s]
    pred = [v for s in predicted_sequences for v in s]
    return correlation_score(real, pred)


def to_activation_units(expected: Sequence[float], max_activation: float, scale: float = SIM_MAX) -> list[float]:
    """Simulator predictions (0 to `scale`: 9 for the prompted digits, 10 for nxkit-sim's bins) rescaled to the
    neuron's units, for r^2 and deviation scores."""
    return [v / scale * max_activation for v in expected]


def simulation_scale(sim: SequenceSimulation) -> float:
    """The top of a simulation's own scale (its largest distribution value: 10 for nxkit-sim's bins and exact
    formulas), else the prompted digits' 9. Views shade predictions against this, scores rescale with it."""
    values = sim.distribution_values[0] if sim.distribution_values else None
    return max(values) if values else SIM_MAX


def _failed_sequence(record: ActivationRecord) -> SequenceSimulation:
    """A window whose simulation failed: empty predictions (never zeros), skipped by every aggregate."""
    return SequenceSimulation(list(record.tokens), [], SIMULATED_NORMALIZED_ACTIVATIONS, [], [])


def score_simulation(
    records: Sequence[ActivationRecord],
    simulations: Sequence[SequenceSimulation | SimulationFailure],
    max_activation: float,
) -> ScoredSimulation:
    """Score each window and all of them together; failed windows keep empty predictions and are skipped."""
    if len(records) != len(simulations):
        raise ValueError(f"{len(records)} records but {len(simulations)} simulations")
    seqs = []
    for rec, sim in zip(records, simulations, strict=True):
        if isinstance(sim, SimulationFailure) or not sim.expected_activations:
            seqs.append(ScoredSequenceSimulation(_failed_sequence(rec), list(rec.activations), None, None, None))
            continue
        if len(sim.expected_activations) != len(rec.activations):
            raise ValueError(
                f"a simulation of {len(sim.expected_activations)} tokens for a window of {len(rec.activations)}"
            )
        units = to_activation_units(sim.expected_activations, max_activation, simulation_scale(sim))
        seqs.append(
            ScoredSequenceSimulation(
                simulation=sim,
                true_activations=list(rec.activations),
                ev_correlation_score=correlation_score(rec.activations, sim.expected_activations).value,
                rsquared_score=rsquared_score(rec.activations, units).value,
                absolute_dev_explained_score=absolute_dev_explained_score(rec.activations, units).value,
            )
        )
    return aggregate_scored(seqs, max_activation)


def _predicted(seqs: Sequence[ScoredSequenceSimulation]) -> tuple[list[float], list[float]]:
    ok = [s for s in seqs if s.simulation.expected_activations]
    return [v for s in ok for v in s.true_activations], [v for s in ok for v in s.simulation.expected_activations]


def aggregate_scored(seqs: list[ScoredSequenceSimulation], max_activation: float) -> ScoredSimulation:
    """Aggregate scores over the windows that have predictions."""
    real, pred = _predicted(seqs)
    units = [
        u
        for s in seqs
        if s.simulation.expected_activations
        for u in to_activation_units(s.simulation.expected_activations, max_activation, simulation_scale(s.simulation))
    ]
    return ScoredSimulation(
        scored_sequence_simulations=seqs,
        ev_correlation_score=correlation_score(real, pred).value,
        rsquared_score=rsquared_score(real, units).value,
        absolute_dev_explained_score=absolute_dev_explained_score(real, units).value,
    )


def score_flag(scored: ScoredSimulation) -> str | None:
    """Why the aggregate correlation of `scored` is undefined (None when it is defined)."""
    return correlation_score(*_predicted(scored.scored_sequence_simulations)).flag


def split_correlation(scored: ScoredSimulation, splits: Sequence[str], split: str = RANDOM) -> Score:
    """Correlation over the windows of one split (`random` by default), read from each window's label.

    `splits` gives the split of each scored window in order; a window's split is never inferred from
    its position. No window of that split is flagged `no_<split>_windows`; a window of unknown split
    makes the score undefined (`unknown_split`) rather than silently mixed.
    """
    seqs = scored.scored_sequence_simulations
    if len(splits) != len(seqs):
        raise ValueError(f"{len(splits)} split labels for {len(seqs)} scored windows")
    if UNKNOWN in splits:
        return Score(None, "unknown_split")
    chosen = [s for s, label in zip(seqs, splits, strict=True) if label == split]
    if not chosen:
        return Score(None, f"no_{split}_windows")
    return correlation_score(*_predicted(chosen))


BOOTSTRAP = 1000
"""Resamples of a neuron's windows behind every interval."""
LEVEL = 0.95
"""The coverage of every interval."""


def _window_stats(seqs: Sequence[ScoredSequenceSimulation], predicted: Sequence[Sequence[float]] | None = None):
    """Per window: n, sum r, sum p, sum r^2, sum p^2, sum rp (the sufficient statistics of a pooled correlation)."""
    rows = []
    for i, s in enumerate(seqs):
        r = np.asarray(s.true_activations, dtype=np.float64)
        p = np.asarray(s.simulation.expected_activations if predicted is None else predicted[i], dtype=np.float64)
        rows.append([r.size, r.sum(), p.sum(), (r * r).sum(), (p * p).sum(), (r * p).sum()])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def _pooled_corr(sums: np.ndarray) -> np.ndarray:
    """Pearson correlation from summed statistics, one per row (NaN where either side is constant)."""
    n, sr, sp, srr, spp, srp = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = srp - sr * sp / n
        vr, vp = srr - sr * sr / n, spp - sp * sp / n
        out = cov / np.sqrt(vr * vp)
    out[(vr <= 1e-12 * np.maximum(srr, 1)) | (vp <= 1e-12 * np.maximum(spp, 1)) | (n < 2)] = np.nan
    return out


def _resample_counts(n_windows: int, seed: int, n: int = BOOTSTRAP) -> np.ndarray:
    """[n, n_windows] how often each window is drawn in each resample (windows drawn with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_windows, np.full(n_windows, 1.0 / n_windows), size=n).astype(np.float64)


def _interval(values: np.ndarray) -> list[float] | None:
    """The central `LEVEL` interval of resampled values; None when fewer than half the resamples are defined."""
    ok = values[np.isfinite(values)]
    if len(ok) < len(values) / 2:
        return None
    tail = (1 - LEVEL) / 2 * 100
    return [round(float(np.percentile(ok, tail)), 4), round(float(np.percentile(ok, 100 - tail)), 4)]


def bootstrap_interval(seqs: Sequence[ScoredSequenceSimulation], seed: int = 0) -> list[float] | None:
    """A seeded bootstrap over windows of the pooled correlation: the 95% interval, or None (too few windows, or
    mostly undefined). Failed windows are left out, as the score leaves them out."""
    ok = [s for s in seqs if s.simulation.expected_activations]
    if len(ok) < 2:
        return None
    counts = _resample_counts(len(ok), seed)
    return _interval(_pooled_corr(counts @ _window_stats(ok)))


def paired_difference(
    seqs: Sequence[ScoredSequenceSimulation], other: Sequence[Sequence[float]], seed: int = 0
) -> tuple[float | None, list[float] | None]:
    """The correlation of `seqs`' simulation minus that of `other` predictions on the same windows (the gap of the
    shuffled control), and its 95% interval from one bootstrap that resamples the same windows for both."""
    keep = [i for i, s in enumerate(seqs) if s.simulation.expected_activations and len(other[i])]
    if len(keep) < 2:
        return None, None
    chosen, theirs = [seqs[i] for i in keep], [other[i] for i in keep]
    mine_stats, their_stats = _window_stats(chosen), _window_stats(chosen, theirs)
    whole = np.ones((1, len(keep)))
    point = _pooled_corr(whole @ mine_stats) - _pooled_corr(whole @ their_stats)
    counts = _resample_counts(len(keep), seed)
    diffs = _pooled_corr(counts @ mine_stats) - _pooled_corr(counts @ their_stats)
    value = float(point[0]) if np.isfinite(point[0]) else None
    return value, _interval(diffs) if value is not None else None


def scores(scored: ScoredSimulation, splits: Sequence[str], seed: int = 0, intervals: bool = True) -> Scores:
    """Top-and-random and random-only correlation with their flags and (unless `intervals` is False) their bootstrap
    intervals, as the summary records them."""
    seqs = scored.scored_sequence_simulations
    both = correlation_score(*_predicted(seqs))
    rand = split_correlation(scored, splits, RANDOM)
    random_seqs = [s for s, label in zip(seqs, splits, strict=True) if label == RANDOM]
    return Scores(
        top_and_random=both.value,
        random_only=rand.value,
        top_and_random_flag=both.flag,
        random_only_flag=rand.flag,
        n_windows=len(seqs),
        n_failed=sum(not s.simulation.expected_activations for s in seqs),
        top_and_random_interval=bootstrap_interval(seqs, seed) if intervals and both.value is not None else None,
        random_only_interval=bootstrap_interval(random_seqs, seed) if intervals and rand.value is not None else None,
    )


def mean_scores(rows: Sequence[Mapping]) -> dict:
    """Means over neurons of the top-and-random, random-only and shuffled-control scores and of the per-neuron gap,
    each with its count: `n_<key>` defined, `undefined_<key>` undefined, and `zero_<key>` the mean with undefined
    scores counted as 0 (a formula that holds nowhere predicts nothing). The gap is the mean of per-neuron gaps over
    the neurons that have both a score and a control. `lower_above_0` counts the neurons whose score's interval lies
    above 0, `gap_lower_above_0` those whose gap's interval lies above 0.

    `rows` are the run table's rows (or any mappings with those keys).
    """

    def defined(key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None and not math.isnan(r[key])]

    out: dict = {"n_neurons": len(rows)}
    for key in ("top_and_random", "random_only", "shuffled_control", "shuffled_gap"):
        vals = defined(key)
        out[key] = float(np.mean(vals)) if vals else None
        out[f"n_{key}"], out[f"undefined_{key}"] = len(vals), len(rows) - len(vals)
        out[f"zero_{key}"] = float(np.sum(vals) / len(rows)) if rows else None
    out["lower_above_0"] = len([v for v in defined("top_and_random_lo") if v > 0])
    out["gap_lower_above_0"] = len([v for v in defined("shuffled_gap_lo") if v > 0])
    return out


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def means_line(m: dict) -> str:
    """`mean_scores` as one line that says over how many neurons every mean is and how many were undefined."""

    def part(key: str, name: str) -> str:
        undefined = m[f"undefined_{key}"]
        extra = f", {_f(m[f'zero_{key}'])} with undefined as 0" if undefined else ""
        return f"{name} {_f(m[key])} ({m[f'n_{key}']} defined, {undefined} undefined{extra})"

    return (
        f"mean over {m['n_neurons']} scored neurons: {part('top_and_random', 'score')}, "
        f"{part('random_only', 'random only')}, {part('shuffled_control', 'shuffled control')}, gap "
        f"{_f(m['shuffled_gap'])} (mean of per-neuron gaps over the {m['n_shuffled_gap']} with a score and a control); "
        f"95% interval above 0: score {m['lower_above_0']} of {m['n_top_and_random']}, gap {m['gap_lower_above_0']} "
        f"of {m['n_shuffled_gap']}"
    )


def difference_of_means(
    a: Sequence[float], b: Sequence[float], seed: int = 0
) -> tuple[float | None, list[float] | None]:
    """mean(a) - mean(b) over two sets of neurons (NaN and None left out) and its 95% interval from a seeded
    bootstrap that resamples the neurons of each set (None when either set has fewer than two)."""
    x = np.asarray([v for v in a if v is not None and not math.isnan(v)], dtype=np.float64)
    y = np.asarray([v for v in b if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    diffs = x[rng.integers(0, len(x), (BOOTSTRAP, len(x)))].mean(1) - y[
        rng.integers(0, len(y), (BOOTSTRAP, len(y)))
    ].mean(1)
    return float(x.mean() - y.mean()), _interval(diffs)


def split_half(valid: Sequence[float | None], test: Sequence[float | None]) -> tuple[float | None, int]:
    """The correlation across neurons of their scores on two disjoint sets of windows (`valid` and `test`): how
    reproducible one neuron's score is; with the number of neurons that have both."""
    pairs = [(v, t) for v, t in zip(valid, test, strict=True) if v is not None and t is not None]
    pairs = [(v, t) for v, t in pairs if not (math.isnan(v) or math.isnan(t))]
    if len(pairs) < 3:
        return None, len(pairs)
    return correlation_score([v for v, _ in pairs], [t for _, t in pairs]).value, len(pairs)
