"""The ablation score (issue 29, part 1): its arithmetic, the cached upper path against a full forward with the same
patch, its three anchors on the real model (1 for the real activation, 0 for the mean, undefined for a neuron that
writes nothing), both signs, and the scorer plugged into a run through the scorer protocol."""

from __future__ import annotations

import pytest
import torch

from nxkit.records import NEGATIVE, POSITIVE, RANDOM, TOP, Candidate, HeldOutWindow, NeuronId
from nxkit.scorers.ablation import ABLATION_SCORER, ablation_interval, ablation_value, linear_map

LAYER, NEURON = 4, 21


def test_linear_map_recovers_a_line_and_gives_the_mean_for_a_constant():
    slope, intercept = linear_map([[0.0, 5.0], [10.0]], [[1.0, 2.0], [3.0]])
    assert slope == pytest.approx(0.2) and intercept == pytest.approx(1.0)
    assert linear_map([[3.0, 3.0, 3.0]], [[1.0, 2.0, 6.0]]) == (0.0, pytest.approx(3.0))
    with pytest.raises(ValueError, match="2 simulated values for 3"):
        linear_map([[1.0, 2.0]], [[1.0, 2.0, 3.0]])


def test_ablation_value_anchors_and_interval():
    mean = [[0.2, 0.4], [0.1, 0.3]]
    assert ablation_value([[0.0, 0.0], [0.0, 0.0]], mean) == 1.0
    assert ablation_value(mean, mean) == pytest.approx(0.0)
    assert ablation_value([[0.1, 0.2], [0.05, 0.15]], mean) == pytest.approx(0.5)
    assert ablation_value([[0.0, 0.0]], [[0.0, 0.0]]) is None  # the mean changes nothing: undefined, never 0
    assert ablation_interval([[0.1, 0.2]], [[0.2, 0.4]], seed=0) is None  # one window: no interval
    low, high = ablation_interval([[0.1, 0.2], [0.05, 0.15], [0.0, 0.1]], [[0.2, 0.4], [0.1, 0.3], [0.2, 0.2]], 0)
    assert low <= high <= 1.0


# --- on the real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def windows(subject, small_windows):
    """Ten 64-token windows and the real activation of the neuron on them."""
    from nxkit.collection.subject import run_capture

    ids = small_windows.tokens[:10].clone()
    got = {}

    def keep(layer, x):
        got["acts"] = x[:, :, NEURON].float().clone()

    with torch.inference_mode():
        run_capture(subject, ids, [LAYER], keep)
    return ids, got["acts"]


@pytest.mark.parametrize("layer", [0, LAYER, 29])
def test_the_cached_upper_path_equals_a_full_forward_with_the_patch(subject, windows, layer):
    from nxkit.collection.ablate import full_logits, layer_input, logits_from

    ids = windows[0][:3]
    neurons = torch.tensor([NEURON, 7, 900])
    values = torch.linspace(-1.0, 3.0, 64).repeat(3, 1)
    with torch.inference_mode():
        full = full_logits(subject, ids, layer, neurons, values)
        upper = logits_from(subject, layer_input(subject, ids, layer), layer, neurons, values)
        unpatched = full_logits(subject, ids, layer)
    assert torch.allclose(upper, full, atol=1e-3 * float(full.abs().max()), rtol=0)
    assert float((full - unpatched).abs().max()) > 1e-2  # the patch did change the logits


def _score(subject, ids, acts, simulated, sign=POSITIVE, mean=None):
    """The scorer's result through `ScoringContext`, with a simulator that predicts `simulated` (side units) on the
    valid windows and the real activations on calibration, so the fitted map is the identity."""
    from nxkit.llm.base import run_sync
    from nxkit.records import ScoredSequenceSimulation, ScoredSimulation, SequenceSimulation
    from nxkit.scorers.base import ScoringContext

    factor = -1.0 if sign == NEGATIVE else 1.0
    side = (factor * acts).tolist()
    valid = [
        HeldOutWindow(["t"] * 64, side[i], token_ids=ids[i].tolist(), split=TOP if i < 5 else RANDOM) for i in range(8)
    ]
    calibration = [HeldOutWindow(["t"] * 64, side[i], token_ids=ids[i].tolist(), split=TOP) for i in (8, 9)]

    class Echo:
        llm = None

        async def simulate_many(self, explanation, tokens):
            return [
                SequenceSimulation(list(t), list(w.activations), "neuron_activations", [], [])
                for t, w in zip(tokens, calibration, strict=True)
            ]

    seqs = [
        ScoredSequenceSimulation(
            SequenceSimulation(["t"] * 64, list(simulated[i]), "neuron_activations", [], []), side[i], None
        )
        for i in range(8)
    ]
    context = ScoringContext(
        NeuronId(LAYER, NEURON), Candidate("x"), valid, max(map(max, side)), 0, None, sign=sign,
        simulation=ScoredSimulation(seqs), calibration=calibration, simulator=Echo(),
        mean_activation=float((factor * acts).mean()) if mean is None else mean, subject=lambda: subject,
    )  # fmt: skip
    score, failures = run_sync(ABLATION_SCORER.score(context))
    assert failures == []
    return score


