"""Figures, escaped heatmaps and the neuron inspector's pure functions, on a small hand-made run directory.

`make_fake_run` writes a run in the real layout (a collection and explained neurons) without any model,
with a token whose text is `<script>…</script>`; the report and browser tests use it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from nxkit import viz
from nxkit.records import (
    Candidate,
    NeuronId,
    NeuronRevision,
    NeuronSimulationResults,
    NeuronSummary,
    ScoredExplanation,
    Scores,
    SequenceSimulation,
)
from nxkit.runs import Run
from nxkit.score import score_simulation

XSS = "<script>window.__nxkit_xss=1</script>"
"""A token text that must show as text and run nothing."""
WORDS = [" the", " cat", " sat", " on", " mat", "\n", " Monday", " Friday", XSS, " dog", ".", " and"]


def _per_neuron(acts: np.ndarray, window_ids: np.ndarray) -> np.ndarray:
    """[d_mlp, k, window]: each neuron's activations on its own chosen windows."""
    return np.stack([acts[window_ids[n], :, n] for n in range(acts.shape[-1])])


def make_fake_run(
    root: Path, layers=(0, 1), d_mlp: int = 4, n_windows: int = 48, window: int = 16, revise: bool = True
) -> Run:
    """A finished run with a collection and every neuron explained and scored, built from random numbers."""
    rng = np.random.default_rng(0)
    acts_dir = root / "activations"
    acts_dir.mkdir(parents=True)
    ids = rng.integers(0, len(WORDS), size=(n_windows, window)).astype(np.int32)
    ids[0, 3] = WORDS.index(XSS)  # window 0 holds the script token, and is neuron 0's top window
    np.save(acts_dir / "windows.npy", ids)
    (acts_dir / "token_strings.json").write_text(json.dumps(WORDS))
    k, n_random, levels = 8, 6, [0.5, 0.9]
    manifest = {
        "status": "complete", "model": "smollm2-135m", "layers": list(layers), "d_mlp": d_mlp, "n_layers": 30,
        "config": {"quantile_levels": levels, "top_k": k, "n_random": n_random},
        "corpus": {"source": "fake", "n_windows": n_windows, "window": window, "n_tokens": n_windows * window},
    }  # fmt: skip
    (acts_dir / "manifest.json").write_text(json.dumps(manifest))
    run = Run(root)
    run.update_manifest(
        explain={"explainer": {"backend": "fake"}, "simulator": {"kind": "fake", "mode": "all_at_once"}}
    )
    for li, layer in enumerate(layers):
        acts = np.abs(rng.normal(size=(n_windows, window, d_mlp))).astype(np.float32) * (1 + li)
        acts[0, 3, 0] = 20.0  # neuron 0 fires hardest on the script token
        maxima = acts.max(1)  # [n_windows, d_mlp]
        top_w = np.argsort(-maxima, axis=0)[:k].T  # [d_mlp, k]
        rand_w = rng.integers(0, n_windows, size=(d_mlp, n_random))
        d = acts_dir / f"layer_{layer:02d}"
        d.mkdir()
        np.save(d / "top_acts.npy", _per_neuron(acts, top_w))
        np.save(d / "top_windows.npy", top_w)
        np.save(d / "random_acts.npy", _per_neuron(acts, rand_w))
        np.save(d / "random_windows.npy", rand_w)
        np.save(d / "band_acts.npy", np.zeros((d_mlp, 3, 1, window), np.float32))
        np.save(d / "band_windows.npy", -np.ones((d_mlp, 3, 1), np.int64))
        np.save(d / "moments.npy", np.tile([0.8, 0.5, 1.0, 3.0], (d_mlp, 1)).astype(np.float32))
        np.save(d / "quantile_boundaries.npy", np.tile([1.0, 2.0], (d_mlp, 1)).astype(np.float32))
        for n in range(d_mlp):
            nid = NeuronId(layer, n)
            record = run.activations().neuron_record(layer, n)
            valid = record.most_positive_activation_records[2:4] + record.random_sample[1:3]
            sims = [
                SequenceSimulation(
                    r.tokens,
                    list(np.clip(np.array(r.activations) * 3 + rng.normal(0, 1.5 * n + 0.2, window), 0, 9)),
                    "simulated_normalized_activations",
                    [],
                    [],
                )
                for r in valid
            ]
            scored = score_simulation(valid, sims, record.max_activation)
            splits = ["top", "top", "random", "random"]
            expl = f"the word cat <b>{layer}.{n}</b>" if n != 1 else XSS
            s = Scores(scored.ev_correlation_score, 0.1 * n, n_windows=4)
            summary = NeuronSummary(
                nid, "done", max_activation=record.max_activation, explanation=expl, scores=s,
                candidates=[Candidate(expl, 0.5), Candidate("dogs & cats", 0.1)], original_explanation=expl,
                original_scores=s, window_splits=splits, shuffled_control=0.05,
            )  # fmt: skip
            run.write_neuron(summary, NeuronSimulationResults(nid, [ScoredExplanation(expl, scored)]))
            if revise and n < 2:  # a kept revision (scored on the same windows) for neurons 0 and 1
                after = Scores(0.9, 0.2, n_windows=4)
                rev = NeuronRevision(
                    nid, "done", original_explanation=expl, final_explanation=f"revised {expl}",
                    score_before=scored.ev_correlation_score, score_after=0.9, scores_after=after,
                )  # fmt: skip
                run.write_revision(rev, kept=scored)
    # layer 0's last neuron turns out dead (its summary says why)
    run.write_neuron(NeuronSummary(NeuronId(layers[0], d_mlp - 1), "dead", reason="never fires <i>x</i>"))
    return run


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
    from nxkit.records import ScoredSequenceSimulation, SequenceSimulation

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
    assert share["n"] == 7 and 0 <= share["share"] <= 1


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
    from nxkit import widgets

    table = fake_run.table()
    opts = widgets.neuron_options(table, 0)
    assert [v for _, v in opts] == [0, 1, 2, 3]
    assert [v for _, v in widgets.neuron_options(table, 0, query="SCRIPT")] == [1]
    best = widgets.neuron_options(table, 1, sort="score_desc")
    scores = table[table.layer == 1].set_index("neuron").top_and_random
    assert [v for _, v in best] == list(scores.sort_values(ascending=False).index)
    data = widgets.load_neuron(fake_run, 0, 0)
    html = widgets.windows_html(data) + widgets.explanation_html(widgets.load_neuron(fake_run, 0, 1))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "simulated" in html and "top windows" in html and "random windows" in html
    assert "q0.9 of window max" in widgets.quantiles_html(data)
    assert "never fires &lt;i&gt;" in widgets.explanation_html(widgets.load_neuron(fake_run, 0, 3))


