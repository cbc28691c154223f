"""The run report: one self-contained `report.html` (plotly inlined, no outside request) that opens with no server.

Score figures, a sortable table of neurons, and per neuron its explanation, scores and the real and
simulated activations of its scored windows as token heatmaps. Every text that came from the corpus
or an LLM is escaped.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import pandas as pd

from . import viz
from .records import NeuronId
from .runs import Run
from .score import OFFLINE_NOTE, mean_scores
from .viz import esc

_SORT_JS = """
document.querySelectorAll('table.nx-sortable th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return dir === 'asc' ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .nx-meta { color: #555; } .nx-note { background: #fff6e0; padding: 0.5em; }
.nx-figs { display: grid; grid-template-columns: 1fr 1fr; gap: 0.5em; }
table.nx-sortable { border-collapse: collapse; width: 100%; font-size: 90%; }
table.nx-sortable th { cursor: pointer; background: #f0f0f0; position: sticky; top: 0; text-align: left; }
table.nx-sortable th[data-dir=asc]::after { content: " ▲"; } table.nx-sortable th[data-dir=desc]::after { content: " ▼"; }
table.nx-sortable td, table.nx-sortable th { border-bottom: 1px solid #ddd; padding: 2px 6px; }
.nx-neuron { border-top: 2px solid #ccc; margin-top: 1.2em; padding-top: 0.3em; }
"""


def _num(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _sort_value(v) -> str:
    """Sort key of a cell: missing numbers sort below every score."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-999"
    return esc(v)


def neuron_rows_html(df: pd.DataFrame) -> str:
    """The sortable table of neurons (click a header to sort; click a neuron to jump to its heatmaps)."""
    cols = [
        ("layer", "layer"),
        ("neuron", "neuron"),
        ("status", "status"),
        ("top_and_random", "score"),
        ("random_only", "random only"),
        ("shuffled_control", "shuffled control"),
        ("shuffled_gap", "gap"),
        ("score_after", "after revision"),
        ("explanation", "explanation"),
    ]
    head = "".join(f"<th>{esc(label)}</th>" for _, label in cols)
    body = []
    for r in df.itertuples():
        cells = []
        for key, _ in cols:
            v = getattr(r, key)
            if key == "neuron":
                shown = f'<a href="#n-{r.layer}-{r.neuron}">{v}</a>'
            elif key in viz.SCORE_COLUMNS:
                shown = _num(v)
            elif key == "explanation":
                text = v if isinstance(v, str) else (r.reason if isinstance(r.reason, str) else "")
                shown = esc(text)
            else:
                shown = esc(v)
            cells.append(f'<td data-v="{_sort_value(v)}">{shown}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="nx-sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def neuron_section(run: Run, row, max_windows: int = 6) -> str:
    """One neuron: explanation, candidates, scores, revision, and heatmaps of its scored windows (top half, random half)."""
    nid = NeuronId(int(row.layer), int(row.neuron))
    s = run.read_neuron(nid) or {}
    parts = [f'<div class="nx-neuron" id="n-{nid.layer_index}-{nid.neuron_index}">']
    parts.append(f"<h3>layer {nid.layer_index} · neuron {nid.neuron_index} · {esc(s.get('status'))}</h3>")
    if s.get("status") != "done":
        parts.append(f"<p>{esc(s.get('reason') or '')}</p></div>")
        return "".join(parts)
    parts.append(f"<p><b>explanation:</b> {esc(s.get('explanation'))}</p>")
    parts.append(
        f"<p>score {_num(s.get('top_and_random'))} · random only {_num(s.get('random_only'))} · "
        f"shuffled control {_num(s.get('shuffled_control'))} · gap {_num(s.get('shuffled_gap'))} · "
        f"max activation {_num(s.get('max_activation'))}</p>"
    )
    cands = s.get("candidates") or []
    if len(cands) > 1:
        items = "".join(f"<li>{_num(c.get('calibration_score'))} · {esc(c.get('text'))}</li>" for c in cands)
        parts.append(
            f"<details><summary>{len(cands)} candidates (calibration scores)</summary><ul>{items}</ul></details>"
        )
    if isinstance(row.final_explanation, str):
        parts.append(
            f"<p><b>revised ({esc(row.revision_status)}):</b> {esc(row.final_explanation)} · "
            f"{_num(row.score_before)} → {_num(row.score_after)}</p>"
        )
    results = run.read_results(nid)
    if results and results.scored_explanations:
        seqs = results.scored_explanations[0].scored_simulation.scored_sequence_simulations
        half = len(seqs) // 2
        n = max(1, max_windows // 2)
        max_act = float(s.get("max_activation") or max((max(q.true_activations, default=0) for q in seqs), default=1))
        parts.append("<h4>top windows</h4>" + viz.scored_heatmaps(seqs[:half], max_act, n))
        parts.append("<h4>random windows</h4>" + viz.scored_heatmaps(seqs[half:], max_act, n))
    parts.append("</div>")
    return "".join(parts)


def _figures(df: pd.DataFrame) -> list:
    figs = [viz.score_histogram(df), viz.scores_by_layer(df), viz.top_vs_random(df), viz.shuffled_control(df)]
    if df["score_after"].notna().any():
        figs.append(viz.revision_before_after(df))
    return figs


def render_report(run: Run | str | Path, max_neurons: int = 200, max_windows: int = 6) -> str:
    """The report as one HTML string (plotly.js inlined once)."""
    run = run if isinstance(run, Run) else Run(run)
    df = viz.neuron_table(run)
    manifest = run.manifest()
    means = mean_scores(run.score_rows())
    share = viz.share_above(df)
    explain = manifest.get("explain", {})
    acts_manifest = {}
    if (run.activations_dir / "manifest.json").exists():
        acts_manifest = json.loads((run.activations_dir / "manifest.json").read_text())
    corpus = acts_manifest.get("corpus", {})
    meta = [
        f"subject model: {esc(acts_manifest.get('model', '?'))}",
        f"corpus: {esc(corpus.get('source', '?'))} ({corpus.get('n_tokens', 0):,} tokens)",
        f"explainer: {esc(explain.get('explainer', '?'))}",
        f"simulator: {esc(explain.get('simulator', '?'))}",
    ]
    counts = df["status"].value_counts().to_dict()
    summary = (
        f"{len(df)} neurons ({', '.join(f'{esc(k)}: {v}' for k, v in counts.items()) or 'none yet'}) · "
        f"mean score {_num(means['top_and_random'])} · random only {_num(means['random_only'])} · "
        f"shuffled control {_num(means['shuffled_control'])} · gap {_num(means['shuffled_gap'])} · "
        f"above {viz.PAPER_THRESHOLD}: {share['above']} of {share['n']}"
    )
    note = f'<p class="nx-note">{esc(OFFLINE_NOTE)}</p>' if "LocalBackend" in str(explain.get("simulator", "")) else ""
    figs = []
    for i, fig in enumerate(_figures(df)):
        fig.update_layout(height=380, margin={"l": 50, "r": 20, "t": 50, "b": 40})
        figs.append(fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False}))
    shown = df.sort_values("top_and_random", ascending=False, na_position="last").head(max_neurons)
    sections = "".join(neuron_section(run, r, max_windows) for r in shown.itertuples())
    more = f"<p>showing {len(shown)} of {len(df)} neurons (highest scores first)</p>" if len(df) > len(shown) else ""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nxkit report · {esc(run.path.name)}</title>
<style>{_CSS}</style></head><body>
<h1>nxkit run report · {esc(run.path.name)}</h1>
<p class="nx-meta">{" · ".join(meta)} · written {stamp}</p>
<p>{summary}</p>{note}
<h2>Scores</h2><div class="nx-figs">{"".join(f"<div>{f}</div>" for f in figs)}</div>
<h2>Neurons</h2><p>Click a column header to sort, a neuron to see its windows.</p>{neuron_rows_html(df)}
<h2>Windows</h2>{viz.legend_html()}{more}{sections}
<script>{_SORT_JS}</script>
</body></html>
"""


def write_report(run: Run | str | Path, path: str | Path | None = None, **kwargs) -> Path:
    """Write `runs/<name>/report.html` (or `path`) and return its path."""
    run = run if isinstance(run, Run) else Run(run)
    out = Path(path) if path else run.path / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_report(run, **kwargs), encoding="utf-8")
    tmp.replace(out)
    return out
