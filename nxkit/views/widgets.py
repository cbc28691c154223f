"""The neuron inspector: pick a neuron of a run (or of OpenAI's release), read its explanation and scores, see
its windows as heatmaps of real and simulated activations, and type any text to probe it live.

Pure functions (`neuron_options`, `neuron_data`, `explanation_html`, `windows_html`, `quantiles_html`,
`probe_html`) compute everything; `NeuronInspector`'s callbacks only move their results into widgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..collection.probe import probe
from ..heldout import labelled_simulations
from ..records import (
    NEGATIVE,
    POSITIVE,
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    NeuronRevision,
    NeuronSimulationResults,
    NeuronSummary,
    Scores,
    max_activation_of,
)
from ..runs import TABLE_COLUMNS, Run, as_run, table_row
from ..scorers.correlation import simulation_scale
from ..simulators.base import simulate_sync
from . import viz
from .viz import esc

SORTS = {"neuron index": "index", "score, best first": "score_desc", "score, worst first": "score_asc"}


@dataclass
class NeuronData:
    """What the inspector shows of one neuron."""

    neuron_id: NeuronId
    """The neuron."""
    summary: NeuronSummary | None = None
    """Its summary (status, explanation, scores, candidates), None when not explained."""
    record: NeuronRecord | None = None
    """Its activation record (top, random and quantile windows), when a collection is there."""
    results: NeuronSimulationResults | None = None
    """Its scored explanations (real and simulated activations on held-out windows)."""
    revision: NeuronRevision | None = None
    """The revision stage's outcome, when it ran."""
    quantile_levels: list[float] | None = None
    """Levels of the record's quantile boundaries."""

    @property
    def explanation(self) -> str | None:
        return self.summary.explanation if self.summary else None

    @property
    def scored(self) -> list:
        """The kept explanation's scored windows (empty when not scored)."""
        if self.results and self.results.scored_explanations:
            return self.results.scored_explanations[0].scored_simulation.scored_sequence_simulations
        return []

    @property
    def max_activation(self) -> float:
        return max_activation_of(self.summary, self.record, self.scored)


# --- sources: a run directory, or neurons of the public release ------------------------------------


def _public_summary(pn) -> NeuronSummary:
    """A released neuron as a summary: its explanation and the release's score, windows labelled by membership."""
    from ..public import released_splits

    s = Scores(top_and_random=pn.score)
    return NeuronSummary(
        pn.neuron_id, "done", explanation=pn.explanation, scores=s, original_explanation=pn.explanation,
        original_scores=s, window_splits=released_splits(pn) if pn.results else [],
        max_activation=pn.record.max_activation if pn.record else 0.0,
    )  # fmt: skip


def _public_table(neurons) -> pd.DataFrame:
    """Released neurons as a run table (the same columns as `Run.table`)."""
    return pd.DataFrame([table_row(_public_summary(n), label="release") for n in neurons], columns=TABLE_COLUMNS)


def neuron_data(source: Run | dict, layer: int, neuron: int) -> NeuronData:
    """A neuron's data from a run (summary, record if collected, results, revision) or from a dict of public neurons."""
    nid = NeuronId(layer, neuron)
    if isinstance(source, dict):  # NeuronId -> PublicNeuron
        pn = source[nid]
        return NeuronData(nid, _public_summary(pn), pn.record, pn.results)
    record, levels = None, None
    if source.has_collection():
        acts = source.activations()
        if layer in acts.layers:
            record = acts.neuron_record(layer, neuron)
            levels = acts.manifest.quantile_levels
    return NeuronData(nid, source.read_neuron(nid), record, source.read_results(nid), source.read_revision(nid), levels)


def neuron_options(table: pd.DataFrame, layer: int, query: str = "", sort: str = "index") -> list[tuple[str, int]]:
    """Dropdown options (label, neuron) of one layer, filtered by a text in the explanation, sorted by index or score."""
    df = table[table["layer"] == layer]
    if query:
        df = df[df["explanation"].fillna("").str.contains(query, case=False, regex=False)]
    if sort == "score_desc":
        df = df.sort_values("top_and_random", ascending=False, na_position="last")
    elif sort == "score_asc":
        df = df.sort_values("top_and_random", ascending=True, na_position="last")
    else:
        df = df.sort_values("neuron")
    out = []
    for r in df.itertuples():
        score = "  —  " if r.top_and_random is None or pd.isna(r.top_and_random) else f"{r.top_and_random:+.2f}"
        expl = r.explanation if isinstance(r.explanation, str) else f"({r.status})"
        out.append((f"{r.neuron} · {score} · {expl[:60]}", int(r.neuron)))
    return out


