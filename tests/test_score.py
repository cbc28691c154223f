"""Score arithmetic on hand-made data (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nxkit.records import (
    ActivationRecord,
    NeuronId,
    NeuronSimulationResults,
    ScoredExplanation,
    SequenceSimulation,
    SimulationFailure,
    dump_simulation_results,
    load_simulation_results,
)
from nxkit.scorers.correlation import (
    Score,
    absolute_dev_explained_score,
    aggregate_correlation,
    aggregate_scored,
    correlation_score,
    mean_scores,
    means_line,
    rsquared_score,
    score_flag,
    score_simulation,
    scores,
    split_correlation,
)


def sim(values: list[float]) -> SequenceSimulation:
    return SequenceSimulation([f"t{i}" for i in range(len(values))], values, "simulated_normalized_activations", [], [])


def test_correlation_matches_numpy_and_flags_constants():
    real, pred = [0.0, 1.0, 3.0, 2.0], [1.0, 2.0, 2.5, 2.0]
    assert correlation_score(real, pred).value == pytest.approx(np.corrcoef(real, pred)[0, 1])
    assert correlation_score(real, pred).flag is None
    assert correlation_score([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == Score(None, "constant_real")
    assert correlation_score([0.0, 1.0, 2.0], [4.0, 4.0, 4.0]) == Score(None, "constant_predicted")
    assert correlation_score([], []) == Score(None, "empty")
    with pytest.raises(ValueError, match="differ in length"):
        correlation_score([1.0, 2.0], [1.0])


def test_aggregate_is_over_the_concatenation_not_a_mean():
    real = [[0.0, 1.0, 0.0], [5.0, 6.0, 5.0]]
    pred = [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    # each window alone correlates perfectly, the concatenation does not
    assert correlation_score(real[0], pred[0]).value == pytest.approx(1.0)
    agg = aggregate_correlation(real, pred).value
    assert agg == pytest.approx(np.corrcoef(sum(real, []), sum(pred, []))[0, 1])
    assert agg < 0.5


def test_rsquared_and_absolute_deviation():
    real = [0.0, 2.0, 4.0]
    assert rsquared_score(real, real).value == pytest.approx(1.0)
    assert rsquared_score(real, [2.0, 2.0, 2.0]).value == pytest.approx(0.0)
    assert absolute_dev_explained_score(real, real).value == pytest.approx(1.0)
    assert absolute_dev_explained_score(real, [0.0, 0.0, 0.0]).value == pytest.approx(0.0)
    assert rsquared_score([1.0, 1.0], [0.0, 2.0]).flag == "constant_real"
    assert absolute_dev_explained_score([0.0, 0.0], [0.0, 2.0]).flag == "zero_real"


def test_score_simulation_skips_failures_and_splits_random_half():
    records = [
        ActivationRecord(["a", "b", "c"], [0.0, 9.0, 0.0]),
        ActivationRecord(["d", "e", "f"], [0.0, 0.0, 3.0]),
        ActivationRecord(["g", "h", "i"], [1.0, 0.0, 0.0]),
        ActivationRecord(["j", "k", "l"], [0.0, 2.0, 0.0]),
    ]
    sims = [sim([0.0, 9.0, 0.0]), SimulationFailure("bad", "raw text"), sim([3.0, 1.0, 0.0]), sim([0.0, 4.0, 0.0])]
    scored = score_simulation(records, sims, max_activation=9.0)
    kept_real = [0.0, 9.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0]
    kept_pred = [0.0, 9.0, 0.0, 3.0, 1.0, 0.0, 0.0, 4.0, 0.0]
    assert scored.ev_correlation_score == pytest.approx(np.corrcoef(kept_real, kept_pred)[0, 1])
    failed = scored.scored_sequence_simulations[1]
    assert failed.simulation.expected_activations == [] and failed.ev_correlation_score is None
    got = scores(scored, ["top", "top", "random", "random"])
    assert got.top_and_random == scored.ev_correlation_score and got.top_and_random_flag is None
    assert (got.n_windows, got.n_failed) == (4, 1)
    assert got.random_only == pytest.approx(np.corrcoef([1, 0, 0, 0, 2, 0], [3, 1, 0, 0, 4, 0])[0, 1])
    # predictions 0-9 are rescaled to the neuron's units for r^2: a perfect prediction scores 1
    assert scored.scored_sequence_simulations[0].rsquared_score == pytest.approx(1.0)


def test_random_only_reads_labels_not_positions_with_uneven_splits():
    """15 top windows against 10 random (`--top-k 60`): the random-only score uses the 10 random windows alone."""
    rng = np.random.default_rng(0)
    records, sims, splits = [], [], []
    for i in range(25):
        split = "top" if i < 15 else "random"
        real = list(rng.normal(size=5) + (5.0 if split == "top" else 0.0))
        pred = real if split == "top" else list(rng.normal(size=5))  # top windows predicted perfectly
        records.append(ActivationRecord([str(j) for j in range(5)], real))
        sims.append(sim(pred))
        splits.append(split)
    scored = score_simulation(records, sims, max_activation=10.0)
    rand = [
        (r.activations, p.expected_activations) for r, p, s in zip(records, sims, splits, strict=True) if s == "random"
    ]
    want = np.corrcoef([v for r, _ in rand for v in r], [v for _, p in rand for v in p])[0, 1]
    assert split_correlation(scored, splits).value == pytest.approx(want)
    assert scores(scored, splits).random_only == pytest.approx(want)
    # the old "second half" rule took 12 windows, 2 of them top windows predicted perfectly: a different number
    half = scored.scored_sequence_simulations[len(records) // 2 :]
    assert abs(aggregate_scored(half, 10.0).ev_correlation_score - want) > 0.05
    assert split_correlation(scored, ["top"] * 25).flag == "no_random_windows"
    assert split_correlation(scored, ["unknown"] + splits[1:]).flag == "unknown_split"
    with pytest.raises(ValueError, match="split labels"):
        split_correlation(scored, splits[:3])


def test_flat_prediction_is_flagged_not_crashing():
    records = [ActivationRecord(["a", "b"], [0.0, 1.0])]
    scored = score_simulation(records, [sim([2.0, 2.0])], 1.0)
    assert scored.ev_correlation_score is None
    assert score_flag(scored) == "constant_predicted"


def test_results_round_trip_exact():
    records = [ActivationRecord(["a", "b"], [0.0, 1.5]), ActivationRecord(["c", "d"], [0.5, 0.0])]
    scored = score_simulation(records, [sim([0.0, 7.0]), SimulationFailure("x", "y")], 1.5)
    results = NeuronSimulationResults(NeuronId(3, 7), [ScoredExplanation("plants", scored)])
    text = dump_simulation_results(results)
    assert load_simulation_results(text) == results
    assert dump_simulation_results(load_simulation_results(text)) == text


def test_mean_scores_skips_undefined():
    rows = [
        {"top_and_random": 0.2, "random_only": 0.1, "shuffled_control": 0.0, "shuffled_gap": 0.2},
        {"top_and_random": None, "random_only": math.nan, "shuffled_control": 0.1, "shuffled_gap": None},
    ]
    out = mean_scores(rows)
    assert out["top_and_random"] == pytest.approx(0.2) and out["n_top_and_random"] == 1
    assert out["undefined_top_and_random"] == 1 and out["zero_top_and_random"] == pytest.approx(0.1)
    assert out["shuffled_control"] == pytest.approx(0.05) and out["n_neurons"] == 2
    line = means_line(out)  # every mean says over how many, and how many were undefined
    assert "score +0.20 (1 defined, 1 undefined, +0.10 with undefined as 0)" in line
    assert "gap +0.20 (mean of per-neuron gaps over the 1 with a score and a control)" in line
