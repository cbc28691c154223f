"""Simulator modes and answer parsing (scripted answers), then the whole pipeline on the real offline model."""

from __future__ import annotations

import pytest
from conftest import ScriptedLLM

from nxkit import prompts
from nxkit.explain_score import explain_and_score, process_neuron, shuffled_controls
from nxkit.explainers.base import ExplainConfig
from nxkit.heldout import held_out
from nxkit.llm.base import Capabilities, PromptLogprobs, TokenLogprob, run_sync
from nxkit.records import ActivationRecord, NeuronId, NeuronRecord, SimulationFailure
from nxkit.runs import Run
from nxkit.scorers.correlation import split_correlation
from nxkit.simulators import make_simulator
from nxkit.simulators.base import SimulateError
from nxkit.simulators.prompted import choose_mode


def test_choose_mode():
    assert choose_mode(Capabilities(True, True, True)) == "all_at_once"
    assert choose_mode(Capabilities(True, True, False)) == "chat_logprobs"
    assert choose_mode(Capabilities(True, False, False)) == "chat_text"
    assert choose_mode(Capabilities(True, True, True), "chat_text") == "chat_text"
    with pytest.raises(SimulateError, match="cannot run simulator mode 'all_at_once'"):
        choose_mode(Capabilities(True, False, False), "all_at_once")


def test_chat_with_logprobs_takes_expected_value_at_digits():
    text = " the\t3\n cat\t0\n"
    pieces = [(" the", None), ("\t", None), ("3", {"3": -0.5, "4": -1.0, "x": -3.0}), ("\n", None),
              (" cat", None), ("\t", None), ("0", {"0": -0.1}), ("\n", None)]  # fmt: skip
    tokens = [TokenLogprob(t, -0.1, top or {}) for t, top in pieces]
    sim = make_simulator(
        ScriptedLLM(text, tokens),
    )
    assert sim.mode == "chat_logprobs"
    out = run_sync(sim.simulate_many("cats", [[" the", " cat"]]))[0]
    p3, p4 = 2.718281828**-0.5, 2.718281828**-1.0
    assert out.expected_activations[0] == pytest.approx((3 * p3 + 4 * p4) / (p3 + p4))
    assert out.expected_activations[1] == pytest.approx(0.0)
    assert sum(out.distribution_probabilities[0]) == pytest.approx(1.0)


def test_chat_without_logprobs_parses_digits_and_records_failures():
    sim = make_simulator(ScriptedLLM(" the\t3\n cat\t7\n"))
    assert sim.mode == "chat_text"
    assert run_sync(sim.simulate_many("x", [[" the", " cat"]]))[0].expected_activations == [3.0, 7.0]
    bad = make_simulator(ScriptedLLM("I cannot do that."))
    fail = run_sync(bad.simulate_many("x", [[" the", " cat"]]))[0]
    assert isinstance(fail, SimulationFailure)
    assert fail.raw == "I cannot do that." and "2 of 2 tokens" in fail.reason


def test_all_at_once_from_server_prompt_logprobs():
    tokens = [" a", " b"]
    prefix = prompts.simulate_prefix("x")
    window, places = prompts.simulate_window_text(tokens)
    offsets = [0, len(prefix) + places[0], len(prefix) + places[1]]
    lp = PromptLogprobs(["...", "?", "?"], offsets, [None, {"2": -0.2, "3": -1.6}, {"9": -0.01}])
    sim = make_simulator(ScriptedLLM("", prompt=lp))
    assert sim.mode == "all_at_once"
    out = run_sync(sim.simulate_many("x", [tokens]))[0]
    assert out.expected_activations[1] == pytest.approx(9.0)
    assert 2.0 < out.expected_activations[0] < 3.0
    lp.top[2] = {" the": -0.1}
    fail = run_sync(sim.simulate_many("x", [tokens]))[0]
    assert isinstance(fail, SimulationFailure) and "no digit" in fail.reason