# --- HTML of one neuron ----------------------------------------------------------------------------


def explanation_html(data: NeuronData) -> str:
    """Explanation(s), scores, candidates and the revision, escaped."""
    if data.summary is None:
        nid = data.neuron_id
        return f"<h3>layer {nid.layer_index} · neuron {nid.neuron_index}</h3><p>not explained yet (no summary in the run)</p>"
    return viz.neuron_html(data.summary, data.revision)


def writes_html(data: NeuronData) -> str:
    """What the neuron writes to the logits on this side (its direct path), when the collection stores it."""
    writes = data.record.writes if data.record is not None else None
    if writes is None:
        return ""
    return f"<p style='color:#555'>writes: {esc(writes.line(8))}</p>"


def sides_html(run: Run, layer: int, neuron: int) -> str:
    """Both sides of a neuron side by side (its explanation and score on each, and how much of it is negative); empty
    for a run that explained one side."""
    sides = run.sides()
    if len(sides) < 2:
        return ""
    nid, cells, share = NeuronId(layer, neuron), [], None
    for side in sides:
        s = side.read_neuron(nid)
        text = (s.explanation or f"({s.status}: {s.reason})") if s else "(not explained)"
        score = viz.num(s.top_and_random) if s else "—"
        share = share if s is None or s.negative_tail_share is None else s.negative_tail_share
        cells.append(f"<td style='vertical-align:top;padding:2px 10px'><b>{esc(side.sign)} side</b> · score {score}"
                     f"<br>{esc(text)}</td>")  # fmt: skip
    note = (
        ""
        if share is None
        else f"<p style='color:#555'>{share:.0%} of its |activation| above the top-k threshold is negative</p>"
    )
    return f'<table class="nx-sides" style="font-size:90%"><tr>{"".join(cells)}</tr></table>{note}'


def _record_heatmaps(records: Sequence[ActivationRecord], max_act: float, n: int) -> str:
    return "".join(
        viz.window_heatmap(r.tokens, r.activations, max_act, title=f"max {r.max_activation:.3g}") for r in records[:n]
    )


def windows_html(data: NeuronData, n: int = 4) -> str:
    """Top and random windows as heatmaps: the scored ones with real and simulated rows, else the record's real ones."""
    seqs, max_act = data.scored, data.max_activation
    if seqs and data.summary is not None and len(data.summary.window_splits) == len(seqs):
        body = viz.split_heatmaps(labelled_simulations(data.results, data.summary.window_splits), max_act, n)
        note = "held-out windows the explanation was scored on"
    elif data.record is not None:
        top = _record_heatmaps(data.record.most_positive_activation_records, max_act, n)
        rand = _record_heatmaps(data.record.random_sample, max_act, n)
        body = f"<h4>top windows</h4>{top}<h4>random windows</h4>{rand}"
        note = "not simulated yet: real activations only"
    else:
        return "<p>no windows for this neuron</p>"
    nid = data.neuron_id  # named on the element, so a page (or a test) can tell whose windows it shows
    return (
        f'<div class="nx-windows" data-neuron="{nid.layer_index}/{nid.neuron_index}">{viz.legend_html()}'
        f'<p style="color:#666">{note}</p>{body}</div>'
    )


def quantiles_html(data: NeuronData) -> str:
    """Activation moments and the quantiles of window maxima (the band boundaries of collection)."""
    rec = data.record
    if rec is None:
        return "<p>no activation record</p>"
    cells = [("max", rec.max_activation), ("mean", rec.mean), ("std", math.sqrt(rec.variance) if rec.variance and rec.variance > 0 else None),
             ("skewness", rec.skewness), ("kurtosis", rec.kurtosis)]  # fmt: skip
    levels = data.quantile_levels or []
    for i, b in enumerate(rec.quantile_boundaries or []):
        label = f"q{levels[i]:g} of window max" if i < len(levels) else f"boundary {i}"
        cells.append((label, b))
    row = "".join(f"<td style='padding:0 8px'>{esc(k)}<br><b>{viz.num(v)}</b></td>" for k, v in cells)
    return f'<table class="nx-quantiles" style="font-size:90%;text-align:center"><tr>{row}</tr></table>'


