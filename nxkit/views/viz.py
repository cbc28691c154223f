"""Figures and token heatmaps for a run: plotly figures returned (never shown), HTML built with every text escaped.

Every figure takes the run table (`Run.table()`, one row per neuron), or a run or its path, so notebooks,
the report and the inspector share them; nothing here opens a file. Heatmaps are plain HTML
strings with inline styles: they render the same in a notebook, an ipywidgets `HTML` and a saved file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..records import POSITIVE, NeuronRevision, NeuronSummary, ScoredSequenceSimulation, ScoredWindow
from ..runs import Run, as_run
from ..scorers.correlation import simulation_scale

PAPER_THRESHOLD = 0.8
"""Score above which the paper counts an explanation as good."""
SCORE_COLUMNS = ("top_and_random", "random_only", "shuffled_control", "shuffled_gap", "score_after")
SCORE_LABELS = {
    "top_and_random": "score (top and random)",
    "random_only": "score (random only)",
    "shuffled_control": "shuffled-explanation control",
    "shuffled_gap": "gap over shuffled control",
    "score_after": "score after revision",
}
REAL_RGB = (230, 120, 20)
"""Colour of real activations (orange)."""
SIM_RGB = (40, 110, 220)
"""Colour of simulated activations (blue)."""


# --- escaped HTML ---------------------------------------------------------------------------------


def esc(text: object) -> str:
    """Text from a corpus or an LLM made safe for HTML (quotes too, so it can sit in attributes)."""
    return html.escape(str(text), quote=True)


def anchor(layer, neuron, sign: str = POSITIVE) -> str:
    """The id of a neuron side's section in the report (`n-LAYER-NEURON`, `-negative` on the negative side)."""
    return f"n-{layer}-{neuron}" + ("" if sign == POSITIVE else f"-{sign}")


def show_token(token: str) -> str:
    """A token as a reader should see it: newlines and tabs as visible marks, then escaped."""
    return esc(token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍"))


def _rgba(rgb: tuple[int, int, int], strength: float) -> str:
    a = float(np.clip(strength, 0.0, 1.0))
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.2f})"


def token_heatmap(
    tokens: Sequence[str],
    values: Sequence[float] | None,
    scale: float,
    rgb: tuple[int, int, int] = REAL_RGB,
    label: str = "",
) -> str:
    """One line of tokens, each shaded by value / scale (negatives unshaded); the value shows on hover."""
    cells = []
    for i, tok in enumerate(tokens):
        v = None if values is None or i >= len(values) else float(values[i])
        shade = _rgba(rgb, 0.0 if v is None or scale <= 0 else v / scale)
        tip = "no prediction" if v is None else f"{v:.3g}"
        cells.append(
            f'<span class="nx-tok" title="{esc(tip)}" style="background:{shade};white-space:pre;'
            f'border-radius:2px;padding:0 1px">{show_token(tok)}</span>'
        )
    lead = (
        f'<span class="nx-label" style="display:inline-block;width:5.5em;color:#666;font-size:85%">{esc(label)}</span>'
    )
    return f'<div class="nx-row" style="font-family:monospace;line-height:1.7">{lead}{"".join(cells)}</div>'


def window_heatmap(
    tokens: Sequence[str],
    real: Sequence[float],
    max_activation: float,
    simulated: Sequence[float] | None = None,
    sim_max: float | None = None,
    title: str = "",
) -> str:
    """A window in one line: each token's background is its real activation (orange, against the neuron's max),
    the bar under it the simulated one (blue, against `sim_max`, the top of the simulation's own scale), so the
    two stay aligned however the line wraps."""
    if simulated is not None and not sim_max:
        raise ValueError("a simulated row needs sim_max, the top of its scale (score.simulation_scale)")
    cells = []
    for i, tok in enumerate(tokens):
        r = float(real[i]) if i < len(real) else None
        shade = _rgba(REAL_RGB, 0.0 if r is None or max_activation <= 0 else r / max_activation)
        style = "" if shade.endswith(",0.00)") else f"background:{shade}"  # an unshaded token carries no colour
        tip = f"real {'—' if r is None else f'{r:.3g}'}"
        if simulated is not None:
            p = float(simulated[i]) if i < len(simulated) else None
            bar = _rgba(SIM_RGB, 0.0 if p is None else p / sim_max)
            style += "" if bar.endswith(",0.00)") else f";box-shadow:inset 0 -0.35em 0 {bar}"
            tip += f" · simulated {'—' if p is None else f'{p:.2g}'}"
        cells.append(
            f'<span class="nx-tok" title="{esc(tip)}" style="{style};white-space:pre;border-radius:2px;'
            f'padding:0 1px 0.2em 1px">{show_token(tok)}</span>'
        )
    head = f'<div class="nx-title" style="color:#444;font-size:85%">{esc(title)}</div>' if title else ""
    row = f'<div class="nx-row" style="font-family:monospace;line-height:2">{"".join(cells)}</div>'
    return f'<div class="nx-window" style="margin:0.3em 0 0.7em 0">{head}{row}</div>'


