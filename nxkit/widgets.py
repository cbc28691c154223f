"""The neuron inspector: pick a neuron of a run (or of OpenAI's release), read its explanation and scores, see
its windows as heatmaps of real and simulated activations, and type any text to probe it live.

Pure functions (`neuron_options`, `load_neuron`, `explanation_html`, `windows_html`, `quantiles_html`,
`probe_html`) compute everything; `NeuronInspector`'s callbacks only move their results into widgets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from . import viz
from .probe import probe
from .records import ActivationRecord, NeuronId, NeuronRecord, NeuronSimulationResults
from .runs import Run
from .viz import esc

SORTS = {"neuron index": "index", "score, best first": "score_desc", "score, worst first": "score_asc"}


@dataclass
class NeuronData:
    """What the inspector shows of one neuron."""

    neuron_id: NeuronId
    """The neuron."""
    summary: dict = field(default_factory=dict)
    """Its summary (status, explanation, scores, candidates), empty when not explained."""
    record: NeuronRecord | None = None
    """Its activation record (top, random and quantile windows), when a collection is there."""
    results: NeuronSimulationResults | None = None
    """Its scored explanations (real and simulated activations on held-out windows)."""
    revision: dict | None = None
    """The revision stage's outcome, when it ran."""
    quantile_levels: list[float] | None = None
    """Levels of the record's quantile boundaries."""

    @property
    def explanation(self) -> str | None:
        return self.summary.get("explanation")

    @property
    def max_activation(self) -> float:
        if self.record is not None and self.record.max_activation > 0:
            return self.record.max_activation
        seqs = _scored_seqs(self)
        return max((max(s.true_activations, default=0.0) for s in seqs), default=0.0) or 1.0


def _scored_seqs(data: NeuronData) -> list:
    if data.results and data.results.scored_explanations:
        return data.results.scored_explanations[0].scored_simulation.scored_sequence_simulations
    return []


# --- sources: a run directory, or neurons of the public release ------------------------------------


def _public_table(neurons) -> pd.DataFrame:
    rows = [
        {
            "layer": n.neuron_id.layer_index,
            "neuron": n.neuron_id.neuron_index,
            "status": "done",
            "explanation": n.explanation,
            "top_and_random": n.score,
        }
        for n in neurons
    ]
    return pd.DataFrame(rows, columns=["layer", "neuron", "status", "explanation", "top_and_random"])


def load_neuron(source: Run | dict, layer: int, neuron: int) -> NeuronData:
    """A neuron's data from a run (summary, record if collected, results, revision) or from a dict of public neurons."""
    nid = NeuronId(layer, neuron)
    if isinstance(source, dict):  # NeuronId -> PublicNeuron
        pn = source[nid]
        summary = {"status": "done", "explanation": pn.explanation, "top_and_random": pn.score}
        return NeuronData(nid, summary, pn.record, pn.results)
    record, levels = None, None
    acts_manifest = source.activations_dir / "manifest.json"
    if acts_manifest.exists():
        from .collect import Activations

        acts = Activations(source.activations_dir)
        if layer in acts.layers:
            record = acts.neuron_record(layer, neuron)
            levels = acts.manifest.get("config", {}).get("quantile_levels")
    rev_path = viz.revision_path(source, layer, neuron)
    revision = json.loads(rev_path.read_text()) if rev_path.exists() else None
    return NeuronData(nid, source.read_neuron(nid) or {}, record, source.read_results(nid), revision, levels)


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