def probe_html(
    tokens: Sequence[str],
    real: Sequence[float],
    max_activation: float,
    simulated: Sequence[float] | None = None,
    error: str | None = None,
    sim_max: float | None = None,
) -> str:
    """A typed text as a heatmap: the neuron's real activation per token and the simulator's prediction."""
    if error:
        return f'<p class="nx-probe-error" style="color:#a00">{esc(error)}</p>'
    if not tokens:
        return "<p>type some text above</p>"
    peak = max(real, default=0.0)
    title = f"{len(tokens)} tokens · real max {peak:.3g} (the neuron's top-window max is {max_activation:.3g})"
    heatmap = viz.window_heatmap(tokens, real, max_activation, simulated, sim_max=sim_max, title=title)
    return f'<div class="nx-probe">{heatmap}</div>'


# --- the widget ------------------------------------------------------------------------------------


class NeuronInspector:
    """Browse a run's neurons (or released ones): `NeuronInspector(run)` in a notebook cell shows it.

    `source` is a `Run`, a run directory, or a list of `nxkit.public.PublicNeuron`. `model` (the subject)
    and `simulator` (default nxkit-sim) serve the text box; both load lazily on the first probe when not given.
    """

    def __init__(self, source, model=None, simulator=None, n_windows: int = 4):
        import ipywidgets as w

        if isinstance(source, (list, tuple)):
            self.source: Run | dict = {n.neuron_id: n for n in source}
            self.table = _public_table(source)
        else:
            self.source = as_run(source).side(POSITIVE)
            self.table = self.source.table()
            if self.table.empty:
                raise ValueError(
                    f"{self.source.path} has no explained neurons yet; run `nxkit run` (or notebook 00) to make some"
                )
        self.model, self.simulator, self.n_windows = model, simulator, n_windows
        self.data: NeuronData | None = None
        self._quiet = False
        layers = sorted(int(x) for x in self.table["layer"].unique())
        self.layer = w.Dropdown(options=layers, value=layers[0], description="layer", layout=w.Layout(width="160px"))
        self.sort = w.Dropdown(
            options=list(SORTS.items()), value="index", description="sort", layout=w.Layout(width="260px")
        )
        self.search = w.Text(placeholder="search explanations", description="search", continuous_update=True)
        self.neuron = w.Dropdown(description="neuron", layout=w.Layout(width="620px"))
        signs = [s.sign for s in self.source.sides()] if isinstance(self.source, Run) else [POSITIVE]
        self.sign = w.ToggleButtons(options=signs, value=POSITIVE, description="side")
        self.sign.layout.display = None if len(signs) > 1 else "none"  # shown when the run explained both sides
        self.sign.observe(self._on_sign, names="value")
        self.sides = w.HTML()
        self.explanation = w.HTML()
        self.quantiles = w.HTML()
        self.windows = w.HTML()
        self.text = w.Textarea(
            placeholder="type any text, then press Probe (or leave the box)",
            continuous_update=False,
            layout=w.Layout(width="620px", height="60px"),
        )
        self.probe_button = w.Button(description="Probe", button_style="primary")
        self.probe_out = w.HTML()
        self.status = w.HTML()
        for control in (self.layer, self.sort, self.search):
            control.observe(self._on_filter, names="value")
        self.neuron.observe(self._on_neuron, names="value")
        self.text.observe(lambda change: self.run_probe(), names="value")
        self.probe_button.on_click(lambda _: self.run_probe())
        self.widget = w.VBox(
            [
                w.HBox([self.layer, self.sort, self.search]),
                self.sign,
                self.neuron,
                self.sides,
                self.explanation,
                self.quantiles,
                w.HTML("<h4>probe any text</h4>"),
                w.HBox([self.text, self.probe_button]),
                self.probe_out,
                self.status,
                self.windows,
            ]
        )
        self._on_filter()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _on_sign(self, change=None) -> None:
        """Show the other side of the neurons: its table, explanations and windows."""
        self.source = self.source.side(self.sign.value)
        self.table, self.data = self.source.table(), None
        self._on_filter()

    def _on_filter(self, change=None) -> None:
        options = neuron_options(self.table, self.layer.value, self.search.value, self.sort.value)
        values = [v for _, v in options]
        keep = self.neuron.value if self.neuron.value in values else (values[0] if values else None)
        self._quiet = True  # setting options fires the neuron observer; show once, below
        try:
            self.neuron.options = options
            self.neuron.value = keep
        finally:
            self._quiet = False
        self._on_neuron()

    def _on_neuron(self, change=None) -> None:
        if self._quiet:
            return
        if self.neuron.value is None:
            self.data = None
            self.explanation.value, self.windows.value, self.quantiles.value = "<p>no neuron matches</p>", "", ""
            return
        if self.data is None or self.data.neuron_id != NeuronId(self.layer.value, self.neuron.value):
            self.show(self.layer.value, self.neuron.value)

    def show(self, layer: int, neuron: int) -> None:
        """Show one neuron (also what the dropdowns call)."""
        self.data = neuron_data(self.source, layer, neuron)
        self.sides.value = sides_html(self.source, layer, neuron) if isinstance(self.source, Run) else ""
        self.explanation.value = explanation_html(self.data) + writes_html(self.data)
        self.quantiles.value = quantiles_html(self.data)
        self.windows.value = windows_html(self.data, self.n_windows)
        self.probe_out.value = ""
        if self.text.value.strip():
            self.run_probe()

    def select(self, layer: int, neuron: int) -> None:
        """Point the dropdowns at a neuron (clears the search so it is listed)."""
        self.search.value = ""
        self.layer.value = layer
        self.neuron.value = neuron

    def _ensure_models(self) -> None:
        if self.model is None and isinstance(self.source, dict):
            raise ValueError(
                "these are released neurons: pass their subject model to probe them, "
                "NeuronInspector(neurons, model=load_subject('gpt2-xl')) (needs a reachable hub)"
            )
        if self.model is None:
            from ..collection.subject import load_subject
            from ..offline import OFFLINE_DEFAULT

            name = OFFLINE_DEFAULT
            if isinstance(self.source, Run):
                name = getattr(self.source.collection_manifest(), "model", name)
            self.status.value = f"<i>loading the subject model {esc(name)} (once)…</i>"
            self.model = load_subject(name)
        if self.simulator is None:
            from ..simulators import OFFLINE_SIMULATOR, make_simulator

            self.status.value = f"<i>loading the simulator {OFFLINE_SIMULATOR} (once)…</i>"
            self.simulator = make_simulator(OFFLINE_SIMULATOR)

    def probe(self, text: str) -> tuple[ActivationRecord, list[float] | None, float | None]:
        """Real activations of the shown neuron on `text`, the simulator's prediction from its explanation, and the
        top of that prediction's scale."""
        self._ensure_models()
        nid = self.data.neuron_id
        rec = probe(self.model, text, nid.layer_index, nid.neuron_index)
        if isinstance(self.source, Run) and self.source.sign == NEGATIVE:  # the side's activations are negated
            rec = rec.negated()
        simulated, scale = None, None
        if self.data.explanation and rec.tokens:
            sim = simulate_sync(self.simulator, self.data.explanation, [rec.tokens])[0]
            simulated = getattr(sim, "expected_activations", None)
            scale = simulation_scale(sim) if simulated else None
        return rec, simulated, scale

    def run_probe(self) -> None:
        """Probe the text box's text and show it (the text box's and the button's callback)."""
        text = self.text.value
        if self.data is None or not text.strip():
            self.probe_out.value = probe_html([], [], 1.0)
            return
        self.probe_out.value = "<p><i>probing…</i></p>"
        try:
            rec, simulated, scale = self.probe(text)
            self.probe_out.value = probe_html(
                rec.tokens, rec.activations, self.data.max_activation, simulated, None, scale
            )
        except Exception as exc:  # shown in the widget: a callback's exception would vanish into the log
            self.probe_out.value = probe_html([], [], 1.0, error=f"probe failed: {type(exc).__name__}: {exc}")
        self.status.value = ""
