"""The neurons worth reading: what `nxkit run` prints at the end and the report opens on.

Per group of neurons (the uniform `sample`, whose scores are the kit's average, and any chosen group such as
`selective`, never pooled with it) and side: how many scored at or above 0.5 and 0.8, with counts. Then the best
neurons with their explanation, held-out score and interval, and their top windows in context. The best are ranked
on their `test` windows, which no choice read and the headline does not report; the score shown is the `valid` one,
so a neuron's place in the list and the number printed beside it come from different windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..records import NEGATIVE, POSITIVE, SAMPLE
from ..runs import Run
from . import viz
from .viz import anchor, esc, in_context, show_token

THRESHOLDS = (0.5, 0.8)
"""The shares printed: at or above each."""


@dataclass
class BestNeuron:
    """One neuron side of the best list, with what a reader needs to judge it."""

    layer: int
    """Its layer."""
    neuron: int
    """Its index."""
    sign: str
    """The side explained."""
    group: str
    """How it was chosen (`sample`, `selective`, `listed`)."""
    explanation: str
    """The kept explanation."""
    score: float | None
    """Held-out score on the valid windows."""
    interval: tuple[float, float] | None
    """That score's 95% interval."""
    ranked_by: float | None
    """The score it was ranked by (on the test windows)."""
    contexts: list[tuple[float, list[str], int]] = field(default_factory=list)
    """Its top windows around their peaks: (activation at the peak, tokens, index of the peak token)."""
    writes: str | None = None
    """What it writes to the logits on this side (`Activations.writes`), when the collection stored it."""


def shares(df: pd.DataFrame, column: str = "top_and_random") -> dict:
    """Over the neurons of `df` with a defined score: how many, and how many at or above each of `THRESHOLDS`; with
    the count of those done whose score is undefined (flagged, not counted as any value)."""
    done = df[df["status"] == "done"]
    vals = done[column].dropna()
    out = {"n": int(vals.size), "done": len(done), "undefined": int(len(done) - vals.size), "neurons": len(df)}
    for t in THRESHOLDS:
        out[t] = viz.share_above(done, t, column, inclusive=True)["above"]
    return out


def shares_line(s: dict) -> str:
    """`shares` as one line with counts."""
    if not s["n"]:
        return f"{s['neurons']} neurons, none with a defined score"
    parts = [f"at or above {t}: {s[t]} of {s['n']} ({s[t] / s['n']:.1%})" for t in THRESHOLDS]
    return f"{'; '.join(parts)} (defined scores; {s['undefined']} of {s['done']} done undefined)"


def group_lines(table: pd.DataFrame) -> list[str]:
    """One line per side and group: its shares and mean, the sample first."""
    lines = []
    for sign in (POSITIVE, NEGATIVE):
        side = table[table["sign"] == sign]
        groups = sorted(set(side["group"]), key=lambda g: (g != SAMPLE, g))
        for group in groups:
            part = side[side["group"] == group]
            s = shares(part)
            vals = part.loc[part["status"] == "done", "top_and_random"].dropna()
            mean = f"mean {vals.mean():+.2f} over {len(vals)}" if len(vals) else "no mean"
            label = "the kit's average" if group == SAMPLE else "chosen, not the average"
            lines.append(f"{sign} side, {group} ({label}): {len(part)} neurons, {mean}; {shares_line(s)}")
    return lines