def test_dead_neuron_is_skipped_with_reason():
    rec = NeuronRecord(NeuronId(0, 1), most_positive_activation_records=[ActivationRecord(["a"], [0.0])] * 40)
    llm = ScriptedLLM("It fires on x.")
    summary, results = run_sync(process_neuron(rec, llm, make_simulator(llm), ExplainConfig()))
    assert summary.status == "dead" and "never fires" in summary.reason and results is None


def test_unparsable_explanations_fail_the_neuron_with_raw_text():
    recs = [ActivationRecord(["a", "b"], [0.0, 1.0])] * 40
    rec = NeuronRecord(NeuronId(0, 2), random_sample=recs[:30], most_positive_activation_records=recs)
    llm = ScriptedLLM("a\t1\nb\t2")
    summary, results = run_sync(process_neuron(rec, llm, make_simulator(llm), ExplainConfig(best_of=2)))
    assert summary.status == "failed" and results is None
    assert [f.raw for f in summary.failures] == ["a\t1\nb\t2"] * 2


SMALL = ExplainConfig(
    best_of=2,
    explain_windows=1,
    explain_window_tokens=8,
    explanation_max_tokens=16,
    calibration_windows=1,
    valid_windows=1,
    sim_window_tokens=12,
)


class Stop(Exception):
    pass


@pytest.mark.slow
def test_pipeline_resumes_after_a_crash_and_skips_finished(tiny_collection, local_backend, tmp_path):
    run = Run(tmp_path / "run")
    (run.path).mkdir()
    (run.path / "activations").symlink_to(tiny_collection)
    neurons = [NeuronId(5, n) for n in range(2)]
    sim = make_simulator(local_backend)

    def crash_after_first(summary):
        raise Stop(f"stopped after {summary.neuron_id}")

    with pytest.raises(Stop):
        explain_and_score(run, neurons, local_backend, sim, SMALL, on_neuron_done=crash_after_first, progress=False)
    assert run.done_neurons() == neurons[:1]
    first = run.read_neuron(neurons[0])
    assert first.shuffled_control_from is None  # its control partner had no explanation yet when it stopped
    before = local_backend.usage.requests
    done = explain_and_score(run, neurons, local_backend, sim, SMALL, progress=False)
    assert [d.neuron_id for d in done] == [NeuronId(5, 1)]
    again = run.read_neuron(neurons[0])  # not recomputed: only its shuffled control was added, now that 5:1 has one
    assert (again.candidates, again.scores, again.seconds) == (first.candidates, first.scores, first.seconds)
    assert again.shuffled_control_from == NeuronId(5, 1) and again.usage.requests > first.usage.requests
    assert local_backend.usage.requests > before
    assert explain_and_score(run, neurons, local_backend, sim, SMALL, progress=False) == []

    for nid in neurons:
        s = run.read_neuron(nid)
        assert s.status == "done", s
        assert len(s.candidates) + len([f for f in s.failures if f.stage == "explain"]) == 2
        results = run.read_results(nid)
        scored = results.scored_explanations[0].scored_simulation
        assert results.scored_explanations[0].explanation == s.explanation == s.original_explanation
        assert len(scored.scored_sequence_simulations) == 2  # 1 top + 1 random valid window
        assert s.window_splits == ["top", "random"]
        assert s.random_only == split_correlation(scored, s.window_splits).value
        assert len(scored.scored_sequence_simulations[0].simulation.tokens) == 12
        record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
        assert scored.scored_sequence_simulations[1].true_activations == held_out(record, "valid", 1, 12)[1].activations

    shuffled_controls(run, sim, progress=False)
    for nid in neurons:
        s = run.read_neuron(nid)
        assert s.shuffled_control_from is not None and s.shuffled_control_from != nid
        if s.top_and_random is not None and s.shuffled_control is not None:
            assert s.shuffled_gap == pytest.approx(s.top_and_random - s.shuffled_control)
        assert s.usage.requests > 0
    manifest = run.manifest()
    assert manifest.explain.simulator.mode == "all_at_once" and manifest.usage.requests > 0