def test_inspector_widget_switches_neurons(fake_run):
    from nxkit.widgets import NeuronInspector

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
def test_inspector_probe_with_real_model(fake_run, subject, local_backend):
    from nxkit.simulate import make_simulator
    from nxkit.widgets import NeuronInspector

    ins = NeuronInspector(fake_run, model=subject, simulator=make_simulator(local_backend))
    ins.text.value = "The cat sat on the <b>mat</b>."
    out = ins.probe_out.value
    assert "nx-probe" in out and "real" in out and "simulated" in out, out
    assert "<b>" not in out and "&lt;" in out  # the tokenizer splits "<b>"; each piece is escaped


def test_inspector_takes_released_neurons():
    from nxkit.public import PublicDataset
    from nxkit.widgets import NeuronInspector

    ds = PublicDataset(Path(__file__).parent / "fixtures" / "public")
    neurons = [ds.neuron(0, 1), ds.neuron(5, 7)]
    ins = NeuronInspector(neurons)
    assert ins.layer.options == (0, 5) and "layer 0 · neuron 1" in ins.explanation.value
    assert "nx-window" in ins.windows.value
    ins.layer.value = 5
    assert "layer 5 · neuron 7" in ins.explanation.value
    ins.text.value = "any text"  # no subject model given: a clear message, not an exception
    assert "pass their subject model" in ins.probe_out.value
