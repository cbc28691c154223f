"""The run report: one self-contained HTML file, every corpus and LLM text escaped (no model needed)."""

from __future__ import annotations

import re

from conftest import XSS, make_fake_run

from nxkit.views.report import render_report, write_report


def test_report_is_self_contained_and_escaped(tmp_path):
    run = make_fake_run(tmp_path / "fake")
    path = write_report(run)
    assert path == run.path / "report.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # plotly.js is inlined once; nothing is loaded from elsewhere
    assert page.count('id="nx-plotly-gz"') == 1 and len(page) > 1_000_000
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    # the script token (corpus) and explanation (LLM) appear only escaped
    assert XSS not in page and "window.__nxkit_xss" in page
    assert "&lt;script&gt;window.__nxkit_xss=1&lt;/script&gt;" in page
    assert "<b>0.0</b>" not in page and "&lt;b&gt;0.0&lt;/b&gt;" in page
    assert "never fires &lt;i&gt;x&lt;/i&gt;" in page  # a dead neuron's reason


def test_report_has_figures_table_and_heatmaps(tmp_path):
    run = make_fake_run(tmp_path / "fake")
    page = render_report(run)
    assert page.count('class="nx-fig"') == 5  # histogram, by layer, top vs random, control, revision
    start = page.index('<table class="nx-sortable">')
    table = page[start : page.index("</table>", start)]
    assert table.count("<tr>") == 1 + 8  # header and one row per neuron
    assert 'href="#n-0-2"' in table and 'id="n-0-2"' in page
    assert page.count('class="nx-window"') == 7 * 4  # 7 explained neurons, 2 top and 2 random windows each
    assert "revision (done)" in page and "original (before revision)" in page
    assert "th.addEventListener('click'" in page


def test_report_without_revisions_or_neurons(tmp_path):
    run = make_fake_run(tmp_path / "fake", revise=False)
    assert render_report(run).count('class="nx-fig"') == 4
    from nxkit.runs import Run

    empty = render_report(Run(tmp_path / "empty"))
    assert "0 neurons" in empty and "no scored neurons yet" in empty