def scored_heatmaps(seqs: Sequence[ScoredSequenceSimulation], max_activation: float, limit: int | None = None) -> str:
    """Heatmaps of scored windows (real and simulated), each titled with its maximum and its own correlation."""
    out = []
    for i, s in enumerate(seqs[:limit] if limit else seqs):
        r = s.ev_correlation_score
        title = (
            f"window {i + 1} · max {max(s.true_activations, default=0):.3g} · r = {'n/a' if r is None else f'{r:.2f}'}"
        )
        out.append(
            window_heatmap(
                s.simulation.tokens,
                s.true_activations,
                max_activation,
                s.simulation.expected_activations,
                sim_max=simulation_scale(s.simulation),
                title=title,
            )  # fmt: skip
        )
    return "".join(out)


def legend_html() -> str:
    """A one-line key to the heatmap colours."""
    return (
        '<div class="nx-legend" style="font-size:85%;color:#444">'
        f'<span style="background:{_rgba(REAL_RGB, 0.8)};padding:0 4px">background</span>: real activation against '
        f'the neuron\'s maximum · <span style="box-shadow:inset 0 -0.35em 0 {_rgba(SIM_RGB, 0.9)};padding:0 4px">bar</span>: '
        "simulated from the explanation, 0-9 · hover a token for both values</div>"
    )


# --- the run as a table ---------------------------------------------------------------------------


def _frame(data: pd.DataFrame | Run | str | Path) -> pd.DataFrame:
    """A run table as given, or the run's own (`Run.table`)."""
    return data if isinstance(data, pd.DataFrame) else as_run(data).table()


def _short(text: object, n: int = 80) -> str:
    s = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    return esc(s if len(s) <= n else s[: n - 1] + "…")


def share_above(
    data: pd.DataFrame | Run | str | Path,
    threshold: float = PAPER_THRESHOLD,
    column: str = "top_and_random",
    inclusive: bool = False,
) -> dict:
    """Neurons with a defined score, and the share of them above `threshold` (the paper's "above 0.8" by default;
    `inclusive`: at or above it, as the digest counts its shares)."""
    vals = _frame(data)[column].dropna()
    hit = vals >= threshold if inclusive else vals > threshold
    return {"n": int(vals.size), "above": int(hit.sum()), "share": float(hit.mean()) if vals.size else None}


# --- figures --------------------------------------------------------------------------------------


def _empty(fig: go.Figure, df: pd.DataFrame, column: str) -> go.Figure:
    if df[column].dropna().empty:
        fig.add_annotation(text="no scored neurons yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def score_histogram(
    data: pd.DataFrame | Run | str | Path, column: str = "top_and_random", threshold: float = PAPER_THRESHOLD
) -> go.Figure:
    """Histogram of one score over neurons, with the paper's threshold marked."""
    df = _frame(data)
    fig = go.Figure(go.Histogram(x=df[column].dropna(), xbins={"start": -1, "end": 1, "size": 0.05}, name=column))
    fig.add_vline(x=threshold, line_dash="dash", line_color="grey", annotation_text=f"{threshold}")
    fig.update_layout(
        title=f"{SCORE_LABELS.get(column, column)}: {df[column].notna().sum()} neurons",
        xaxis_title=SCORE_LABELS.get(column, column),
        yaxis_title="neurons",
        xaxis_range=[-1, 1],
        bargap=0.05,
    )
    return _empty(fig, df, column)


def _hover(df: pd.DataFrame) -> list[str]:
    return [f"L{r.layer} N{r.neuron}: {_short(r.explanation, 60)}" for r in df.itertuples()]


