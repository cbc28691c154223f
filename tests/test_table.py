"""The run table: rows appended as neurons are written, folded into Parquet, the last row of a neuron winning."""

from __future__ import annotations

import pandas as pd
import pytest

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
    built = pd.DataFrame([table_row(s, None, "run") for s in run.summaries()], columns=runs.table_columns())
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
    from nxkit.views.report import heatmap_neurons

    df = pd.DataFrame({"layer": 0, "neuron": range(100), "top_and_random": [i / 100 for i in range(100)]})
    shown = heatmap_neurons(df, 10)
    assert len(shown) == 10 and list(shown.neuron[:4]) == [99, 98, 97, 96] and list(shown.neuron[-2:]) == [1, 0]
    assert shown.equals(heatmap_neurons(df, 10)) and len(heatmap_neurons(df.head(5), 10)) == 5


def test_both_sides_of_a_neuron_side_by_side(tmp_path):
    from nxkit.runs import side_by_side

    run = Run(tmp_path / "signs")
    neg = run.side("negative")
    assert neg.path == run.path / "negative" and neg.activations_dir == run.activations_dir
    assert [s.sign for s in run.sides()] == ["positive"]  # no negative side written yet
    for n, (p, q) in enumerate([(0.6, 0.2), (0.1, None)]):
        run.write_neuron(summary(1, n, p))
        s = summary(1, n, q)
        s.explanation, s.negative_tail_share, s.negative_mass_share = f"minus {n}", 0.25 * (n + 1), 0.5
        neg.write_neuron(s)
    run.write_neuron(summary(1, 2, 0.3))  # a neuron whose negative side is not explained (yet)
    assert [s.sign for s in run.sides()] == [s.sign for s in neg.sides()] == ["positive", "negative"]
    both = run.sides_table()
    assert list(zip(both.sign, both.neuron, strict=True)) == [("positive", 0), ("positive", 1), ("positive", 2),
                                                ("negative", 0), ("negative", 1)]  # fmt: skip
    wide = side_by_side(both)
    assert list(wide.neuron) == [0, 1, 2]
    assert list(wide.top_and_random_positive) == [0.6, 0.1, 0.3]
    assert wide.top_and_random_negative[0] == 0.2 and pd.isna(wide.top_and_random_negative[1])  # undefined stays NaN
    assert pd.isna(wide.explanation_negative[2]) and wide.explanation_negative[1] == "minus 1"
    assert list(wide.negative_tail_share[:2]) == [0.25, 0.5] and pd.isna(wide.negative_tail_share[2])


def test_a_table_written_before_the_sign_column_reads_as_positive(tmp_path):
    run = Run(tmp_path / "old")
    run.write_neuron(summary(0, 7, 0.5))
    old = run.table().drop(columns=["sign", "negative_mass_share", "negative_tail_share"])
    old.to_parquet(run.table_path)
    run.journal_path.write_text("")
    assert list(run.table().sign) == ["positive"] and run.table().top_and_random.item() == 0.5


def test_a_run_directory_written_before_manifests_were_typed_still_opens(tmp_path):
    """The previous version wrote manifests and summaries' simulator and usage as plain dicts: they read as records."""
    import json

    from nxkit.records import Component, RunManifest, Usage
    from nxkit.revise import _simulator_changed
    from nxkit.views.report import render_report

    root = tmp_path / "old"
    (root / "neurons" / "0").mkdir(parents=True)
    simulator = {"kind": "prompted", "mode": "all_at_once", "backend": "local", "model": "SmolLM2", "smoke_level": True}
    (root / "manifest.json").write_text(json.dumps({
        "pipeline": {"sample": 2}, "neurons": [[0, 1]], "stopped": None,
        "explain": {"config": {"best_of": 1}, "explainer": {"backend": "local", "model": "SmolLM2"}, "simulator": simulator},
        "usage": {"requests": 3, "prompt_tokens": 30, "completion_tokens": 4, "cache_hits": 0},
    }))  # fmt: skip
    (root / "neurons" / "0" / "1.json").write_text(json.dumps({
        "dataclass_name": "NeuronSummary", "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 1},
        "status": "done", "explanation": "cats", "simulator": simulator,
        "usage": {"requests": 2, "prompt_tokens": 20, "completion_tokens": 3},
        "scores": {"dataclass_name": "Scores", "top_and_random": 0.4},
    }))  # fmt: skip
    run = Run(root)
    manifest = run.manifest()
    assert isinstance(manifest, RunManifest) and manifest.usage == Usage(3, 30, 4)
    assert manifest.explain.simulator == Component("prompted", mode="all_at_once", model="SmolLM2", backend="local",
                                                   smoke_level=True)  # fmt: skip
    assert manifest.explain.explainer.kind == "llm" and manifest.neurons == [[0, 1]]
    summary = run.read_neuron(NeuronId(0, 1))
    assert summary.usage.requests == 2 and summary.simulator.label == "prompted all_at_once"
    row = run.table().iloc[0]
    assert row.requests == 2 and row.simulator == "prompted all_at_once"

    class Same:  # "has the simulator changed" is a field comparison, whoever describes it
        def describe(self):
            return dict(simulator)

    class Other:
        def describe(self):
            return {**simulator, "mode": "chat_text"}

    assert not _simulator_changed(run, Same()) and _simulator_changed(run, Other())
    assert "simulator: kind=prompted mode=all_at_once" in render_report(run)
    # a section written now keeps the others, and the file stays readable
    run.update_manifest(stopped="the request budget is spent")
    assert run.manifest().usage == Usage(3, 30, 4) and run.manifest().stopped == "the request budget is spent"
    with pytest.raises(ValueError, match="not a section of a run manifest"):
        run.update_manifest(nonsense=1)
