"""The seams between stages: a simulator defined here plugs into every stage untouched, windows carry their split,
a kept revision is what every view shows, and dependencies point one way."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from nxkit.llm.base import Capabilities, Completion
from nxkit.records import SIMULATED_NORMALIZED_ACTIVATIONS, Component, NeuronId, SequenceSimulation, Usage, register

PACKAGE = Path(__file__).resolve().parent.parent / "nxkit"


class KeywordSimulator:
    """Not an LLM: predicts 9 on tokens that are words of the explanation, 0 elsewhere."""

    usage = Usage()

    async def simulate_many(self, explanation, windows: list[list[str]]) -> list[SequenceSimulation]:
        words = set(re.findall(r"\w+", explanation.text.lower()))
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

    llm = None  # sends no LLM traffic


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
    from nxkit.explain_score import explain_and_score, shuffled_controls
    from nxkit.explainers.base import ExplainConfig
    from nxkit.revise import ReviseConfig, revise_run
    from nxkit.runs import Run
    from nxkit.views.report import summary_table, write_report

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
        assert rnd.scores_revised.n_windows == 4  # chosen on the calibration windows (2 top and 2 random)
    page = write_report(run).read_text()
    assert "keyword rule (test)" in page and "the word" in page
    assert "mean over 3 scored neurons" in summary_table(run)


@register
@dataclass
class LengthScore:
    """The result of the scorer defined here: how many words the kept explanation has."""

    words: int | None = None
    flag: str | None = None


class LengthScorer:
    """A scorer defined here (not an LLM): the kept explanation's length in words."""

    name = "length"
    columns = ("words", "flag")

    async def score(self, context):
        assert context.windows and {w.split for w in context.windows} <= {"top", "random"}  # labelled valid windows
        return LengthScore(len(context.explanation.text.split())), []

    def summary_line(self, table):
        words = table["length_words"].dropna()
        return f"length: mean {words.mean():.1f} words over {len(words)} neurons" if len(words) else None


def test_a_scorer_defined_here_plugs_into_a_run(tmp_path):
    from conftest import make_fake_run

    from nxkit import scorers
    from nxkit.explain_score import explain_and_score
    from nxkit.explainers.base import ExplainConfig, ExplainError
    from nxkit.runs import Run
    from nxkit.views.report import render_report, summary_table

    fake = make_fake_run(tmp_path / "fake", revise=False)
    run = Run(tmp_path / "run")
    run.path.mkdir()
    (run.path / "activations").symlink_to(fake.activations_dir, target_is_directory=True)
    neurons = [NeuronId(0, 0), NeuronId(0, 1), NeuronId(1, 2)]
    with pytest.raises(ExplainError, match="unknown scorer 'length'"):
        ExplainConfig(scorers=["simulation", "length"])
    scorers.register_scorer(LengthScorer())
    try:
        config = ExplainConfig(best_of=1, scorers=["simulation", "length"])
        done = explain_and_score(run, neurons, TopTokenExplainer(), KeywordSimulator(), config, progress=False)
        assert [s.status for s in done] == ["done"] * 3
        for s in done:
            again = run.read_neuron(s.neuron_id)  # written and read back typed
            assert again.scorer_results == {"length": LengthScore(len(s.explanation.split()))}
        table = run.table()
        assert list(table["length_words"]) == [len(s.explanation.split()) for s in done]
        mean = sum(len(s.explanation.split()) for s in done) / 3
        assert f"length: mean {mean:.1f} words over 3 neurons" in summary_table(run)
        assert "length words" in render_report(run)
    finally:
        scorers.unregister_scorer("length")
    assert "length_words" not in scorers.table_columns()


