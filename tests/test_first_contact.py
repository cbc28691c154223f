"""The demo's first contact: the pick that prefers fewer, whole-word terms, renderings a reader tells apart, the graded
form, the selective group kept apart from the sample, the best neurons ranked on windows other than those shown, and
a report whose size is bounded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_fake_run

from nxkit.explain_score import choose_candidate, process_neuron, simulate_and_score
from nxkit.explainers.base import ExplainConfig
from nxkit.explainers.search import SearchConfig, SearchExplainer, cost_front, formula_cost, is_fragment, search_neuron
from nxkit.formulas import Formula, Primitive, graded_values
from nxkit.llm.base import run_sync
from nxkit.pipeline import most_selective
from nxkit.records import ActivationRecord, Candidate, HeldOutWindow, NeuronId
from nxkit.rules import After, Mixture, WordPattern
from nxkit.simulators.exact import FormulaSimulator
from nxkit.training.synthetic import SyntheticNeuron

# --- the pick: fewer terms and whole words win near-ties ------------------------------------------------------------

CONCEPT = Formula(Primitive("concept", "day_of_the_week.n.01"))
FRAGMENTS = (
    Formula(Primitive("token", " Mon"))
    .extend("or", Primitive("token", " Fri"))
    .extend("or", Primitive("token", " Sun"))
)


def _candidate(formula: Formula, calibration: float, cost: int) -> Candidate:
    return Candidate(formula.render(), calibration_score=calibration, formula=formula.to_json(), cost=cost)


def test_a_single_concept_beats_an_or_of_fragments_within_the_margin():
    concept = _candidate(CONCEPT, 0.80, cost=1)
    fragments = _candidate(FRAGMENTS, 0.83, cost=6)  # three fragments, each counting twice
    assert choose_candidate([fragments, concept], margin=0.02) is concept  # +0.03 is less than 5 x 0.02
    assert choose_candidate([fragments, concept], margin=0.0) is fragments  # no margin: the best score
    clear = _candidate(FRAGMENTS, 0.95, cost=6)
    assert choose_candidate([concept, clear], margin=0.02) is clear  # +0.15 beats 5 x 0.02
    # free text has no cost: score alone; no defined score at all: the explainer's first
    texts = [Candidate("a", calibration_score=0.2), Candidate("b", calibration_score=0.5)]
    assert choose_candidate(texts, margin=0.02).text == "b"
    assert choose_candidate([Candidate("x"), Candidate("y")], margin=0.02).text == "x"


def test_fragments_cost_twice_and_the_front_keeps_the_cheapest():
    windows = [ActivationRecord([" Yog", "a", " is", " calm", " Yog", "urt"], [5, 1, 0, 0, 4, 1])]
    assert is_fragment(Primitive("token", " Yog"), windows)
    assert not is_fragment(Primitive("token", " calm"), windows)
    assert not is_fragment(Primitive("word", "calm"), windows)
    frag = {Primitive("token", " Yog")}
    assert formula_cost(Formula(Primitive("token", " Yog")).extend("or", Primitive("word", "calm")), frag) == 3

    from nxkit.explainers.search import Found

    a, b, c = (
        Found(Formula(Primitive("word", w)), s, cost=k) for w, s, k in (("x", 0.5, 1), ("y", 0.6, 3), ("z", 0.4, 2))
    )
    front = cost_front([b, a, c], 2)
    assert front == [a, b]  # z costs more than x and scores less: off the front


def test_the_search_offers_the_cheapest_good_formula_to_the_pick():
    vocab = [" the", " a", " stone", " river", " went", " to", " of", ",", " 3", " 42", " 1984", " 7"] * 2
    rng = np.random.default_rng(1)
    windows = [[vocab[i] for i in rng.integers(0, len(vocab), 24)] for _ in range(300)]
    neuron = SyntheticNeuron("digits", "test", WordPattern(r"\d+"), ("digits",))
    record = neuron.record(windows, NeuronId(0, 0), seed=1)
    candidates, _ = run_sync(SearchExplainer().explain(record, ExplainConfig(best_of=3)))
    assert all(c.cost is not None for c in candidates)
    summary, _ = run_sync(process_neuron(record, SearchExplainer(), FormulaSimulator(), ExplainConfig()))
    kept = summary.original_candidate
    assert Formula.from_json(kept.formula) == Formula(Primitive("surface", "number")) and kept.cost == 1


# --- renderings ---------------------------------------------------------------------------------------------------


def test_sub_word_tokens_read_as_parts_of_words_and_no_two_terms_read_alike():
    yog = Primitive("token", " Yog")
    assert Formula(yog).render({yog: ["Yoga", "Yogi"]}) == 'words starting with "Yog" (Yoga, Yogi)'
    ing = Primitive("token", "ing")
    assert Formula(ing).render({ing: ["walking"]}) == 'words ending in "ing" (walking)'
    ov = Primitive("token", "ov")
    assert Formula(ov).render({ov: ["Kovac"]}) == '"ov" inside words (Kovac)'
    whole = Primitive("token", " Monday")
    assert Formula(whole).render({whole: ["Monday"]}) == 'the token " Monday"'
    # " Yog" and "Yog" seen in the same words would read alike: the repeated phrase names each exact token
    bare = Primitive("token", "Yog")
    text = Formula(yog).extend("or", bare).render({yog: ["Yoga"], bare: ["Yoga"]})
    first, second = text.split(", or ")
    assert first != second and "' Yog'" in first and "'Yog'" in second
    gate = (
        Formula(Primitive("word", "may"))
        .extend("and", Primitive("token", " may"))
        .extend("and", Primitive("token", "may"))
    )
    clauses = gate.render().split(", when ")
    assert len(set(clauses)) == len(clauses)


def test_concepts_show_their_most_familiar_spelling():
    from collections import Counter

    from nxkit.explainers.search import familiar

    assert familiar(Counter({"monday": 1, "Monday": 5, "Friday": 3, "friday": 1}), 2) == ["Monday", "Friday"]


# --- the graded form ----------------------------------------------------------------------------------------------


def test_graded_form_predicts_how_strongly_and_beats_the_binary_form():
    vocab = [" the", " a", " stone", " went", " to", " of", " and", ",", " 3", " 42", " 7"] * 2
    rng = np.random.default_rng(2)
    windows = [[vocab[i] for i in rng.integers(0, len(vocab), 24)] for _ in range(400)]
    # the word after "to" at full strength, numbers at a fifth of it
    rule = Mixture(After("to"), WordPattern(r"\d+"), weight_b=0.2)
    record = SyntheticNeuron("mix", "test", rule, ("mix",)).record(windows, NeuronId(0, 0), seed=2, noise=0.02)
    trace = search_neuron(record, SearchConfig(graded=True))
    best = next(
        f for f in trace.best if set(f.formula.terms) == {Primitive("after", "to"), Primitive("surface", "number")}
    )
    weights = dict(zip(best.formula.terms, best.weights, strict=True))
    assert weights[Primitive("after", "to")] > 2 * weights[Primitive("surface", "number")] > 0
    values = graded_values(best.formula, best.weights, [" to", " stone", " 42", " stone", " 3"])
    assert values[2] == values[4] == weights[Primitive("surface", "number")] and values[0] == values[3] == 0
    assert values[1] == weights[Primitive("after", "to")]
    fresh = [[vocab[i] for i in rng.integers(0, len(vocab), 24)] for _ in range(40)]
    held = [HeldOutWindow(w, list(rule(w)), split="top" if i % 2 else "random") for i, w in enumerate(fresh)]
    sim = FormulaSimulator()
    binary = Candidate("b", formula=best.formula.to_json())
    graded = Candidate("g", formula=best.formula.to_json(), weights=best.weights)
    _, sb, _ = run_sync(simulate_and_score(sim, binary, held, 1.0))
    _, sg, _ = run_sync(simulate_and_score(sim, graded, held, 1.0))
    assert sg.top_and_random > sb.top_and_random + 0.05
    with pytest.raises(Exception, match="do not fit the formula"):
        run_sync(sim.simulate_many(Candidate("x", formula=best.formula.to_json(), weights=[1.0]), [fresh[0]]))


# --- groups, the best neurons, the report's size --------------------------------------------------------------------


class _Moments:
    def __init__(self, kurt: dict[int, list[float]]):
        self.kurt = kurt

    def moments(self, layer):
        k = np.asarray(self.kurt[layer], dtype=np.float32)
        return np.stack([np.zeros_like(k), np.ones_like(k), np.zeros_like(k), k], axis=1)


def test_most_selective_neurons_are_the_highest_kurtosis_outside_the_sample():
    acts = _Moments({0: [1.0, 9.0, float("nan"), 5.0, 7.0], 1: [3.0, 2.0, 1.0, 0.0, 8.0]})
    got = most_selective(acts, [0, 1], 2, exclude=[NeuronId(0, 1)])
    assert got == [NeuronId(0, 3), NeuronId(0, 4), NeuronId(1, 0), NeuronId(1, 4)]
    assert most_selective(acts, [0], 0) == []


def _grouped_run(tmp_path):
    from nxkit.runs import Run

    run = make_fake_run(tmp_path / "fake")
    run.update_manifest(
        groups={"sample": [[0, 0], [0, 1], [1, 0], [1, 1]], "selective": [[0, 2], [0, 3], [1, 2], [1, 3]]}
    )
    return Run(run.path)


def test_the_selective_group_is_kept_apart_in_the_table_summary_and_report(tmp_path):
    from nxkit.views.report import render_report, summary_table

    run = _grouped_run(tmp_path)
    table = run.table()
    assert sorted(table["group"].value_counts().items()) == [("sample", 4), ("selective", 4)]
    text = summary_table(run)
    assert (
        "sample, mean over 4 scored neurons" in text and "selective (chosen, kept apart), mean over 3 scored" in text
    )  # one of them is dead
    page = render_report(run)
    assert "Kept apart, the 4 most selective neurons" in page and "Neurons worth reading" in page
    assert page.count('class="nx-fig"') == 6  # the five figures of the sample, and the two groups side by side


def test_best_neurons_are_ranked_on_test_windows_not_on_the_score_shown(tmp_path):
    from nxkit.records import Scores
    from nxkit.views.digest import best_neurons, digest_text

    run = _grouped_run(tmp_path)
    # give every neuron a test score that orders them against their valid scores
    for i, s in enumerate(run.summaries()):
        s.test_scores = Scores(top_and_random=0.9 - 0.1 * i)
        run.write_neuron(s, run.read_results(s.neuron_id), None)
    best, note = best_neurons(run, n=3)
    assert "ranked on their test windows" in note
    assert [b.ranked_by for b in best] == pytest.approx([0.9, 0.8, 0.7])
    assert best[0].contexts and "[" in digest_text(run, n=3)
    lines = digest_text(run, n=3).splitlines()
    assert any("sample (the kit's average): 4 neurons" in line for line in lines)
    assert any("at or above 0.5" in line and " of " in line for line in lines)


def test_the_report_stays_bounded_and_draws_plotly_once(tmp_path, monkeypatch):
    from nxkit.views import report

    run = make_fake_run(tmp_path / "fake")
    monkeypatch.setattr(report, "MAX_TABLE_ROWS", 3)
    monkeypatch.setattr(report, "MAX_FIGURE_ROWS", 2)
    page = report.render_report(run, max_neurons=2)
    start = page.index('<table class="nx-sortable">')
    assert page[start : page.index("</table>", start)].count("<tr>") == 1 + 3
    assert "3 of 8 neurons listed" in page and "a seeded sample of 2 of the 8 neurons" in page
    assert page.count('class="nx-neuron"') == 2
    packed = report.plotly_packed()
    assert page.count(packed) == 1 and len(packed) < 0.45 * 4_815_814  # plotly.js gzipped, once
    assert len(page) - len(packed) < 200_000
    for i in range(page.count('class="nx-fig"')):
        blob = page.split(f'id="nx-fig-{i}-data">', 1)[1].split("</script>", 1)[0]
        assert json.loads(blob)["data"] is not None
