"""The run table: rows appended as neurons are written, folded into Parquet, the last row of a neuron winning."""

from __future__ import annotations

import pandas as pd

from nxkit import runs
from nxkit.records import NeuronId, NeuronSummary, Scores
from nxkit.runs import Run, table_row


def summary(layer: int, neuron: int, score: float | None, control: float | None = None) -> NeuronSummary:
    return NeuronSummary(
        NeuronId(layer, neuron), "done", explanation=f"the word {neuron}", scores=Scores(top_and_random=score),
        shuffled_control=control, max_activation=1.0,
    )  # fmt: skip


def test_rows_fold_into_parquet_and_the_latest_row_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "JOURNAL_ROWS", 3)
    run = Run(tmp_path / "run")
    for n in range(5):
        run.write_neuron(summary(2, n, 0.1 * n))
    run.write_neuron(summary(2, 1, 0.1, control=-0.2))  # the control arrives later: the same neuron's new row
    assert run.table_path.exists()  # compacted after 3 rows
    df = run.table()
    assert list(df.neuron) == [0, 1, 2, 3, 4] and df.loc[df.neuron == 1, "shuffled_control"].item() == -0.2
    assert pd.isna(df.loc[df.neuron == 0, "shuffled_control"].item())  # undefined stays undefined, never 0
    built = pd.DataFrame([table_row(s, None, "run") for s in run.summaries()], columns=runs.TABLE_COLUMNS)
    assert list(df.top_and_random) == list(built.top_and_random) and list(df.explanation) == list(built.explanation)
    run.compact_table()
    assert run.journal_path.read_text() == "" and run.table().equals(df)
    assert list(run.table(neurons=[NeuronId(2, 3)]).neuron) == [3]


def test_a_run_written_before_the_table_existed_still_opens(tmp_path):
    run = Run(tmp_path / "old")
    run.write_neuron(summary(0, 7, 0.5))
    run.table_path.unlink(missing_ok=True)
    run.journal_path.unlink()  # as an older version left it: summaries only
    assert list(run.table().neuron) == [7] and run.table().top_and_random.item() == 0.5


def test_the_report_draws_the_best_the_worst_and_a_sample():
    from nxkit.report import heatmap_neurons

    df = pd.DataFrame({"layer": 0, "neuron": range(100), "top_and_random": [i / 100 for i in range(100)]})
    shown = heatmap_neurons(df, 10)
    assert len(shown) == 10 and list(shown.neuron[:4]) == [99, 98, 97, 96] and list(shown.neuron[-2:]) == [1, 0]
    assert shown.equals(heatmap_neurons(df, 10)) and len(heatmap_neurons(df.head(5), 10)) == 5