def test_the_exact_simulator_reads_the_formula_never_the_text():
    from nxkit.formulas import Formula, Primitive
    from nxkit.llm.base import run_sync
    from nxkit.records import Candidate
    from nxkit.simulators import make_simulator

    sim = make_simulator("exact")
    window = [" the", "th", " th", "ink"]
    spaced, bare = Formula(Primitive("token", " th")), Formula(Primitive("token", "th"))
    assert spaced.render() != bare.render()  # distinct formulas read differently
    same_text = "the same words for two formulas"
    a, b = (run_sync(sim.simulate_many(Candidate(same_text, formula=f.to_json()), [window]))[0] for f in (spaced, bare))
    assert a.expected_activations == [0, 0, 10, 0] and b.expected_activations == [0, 10, 0, 0]


def test_a_kept_revision_is_what_the_summary_table_export_and_report_show(tmp_path):
    from conftest import make_fake_run

    from nxkit.public import PublicDataset, export_run
    from nxkit.views.report import render_report, summary_table

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
    assert side["shuffled_control"] == summary.shuffled_control and side["scorer_results"] == {}


def test_released_windows_carry_their_split_from_the_records():
    from nxkit.public import PublicDataset, released_splits, released_windows

    ds = PublicDataset(Path(__file__).parent / "fixtures" / "public")
    neuron = ds.neuron(0, 1)
    assert released_splits(neuron) == ["top", "random"]
    assert [w.split for w in released_windows(neuron)] == ["top", "random"]
    neuron.record = None  # without the records nothing can be said: undefined, never guessed from position
    assert released_splits(neuron) == ["unknown", "unknown"]


def _modules() -> dict[str, Path]:
    """Every module of the package, subpackages included, by dotted name below `nxkit` (`llm.server`)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def _imports(module: str, top_level_only: bool = False) -> set[str]:
    """The package modules `module` imports (dotted below `nxkit`; `from . import x` counts as module x)."""
    modules = _modules()
    path = modules[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from .. import prompts` imports a module
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if sub in modules else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nxkit"):
            out.add(node.module.removeprefix("nxkit").removeprefix("."))
    return {m for m in out if m}


def test_the_subpackages_are_the_seams():
    modules = _modules()
    for seam in ("collection", "llm", "explainers", "simulators", "scorers", "training", "views"):
        assert seam in modules, seam
    for seam in ("llm", "explainers", "simulators", "scorers"):  # the protocol in base.py, the factory in __init__
        assert f"{seam}.base" in modules, seam
    long = {m: n for m, p in modules.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"modules over 600 lines: {long}"


def test_dependencies_point_one_way():
    assert not any(m.startswith("collection") for m in _imports("llm.server") | _imports("llm.local"))
    assert _imports("scorers.correlation") <= {"prompts", "records"}
    records = [m for m in _modules() if m == "records" or m.startswith("records.")]
    assert all(_imports(m) <= set(records) for m in records)  # records import nothing of the method
    assert not {m for m in _imports("public") if m.startswith(("explain", "simulators"))}
    for view in ("views.viz", "views.widgets", "views.report"):  # views receive records; runs.py reads the files
        source = _modules()[view].read_text()
        assert not re.search(r"read_text\(|open\(|json\.load", source), view


def test_no_import_cycle():
    """Module-level imports between the package's modules form no cycle (a package's `__init__` counts as the
    package: a module imports its package first)."""
    graph = {m: _imports(m, top_level_only=True) for m in _modules()}
    assert sum(len(v) for v in graph.values()) > 100  # the walk sees the subpackages' imports
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, m, n]))
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_reading_a_finished_collection_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, nxkit.collection.activations, nxkit.runs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_isinstance_on_backends_or_simulators():
    paths = list(PACKAGE.rglob("*.py"))
    assert any(p.parent != PACKAGE for p in paths)
    for path in paths:
        source = path.read_text()
        assert not re.search(r"isinstance\([^)]*(Backend|Simulator)\b", source), path.name
        assert "repr(simulator)" not in source and 'LocalBackend" in' not in source, path.name
        # no probing of undeclared members: every member a caller uses is on its protocol
        assert not re.search(r"getattr\((explainer|simulator|backend|component)\b", source), path.name


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