def scores_by_layer(data: pd.DataFrame | Run | str | Path, column: str = "top_and_random") -> go.Figure:
    """Box plot with every point of one score per layer, and the per-layer mean."""
    df = _frame(data).dropna(subset=[column])
    fig = go.Figure()
    for layer, g in df.groupby("layer"):
        fig.add_trace(
            go.Box(
                y=g[column],
                name=f"layer {layer}",
                boxpoints="all",
                jitter=0.3,
                boxmean=True,
                text=_hover(g),
                hoverinfo="y+text",
            )
        )
    fig.update_layout(
        title=f"{SCORE_LABELS.get(column, column)} by layer",
        yaxis_title=SCORE_LABELS.get(column, column),
        showlegend=False,
    )
    return _empty(fig, _frame(data), column)


def share_above_by_layer(
    data: pd.DataFrame | Run | str | Path, threshold: float = PAPER_THRESHOLD, column: str = "top_and_random"
) -> go.Figure:
    """Share of scored neurons above the threshold, per layer (the paper's headline measure)."""
    df = _frame(data).dropna(subset=[column])
    layers = sorted(df["layer"].unique())
    shares = [float((df[df.layer == la][column] > threshold).mean()) for la in layers]
    counts = [int((df.layer == la).sum()) for la in layers]
    fig = go.Figure(go.Bar(x=[f"layer {la}" for la in layers], y=shares, text=[f"n={c}" for c in counts]))
    fig.update_layout(title=f"share of neurons scoring above {threshold}", yaxis_title="share", yaxis_range=[0, 1])
    return _empty(fig, _frame(data), column)


def _diagonal(fig: go.Figure, lo: float = -1, hi: float = 1) -> None:
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            line={"dash": "dot", "color": "grey"},
            showlegend=False,
            hoverinfo="skip",
        )
    )


def top_vs_random(data: pd.DataFrame | Run | str | Path) -> go.Figure:
    """Each neuron's top-and-random score against its random-only score (random-only is the harder test)."""
    df = _frame(data).dropna(subset=["top_and_random", "random_only"])
    fig = go.Figure()
    for layer, g in df.groupby("layer"):
        fig.add_trace(
            go.Scatter(x=g.top_and_random, y=g.random_only, mode="markers", name=f"layer {layer}", text=_hover(g))
        )
    _diagonal(fig)
    fig.update_layout(
        title="top-and-random against random-only",
        xaxis_title="top and random",
        yaxis_title="random only",
        xaxis_range=[-1, 1],
        yaxis_range=[-1, 1],
    )
    return _empty(fig, _frame(data), "top_and_random")


def shuffled_control(data: pd.DataFrame | Run | str | Path) -> go.Figure:
    """Real explanation's score against another neuron's explanation on the same windows; points on the diagonal mean the simulator ignores explanations."""
    df = _frame(data).dropna(subset=["top_and_random", "shuffled_control"])
    gap = df["shuffled_gap"].mean() if len(df) else float("nan")
    fig = go.Figure(
        go.Scatter(x=df.top_and_random, y=df.shuffled_control, mode="markers", text=_hover(df), name="neurons")
    )
    _diagonal(fig)
    fig.update_layout(
        title=f"shuffled-explanation control (mean gap {gap:+.3f})" if len(df) else "shuffled-explanation control",
        xaxis_title="score with its own explanation",
        yaxis_title="score with another neuron's explanation",
        xaxis_range=[-1, 1],
        yaxis_range=[-1, 1],
    )
    return _empty(fig, _frame(data), "shuffled_control")