def best_neurons(
    run: Run, n: int = 15, contexts: int = 3, width: int = 8, table: pd.DataFrame | None = None
) -> tuple[list[BestNeuron], str]:
    """The `n` best neuron sides of the run (every side and group), ranked on their test windows' score (on the valid
    score only when no test score was kept, said in the returned note), with their top windows in context. `table`:
    the run's `sides_table()`, when the caller has read it already."""
    table = run.sides_table() if table is None else table
    done = table[(table["status"] == "done") & table["top_and_random"].notna()]
    if done["test_top_and_random"].notna().any():
        done = done.dropna(subset=["test_top_and_random"])
        key, note = (
            "test_top_and_random",
            ("ranked on their test windows (held out from every choice); the score shown is on the valid windows"),
        )
    else:
        key, note = "top_and_random", "ranked on the score shown (no test score was kept: --explain.split-half)"
    done = done.sort_values([key, "layer", "neuron"], ascending=[False, True, True]).head(n)
    acts = run.activations() if run.has_collection() else None
    out = []
    for r in done.itertuples():
        lo, hi = r.top_and_random_lo, r.top_and_random_hi
        best = BestNeuron(
            int(r.layer), int(r.neuron), r.sign, r.group, str(r.explanation), float(r.top_and_random),
            None if pd.isna(lo) or pd.isna(hi) else (float(lo), float(hi)), float(getattr(r, key)),
        )  # fmt: skip
        if acts is not None:
            writes = acts.writes(best.layer, best.neuron, best.sign)
            best.writes = writes.line() if writes is not None else None
            record = acts.neuron_record(best.layer, best.neuron, best.sign)
            for w in record.most_positive_activation_records[:contexts]:
                i = int(np.argmax(w.activations))
                a, b = max(0, i - width), min(len(w.tokens), i + width + 1)
                best.contexts.append((float(w.activations[i]), list(w.tokens[a:b]), i - a))
        out.append(best)
    return out, note


def _interval(iv: tuple[float, float] | None) -> str:
    return "[  —  ]" if iv is None else f"[{iv[0]:+.2f}, {iv[1]:+.2f}]"


def _score(v: float | None) -> str:
    return "  —  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def digest_text(run: Run, n: int = 15) -> str:
    """The run's digest as text: each group's shares, then the best neurons with their top windows in context."""
    table = run.sides_table()
    lines = ["neurons by group (a chosen group's scores are kept apart from the sample's):"]
    lines += [f"  {line}" for line in group_lines(table)]
    best, note = best_neurons(run, n, table=table)
    lines += ["", f"the {len(best)} best neurons ({note}):"]
    for b in best:
        lines.append(
            f"  {b.layer:>2}:{b.neuron:<5} {b.sign[:3]} {b.group:<9} score {_score(b.score)} {_interval(b.interval)}  "
            f"{b.explanation}"
        )
        for act, tokens, peak in b.contexts:
            lines.append(f"        {act:6.2f}  {in_context(tokens, peak, newline='⏎')!r}")
        if b.writes:
            lines.append(f"        writes: {b.writes}")
    return "\n".join(lines)


def digest_html(run: Run, n: int = 15) -> str:
    """The same as HTML (the report's opening): each group's shares, then the best neurons, their windows inline."""
    table = run.sides_table()
    items = "".join(f"<li>{esc(line)}</li>" for line in group_lines(table))
    best, note = best_neurons(run, n, table=table)
    rows = []
    for b in best:
        ctx = "<br>".join(
            f"<code>{act:.2f}</code> "
            + "".join(f"<b>{show_token(t)}</b>" if j == peak else show_token(t) for j, t in enumerate(tokens))
            for act, tokens, peak in b.contexts
        ) + (f"<br><i>writes: {esc(b.writes)}</i>" if b.writes else "")
        rows.append(
            f'<tr><td><a href="#{anchor(b.layer, b.neuron, b.sign)}">{b.layer}:{b.neuron}</a> {esc(b.sign)}</td><td>{esc(b.group)}</td>'
            f"<td>{esc(_score(b.score))} {esc(_interval(b.interval))}</td><td>{esc(b.explanation)}</td>"
            f'<td class="nx-ctx">{ctx}</td></tr>'
        )
    table_html = (
        '<table class="nx-best"><thead><tr><th>neuron</th><th>group</th><th>score [95%]</th><th>explanation</th>'
        f"<th>top windows (peak in bold)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return f"<h2>Neurons worth reading</h2><ul>{items}</ul><p>The {len(best)} best ({esc(note)}):</p>{table_html}"
