"""Figures, escaped heatmaps and the neuron inspector's pure functions, on a small hand-made run directory.

`make_fake_run` writes a run in the real layout (a collection and explained neurons) without any model,
with a token whose text is `<script>…</script>`; the report and browser tests use it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import XSS, make_fake_run

from nxkit.records import NeuronId, Scores, SequenceSimulation
from nxkit.runs import Run
from nxkit.views import viz


@pytest.fixture
def fake_run(tmp_path) -> Run:
    return make_fake_run(tmp_path / "fake")


def test_heatmap_escapes_tokens_and_shades_by_value():
    html = viz.window_heatmap(["a", XSS, "\n"], [0.0, 5.0, 10.0], 10.0, [0.0, 9.0, 4.5], sim_max=9.0)
    assert "<script>" not in html and "&lt;script&gt;window.__nxkit_xss=1&lt;/script&gt;" in html
    assert "↵" in html  # newline shown as a visible mark
    assert "rgba(230,120,20,0.50)" in html and "rgba(230,120,20,1.00)" in html  # real: value / neuron max
    assert "rgba(40,110,220,1.00)" in html  # simulated 9 on the 0-9 scale


def test_heatmaps_shade_each_simulation_against_its_own_scale():
    from nxkit.records import ScoredSequenceSimulation

    def scored(values, top):  # a prompted simulation (digits 0-9) and a 0-10 one (nxkit-sim, exact formulas)
        sim = SequenceSimulation(["a", "b"], values, "simulated_normalized_activations", [list(range(top + 1))] * 2, [])
        return ScoredSequenceSimulation(sim, [0.0, 1.0], None)

    html = viz.scored_heatmaps([scored([0.0, 9.0], 9), scored([0.0, 10.0], 10), scored([0.0, 9.0], 10)], 1.0)
    assert html.count("rgba(40,110,220,1.00)") == 2 and "rgba(40,110,220,0.90)" in html  # 9 of 10 is not full
    with pytest.raises(ValueError, match="needs sim_max"):
        viz.window_heatmap(["a"], [1.0], 1.0, [5.0])


def test_heatmap_title_attribute_cannot_break_out():
    html = viz.token_heatmap(['" onmouseover="alert(1)'], [1.0], 1.0)
    assert 'onmouseover="' not in html and "&quot; onmouseover=&quot;alert(1)" in html


def test_run_table_reads_summaries_and_shows_kept_revisions(fake_run):
    df = fake_run.table()
    assert len(df) == 8
    assert set(df.status) == {"done", "dead"}
    assert df.score_after.notna().sum() == 4
    assert df[df.status == "done"].top_and_random.notna().all()
    revised = df[df.kept == "revised"]  # the kept explanation and its score, the original beside it
    assert len(revised) == 4 and (revised.explanation == "revised " + revised.original_explanation).all()
    assert (revised.top_and_random == 0.9).all() and (revised.original_top_and_random != 0.9).all()
    assert revised.shuffled_gap.tolist() == pytest.approx([0.9 - 0.05] * 4)


def test_figures_are_figures_with_data(fake_run):
    df = fake_run.table()
    for fig in (viz.score_histogram(df), viz.scores_by_layer(fake_run), viz.share_above_by_layer(df), viz.top_vs_random(df),
                viz.shuffled_control(df), viz.revision_before_after(df)):  # fmt: skip
        assert isinstance(fig, go.Figure) and fig.data
    assert len(viz.scores_by_layer(df).data) == 2  # one box per layer
    share = viz.share_above(df, threshold=0.0)
    scores = df["top_and_random"].dropna()
    assert share["n"] == len(scores) == 7 and share["above"] == int((scores > 0).sum())
    assert share["share"] == pytest.approx(share["above"] / 7)


def test_compare_runs_side_by_side(tmp_path):
    a, b = make_fake_run(tmp_path / "a"), make_fake_run(tmp_path / "b", layers=(2,))
    fig = viz.compare_runs({"explainer A": a, "explainer B": b})
    assert [t.name.split(" (")[0] for t in fig.data] == ["explainer A", "explainer B"]
    assert len(viz.compare_runs([a, b]).data) == 2
    paired = viz.paired_runs(a, make_fake_run(tmp_path / "c"))
    assert len(paired.data[0].x) == 7


def test_empty_run_gives_annotated_figures(tmp_path):
    df = Run(tmp_path / "empty").table()
    fig = viz.score_histogram(df)
    assert "no scored neurons yet" in [a.text for a in fig.layout.annotations]


def test_inspector_pure_functions(fake_run):
    from nxkit.views import widgets

    table = fake_run.table()
    opts = widgets.neuron_options(table, 0)
    assert [v for _, v in opts] == [0, 1, 2, 3]
    assert [v for _, v in widgets.neuron_options(table, 0, query="SCRIPT")] == [1]
    best = widgets.neuron_options(table, 1, sort="score_desc")
    scores = table[table.layer == 1].set_index("neuron").top_and_random
    assert [v for _, v in best] == list(scores.sort_values(ascending=False).index)
    data = widgets.neuron_data(fake_run, 0, 0)
    html = widgets.windows_html(data) + widgets.explanation_html(widgets.neuron_data(fake_run, 0, 1))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "simulated" in html and "top windows" in html and "random windows" in html
    assert "q0.9 of window max" in widgets.quantiles_html(data)
    assert "never fires &lt;i&gt;" in widgets.explanation_html(widgets.neuron_data(fake_run, 0, 3))


def test_inspector_widget_switches_neurons(fake_run):
    from nxkit.views.widgets import NeuronInspector

    ins = NeuronInspector(fake_run)
    first = ins.windows.value
    assert "<script>" not in first and ins.neuron.value == 0
    ins.neuron.value = 2
    assert ins.windows.value != first and "neuron 2" in ins.explanation.value
    ins.search.value = "script"
    assert [v for _, v in ins.neuron.options] == [1] and ins.neuron.value == 1
    ins.select(1, 3)
    assert "layer 1 · neuron 3" in ins.explanation.value


@pytest.mark.slow
def test_inspector_shows_both_sides(fake_run):
    from nxkit.views.widgets import NeuronInspector

    assert NeuronInspector(fake_run).sign.layout.display == "none"  # one side: no side switch
    neg = fake_run.side("negative")
    s = fake_run.read_neuron(NeuronId(1, 2))
    s.explanation, s.negative_tail_share, s.scores = "falls on <i>dogs</i>", 0.4, Scores(0.33)
    neg.write_neuron(s)
    ins = NeuronInspector(fake_run)
    assert ins.sign.options == ("positive", "negative") and ins.sign.layout.display is None
    ins.select(1, 2)
    assert (
        "negative side</b> · score 0.330" in ins.sides.value and "falls on &lt;i&gt;dogs&lt;/i&gt;" in ins.sides.value
    )
    assert "40% of its |activation|" in ins.sides.value
    positive_max = ins.data.record.max_activation
    ins.sign.value = "negative"
    assert ins.source.sign == "negative" and list(zip(ins.table.layer, ins.table.neuron, strict=True)) == [(1, 2)]
    assert ins.data.neuron_id == NeuronId(1, 2) and "falls on" in ins.explanation.value
    bottom = np.load(fake_run.activations_dir / "layer_01" / "bottom_acts.npy")[2]
    assert ins.data.record.max_activation == pytest.approx(-bottom.min()) != positive_max  # the negated windows
    ins.sign.value = "positive"
    assert ins.source.sign == "positive" and len(ins.table) == len(fake_run.table())


def test_inspector_probe_with_real_model(fake_run, subject, local_backend):
    from nxkit.simulators import make_simulator
    from nxkit.views.widgets import NeuronInspector

    ins = NeuronInspector(fake_run, model=subject, simulator=make_simulator(local_backend))
    ins.text.value = "The cat sat on the <b>mat</b>."
    out = ins.probe_out.value
    assert "nx-probe" in out and "real" in out and "simulated" in out, out
    assert "<b>" not in out and "&lt;" in out  # the tokenizer splits "<b>"; each piece is escaped


def test_inspector_takes_released_neurons():
    from nxkit.public import PublicDataset
    from nxkit.views.widgets import NeuronInspector

    ds = PublicDataset(Path(__file__).parent / "fixtures" / "public")
    neurons = [ds.neuron(0, 1), ds.neuron(5, 7)]
    ins = NeuronInspector(neurons)
    assert ins.layer.options == (0, 5) and "layer 0 · neuron 1" in ins.explanation.value
    assert "nx-window" in ins.windows.value
    ins.layer.value = 5
    assert "layer 5 · neuron 7" in ins.explanation.value
    ins.text.value = "any text"  # no subject model given: a clear message, not an exception
    assert "pass their subject model" in ins.probe_out.value


def test_inspector_shows_what_a_neuron_writes_escaped():
    from nxkit.collection.activations import NeuronWrites
    from nxkit.records import NeuronId, NeuronRecord
    from nxkit.views.widgets import NeuronData, writes_html

    record = NeuronRecord(NeuronId(0, 1))
    assert writes_html(NeuronData(NeuronId(0, 1), record=record)) == ""  # no projection stored: nothing shown
    record.writes = NeuronWrites([(XSS, 1.5), (" Friday", 1.2)], [(" the", -0.7)])
    page = writes_html(NeuronData(NeuronId(0, 1), record=record))
    assert "writes: raises" in page and "Friday" in page and "<script>" not in page