def sides_scatter(sides: pd.DataFrame) -> go.Figure:
    """Each neuron's positive-side score against its negative-side score (`runs.side_by_side`), coloured by the share
    of its activation above the top-k threshold that is negative."""
    df = sides.dropna(subset=["top_and_random_positive", "top_and_random_negative"])
    fig = go.Figure(
        go.Scatter(
            x=df.top_and_random_positive,
            y=df.top_and_random_negative,
            mode="markers",
            text=[
                f"L{r.layer} N{r.neuron}: + {_short(r.explanation_positive, 40)} / − {_short(r.explanation_negative, 40)}"
                for r in df.itertuples()
            ],
            marker={
                "color": df.negative_tail_share,
                "colorscale": "RdBu_r",
                "cmin": 0,
                "cmax": 1,
                "colorbar": {"title": "negative share"},
            },  # fmt: skip
            name="neurons",
        )
    )
    _diagonal(fig)
    fig.update_layout(
        title=f"both signs: {len(df)} neurons scored on each side",
        xaxis_title="positive side score",
        yaxis_title="negative side score",
        xaxis_range=[-1, 1],
        yaxis_range=[-1, 1],
    )
    if df.empty:
        fig.add_annotation(text="no neuron scored on both sides yet", showarrow=False, x=0.5, y=0.5, xref="paper",
                           yref="paper")  # fmt: skip
    return fig


def revision_before_after(data: pd.DataFrame | Run | str | Path, title: str | None = None) -> go.Figure:
    """Each revised neuron's score before and after counterexample revision, coloured by which explanation was kept;
    points above the diagonal improved."""
    df = _frame(data).dropna(subset=["score_before", "score_after"])
    fig = go.Figure()
    for label, kept, color in (("revision kept", "revised", "#d62728"), ("original kept", "original", "#1f77b4")):
        sel = df[df["kept"] == kept]
        text = [
            f"L{r.layer} N{r.neuron}<br>before: {_short(r.original_explanation, 60)}<br>after: {_short(r.explanation, 60)}"
            for r in sel.itertuples()
        ]
        fig.add_trace(
            go.Scatter(
                x=sel.score_before,
                y=sel.score_after,
                mode="markers",
                name=f"{label} ({len(sel)})",
                marker={"color": color, "size": 9},
                text=text,
                hovertemplate="%{text}<br>%{x:.3f} → %{y:.3f}<extra></extra>",
            )
        )
    _diagonal(fig)
    if title is None and len(df):
        improved = int((df.score_after > df.score_before).sum())
        title = (
            f"before and after revision: mean {df.score_before.mean():+.3f} → {df.score_after.mean():+.3f}, "
            f"{improved} of {len(df)} improved"
        )
    fig.update_layout(
        title=title or "before and after revision",
        xaxis_title="score before (top-and-random correlation)",
        yaxis_title="score after",
        xaxis_range=[-1, 1],
        yaxis_range=[-1, 1],
    )
    return _empty(fig, _frame(data), "score_after")


def compare_runs(
    runs: Mapping[str, pd.DataFrame | Run | str | Path] | Sequence[Run | str | Path], column: str = "top_and_random"
) -> go.Figure:
    """Score distributions of two or more runs side by side (explainer against explainer, subject against subject)."""
    items = runs.items() if isinstance(runs, Mapping) else [(Path(getattr(r, "path", r)).name, r) for r in runs]
    fig = go.Figure()
    for label, data in items:
        df = _frame(data)
        share = share_above(df, column=column)
        name = f"{label} (n={share['n']}, >{PAPER_THRESHOLD}: {share['above']})"
        fig.add_trace(
            go.Box(
                y=df[column].dropna(),
                name=esc(name),
                boxpoints="all",
                jitter=0.3,
                boxmean=True,
                text=_hover(df.dropna(subset=[column])),
            )
        )
    fig.update_layout(
        title=f"{SCORE_LABELS.get(column, column)} by run",
        yaxis_title=SCORE_LABELS.get(column, column),
        showlegend=False,
    )
    return fig


def paired_runs(
    a: pd.DataFrame | Run | str | Path,
    b: pd.DataFrame | Run | str | Path,
    column: str = "top_and_random",
    labels: tuple[str, str] = ("run A", "run B"),
) -> go.Figure:
    """The same neurons scored in two runs (for example two explainers on one collection), one point per neuron."""
    da, db = _frame(a), _frame(b)
    m = da.merge(db, on=["layer", "neuron"], suffixes=("_a", "_b")).dropna(subset=[f"{column}_a", f"{column}_b"])
    text = [f"L{r.layer} N{r.neuron}" for r in m.itertuples()]
    fig = go.Figure(go.Scatter(x=m[f"{column}_a"], y=m[f"{column}_b"], mode="markers", text=text, name="neurons"))
    _diagonal(fig)
    fig.update_layout(
        title=f"{len(m)} neurons in both runs",
        xaxis_title=esc(labels[0]),
        yaxis_title=esc(labels[1]),
        xaxis_range=[-1, 1],
        yaxis_range=[-1, 1],
    )
    return fig