def _num(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def explanation_html(data: NeuronData) -> str:
    """Explanation(s), scores, candidates and the revision, escaped."""
    s = data.summary
    nid = data.neuron_id
    head = f"<h3>layer {nid.layer_index} · neuron {nid.neuron_index}</h3>"
    if not s:
        return head + "<p>not explained yet (no summary in the run)</p>"
    if s.get("status") != "done":
        return head + f"<p><b>{esc(s.get('status'))}</b>: {esc(s.get('reason') or '')}</p>"
    parts = [head, f'<p class="nx-explanation"><b>explanation:</b> {esc(s.get("explanation"))}</p>']
    parts.append(
        f"<p>score (top and random) <b>{_num(s.get('top_and_random'))}</b> · random only {_num(s.get('random_only'))} · "
        f"shuffled control {_num(s.get('shuffled_control'))} · gap {_num(s.get('shuffled_gap'))}</p>"
    )
    cands = s.get("candidates") or []
    if len(cands) > 1:
        items = "".join(f"<li>{_num(c.get('calibration_score'))} · {esc(c.get('text'))}</li>" for c in cands)
        parts.append(
            f"<details><summary>{len(cands)} candidates with calibration scores</summary><ul>{items}</ul></details>"
        )
    if data.revision:
        r = data.revision
        parts.append(
            f"<p><b>revision ({esc(r.get('status'))}):</b> {esc(r.get('final_explanation'))} · "
            f"{_num(r.get('score_before'))} → {_num(r.get('score_after'))}</p>"
        )
    return "".join(parts)


def _record_heatmaps(records: Sequence[ActivationRecord], max_act: float, n: int) -> str:
    return "".join(
        viz.window_heatmap(r.tokens, r.activations, max_act, title=f"max {r.max_activation:.3g}") for r in records[:n]
    )


def windows_html(data: NeuronData, n: int = 4) -> str:
    """Top and random windows as heatmaps: the scored ones with real and simulated rows, else the record's real ones."""
    seqs = _scored_seqs(data)
    max_act = data.max_activation
    if seqs:
        half = len(seqs) // 2
        top, rand = viz.scored_heatmaps(seqs[:half], max_act, n), viz.scored_heatmaps(seqs[half:], max_act, n)
        note = "held-out windows the explanation was scored on"
    elif data.record is not None:
        top = _record_heatmaps(data.record.most_positive_activation_records, max_act, n)
        rand = _record_heatmaps(data.record.random_sample, max_act, n)
        note = "not simulated yet: real activations only"
    else:
        return "<p>no windows for this neuron</p>"
    return (
        f'<div class="nx-windows">{viz.legend_html()}<p style="color:#666">{note}</p>'
        f"<h4>top windows</h4>{top}<h4>random windows</h4>{rand}</div>"
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
    row = "".join(f"<td style='padding:0 8px'>{esc(k)}<br><b>{_num(v)}</b></td>" for k, v in cells)
    return f'<table class="nx-quantiles" style="font-size:90%;text-align:center"><tr>{row}</tr></table>'


def probe_html(
    tokens: Sequence[str],
    real: Sequence[float],
    max_activation: float,
    simulated: Sequence[float] | None = None,
    error: str | None = None,
) -> str:
    """A typed text as a heatmap: the neuron's real activation per token and the simulator's prediction."""
    if error:
        return f'<p class="nx-probe-error" style="color:#a00">{esc(error)}</p>'
    if not tokens:
        return "<p>type some text above</p>"
    peak = max(real, default=0.0)
    title = f"{len(tokens)} tokens · real max {peak:.3g} (the neuron's top-window max is {max_activation:.3g})"
    return f'<div class="nx-probe">{viz.window_heatmap(tokens, real, max_activation, simulated, title=title)}</div>'


# --- the widget ------------------------------------------------------------------------------------


class NeuronInspector:
    """Browse a run's neurons (or released ones): `NeuronInspector(run)` in a notebook cell shows it.

    `source` is a `Run`, a run directory, or a list of `nxkit.public.PublicNeuron`. `model` (the subject)
    and `simulator` serve the text box; both load lazily on the first probe when not given.
    """

    def __init__(self, source, model=None, simulator=None, n_windows: int = 4):
        import ipywidgets as w

        if isinstance(source, (list, tuple)):
            self.source: Run | dict = {n.neuron_id: n for n in source}
            self.table = _public_table(source)
        else:
            self.source = source if isinstance(source, Run) else Run(source)
            self.table = viz.neuron_table(self.source)
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
                self.neuron,
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
        self.data = load_neuron(self.source, layer, neuron)
        self.explanation.value = explanation_html(self.data)
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
            from .subject import OFFLINE_DEFAULT, load_subject

            name = OFFLINE_DEFAULT
            if isinstance(self.source, Run) and (self.source.activations_dir / "manifest.json").exists():
                name = json.loads((self.source.activations_dir / "manifest.json").read_text()).get("model", name)
            self.status.value = f"<i>loading the subject model {esc(name)} (once)…</i>"
            self.model = load_subject(name)
        if self.simulator is None:
            from .llm import LocalBackend
            from .simulate import Simulator

            self.status.value = "<i>loading the local simulator (once)…</i>"
            self.simulator = Simulator(LocalBackend())

    def probe(self, text: str) -> tuple[ActivationRecord, list[float] | None]:
        """Real activations of the shown neuron on `text`, and the simulator's prediction from its explanation."""
        self._ensure_models()
        nid = self.data.neuron_id
        rec = probe(self.model, text, nid.layer_index, nid.neuron_index)
        simulated = None
        if self.data.explanation and rec.tokens:
            sim = self.simulator.simulate_sync(self.data.explanation, [rec.tokens])[0]
            simulated = getattr(sim, "expected_activations", None)
        return rec, simulated

    def run_probe(self) -> None:
        """Probe the text box's text and show it (the text box's and the button's callback)."""
        text = self.text.value
        if self.data is None or not text.strip():
            self.probe_out.value = probe_html([], [], 1.0)
            return
        self.probe_out.value = "<p><i>probing…</i></p>"
        try:
            rec, simulated = self.probe(text)
            self.probe_out.value = probe_html(rec.tokens, rec.activations, self.data.max_activation, simulated)
        except Exception as exc:  # shown in the widget: a callback's exception would vanish into the log
            self.probe_out.value = probe_html([], [], 1.0, error=f"probe failed: {type(exc).__name__}: {exc}")
        self.status.value = ""