@pytest.mark.parametrize("sign", [POSITIVE, NEGATIVE])
def test_the_score_is_one_for_the_real_activation_and_zero_for_the_mean(subject, windows, sign):
    ids, acts = windows
    factor = -1.0 if sign == NEGATIVE else 1.0
    real = (factor * acts).tolist()
    best = _score(subject, ids, acts, real, sign)
    assert best.slope == pytest.approx(1.0, abs=1e-4) and best.intercept == pytest.approx(0.0, abs=1e-4)
    # float noise only: the activations were captured in another batch shape than the patched passes run in
    assert best.top_and_random == pytest.approx(1.0, abs=1e-2) and best.random_only == pytest.approx(1.0, abs=1e-2)
    assert best.flag is None and best.n_windows == 8 and best.jsd_mean > 1e-6
    low, high = best.top_and_random_interval
    assert low <= best.top_and_random <= high + 1e-9
    side_mean = float((factor * acts).mean())
    # a simulation equal to the mean, mapped by the identity, patches the mean itself: no better than mean ablation
    flat = _score(subject, ids, acts, [[side_mean] * 64 for _ in range(8)], sign)
    assert flat.top_and_random == pytest.approx(0.0, abs=1e-6)
    # the sign matters: the real activation patched with the wrong sign is worse than the mean
    wrong = _score(subject, ids, acts, [[-v for v in w] for w in real], sign)
    assert wrong.top_and_random < 0


def test_undefined_when_the_neuron_writes_nothing(subject, windows):
    ids, acts = windows
    weight = subject.blocks[LAYER].mlp.out.original_component.weight  # [d_model, d_mlp]: the neuron's output column
    assert weight.shape[1] == subject.cfg.d_mlp
    column = weight[:, NEURON].detach().clone()
    try:
        with torch.no_grad():
            weight[:, NEURON] = 0.0
        score = _score(subject, ids, acts, acts.tolist())
    finally:
        with torch.no_grad():
            weight[:, NEURON] = column
    assert score.top_and_random is None and score.random_only is None and score.flag == "no_effect"
    assert score.jsd_mean < 1e-6  # rounding noise of float32 forward passes only


def test_flags_without_a_subject_or_token_ids():
    from nxkit.llm.base import run_sync
    from nxkit.scorers.base import ScoringContext

    w = [HeldOutWindow([" a"], [1.0], split=TOP)]
    context = ScoringContext(NeuronId(0, 0), Candidate("x"), w, 1.0, 0, None)
    score, failures = run_sync(ABLATION_SCORER.score(context))
    assert score.flag == "no_subject" and "subject model" in failures[0].reason
    context.subject = lambda: None
    score, failures = run_sync(ABLATION_SCORER.score(context))
    assert score.flag == "no_token_ids" and "token ids" in failures[0].reason