# --- what the report and the inspector both show of a neuron ----------------------------------------


def num(v) -> str:
    """A score as text; undefined scores show as a dash, never as 0."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def neuron_html(summary: NeuronSummary | None, revision: NeuronRevision | None = None) -> str:
    """A neuron's heading, explanation (the kept one, with the original beside it), scores, candidates and revision."""
    if summary is None:
        return "<p>not explained yet (no summary in the run)</p>"
    nid = summary.neuron_id
    head = f"<h3>layer {nid.layer_index} · neuron {nid.neuron_index} · {esc(summary.status)}</h3>"
    if summary.status != "done":
        return head + f"<p>{esc(summary.reason or '')}</p>"
    parts = [head, f'<p class="nx-explanation"><b>explanation:</b> {esc(summary.explanation)}</p>']
    if summary.kept == "revised":
        parts.append(
            f"<p><b>original (before revision):</b> {esc(summary.original_explanation)} · "
            f"score {num(summary.original_scores.top_and_random if summary.original_scores else None)}</p>"
        )
    parts.append(
        f"<p>score (top and random) <b>{num(summary.top_and_random)}</b> · random only {num(summary.random_only)} · "
        f"shuffled control {num(summary.shuffled_control)} · gap {num(summary.shuffled_gap)} · "
        f"max activation {num(summary.max_activation)}</p>"
    )
    if len(summary.candidates) > 1:
        items = "".join(f"<li>{num(c.calibration_score)} · {esc(c.text)}</li>" for c in summary.candidates)
        parts.append(
            f"<details><summary>{len(summary.candidates)} candidates (calibration scores)</summary>"
            f"<ul>{items}</ul></details>"
        )
    if revision is not None:
        parts.append(
            f"<p><b>revision ({esc(revision.status)}):</b> {esc(revision.final_explanation)} · "
            f"{num(revision.score_before)} → {num(revision.score_after)}</p>"
        )
    return "".join(parts)


def split_heatmaps(windows: Sequence[ScoredWindow], max_activation: float, n: int) -> str:
    """Scored windows as heatmaps under a heading per split (top, random), read from each window's label."""
    out = []
    for split in ("top", "random"):
        chosen = [w.simulation for w in windows if w.split == split]
        out.append(f"<h4>{split} windows</h4>" + (scored_heatmaps(chosen, max_activation, n) or "<p>none</p>"))
    return "".join(out)


def in_context(tokens: list[str], peak: int, width: int | None = None, newline: str | None = None) -> str:
    """The tokens around `peak` (`width` on each side; None: all of them) as one text, the token at `peak` in
    [brackets]; line breaks written as `newline` when given."""
    lo, hi = (0, len(tokens)) if width is None else (max(0, peak - width), min(len(tokens), peak + width + 1))
    text = "".join(tokens[lo:peak]) + "[" + tokens[peak] + "]" + "".join(tokens[peak + 1 : hi])
    return text if newline is None else text.replace("\n", newline)


def describe_top(acts, layers: list[int] | None = None, per_layer: int = 2, windows: int = 3, context: int = 8) -> str:
    """Text showing, for the most selective neurons (highest kurtosis) of a few layers of a collection
    (`nxkit.collection.activations.Activations`), the top tokens in context, the strongest token in [brackets]."""
    chosen = layers or sorted({acts.layers[0], acts.layers[len(acts.layers) // 2], acts.layers[-1]})
    lines = []
    for layer in chosen:
        kurt = np.nan_to_num(acts.moments(layer)[:, 3], nan=-np.inf)
        for neuron in np.argsort(-kurt)[:per_layer]:
            rec = acts.neuron_record(layer, int(neuron))
            lines.append(f"layer {layer} neuron {neuron}  (max {rec.max_activation:.2f}, kurtosis {rec.kurtosis:.0f})")
            if (writes := acts.writes(layer, int(neuron))) is not None:
                lines.append(f"    writes: {writes.line()}")
            for r in rec.most_positive_activation_records[:windows]:
                i = int(np.argmax(r.activations))
                lines.append(f"    {r.activations[i]:6.2f}  {in_context(r.tokens, i, context)!r}")
    return "\n".join(lines)
