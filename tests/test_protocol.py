"""The protocol of windows and what makes a score honest: the explainer and every choice never see a valid or test
window, random windows are never a neuron's own top or bottom windows, every score carries an interval."""

from __future__ import annotations

import numpy as np
import pytest

from nxkit.heldout import held_out, random_splits, top_splits
from nxkit.records import SIMULATED_NORMALIZED_ACTIVATIONS, ScoredSequenceSimulation, SequenceSimulation


def test_random_windows_are_never_a_neurons_own_top_or_bottom_windows(tmp_path):
    from conftest import make_fake_run

    run = make_fake_run(tmp_path / "fake", revise=False)  # its random windows are drawn without looking at the top ones
    acts = run.activations()
    overlapping = 0
    for layer in acts.layers:
        for n in range(acts.d_mlp):
            own = acts.own_windows(layer, n)
            drawn = [int(w) for w in acts._array(layer, "random_windows")[n] if w >= 0]
            overlapping += sum(w in own for w in drawn)
            for sign in ("positive", "negative"):
                record = acts.neuron_record(layer, n, sign)
                assert len(record.random_sample) == sum(w not in own for w in drawn)
                top = {tuple(r.tokens) for r in record.most_positive_activation_records}
                assert not any(tuple(r.tokens) in top for r in record.random_sample)
    assert overlapping > 0  # the fixture does draw some of them: the test can fail


def test_the_explainer_and_every_choice_never_see_a_valid_or_test_window(tmp_path):
    from conftest import make_fake_run

    from nxkit.explainers.base import ExplainConfig, explainer_windows
    from nxkit.explainers.search import search_windows

    record = make_fake_run(tmp_path / "fake", revise=False).activations().neuron_record(0, 0)
    held = {
        tuple(r.tokens) for split in ("valid", "test") for r in top_splits(record)[split] + random_splits(record)[split]
    }
    train = [tuple(r.tokens) for r in top_splits(record)["train"]]
    assert held and not set(train) & held
    assert [tuple(r.tokens) for r in search_windows(record)] == train  # the search's beam is fitted on train alone
    shown = {tuple(t for t, _ in w) for w in explainer_windows(record, ExplainConfig(explain_window_tokens=None))}
    assert shown <= set(train)
    calibration = {tuple(w.tokens) for w in held_out(record, "calibration", None)}  # best-of-k is chosen on these
    assert calibration and not calibration & held and not calibration & set(train)


def _seq(real, predicted):
    sim = SequenceSimulation(
        [f"t{i}" for i in range(len(real))], list(predicted), SIMULATED_NORMALIZED_ACTIVATIONS, [], []
    )
    return ScoredSequenceSimulation(sim, list(real), None, None, None)


def test_every_score_has_a_seeded_bootstrap_interval():
    from nxkit.scorers.correlation import bootstrap_interval, paired_difference

    rng = np.random.default_rng(0)
    real = [rng.random(16) for _ in range(12)]
    good = [_seq(r, r + rng.normal(0, 0.3, 16)) for r in real]
    noise = [rng.random(16) for _ in real]
    lo, hi = bootstrap_interval(good, seed=3)
    assert lo < hi and bootstrap_interval(good, seed=3) == [lo, hi]  # seeded: the same interval every time
    pooled = np.corrcoef(np.concatenate(real), np.concatenate([s.simulation.expected_activations for s in good]))[0, 1]
    assert lo <= pooled <= hi and lo > 0.5
    wide = bootstrap_interval([_seq(r, p) for r, p in zip(real, noise, strict=True)], seed=3)
    assert wide[0] < 0 < wide[1]  # noise: the interval covers 0
    gap, (glo, ghi) = paired_difference(good, noise, seed=3)
    assert gap == pytest.approx(pooled - np.corrcoef(np.concatenate(real), np.concatenate(noise))[0, 1])
    assert 0 < glo <= gap <= ghi
    same, interval = paired_difference(good, [s.simulation.expected_activations for s in good], seed=3)
    assert same == pytest.approx(0) and interval == [0.0, 0.0]
    assert bootstrap_interval(good[:1]) is None  # one window: no interval, never a made-up one
