"""The compositional-search explainer: each primitive on hand-made windows, the search recovering planted rules,
rendering, exact simulation agreeing with the generic scorer, and the shuffled control through a real run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nxkit import wordnet
from nxkit.explain_score import simulate_and_score
from nxkit.explainers.base import ExplainConfig
from nxkit.explainers.search import SearchConfig, SearchExplainer, correlations, search_neuron
from nxkit.formulas import Formula, Primitive, SearchError
from nxkit.llm.base import run_sync
from nxkit.records import Candidate, HeldOutWindow, NeuronId
from nxkit.rules import After, Concept, Mixture, TokenIs, WordPattern
from nxkit.simulators.exact import FormulaSimulator
from nxkit.training.synthetic import SURFACE, SyntheticNeuron

needs_wordnet = pytest.mark.skipif(
    not wordnet.available() and not os.environ.get("CI"),
    reason="needs Debian's wordnet-base (make setup installs it as root); CI always has it",
)


def holds(prim: Primitive, tokens: list[str]) -> list[str]:
    return [t for t, m in zip(tokens, prim.mask(tokens), strict=True) if m]


def test_word_token_and_neighbour_primitives():
    tokens = ["A", " cup", " of", " tea", ",", " a", " Cup", " of", " cof", "fee", " and", " cups", "."]
    assert holds(Primitive("word", "cup"), tokens) == [" cup", " Cup"]  # lower-cased words, not "cups"
    assert holds(Primitive("token", " of"), tokens) == [" of", " of"]
    assert holds(Primitive("after", "of"), tokens) == [" tea", " cof", "fee"]  # a word of two tokens: both
    assert holds(Primitive("before", "of"), tokens) == [" cup", " Cup"]
    assert holds(Primitive("surface", "punct:,"), tokens) == [","]
    assert holds(Primitive("surface", "punct:."), tokens) == ["."]


def test_surface_and_context_primitives():
    tokens = ["In", " 1984", " I", " said", ' "', "not", " now", '"', " (", "twice", ")", " now", "\n", "DONE", "?"]
    assert holds(Primitive("surface", "year"), tokens) == [" 1984"]
    assert holds(Primitive("surface", "number"), tokens) == [" 1984"]
    assert holds(Primitive("surface", "allcaps"), tokens) == ["DONE"]  # " I": one letter is not all-caps
    assert holds(Primitive("surface", "line_start"), tokens) == ["DONE"]
    assert holds(Primitive("context", "quotes"), tokens) == ["not", " now"]
    assert holds(Primitive("context", "brackets"), tokens) == ["twice"]
    assert holds(Primitive("context", "after_negation"), tokens) == [" now", '"']
    assert holds(Primitive("context", "repeat"), tokens) == [" now"]
    assert holds(Primitive("surface", "punct:?"), tokens) == ["?"]


def test_primitives_reuse_the_synthetic_rules():
    # one implementation of each rule: the primitive reads the very rule object a synthetic neuron is made of
    assert Primitive("surface", "year").rule is SURFACE["year"][0]
    assert Primitive("after", "of").rule == After("of")
    assert Primitive("token", "x").rule == TokenIs("x")
    with pytest.raises(SearchError, match="unknown primitive kind"):
        Primitive("colour", "red")
    with pytest.raises(SearchError, match="no rule"):
        _ = Primitive("surface", "nonsense").rule


@needs_wordnet
def test_concept_primitive_reads_wordnet_with_inflections():
    tokens = ["Two", " apples", ",", " a", " pear", " and", " the", " table", " of", " plums"]
    assert holds(Primitive("concept", "edible_fruit.n.01"), tokens) == [" apples", " pear", " plums"]
    assert Concept("edible_fruit.n.01", graded=True)(tokens)[1] != Concept("edible_fruit.n.01", graded=True)(tokens)[4]
    assert {"goose.n.01", "bird.n.01"} <= wordnet.concepts_of("geese")  # WordNet's own morphology
    assert wordnet.is_related("edible_fruit.n.01", "produce.n.01")  # its parent
    assert not wordnet.is_related("edible_fruit.n.01", "bird.n.01")


def test_formulas_compose_left_to_right_and_round_trip():
    tokens = [" 3", " cats", " of", " 7", " dogs", " of", " Rome"]
    f = Formula(Primitive("surface", "number")).extend("or", Primitive("after", "of"))
    assert f.mask(tokens).tolist() == [True, False, False, True, False, False, True]
    g = f.extend("and_not", Primitive("surface", "capitalised"))
    assert g.mask(tokens).tolist() == [True, False, False, True, False, False, False]
    assert str(g) == "surface:number OR after:of AND NOT surface:capitalised"
    assert Formula.from_json(json.loads(json.dumps(g.to_json()))) == g
    with pytest.raises(SearchError, match="unknown operator"):
        Formula(Primitive("word", "a"), (("xor", Primitive("word", "b")),))


def test_rendering_uses_our_templates():
    f = (
        Formula(Primitive("after", "of"))
        .extend("or", Primitive("word", "cat"))
        .extend("and_not", Primitive("surface", "capitalised"))
    )
    text = f.render({Primitive("after", "of"): ["tea", "coffee"]})
    assert text == 'the word after "of" (tea, coffee), or the word "cat", except when it is capitalised'
    both = Formula(Primitive("surface", "number")).extend("and", Primitive("context", "brackets"))
    assert both.render() == "numbers written in digits, when it is inside brackets"


def test_correlations_match_numpy_and_flag_constant_masks():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    masks = rng.random((4, 50)) < 0.3
    masks[3] = False
    r = correlations(masks, y)
    for i in range(3):
        assert r[i] == pytest.approx(np.corrcoef(masks[i].astype(float), y)[0, 1])
    assert np.isnan(r[3])


# --- planted rules ------------------------------------------------------------------------------------------

WORDS = [" the", " a", " stone", " river", " cloud", " sky", " went", " to", " of", " and", ",", ".", " big", " old"]
FRUIT = [" apple", " pear", " plum", " cherry", " banana", " grape"]
NUMBERS = [" 3", " 42", " 7", " 1984", " 12"]


def planted_windows(n: int = 400, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    vocab = WORDS * 3 + FRUIT + NUMBERS
    return [[vocab[i] for i in rng.integers(0, len(vocab), 24)] for _ in range(n)]


def recovered(rule, name: str, seed: int = 0) -> Formula:
    record = SyntheticNeuron(name, "test", rule, (name,)).record(planted_windows(seed=seed), NeuronId(0, 0), seed=seed)
    trace = search_neuron(record, SearchConfig())
    assert trace.best, f"nothing found for {name}"
    return trace.best[0].formula


@needs_wordnet
def test_search_recovers_a_set_of_fruit_words():
    best = recovered(Concept("edible_fruit.n.01", graded=True), "fruit")
    assert len(best.terms) == 1 and best.first.kind == "concept"
    assert wordnet.is_related(best.first.arg, "edible_fruit.n.01") or best.first.arg == "fruit.n.01"


def test_search_recovers_numbers_the_word_after_of_and_an_or_of_two():
    assert recovered(WordPattern(r"\d+(?:[.,]\d+)?"), "digits") == Formula(Primitive("surface", "number"))
    assert recovered(After("of"), "after of") == Formula(Primitive("after", "of"))
    both = recovered(Mixture(After("to"), WordPattern(r"\d+(?:[.,]\d+)?"), weight_b=0.8), "mix")
    assert set(both.terms) == {Primitive("after", "to"), Primitive("surface", "number")}
    assert [op for op, _ in both.rest] == ["or"]


def test_search_reports_failure_instead_of_inventing_an_explanation():
    record = SyntheticNeuron("silent", "test", lambda toks: np.zeros(len(toks)), ("nothing",)).record(
        planted_windows(60), NeuronId(0, 1), noise=0.0
    )
    candidates, failures = run_sync(SearchExplainer().explain(record, ExplainConfig()))
    assert candidates == [] and "correlates positively" in failures[0].reason


# --- exact simulation --------------------------------------------------------------------------------------


def test_exact_simulation_agrees_with_the_generic_scorer():
    windows, rng = planted_windows(30, seed=3), np.random.default_rng(3)
    held = [HeldOutWindow(w, list(After("of")(w) * 2.5 + rng.random(len(w)) * 0.3), split=s)
            for w, s in zip(windows, ["top", "random"] * 15, strict=True)]  # fmt: skip
    f = Formula(Primitive("after", "of")).extend("or", Primitive("surface", "number"))
    sim = FormulaSimulator()
    candidate = Candidate(f.render(), formula=f.to_json())  # the formula travels as a formula, never as its text
    _, scores, failures = run_sync(simulate_and_score(sim, candidate, held, max_activation=2.8))
    real = np.concatenate([w.activations for w in held])
    direct = np.corrcoef(np.concatenate([f.mask(w.tokens) for w in held]).astype(float), real)[0, 1]
    assert failures == [] and scores.top_and_random == pytest.approx(direct)
    rand = [w for w in held if w.split == "random"]
    direct_random = np.corrcoef(np.concatenate([f.mask(w.tokens) for w in rand]).astype(float),
                                np.concatenate([w.activations for w in rand]))[0, 1]  # fmt: skip
    assert scores.random_only == pytest.approx(direct_random)
    with pytest.raises(SearchError, match="reads only the search explainer's formulas"):
        run_sync(sim.simulate_many("words about the sea", [windows[0]]))


# --- through a real run: candidates, formulas, control, resume -----------------------------------------------


@pytest.mark.slow
def test_search_run_scores_exactly_with_a_shuffled_control_and_resumes(tmp_path, capsys):
    from nxkit.cli import main
    from nxkit.runs import Run

    run_dir = tmp_path / "search"
    tiny = ["--run-dir", str(run_dir), "--collect.layers", "0", "--max-tokens", "8192", "--corpus", "fortunes",
            "--collect.top-k", "16", "--collect.n-random", "12", "--collect.no-compile"]  # fmt: skip
    assert main(["run", *tiny, "--neurons", "0:11", "0:42", "0:7"]) == 0
    out = capsys.readouterr().out
    assert "revision skipped: the search explainer" in out and "scored by: exact simulator" in out
    page = (run_dir / "report.html").read_text()
    assert "<th>scored by</th>" in page and ">exact</td>" in page and "explainer: kind=search" in page
    run = Run(run_dir)
    done = run.summaries(("done",))
    assert len(done) >= 2
    for s in done:
        chosen = next(c for c in s.candidates if c.text == s.explanation)
        formula = Formula.from_json(chosen.formula)  # stored in its structured form beside the text
        assert s.simulator.kind == "exact" and chosen.search_score > 0
        windows = run.read_results(s.neuron_id).scored_explanations[0].scored_simulation.scored_sequence_simulations
        for w in windows:  # the stored simulation is the formula's mask, token for token
            assert [v > 0 for v in w.simulation.expected_activations] == formula.mask(w.simulation.tokens).tolist()
        assert s.shuffled_control_from is not None and s.shuffled_control_from != s.neuron_id
        assert s.shuffled_control_explanation != s.explanation
    # resume with one more neuron: the earlier formulas are learnt again from disk, so the new neuron's control
    # (another neuron's explanation) still simulates exactly
    assert main(["run", *tiny, "--neurons", "0:11", "0:42", "0:7", "0:99"]) == 0
    capsys.readouterr()
    new = Run(run_dir).read_neuron(NeuronId(0, 99))
    assert new.status in ("done", "failed")
    if new.status == "done":
        assert new.shuffled_control_from is not None and not [f for f in new.failures if f.stage == "shuffled_control"]
    assert Run(run_dir).read_neuron(NeuronId(0, 11)).seconds == run.read_neuron(NeuronId(0, 11)).seconds


@needs_wordnet
def test_search_recovers_a_verb_concept_from_its_shallow_tree():
    # verb trees are shallow (run.v.01 sits two steps below a root): a depth cut meant for nouns would drop them
    rng = np.random.default_rng(5)
    vocab = WORDS * 2 + [" ran", " jogs", " sprinted", " scampered", " lope", " run", " ate", " slept", " read"]
    windows = [[vocab[i] for i in rng.integers(0, len(vocab), 24)] for _ in range(400)]
    record = SyntheticNeuron("run", "test", Concept("run.v.01", graded=True), ("run",)).record(windows, NeuronId(0, 2))
    best = search_neuron(record).best[0].formula
    assert best.first.kind == "concept" and wordnet.is_related(best.first.arg, "run.v.01"), best
