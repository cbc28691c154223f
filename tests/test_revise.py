"""Counterexample revision: pinned prompts, parsing and mismatch arithmetic, then the real offline model end to end."""

from __future__ import annotations

import shutil

import pytest

# --- prompts, pinned ------------------------------------------------------------------------------
from conftest import ScriptedLLM

from nxkit.prompts import parse_proposals, proposal_messages, revision_messages
from nxkit.records import (
    ActivationRecord,
    Mismatch,
    NeuronId,
    NeuronRecord,
    NeuronRevision,
    ProbedText,
    RevisionRound,
    normalize_activations,
)
from nxkit.revise import (
    ReviseConfig,
    ReviseError,
    calibration_windows,
    describe_probe,
    find_mismatches,
    proposals_table,
    revise_neuron,
    revise_round,
    revise_run,
    sample_live_neurons,
    summarize,
)


def test_proposal_messages_are_pinned():
    messages = proposal_messages("closing brackets", "silent", 2)
    assert messages == [
        {
            "role": "system",
            "content": "You test explanations of single neurons in a language model. Given an explanation of "
            "what makes a neuron fire, write short, varied texts of one sentence each, as asked. One text per "
            "line, numbered 1., 2., ... Write nothing else.",
        },
        {
            "role": "user",
            "content": "Explanation: it fires on names of weekdays.\n"
            "Write 3 texts that, by this explanation, should leave the neuron silent.",
        },
        {
            "role": "assistant",
            "content": "1. The river flows slowly to the sea.\n2. She painted the fence green.\n3. Add two cups of flour.",
        },
        {
            "role": "user",
            "content": "Explanation: it fires on closing brackets.\n"
            "Write 2 texts that, by this explanation, should leave the neuron silent.",
        },
    ]
    fire = proposal_messages("closing brackets", "fire", 4)
    assert fire[-1]["content"] == (
        "Explanation: it fires on closing brackets.\nWrite 4 texts that, by this explanation, should make the neuron fire strongly."
    )
    assert fire[2]["content"].startswith("1. We could meet on Tuesday")
    with pytest.raises(ValueError, match="kind must be one of"):
        proposal_messages("x", "loud", 1)


def test_revision_messages_are_pinned():
    mismatch = Mismatch("fire", 0, ProbedText("See you\n", ["See", " you", "\n"], [0.0, 0.1, 0.0], 0.1, [0, 1, 0], 1))
    silent = Mismatch("silent", 0, ProbedText("a)", ["a", ")"], [0.0, 0.9], 0.9, [0, 9], 9))
    messages = revision_messages("names of weekdays", [mismatch, silent], [[("x", 0), (")", 10)]])
    assert messages[0]["content"] == (
        "You improve explanations of single neurons in a language model. You get the current explanation, "
        "texts where the neuron fired most strongly, and test texts on which the explanation was wrong. "
        "Texts are shown one token per line: the token, a tab, and the neuron's real activation from 0 "
        '(silent) to 10 (strongest). Write a better explanation in one short sentence that begins "It fires on". '
        "Describe the pattern; do not list tokens one by one."
    )
    assert messages[1] == {
        "role": "user",
        "content": "Current explanation: it fires on names of weekdays.\n\n"
        "Texts where the neuron fired most strongly:\n\n"
        "<window 1>\nx\t0\n)\t10\n</window>\n\n"
        "Test texts the explanation got wrong:\n\n"
        "<test 1> meant to make it fire, but it stayed silent (peak 1 of 10)\nSee\t0\n you\t1\n\\n\t0\n</test>\n\n"
        "<test 2> meant to leave it silent, but it fired (peak 9 of 10)\na\t0\n)\t9\n</test>\n\n"
        "Write the better explanation.",
    }
    assert "Texts where" not in revision_messages("e", [silent])[1]["content"]


# --- parsing and arithmetic -------------------------------------------------------------------------


