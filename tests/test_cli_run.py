"""`nxkit run`: the whole pipeline on the real offline model, tiny, then resumed; neuron selection; clear errors."""

from __future__ import annotations

import json

import pytest

from nxkit.cli import main
from nxkit.pipeline import PipelineConfig, PipelineError, parse_neurons, select_neurons
from nxkit.records import NeuronId
from nxkit.revise import ReviseConfig, ReviseError
from nxkit.runs import Run

TINY = [
    "--explainer", "local", "--collect.layers", "0", "--neurons", "0:11", "0:42", "--max-tokens", "4096", "--corpus", "fortunes",
    "--collect.top-k", "8", "--collect.n-random", "6", "--collect.no-compile", "--explain.best-of", "1",
    "--explain.explain-windows", "2", "--explain.valid-windows", "1", "--explain.sim-window-tokens", "24",
    "--revise.rounds", "1", "--sign", "positive",
]  # fmt: skip


def test_select_neurons_lists_and_samples():
    assert parse_neurons(["3", "1:7"], [0, 2]) == [NeuronId(0, 3), NeuronId(1, 7), NeuronId(2, 3)]
    a = select_neurons([0, 5], 100, sample=3, seed=1)
    assert len(a) == 6 and a == select_neurons([0, 5], 100, sample=3, seed=1)
    assert a != select_neurons([0, 5], 100, sample=3, seed=2)
    with pytest.raises(PipelineError, match="write N .* or LAYER:N"):
        parse_neurons(["x:1"], [0])
    with pytest.raises(PipelineError, match="not in the collection"):
        select_neurons([0], 10, neurons=["3:1"])
    with pytest.raises(ReviseError, match="rounds must be >= 0"):
        ReviseConfig(rounds=-1)
    with pytest.raises(PipelineError, match="sample must be >= 1"):
        PipelineConfig(sample=0)


def test_bad_neuron_is_a_clear_error(capsys):
    assert main(["run", "--neurons", "a:b"]) == 2
    assert "LAYER:N" in capsys.readouterr().err


def test_unreachable_server_fails_before_collection(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    run_dir = tmp_path / "remote"
    argv = ["run", "--run-dir", str(run_dir), "--explainer", "some-model", "--base-url", "http://127.0.0.1:9/v1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot reach the LLM server at http://127.0.0.1:9/v1" in err and "base_url" in err
    assert not (run_dir / "activations").exists()


@pytest.mark.slow
def test_run_end_to_end_then_resume(tmp_path, capsys):
    run_dir = tmp_path / "tiny"
    assert main(["run", "--run-dir", str(run_dir), *TINY]) == 0
    out = capsys.readouterr().out
    for stage in (
        "[1/5] collection",
        "[2/5] explanation and scoring, positive side: 2 of 2",
        "[3/5] shuffled",
        "[4/5] revision",
        "[5/5] report",
    ):
        assert stage in out, out
    assert "layer neuron status" in out and "mean over" in out and f"report: {run_dir / 'report.html'}" in out
    run = Run(run_dir)
    summaries = {n: run.read_neuron(NeuronId(0, n)) for n in (11, 42)}
    assert all(s.status in ("done", "failed") for s in summaries.values())
    done = [n for n, s in summaries.items() if s.status == "done"]
    assert done, summaries
    for n in done:
        assert (run_dir / "explanations" / "0" / f"{n}.jsonl").exists()
        assert (run_dir / "revisions" / "0" / f"{n}.json").exists()
    if len(done) == 2:
        assert all(summaries[n].shuffled_control_from for n in done)
    page = (run_dir / "report.html").read_text()
    assert "plotly" in page and 'id="n-0-11"' in page
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["pipeline"]["explain"]["best_of"] == 1 and manifest["neurons"] == [[0, 11], [0, 42]]
    assert manifest["pipeline"]["simulate"]["mode"] == "auto"
    simulator = manifest["explain"]["simulator"]  # the offline explainer's texts are scored by nxkit-sim
    assert simulator["model"] == "nxkit-sim" and simulator["kind"] == "trained" and not simulator["smoke_level"]
    table = run.table()
    for n in done:  # the table shows the kept explanation and the revision's outcome
        row = table[table.neuron == n].iloc[0]
        assert row.explanation == summaries[n].explanation and row.revision_status in ("done", "failed", "skipped")

    # a second run finds everything done: nothing is recomputed
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "neurons").rglob("*.json")}
    assert main(["run", "--run-dir", str(run_dir), *TINY]) == 0
    out = capsys.readouterr().out
    assert "reusing the finished collection" in out and "0 of 2 neuron sides to do" in out
    assert stamps == {p: p.stat().st_mtime_ns for p in (run_dir / "neurons").rglob("*.json")}

    # the same run directory with another corpus is refused, naming the fix
    assert main(["run", "--run-dir", str(run_dir), *TINY[:-2], "--corpus", "pydoc"]) == 2
    assert "choose another run name" in capsys.readouterr().err


