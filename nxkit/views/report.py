"""The run report: one self-contained `report.html` (plotly inlined, no outside request) that opens with no server.

Score figures, a sortable table of neurons, and per neuron its explanation, scores and the real and
simulated activations of its scored windows as token heatmaps. Every text that came from the corpus
or an LLM is escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import gzip
import math
from pathlib import Path

import pandas as pd

from .. import scorers
from ..files import atomic_write
from ..heldout import labelled_simulations
from ..records import (
    NEGATIVE,
    POSITIVE,
    SELECTIVE,
    CollectionManifest,
    Component,
    NeuronId,
    StageRecord,
    max_activation_of,
)
from ..runs import Run, as_run, side_by_side
from ..scorers.correlation import OFFLINE_NOTE, difference_of_means, mean_scores, means_line, split_half
from . import viz
from .digest import digest_html
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
.nx-window .nx-tok { white-space: pre; border-radius: 2px; padding: 0 1px 0.2em 1px; }
table.nx-best { border-collapse: collapse; font-size: 90%; } table.nx-best td { border-bottom: 1px solid #ddd;
  padding: 2px 6px; vertical-align: top; } .nx-ctx { font-family: monospace; white-space: pre-wrap; }
"""


_PLOT_JS = """
(async function () {
  var packed = document.getElementById('nx-plotly-gz').textContent;
  var bytes = Uint8Array.from(atob(packed), function (c) { return c.charCodeAt(0); });
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  var script = document.createElement('script');
  script.textContent = await new Response(stream).text();
  document.head.appendChild(script);
  document.querySelectorAll('div.nx-fig').forEach(function (div) {
    var fig = JSON.parse(document.getElementById(div.id + '-data').textContent);
    Plotly.newPlot(div, fig.data, fig.layout, {displaylogo: false, responsive: true});
  });
})();
"""
"""Unpacks plotly.js (inlined once, gzipped: a third of its size) with the browser's own DecompressionStream, then
draws every figure from its JSON; nothing is fetched."""

TOKEN_STYLE = ";white-space:pre;border-radius:2px;padding:0 1px 0.2em 1px"
"""The style every heatmap token carries inline (so a notebook shows it alike); the report sets it once in CSS."""
MAX_TABLE_ROWS = 2000
"""Rows of the neuron table at most (the best, the worst and a seeded sample): the report stays bounded."""
MAX_FIGURE_ROWS = 5000
"""Neurons drawn in a figure at most (a seeded sample; the means are over every neuron)."""


@functools.lru_cache(maxsize=1)
def plotly_packed() -> str:
    """plotly.js as shipped with the plotly package, gzipped and base64-encoded (the same bytes every time)."""
    import plotly

    raw = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def figure_html(fig, i: int) -> str:
    """A figure as an empty div and its JSON (drawn by `_PLOT_JS` once plotly.js is unpacked); `</` is escaped so no
    text in the figure can close the script element."""
    data = fig.to_json().replace("</", "<\\/")
    return (
        f'<div class="nx-fig" id="nx-fig-{i}" style="height:380px"></div>'
        f'<script type="application/json" id="nx-fig-{i}-data">{data}</script>'
    )