def test_parse_proposals():
    text = 'Sure!\n1. "See you Monday."\n2) The meeting is on Friday.\n3. see you monday.\n4. Fourth\n5. Fifth'
    assert parse_proposals(text, 3) == ["See you Monday.", "The meeting is on Friday.", "Fourth"]
    assert parse_proposals(text, 10, max_chars=8) == ["See you", "The meet", "Fourth", "Fifth"]
    assert parse_proposals("No list here, sorry.\n- a dash item", 4) == []
    assert parse_proposals("", 4) == []


def _probed(text: str, peak: float) -> ProbedText:
    return ProbedText(text, [text], [peak], peak, [0], 0)


def test_describe_probe_and_mismatch_arithmetic():
    p = describe_probe("t", ActivationRecord(["a", "b", "c"], [0.0, 0.5, 2.5]), max_activation=2.0)
    assert p.normalized == [0, 3, 10] and p.max_normalized == 10 and p.max_activation == 2.5
    fire = [_probed("f0", 0.59), _probed("f1", 0.6)]
    silent = [_probed("s0", 0.6), _probed("s1", -0.2)]
    got = find_mismatches({"fire": fire, "silent": silent}, max_activation=2.0, fire_threshold=0.3)
    assert [(m.kind, m.index, m.probe.text) for m in got] == [("fire", 0, "f0"), ("silent", 0, "s0")]
    lower = find_mismatches({"fire": fire, "silent": silent}, max_activation=2.0, fire_threshold=0.2)
    assert lower == [Mismatch("silent", 0, silent[0])]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rounds": -1}, "rounds"),
        ({"n_fire": 0, "n_silent": 0}, "at least one"),
        ({"n_fire": -1}, "n_fire"),
        ({"fire_threshold": 1.0}, "fire_threshold"),
        ({"temperature": -1}, "temperature"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ReviseError, match=match):
        ReviseConfig(**kwargs)


def test_unparsable_proposals_skip_the_round_once():
    llm = ScriptedLLM(["I cannot think of any.", "1. The sea is calm."])
    record = NeuronRecord(NeuronId(0, 0))
    rnd, kept = revise_round(None, record, "names of weekdays", 0.1, [], llm, None, ReviseConfig(n_fire=2, n_silent=2))
    assert llm.calls == 2  # one request per kind, never retried
    assert rnd.skipped_reason.startswith("unparsable proposal list: no numbered fire texts")
    assert rnd.raw == {"fire": "I cannot think of any.", "silent": "1. The sea is calm."}
    assert rnd.proposals == {"fire": [], "silent": ["The sea is calm."]}
    assert rnd.revised is None and rnd.kept == "original" and rnd.probes == {"fire": [], "silent": []}
    assert kept is None


def test_summarize():
    revs = [
        NeuronRevision(NeuronId(0, 1), "done", score_before=0.1, score_after=0.3, rounds=[RevisionRound(0, "a", 0.1)]),
        NeuronRevision(
            NeuronId(0, 2),
            "done",
            score_before=0.2,
            score_after=0.2,
            rounds=[RevisionRound(0, "c", 0.2, skipped_reason="no mismatches")],
        ),  # fmt: skip
        NeuronRevision(NeuronId(0, 3), "skipped"),
    ]
    s = summarize(revs)
    assert s["n_compared"] == 2 and s["n_improved"] == 1 and s["n_rounds_skipped"] == 1
    assert s["mean_before"] == pytest.approx(0.15) and s["mean_after"] == pytest.approx(0.25)
    assert s["statuses"] == {"done": 2, "skipped": 1, "failed": 0}


def test_proposals_table():
    rnd = RevisionRound(0, "e", None, probes={"fire": [ProbedText("a", ["a"], [0.1], 0.1, [1], 1)],
                                               "silent": [ProbedText("b", ["b"], [0.9], 0.9, [9], 9)]})  # fmt: skip
    table = proposals_table(rnd, max_activation=1.0, fire_threshold=0.3)
    assert table.to_dict("records") == [
        {"kind": "fire", "text": "a", "peak": 0.1, "peak 0-10": 1, "fired": False, "mismatch": True},
        {"kind": "silent", "text": "b", "peak": 0.9, "peak 0-10": 9, "fired": True, "mismatch": True},
    ]


# --- the real offline model, tiny setting -------------------------------------------------------------