def test_the_ablation_scorer_runs_in_a_run_and_reaches_the_table(subject, tiny_collection, tmp_path):
    from nxkit.explain_score import explain_and_score
    from nxkit.explainers.base import ExplainConfig
    from nxkit.explainers.search import SearchExplainer
    from nxkit.runs import Run
    from nxkit.simulators.exact import FormulaSimulator
    from nxkit.views.report import render_report, summary_table

    run = Run(tmp_path / "ablation")
    run.path.mkdir()
    (run.path / "activations").symlink_to(tiny_collection, target_is_directory=True)
    neurons = [NeuronId(5, n) for n in range(3)]
    config = ExplainConfig(scorers=["simulation", "ablation"])
    done = explain_and_score(
        run, neurons, SearchExplainer(), FormulaSimulator(), config, progress=False, subject=lambda: subject
    )
    assert [s.status for s in done] == ["done"] * 3
    for s in done:
        again = run.read_neuron(s.neuron_id).scorer_results["ablation"]
        assert again == s.scorer_results["ablation"]
        assert again.n_windows > 0 and again.jsd_mean is not None
        assert again.flag is None and again.top_and_random <= 1.0
    table = run.table()
    assert table["ablation_top_and_random"].notna().sum() == 3
    assert "ablation: mean" in summary_table(run) and "over 3 neurons" in summary_table(run)
    assert "ablation top and random" in render_report(run)

    # the same neurons scored without it, then given it afterwards: the same windows, the same numbers
    from nxkit.rescore import add_scores

    later = Run(tmp_path / "later")
    later.path.mkdir()
    (later.path / "activations").symlink_to(tiny_collection, target_is_directory=True)
    explain_and_score(later, neurons, SearchExplainer(), FormulaSimulator(), ExplainConfig(), progress=False)
    assert later.table()["ablation_top_and_random"].isna().all()
    assert add_scores(later, neurons, FormulaSimulator(), ["ablation"], subject=lambda: subject, progress=False) == 3
    for s in done:
        got = later.read_neuron(s.neuron_id).scorer_results["ablation"]
        want = s.scorer_results["ablation"]
        assert got.n_windows == want.n_windows and got.slope == pytest.approx(want.slope)
        assert got.top_and_random == pytest.approx(want.top_and_random, abs=1e-3)
    assert later.table()["ablation_top_and_random"].notna().sum() == 3
    assert add_scores(later, neurons, FormulaSimulator(), ["ablation"], subject=lambda: subject, progress=False) == 0


# --- output-aware explanations (part 3) ---------------------------------------------------------


def _record_with_writes(writes):
    from nxkit.collection.activations import NeuronWrites
    from nxkit.records import ActivationRecord, NeuronRecord

    top = [ActivationRecord([" a", " Monday", " b"], [0.0, 3.0 - i * 0.1, 0.0]) for i in range(8)]
    rand = [ActivationRecord([" x", " y", " z"], [0.0, 0.1, 0.0]) for _ in range(6)]
    record = NeuronRecord(NeuronId(2, 3), random_sample=rand, most_positive_activation_records=top)
    record.writes = None if writes is None else NeuronWrites(*writes)
    return record


def test_show_output_puts_the_written_tokens_in_the_explainer_prompt():
    from conftest import ScriptedLLM

    from nxkit.explainers.base import ExplainConfig
    from nxkit.explainers.llm import explain_neuron
    from nxkit.llm.base import run_sync

    writes = ([(" evening", 2.0), (" night", 1.5)], [(" the", -1.0), ("ing", -0.5)])
    llm = ScriptedLLM("It fires on weekdays, and pushes towards a time of day.")
    texts, failures = run_sync(
        explain_neuron(llm, _record_with_writes(writes), ExplainConfig(best_of=1, show_output=True))
    )
    assert texts == ["weekdays, and pushes towards a time of day"] and failures == []
    system, last = llm.seen[0][0]["content"], llm.seen[0][-1]["content"]
    assert "pushes the model's next-token prediction" in system
    assert "Its output raises: ' evening', ' night'\nIts output lowers: ' the', 'ing'" in last
    assert "Its output raises" in llm.seen[0][1]["content"]  # the few-shot examples show theirs too
    plain = ScriptedLLM("It fires on weekdays.")
    run_sync(explain_neuron(plain, _record_with_writes(writes), ExplainConfig(best_of=1)))
    assert not any("Its output" in m["content"] or "next-token prediction" in m["content"] for m in plain.seen[0])


def test_show_output_without_a_projection_says_how_to_get_one():
    from conftest import ScriptedLLM

    from nxkit.explainers.base import ExplainConfig
    from nxkit.explainers.llm import explain_neuron
    from nxkit.llm.base import run_sync

    llm = ScriptedLLM("It fires on weekdays.")
    texts, failures = run_sync(explain_neuron(llm, _record_with_writes(None), ExplainConfig(show_output=True)))
    assert texts == [] and llm.calls == 0
    assert "vocabulary projection" in failures[0].reason and "--no-writes" in failures[0].reason