def _bounded(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most `n` rows of a run table (a seeded sample), in their order."""
    return df if len(df) <= n else df.sample(n=n, random_state=0).sort_index()


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
        ("top_and_random_lo", "score 95% low"),
        ("top_and_random_hi", "score 95% high"),
        ("random_only", "random only"),
        ("shuffled_control", "shuffled control"),
        ("shuffled_gap", "gap"),
        ("shuffled_gap_lo", "gap 95% low"),
        ("score_after", "after revision"),
        ("explanation", "explanation"),
        ("simulator", "scored by"),
        ("group", "group"),
    ]
    extra = [c for c in scorers.table_columns() if not c.endswith("flag") and c in df and df[c].notna().any()]
    cols[-3:-3] = [
        (c, c.replace("_", " ").replace("balanced accuracy", "bal. acc.").replace(" auc", " AUC")) for c in extra
    ]

    def cell(key, v, r) -> str:
        if key == "neuron":
            return f'<a href="#n-{r.layer}-{r.neuron}">{v}</a>'
        if key in viz.SCORE_COLUMNS or key in extra or key.endswith(("_lo", "_hi")):
            return viz.num(v)
        if key == "explanation":
            return esc(v if isinstance(v, str) else (r.reason if isinstance(r.reason, str) else ""))
        return esc(v)

    return sortable_table(df, cols, cell)


def sortable_table(df: pd.DataFrame, cols: list[tuple[str, str]], cell) -> str:
    """A table whose columns sort on a click: `cols` are (column, header) pairs, `cell(column, value, row)` the HTML
    of one cell (escaped by it); each cell sorts by its raw value."""
    head = "".join(f"<th>{esc(label)}</th>" for _, label in cols)
    body = [
        "<tr>" + "".join(f'<td data-v="{_sort_value(getattr(r, k))}">{cell(k, getattr(r, k), r)}</td>' for k, _ in cols)
        + "</tr>"
        for r in df.itertuples()
    ]  # fmt: skip
    return f'<table class="nx-sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def neuron_section(run: Run, nid: NeuronId, max_windows: int = 6) -> str:
    """One neuron (on the run's side): explanation, candidates, scores, revision, and heatmaps of its scored windows
    by split."""
    summary = run.read_neuron(nid)
    parts = [f'<div class="nx-neuron" id="{viz.anchor(nid.layer_index, nid.neuron_index, run.sign)}">']
    if run.sign != POSITIVE:
        parts.append(f"<p><b>{esc(run.sign)} side</b> (activations negated)</p>")
    parts.append(viz.neuron_html(summary, run.read_revision(nid)))
    writes = run.activations().writes(nid.layer_index, nid.neuron_index, run.sign) if run.has_collection() else None
    if writes is not None:  # what the neuron writes to the logits on this side (its direct path)
        parts.append(f'<p class="nx-meta">writes: {esc(writes.line(8))}</p>')
    results = run.read_results(nid)
    if summary is not None and summary.status == "done" and results and results.scored_explanations:
        seqs = results.scored_explanations[0].scored_simulation.scored_sequence_simulations
        max_act = max_activation_of(summary, seqs=seqs)
        windows = labelled_simulations(results, summary.window_splits)
        parts.append(viz.split_heatmaps(windows, max_act, max(1, max_windows // 2)))
    parts.append("</div>")
    return "".join(parts)


def sides_html(run: Run, max_neurons: int, max_windows: int) -> tuple[str, list]:
    """The both-signs section (empty when the run explained one side): the negative side's means, how much of each
    neuron's activation is negative, a table of both sides of every neuron side by side, and the negative side's
    windows. Returns its HTML and its figure."""
    if len(run.sides()) < 2:
        return "", []
    neg_run = run.side(NEGATIVE)
    neg = neg_run.table()
    sides = side_by_side(run.sides_table())
    neg_main, neg_chosen = apart(neg)
    means = mean_scores(neg_main[neg_main["status"] == "done"].to_dict("records"))
    tail, mass = sides["negative_tail_share"].dropna(), sides["negative_mass_share"].dropna()
    shares = (
        f"The share of a neuron's |activation| that is negative: over every token, median {mass.median():.0%}; above "
        f"its top-k threshold (the larger of its two sides' k-th strongest window peaks), median {tail.median():.0%}, "
        f"and {int((tail > 0.5).sum())} of {len(tail)} neurons fire more strongly negative than positive."
        if len(tail) and len(mass)
        else ""
    )
    cols = [
        ("layer", "layer"), ("neuron", "neuron"), ("top_and_random_positive", "score +"),
        ("explanation_positive", "positive side"), ("top_and_random_negative", "score −"),
        ("explanation_negative", "negative side"), ("negative_tail_share", "negative share (tail)"),
        ("negative_mass_share", "negative share (all)"),
    ]  # fmt: skip

    def cell(key, v, r) -> str:
        if key == "neuron":
            return (
                f'<a href="#{viz.anchor(r.layer, v)}">{v}+</a> <a href="#{viz.anchor(r.layer, v, NEGATIVE)}">{v}−</a>'
            )
        if key.startswith("top_and_random"):
            return viz.num(v)
        if key.startswith("negative_"):
            return "—" if pd.isna(v) else f"{v:.0%}"
        return esc("" if pd.isna(v) else v)

    shown = heatmap_neurons(neg, max_neurons)
    sections = "".join(
        neuron_section(neg_run, NeuronId(int(r.layer), int(r.neuron)), max_windows) for r in shown.itertuples()
    ).replace(TOKEN_STYLE, "")
    html = (
        f"<h2>Both signs</h2><p>Each neuron's negative side (its activations negated: the windows where it is most "
        f"negative) is explained and scored as its own unit. Negative side"
        f"{', sample' if len(neg_chosen) else ''}: {len(neg_main)} neurons · {esc(means_line(means))}.</p><p>{shares}</p>"
        f"{sortable_table(_bounded(sides, MAX_TABLE_ROWS), cols, cell)}<h3>Windows of the negative side</h3>{sections}"
    )
    return html, [viz.sides_scatter(sides)]


def apart(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run table split into the neurons whose scores are the run's average (sampled or listed) and the chosen
    `selective` group, which no mean or figure pools with them."""
    chosen = df["group"] == SELECTIVE
    return df[~chosen].reset_index(drop=True), df[chosen].reset_index(drop=True)


def _figures(df: pd.DataFrame) -> list:
    figs = [viz.score_histogram(df), viz.scores_by_layer(df), viz.top_vs_random(df), viz.shuffled_control(df)]
    if df["score_after"].notna().any():
        figs.append(viz.revision_before_after(df))
    return figs


def _describe(c: Component | None) -> str:
    """An explainer or simulator description from the manifest, as one line (its settings left out)."""
    if c is None:
        return "?"
    shown = {"kind": c.kind, "mode": c.mode, "model": c.model, "backend": c.backend, "base_url": c.base_url,
             "path": c.path}  # fmt: skip
    return " ".join(f"{k}={v}" for k, v in shown.items() if v is not None)


def heatmap_neurons(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """At most `n` neurons whose windows the report draws: the best 40%, the worst 20% and a seeded sample of the
    rest, best first (a paper-scale run has far too many to draw them all)."""
    ranked = df.sort_values("top_and_random", ascending=False, na_position="last")
    if len(ranked) <= n:
        return ranked
    best, worst = ranked.head(int(0.4 * n)), ranked.dropna(subset=["top_and_random"]).tail(int(0.2 * n))
    rest = ranked.drop(best.index.union(worst.index))
    sample = rest.sample(n=min(len(rest), n - len(best) - len(worst)), random_state=seed)
    return pd.concat([best, sample, worst]).sort_values("top_and_random", ascending=False, na_position="last")


def render_report(
    run: Run | str | Path, max_neurons: int = 24, max_windows: int = 4, baseline: Run | str | Path | None = None
) -> str:
    """The report as one HTML string (plotly.js inlined once, gzipped), its size bounded whatever the run's: windows
    drawn for `max_neurons` neurons per side, at most `MAX_TABLE_ROWS` table rows and `MAX_FIGURE_ROWS` neurons per
    figure. With a `baseline` run (a random-network run of the same
    method, say), its score distribution beside this run's and the difference of means with its interval."""
    run = as_run(run)
    everything = run.table()
    df, chosen = apart(everything)
    means = mean_scores(df[df["status"] == "done"].to_dict("records"))
    share = viz.share_above(df)
    explain = run.manifest().explain or StageRecord()
    collection = run.collection_manifest() or CollectionManifest()
    meta = [
        f"subject model: {esc(collection.model)}",
        f"corpus: {esc(collection.corpus_source or '?')} ({collection.n_tokens:,} tokens)",
        f"explainer: {esc(_describe(explain.explainer))}",
        f"simulator: {esc(_describe(explain.simulator))}",
    ]
    counts = df["status"].value_counts().to_dict()
    summary = ("positive side: " if len(run.sides()) > 1 else "") + (
        ("sample: " if len(chosen) else "")
        + f"{len(df)} neurons ({', '.join(f'{esc(k)}: {v}' for k, v in counts.items()) or 'none yet'}) · "
        f"{esc(means_line(means))} · above {viz.PAPER_THRESHOLD}: {share['above']} of {share['n']} · "
        f"{esc(split_half_line(df))}"
    )
    extra_figs = []
    if len(chosen):
        chosen_means = mean_scores(chosen[chosen["status"] == "done"].to_dict("records"))
        summary += (
            f"</p><p>Kept apart, the {len(chosen)} most selective neurons (chosen by the collection's kurtosis, so not "
            f"the kit's average): {esc(means_line(chosen_means))}"
        )
        extra_figs.append(viz.compare_runs({"sample": df, "selective (chosen)": chosen}))
    if baseline is not None:
        base = as_run(baseline)
        base_df = base.table()
        summary += f"</p><p>Against the baseline {esc(base.path.name)}: {esc(baseline_line(df, base_df))}"
        extra_figs.append(viz.compare_runs({run.path.name: df, f"baseline {base.path.name}": base_df}))
    note = f'<p class="nx-note">{esc(OFFLINE_NOTE)}</p>' if explain.simulator and explain.simulator.smoke_level else ""
    sides, side_figs = sides_html(run, max_neurons, max_windows)
    figs = []
    for i, fig in enumerate(_figures(_bounded(df, MAX_FIGURE_ROWS)) + extra_figs + side_figs):
        fig.update_layout(height=380, margin={"l": 50, "r": 20, "t": 50, "b": 40})
        figs.append(figure_html(fig, i))
    drawn = (
        f"<p>figures drawn from a seeded sample of {MAX_FIGURE_ROWS:,} of the {len(df):,} neurons; every mean is over "
        "all of them</p>"
        if len(df) > MAX_FIGURE_ROWS
        else ""
    )
    listed = heatmap_neurons(everything, MAX_TABLE_ROWS)
    rows_note = (
        f"<p>{len(listed):,} of {len(everything):,} neurons listed (the best, the worst and a seeded sample); every "
        "neuron is in the run table, runs/NAME/table.parquet</p>"
        if len(everything) > len(listed)
        else ""
    )
    shown = heatmap_neurons(everything, max_neurons)
    sections = "".join(
        neuron_section(run, NeuronId(int(r.layer), int(r.neuron)), max_windows) for r in shown.itertuples()
    ).replace(TOKEN_STYLE, "")
    more = (
        f"<p>windows of {len(shown)} of {len(everything)} neurons: the best, the worst and a seeded sample of the rest "
        "(the table and figures above cover every neuron)</p>"
        if len(everything) > len(shown)
        else ""
    )
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    init = (
        ""
        if collection.subject_init == "trained"
        else f" · subject model re-initialised ({esc(collection.subject_init)})"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nxkit report · {esc(run.path.name)}{init}</title>
<style>{_CSS}</style></head><body>
<h1>nxkit run report · {esc(run.path.name)}{init}</h1>
<p class="nx-meta">{" · ".join(meta)} · written {stamp}</p>
<p>{summary}</p>{note}
{digest_html(run)}
<h2>Scores</h2>{drawn}<div class="nx-figs">{"".join(f"<div>{f}</div>" for f in figs)}</div>
<h2>Neurons</h2><p>Click a column header to sort, a neuron to see its windows.</p>{rows_note}{neuron_rows_html(listed)}
<h2>Windows</h2>{viz.legend_html()}{more}{sections}
{sides}
<script>{_SORT_JS}</script>
<script type="application/octet-stream" id="nx-plotly-gz">{plotly_packed()}</script>
<script>{_PLOT_JS}</script>
</body></html>
"""


def write_report(run: Run | str | Path, path: str | Path | None = None, **kwargs) -> Path:
    """Write `runs/<name>/report.html` (or `path`) and return its path."""
    run = as_run(run)
    return atomic_write(Path(path) if path else run.report_path, render_report(run, **kwargs))


# --- the run as plain text (`nxkit run` prints it; notebook 00 too) ----------------------------------------------------------------------------


def _fmt(v) -> str:
    return "    —" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def baseline_line(table, baseline, label: str = "baseline") -> str:
    """One line comparing a run's scores with a baseline run's (a random-network run, say): each mean with its count,
    and the difference of means with its interval."""
    done, base = table[table["status"] == "done"], baseline[baseline["status"] == "done"]
    parts = []
    for key, name in (("top_and_random", "score"), ("random_only", "random only")):
        a, b = done[key].tolist(), base[key].tolist()
        diff, interval = difference_of_means(a, b)
        ci = f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else ""
        na, nb = int(done[key].notna().sum()), int(base[key].notna().sum())
        mean_a = done[key].mean() if na else None
        mean_b = base[key].mean() if nb else None
        parts.append(
            f"{name} {_fmt(mean_a).strip()} (n={na} of {len(done)}) vs {label} {_fmt(mean_b).strip()} (n={nb} of {len(base)}): "
            f"difference {_fmt(diff).strip()}{ci}"
        )
    return "; ".join(parts)


def split_half_line(df: pd.DataFrame) -> str:
    """The run's split-half reliability: the correlation across neurons of the original explanation's valid and test
    scores (the valid one before any revision), with its count."""
    done = df[df["status"] == "done"]
    r, n = split_half(done["original_top_and_random"].tolist(), done["test_top_and_random"].tolist())
    value = "n/a" if r is None else f"{r:+.2f}"
    return f"split-half reliability (valid vs test score across neurons): r = {value} over {n} neurons with both"


def _interval(lo, hi) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "—"
    return f"[{lo:+.2f},{hi:+.2f}]"


def summary_table(run: Run, neurons: list[NeuronId] | None = None, width: int = 60, max_rows: int | None = None) -> str:
    """A plain-text table of the run's neurons (the kept explanation, its scores, control, revision) with means, the
    sample's and a chosen group's apart; over `max_rows` neurons the rows are left to the report."""
    everything = run.table(neurons=neurons)
    df, chosen = apart(everything)
    return _means_lines(run, df, chosen, neurons, width, rows=max_rows is None or len(everything) <= max_rows)


def _means_lines(run, df, chosen, neurons, width, rows: bool) -> str:
    head = (
        f"{'layer':>5} {'neuron':>6} {'status':<7} {'score':>6} {'95% interval':>13} {'random':>6} {'shuffl':>6} "
        f"{'gap':>6} {'revised':>7}  explanation"
    )
    lines = [head, "-" * len(head)] if rows else []
    for r in pd.concat([df, chosen]).sort_values(["layer", "neuron"]).itertuples() if rows else []:
        text = r.explanation if isinstance(r.explanation, str) else (r.reason or "")
        text = text.replace("\n", " ")
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(
            f"{r.layer:>5} {r.neuron:>6} {r.status or '?':<7} {_fmt(r.top_and_random):>6} "
            f"{_interval(r.top_and_random_lo, r.top_and_random_hi):>13} {_fmt(r.random_only):>6} "
            f"{_fmt(r.shuffled_control):>6} {_fmt(r.shuffled_gap):>6} {_fmt(r.score_after):>7}  {text}"
        )
    m = mean_scores(df[df["status"] == "done"].to_dict("records"))
    share = viz.share_above(df)
    lines.append("-" * len(head) if rows else f"{len(df) + len(chosen)} neurons (their rows: the report, Run.table())")
    group = "sample, " if len(chosen) else ""
    lines.append(f"{group}{means_line(m)}; above 0.8: {share['above']} of {share['n']}")
    if len(chosen):
        mc = mean_scores(chosen[chosen["status"] == "done"].to_dict("records"))
        lines.append(f"selective (chosen, kept apart), {means_line(mc)}")
    lines.append(split_half_line(df))
    lines += scorers.summary_lines(df)
    sims = sorted(set(df["simulator"].dropna()))
    if sims:
        lines.append(f"scored by: {', '.join(sims)} simulator")
    after = df["score_after"].dropna()
    if len(after):
        before = df.loc[after.index, "score_before"]
        kept = int((df["kept"] == "revised").sum())
        lines.append(
            f"revision: {len(after)} neurons, mean {_fmt(before.mean())} -> {_fmt(after.mean())}; "
            f"revised explanation kept for {kept}"
        )
    if len(run.sides()) > 1:
        lines += ["", _sides_lines(run, neurons, width, rows)]
    return "\n".join(lines)


def _sides_lines(run: Run, neurons: list[NeuronId] | None, width: int, rows: bool = True) -> str:
    """Both signs of every neuron side by side, with the negative side's means."""
    sides = side_by_side(run.sides_table(neurons=neurons))
    head = f"{'layer':>5} {'neuron':>6} {'score+':>6} {'score-':>6} {'neg%':>5}  negative side's explanation"
    lines = [
        "both signs (neg%: share of |activation| above the top-k threshold that is negative)",
        head,
        "-" * len(head),
    ]
    for r in sides.itertuples() if rows else []:
        text = r.explanation_negative if isinstance(r.explanation_negative, str) else (r.status_negative or "")
        text = str(text).replace("\n", " ")
        text = text if len(text) <= width else text[: width - 1] + "…"
        share = "    —" if pd.isna(r.negative_tail_share) else f"{r.negative_tail_share:>5.0%}"
        lines.append(
            f"{r.layer:>5} {r.neuron:>6} {_fmt(r.top_and_random_positive):>6} {_fmt(r.top_and_random_negative):>6} "
            f"{share}  {text}"
        )
    neg, neg_chosen = apart(run.side(NEGATIVE).table(neurons=neurons))
    m = mean_scores(neg[neg["status"] == "done"].to_dict("records"))
    lines = lines if rows else lines[:1]
    lines.append("-" * len(head))
    lines.append(f"negative side, {'sample, ' if len(neg_chosen) else ''}{means_line(m)}")
    if len(neg_chosen):
        mc = mean_scores(neg_chosen[neg_chosen["status"] == "done"].to_dict("records"))
        lines.append(f"negative side, selective (chosen, kept apart), {means_line(mc)}")
    return "\n".join(lines)