def test_both_signs_end_to_end_on_the_offline_default(tmp_path, capsys):
    """SmolLM2's MLPs are gated: by default each neuron's negative side is explained and scored too, beside the
    positive side in the same record shapes, and the summary, table and report show both."""
    from nxkit.records import load_simulation_results

    run_dir = tmp_path / "signs"
    args = ["run", "--run-dir", str(run_dir), "--collect.layers", "3", "--neurons", "3:5", "3:77", "3:300",
            "--max-tokens", "4096", "--corpus", "fortunes", "--collect.top-k", "8", "--collect.n-random", "6",
            "--collect.no-compile", "--explain.explain-windows", "2", "--explain.valid-windows", "1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "positive and negative sides: 6 of 6 neuron sides to do" in out, out
    assert "both signs (neg%" in out and "negative side, mean over" in out
    run = Run(run_dir)
    neg = run.side("negative")
    assert [s.sign for s in run.sides()] == ["positive", "negative"] and neg.path == run_dir / "negative"
    acts = run.activations()
    for n in (5, 77, 300):
        nid = NeuronId(3, n)
        pos_s, neg_s = run.read_neuron(nid), neg.read_neuron(nid)
        bottom = acts._array(3, "bottom_acts")[n]
        # the negative side is the negated activation: its peak is minus the neuron's most negative value
        assert neg_s.max_activation == pytest.approx(-float(bottom.min()), rel=1e-6)
        assert pos_s.max_activation == pytest.approx(float(acts._array(3, "top_acts")[n].max()), rel=1e-6)
        shares = acts.sign_shares(3, n)
        assert pos_s.negative_tail_share == neg_s.negative_tail_share == shares.negative_tail_share
        if neg_s.status == "done":  # the same record shapes as the positive side
            results = load_simulation_results((run_dir / "negative" / "explanations" / "3" / f"{n}.jsonl").read_text())
            true = [a for s in results.scored_explanations[0].scored_simulation.scored_sequence_simulations
                    for a in s.true_activations]  # fmt: skip
            assert max(true) <= neg_s.max_activation + 1e-6  # negated windows: nothing above the side's peak
    table = run.sides_table()
    assert sorted(zip(table.sign, table.neuron, strict=True)) == sorted(
        (s, n) for s in ("negative", "positive") for n in (5, 77, 300)
    )
    assert set(run.table().sign) == {"positive"} and set(neg.table().sign) == {"negative"}
    page = (run_dir / "report.html").read_text()
    assert "<h2>Both signs</h2>" in page and 'href="#n-3-5-negative"' in page
    assert any(f'id="n-3-{n}-negative"' in page for n in (5, 77, 300))

    # --sign positive on the same run touches nothing of the negative side
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "negative").rglob("*.json")}
    assert main([*args, "--sign", "positive"]) == 0
    assert "positive side: 0 of 3 neuron sides to do" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (run_dir / "negative").rglob("*.json")}


def test_negative_side_of_a_collection_without_it_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "nobottom"
    args = ["run", "--run-dir", str(run_dir), "--collect.layers", "0", "--neurons", "0:5", "--max-tokens", "2048",
            "--corpus", "fortunes", "--collect.top-k", "8", "--collect.bottom-k", "0", "--collect.n-random", "6",
            "--collect.no-compile", "--explain.explain-windows", "2", "--explain.valid-windows", "1"]  # fmt: skip
    assert main(args) == 0  # the default falls back to the positive side, saying why
    out = capsys.readouterr().out
    assert "positive side only: this collection kept no most-negative windows" in out
    assert not (run_dir / "negative").exists()
    assert main([*args, "--sign", "negative"]) == 2
    assert "kept no most-negative windows; use --sign positive" in capsys.readouterr().err


@pytest.mark.slow
def test_a_random_network_baseline_from_the_command_line(tmp_path, capsys):
    """`--subject-init random` runs the method on the re-initialised model (recorded, and a resume must match);
    `--baseline RUN` prints a run's scores beside it with the difference of means."""
    import numpy as np

    small = ["--collect.layers", "0", "--sample", "4", "--max-tokens", "4096", "--corpus", "fortunes", "--collect.top-k",
             "8", "--collect.n-random", "6", "--collect.no-compile", "--sign", "positive", "--no-report"]  # fmt: skip
    random_dir, trained_dir = tmp_path / "random", tmp_path / "trained"
    assert main(["run", "--run-dir", str(random_dir), "--subject-init", "random", *small]) == 0
    base = Run(random_dir)
    assert base.collection_manifest().subject_init == "random:0"
    assert main(["run", "--run-dir", str(trained_dir), *small, "--baseline", str(random_dir), "--report"]) == 0
    out = capsys.readouterr().out
    assert f"against the baseline {random_dir}: score" in out and "difference" in out
    trained = Run(trained_dir)
    assert trained.collection_manifest().subject_init == "trained"
    a, b = trained.activations(), base.activations()  # the same windows, another network
    assert np.array_equal(a.windows, b.windows) and not np.allclose(a._array(0, "moments"), b._array(0, "moments"))
    assert "subject model re-initialised (random:0)" not in trained.report_path.read_text()
    assert main(["run", "--run-dir", str(random_dir), *small]) == 2  # a resume must match the init
    assert "random-network baseline needs a run of its own" in capsys.readouterr().err