EXPLANATION = "the end of a sentence"


@pytest.fixture(scope="module")
def revise_template(subject, tiny_collection, local_backend, tmp_path_factory):
    """A run over `tiny_collection` with one neuron explained by hand and scored by the real simulator (never
    written to: each test gets its own copy from `revise_run_dir`)."""
    import numpy as np

    from nxkit.explain_score import simulate_and_score
    from nxkit.heldout import held_out
    from nxkit.llm.base import run_sync
    from nxkit.records import NeuronSimulationResults, NeuronSummary, ScoredExplanation
    from nxkit.runs import Run
    from nxkit.simulators import make_simulator

    root = tmp_path_factory.mktemp("revise_run")
    (root / "activations").symlink_to(tiny_collection, target_is_directory=True)
    run = Run(root)
    top = np.load(tiny_collection / "layer_05" / "top_acts.npy")
    neuron = int(np.argmax(top[:, 0].max(-1)))
    nid = NeuronId(5, neuron)
    record = run.activations().neuron_record(5, neuron)
    windows = held_out(record, "valid", 1, crop=12)
    simulator = make_simulator(local_backend)
    scored, scores, _ = run_sync(simulate_and_score(simulator, EXPLANATION, windows, record.max_activation))
    summary = NeuronSummary(
        nid, "done", max_activation=record.max_activation, explanation=EXPLANATION, scores=scores,
        original_explanation=EXPLANATION, original_scores=scores, window_splits=[w.split for w in windows],
    )  # fmt: skip
    run.write_neuron(summary, NeuronSimulationResults(nid, [ScoredExplanation(EXPLANATION, scored)]))
    run.update_manifest(explain={"simulator": simulator.describe()})
    return run, nid, windows, simulator


@pytest.fixture
def revise_run_dir(revise_template, tmp_path):
    """A fresh copy of the template run for one test, so no test sees another's revisions."""
    from nxkit.runs import Run

    run, nid, windows, simulator = revise_template
    return Run(shutil.copytree(run.path, tmp_path / "run", symlinks=True)), nid, windows, simulator


TINY = ReviseConfig(rounds=1, n_fire=2, n_silent=2, proposal_max_tokens=64, revision_max_tokens=32)


class Counting:
    """The real backend, with its chat requests counted."""

    def __init__(self, backend):
        self.backend, self.calls = backend, 0
        self.capabilities, self.usage = backend.capabilities, backend.usage

    def describe(self) -> dict:
        return self.backend.describe()

    async def chat(self, messages, **kwargs):
        self.calls += 1
        return await self.backend.chat(messages, **kwargs)


