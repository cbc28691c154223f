"""The seams between stages: a simulator defined here plugs into every stage untouched, windows carry their split,
a kept revision is what every view shows, and dependencies point one way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from nxkit.llm import Capabilities, Completion, Usage
from nxkit.records import SIMULATED_NORMALIZED_ACTIVATIONS, Component, NeuronId, SequenceSimulation

PACKAGE = Path(__file__).resolve().parent.parent / "nxkit"


class KeywordSimulator:
    """Not an LLM: predicts 9 on tokens that are words of the explanation, 0 elsewhere."""

    usage = Usage()

    async def simulate_many(self, explanation: str, windows: list[list[str]]) -> list[SequenceSimulation]:
        words = set(re.findall(r"\w+", explanation.lower()))
        return [
            SequenceSimulation(
                list(w),
                [9.0 if t.strip().lower() in words else 0.0 for t in w],
                SIMULATED_NORMALIZED_ACTIVATIONS,
                [],
                [],
            )
            for w in windows
        ]

    def describe(self) -> dict:
        return {"kind": "keyword rule (test)", "smoke_level": False}


class TopTokenExplainer:
    """A scripted explainer: names the strongest token of the windows it is shown; proposes fixed texts."""

    name = "scripted"
    capabilities = Capabilities(chat=True, generated_logprobs=False, prompt_logprobs=False)

    def __init__(self):
        self.usage = Usage()

    async def chat(self, messages, **kwargs) -> Completion:
        self.usage.requests += 1
        last = messages[-1]["content"]
        if "should make the neuron fire" in last:
            return Completion("1. Zebra quilts vex jumpy folk.\n2. Qwerty uiop asdf.")
        if "should leave the neuron silent" in last:
            return Completion("1. The river flows slowly to the sea.\n2. Add two cups of flour.")
        pairs = [line.rsplit("\t", 1) for line in last.splitlines() if "\t" in line]
        token = max(pairs, key=lambda p: int(p[1]))[0].strip() or "space"
        if "Write the better explanation." in last:
            return Completion(f"It fires on the word {token} and on full stops.")
        return Completion(f"It fires on the word {token}.")

    async def placeholder_logprobs(self, *args, **kwargs):
        raise AssertionError("not a simulator here")

    async def check(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.name}


@pytest.mark.slow
def test_a_simulator_defined_here_runs_every_stage(tiny_collection, subject, tmp_path):
    from nxkit.explain import ExplainConfig, explain_and_score, shuffled_controls
    from nxkit.report import summary_table, write_report
    from nxkit.revise import ReviseConfig, revise_run
    from nxkit.runs import Run

    run = Run(tmp_path / "run")
    run.path.mkdir()
    (run.path / "activations").symlink_to(tiny_collection, target_is_directory=True)
    neurons = [NeuronId(5, n) for n in (0, 1, 2)]
    explainer, simulator = TopTokenExplainer(), KeywordSimulator()
    config = ExplainConfig(best_of=2, calibration_windows=2, valid_windows=3)
    done = explain_and_score(run, neurons, explainer, simulator, config, progress=False, control=False)
    assert [s.status for s in done] == ["done"] * 3 and all(s.shuffled_control_from is None for s in done)
    for s in done:
        assert s.explanation.startswith("the word") and s.simulator.kind == "keyword rule (test)"
        assert s.window_splits == ["top"] * 3 + ["random"] * 3 and s.scores.n_windows == 6
    assert run.manifest().explain.simulator == Component.of(simulator.describe())

    controls = shuffled_controls(run, simulator, progress=False)  # catches up on the controls not run yet
    assert [c.neuron_id for c in controls] == neurons
    for s in run.summaries(("done",)):
        assert (s.shuffled_control_from is None) == (s.shuffled_control_reason is not None)

    revisions = revise_run(run, subject, explainer, simulator, ReviseConfig(n_fire=2, n_silent=2), progress=False)
    assert [r.status for r in revisions] == ["done"] * 3
    scored_rounds = [rnd for r in revisions for rnd in r.rounds if rnd.scores_revised is not None]
    assert scored_rounds, [rnd.skipped_reason for r in revisions for rnd in r.rounds]
    for rnd in scored_rounds:  # revision scoring went through the simulator defined here
        assert rnd.scores_revised.n_windows == 6
    page = write_report(run).read_text()
    assert "keyword rule (test)" in page and "the word" in page
    assert "mean over 3 scored neurons" in summary_table(run)


def test_a_kept_revision_is_what_the_summary_table_export_and_report_show(tmp_path):
    from conftest import make_fake_run

    from nxkit.public import PublicDataset, export_run
    from nxkit.report import render_report, summary_table

    run = make_fake_run(tmp_path / "fake")  # neurons 0 and 1 of each layer have a kept revision
    nid = NeuronId(0, 0)
    summary = run.read_neuron(nid)
    assert summary.kept == "revised" and summary.explanation == "revised " + summary.original_explanation
    assert summary.top_and_random == 0.9 and summary.original_scores.top_and_random != 0.9
    assert "revised the word cat" in summary_table(run)
    page = render_report(run)
    assert "revised the word cat &lt;b&gt;0.0&lt;/b&gt;" in page and "original (before revision)" in page
    out = tmp_path / "public"
    export_run(run, out, neurons=[nid], progress=False)
    released = PublicDataset(out).neuron(0, 0)
    assert released.explanation == summary.explanation  # the kept one first, the original after it
    assert [e.explanation for e in released.results.scored_explanations] == [
        summary.explanation,
        summary.original_explanation,
    ]
    from nxkit.public import sidecar_path
    from nxkit.records import loads

    side = loads(sidecar_path(out, nid).read_text())  # what the release's schema has no field for
    assert side["window_splits"] == summary.window_splits and side["scores"] == summary.scores
    assert side["shuffled_control"] == summary.shuffled_control and side["detection"] is None


def test_released_windows_carry_their_split_from_the_records():
    from nxkit.public import PublicDataset, released_splits, released_windows

    ds = PublicDataset(Path(__file__).parent / "fixtures" / "public")
    neuron = ds.neuron(0, 1)
    assert released_splits(neuron) == ["top", "random"]
    assert [w.split for w in released_windows(neuron)] == ["top", "random"]
    neuron.record = None  # without the records nothing can be said: undefined, never guessed from position
    assert released_splits(neuron) == ["unknown", "unknown"]


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.add(node.module or "")
    return out


def test_dependencies_point_one_way():
    assert "subject" not in _imports("llm")
    assert _imports("score") <= {"prompts", "records"}
    assert not _imports("records")
    assert "explain" not in _imports("public") and "simulate" not in _imports("public")
    for view in ("viz", "widgets", "report"):  # views receive records; runs.py reads the files
        source = (PACKAGE / f"{view}.py").read_text()
        assert not re.search(r"read_text\(|open\(|json\.load", source), view


def test_no_isinstance_on_backends_or_simulators():
    for path in PACKAGE.glob("*.py"):
        source = path.read_text()
        assert not re.search(r"isinstance\([^)]*(Backend|Simulator)\b", source), path.name
        assert "repr(simulator)" not in source and 'LocalBackend" in' not in source, path.name


def test_the_atomic_writer_leaves_nothing_half_written(tmp_path):
    import threading

    from nxkit.files import atomic_directory, atomic_write

    target = atomic_write(tmp_path / "a" / "file.json", "old")

    def fail_midway(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail_midway)
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["file.json"]
    # many writers at once: the file always holds one writer's whole text, and no temporary file is left
    texts = [str(i) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts and len(list(target.parent.iterdir())) == 1
    # a folder appears whole or not at all, and replaces the one before it
    folder = tmp_path / "b"
    with pytest.raises(RuntimeError), atomic_directory(folder) as tmp:
        (tmp / "x").write_text("1")
        raise RuntimeError("stopped")
    assert not folder.exists() and not list(tmp_path.glob(".b.*"))
    with atomic_directory(folder) as tmp:
        (tmp / "y").write_text("2")
    assert [p.name for p in folder.iterdir()] == ["y"]


def test_no_import_cycle_between_collection_and_runs():
    """A run reads its collection (runs -> collect); collection knows nothing of runs."""
    assert not _imports("collect") & {"runs", "pipeline", "explain"}