def test_revise_neuron_with_the_real_model(subject, local_backend, revise_run_dir):
    from nxkit.collection.probe import probe
    from nxkit.explain_score import simulate_and_score
    from nxkit.llm.base import run_sync

    run, nid, windows, simulator = revise_run_dir
    explainer = Counting(local_backend)
    out = revise_neuron(run, subject, nid.layer_index, nid.neuron_index, explainer, simulator, TINY)
    assert run.read_revision(nid) == out
    assert out.neuron_id == nid
    assert out.status == "done" and out.original_explanation == EXPLANATION
    assert out.score_before == run.read_neuron(nid).original_scores.top_and_random and out.score_before_source == "run"
    assert out.n_held_out_windows == len(windows)
    assert len(out.rounds) == 1
    rnd = out.rounds[0]
    print(rnd)  # shown with -s: what the small model proposed and revised
    assert set(rnd.raw) == {"fire", "silent"} and all(isinstance(v, str) for v in rnd.raw.values())
    assert 2 <= explainer.calls <= 3  # two proposal lists, at most one revision
    if rnd.skipped_reason and rnd.skipped_reason.startswith("unparsable proposal"):
        assert rnd.probes == {"fire": [], "silent": []}
    else:
        record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
        for kind in ("fire", "silent"):
            assert [p.text for p in rnd.probes[kind]] == rnd.proposals[kind]
            for p in rnd.probes[kind]:  # real activations of the subject model, in units and 0-10
                direct = probe(subject, p.text, nid.layer_index, nid.neuron_index)
                assert p.tokens == direct.tokens
                assert p.activations == pytest.approx(direct.activations, abs=1e-4)
                assert p.max_activation == pytest.approx(max(direct.activations), abs=1e-4)
                assert p.normalized == normalize_activations(p.activations, record.max_activation)
        level = TINY.fire_threshold * record.max_activation
        for m in rnd.mismatches:
            assert (m.probe.max_activation >= level) == (m.kind == "silent")
    record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
    calibration = calibration_windows(run, record)
    assert out.n_calibration_windows == len(calibration) and {tuple(w.tokens) for w in calibration}.isdisjoint(
        tuple(w.tokens) for w in windows
    )  # the choice is made on windows the reported score is not computed on
    if rnd.score_revised is not None:  # chosen on the calibration windows, not the counterexamples nor the valid ones
        _, scores, _ = run_sync(simulate_and_score(simulator, rnd.revised, calibration, record.max_activation))
        assert rnd.score_revised == pytest.approx(scores.top_and_random, abs=1e-6)
    summary = run.read_neuron(nid)
    if rnd.kept == "revised":  # reported on the valid windows, which the choice never saw
        _, valid, _ = run_sync(simulate_and_score(simulator, rnd.revised, windows, record.max_activation))
        assert out.final_explanation == rnd.revised and out.score_after == pytest.approx(valid.top_and_random)
        assert rnd.score_revised > rnd.score_explanation
        assert summary.explanation == rnd.revised and summary.kept == "revised"
    else:
        assert out.final_explanation == EXPLANATION and out.score_after == out.score_before
        assert summary.explanation == EXPLANATION and summary.kept == "original"

    # resume: a second pass reads the file back and asks the LLM nothing
    again = Counting(local_backend)
    got = revise_run(run, subject, again, simulator, TINY, neurons=[nid], progress=False)
    assert again.calls == 0 and got == [out]


def test_neurons_without_an_explanation_are_skipped(subject, local_backend, revise_run_dir):
    run, nid, _, simulator = revise_run_dir
    explainer = Counting(local_backend)
    other = NeuronId(5, (nid.neuron_index + 1) % 1536)
    out = revise_neuron(run, subject, 5, other.neuron_index, explainer, simulator, TINY)
    assert out.status == "skipped" and "explain and score this neuron first" in out.reason
    assert explainer.calls == 0
    assert run.read_revision(other) == out
    high = ReviseConfig(only_below=-2.0)
    out = revise_neuron(run, subject, nid.layer_index, nid.neuron_index, explainer, simulator, high)
    assert out.status == "skipped" and "only_below" in out.reason


def test_sample_live_neurons_skips_dead_ones():
    class FakeActs:
        layers, d_mlp = [0, 1], 4

        def neuron_record(self, layer, neuron):
            acts = [1.0 if neuron % 2 else 0.0]  # odd neurons fire, even ones never do
            return NeuronRecord(
                NeuronId(layer, neuron), most_positive_activation_records=[ActivationRecord(["a"], acts)]
            )

    got = sample_live_neurons(FakeActs(), 3, seed=1)
    assert len(got) == 3 and len(set(got)) == 3 and all(n.neuron_index % 2 for n in got)
    assert got == sample_live_neurons(FakeActs(), 3, seed=1)
    assert len(sample_live_neurons(FakeActs(), 10)) == 4  # only four live neurons exist


def test_the_negative_side_probes_negated_activations(subject):
    from nxkit.revise import probe_proposals

    proposals = {"fire": ["The cat sat on the mat."], "silent": ["def f(x): return x"]}
    pos = probe_proposals(subject, 2, 5, proposals, 1.0)
    neg = probe_proposals(subject, 2, 5, proposals, 1.0, sign="negative")
    for kind in ("fire", "silent"):
        (a,), (b,) = pos[kind], neg[kind]
        assert a.tokens == b.tokens and len(a.activations) > 3
        assert b.activations == pytest.approx([-x for x in a.activations])
        assert b.max_activation == pytest.approx(-min(a.activations), abs=1e-6)
