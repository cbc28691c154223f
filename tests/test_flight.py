"""Many neurons in flight against an OpenAI-compatible server on loopback (real HTTP through the `openai` client):
the same results as one at a time, a stopped run resumed, a 429 storm met by a shared backoff, a budget stop."""

from __future__ import annotations

import re

import pytest

from nxkit.explain_score import Budget, control_order, explain_and_score
from nxkit.explainers.base import ExplainConfig
from nxkit.llm.loopback import MODEL, LoopbackServer
from nxkit.llm.server import OpenAIBackend
from nxkit.records import NeuronId
from nxkit.runs import Run
from nxkit.simulators import make_simulator
from nxkit.simulators.prompted import SimulateConfig

NEURONS = [NeuronId(layer, n) for layer in (0, 5) for n in range(8)]
CONFIG = dict(best_of=2, calibration_windows=2, valid_windows=2, sim_window_tokens=16)


def make_run(tmp_path, collection, name: str) -> Run:
    run = Run(tmp_path / name)
    run.path.mkdir()
    (run.path / "activations").symlink_to(collection, target_is_directory=True)
    return run


def llms(server: LoopbackServer, max_concurrency: int):
    """A backend on the loopback server, whose answers are a real server's (echoed prompts with their top-20
    log-probabilities), and the simulator a real server gets: all at once."""
    backend = OpenAIBackend(
        MODEL, base_url=server.base_url, api_key="local", cache=False, max_concurrency=max_concurrency, backoff=0.05,
    )  # fmt: skip
    sim = make_simulator(backend, SimulateConfig())
    assert sim.mode == "all_at_once"
    return backend, sim


def outcome(run: Run) -> dict:
    """What a run concluded per neuron (not timings or usage)."""
    return {
        s.neuron_id: (
            s.status,
            s.explanation,
            [c.text for c in s.candidates],
            s.scores,
            s.shuffled_control_from,
            s.shuffled_control,
        )  # fmt: skip
        for s in run.summaries()
    }


@pytest.fixture(scope="module")
def reference(tiny_collection, tmp_path_factory):
    """The sample explained one neuron and one request at a time."""
    run = make_run(tmp_path_factory.mktemp("flight"), tiny_collection, "one-at-a-time")
    with LoopbackServer(latency=0.0) as server:
        backend, sim = llms(server, 1)
        explain_and_score(run, NEURONS, backend, sim, ExplainConfig(max_neurons_in_flight=1, **CONFIG), progress=False)
        assert server.max_in_flight == 1
    result = outcome(run)
    assert [v[0] for v in result.values()].count("done") >= 12
    assert all(v[4] is not None for v in result.values() if v[0] == "done")  # every done neuron has its control
    return result


def test_control_partners_are_a_seeded_permutation_fixed_in_advance():
    order = control_order(NEURONS, seed=3)
    assert order == control_order(list(reversed(NEURONS)), seed=3) and order != control_order(NEURONS, seed=4)
    firsts = [order[n][0] for n in NEURONS]
    assert sorted(firsts) == sorted(NEURONS) and all(order[n][0] != n for n in NEURONS)  # a derangement
    assert all(sorted(order[n] + [n]) == sorted(NEURONS) for n in NEURONS)


def test_many_neurons_in_flight_give_the_same_results(reference, tiny_collection, tmp_path):
    run = make_run(tmp_path, tiny_collection, "in-flight")
    with LoopbackServer(latency=0.2) as server:  # long enough for the client to fill the bound on a busy machine
        backend, sim = llms(server, 64)
        done = explain_and_score(run, NEURONS, backend, sim, ExplainConfig(max_neurons_in_flight=16, **CONFIG),
                                 progress=False)  # fmt: skip
        assert server.max_in_flight >= 16  # many requests really were in flight at once
    assert outcome(run) == reference and len(done) == len(NEURONS)
    for s in done:  # usage is counted per neuron even with many neurons sharing one backend
        assert s.usage.requests > 0
    assert sum(s.usage.requests for s in run.summaries()) == backend.usage.requests


class Stop(Exception):
    pass


def test_a_run_stopped_mid_flight_resumes_without_recomputing(reference, tiny_collection, tmp_path):
    run = make_run(tmp_path, tiny_collection, "stopped")
    finished = []

    def stop_after_five(summary):
        finished.append(summary.neuron_id)
        if len(finished) == 5:
            raise Stop

    config = ExplainConfig(max_neurons_in_flight=8, **CONFIG)
    with LoopbackServer(latency=0.02) as server:
        backend, sim = llms(server, 32)
        with pytest.raises(Stop):
            explain_and_score(run, NEURONS, backend, sim, config, on_neuron_done=stop_after_five, progress=False)
        first = {s.neuron_id: s for s in run.summaries()}
        assert 5 <= len(first) < len(NEURONS)
        # the run table (Parquet plus its journal, not rebuilt from the summaries) holds exactly the finished neurons
        table = run._table_frame()
        assert {NeuronId(int(a), int(b)) for a, b in zip(table.layer, table.neuron, strict=True)} == set(first)
        explain_and_score(run, NEURONS, backend, sim, config, progress=False)
    for nid, before in first.items():  # finished neurons were not explained or scored again
        after = run.read_neuron(nid)
        assert (after.candidates, after.scores, after.seconds) == (before.candidates, before.scores, before.seconds)
    assert outcome(run) == reference


def test_a_429_storm_pauses_every_request_and_the_run_completes(reference, tiny_collection, tmp_path):
    run = make_run(tmp_path, tiny_collection, "storm")
    with LoopbackServer(latency=0.02, storm=(0.05, 0.4), retry_after=0.4) as server:
        backend, sim = llms(server, 8)
        explain_and_score(run, NEURONS, backend, sim, ExplainConfig(max_neurons_in_flight=8, **CONFIG),
                          progress=False)  # fmt: skip
    assert outcome(run) == reference
    assert server.rate_limited > 0 and backend.usage.retries == server.rate_limited
    # one shared pause: only requests already sent when the storm began were refused, far fewer than the tasks
    assert server.rate_limited <= 2 * 8 < server.requests - server.rate_limited


def test_a_budget_stops_cleanly_and_the_run_resumes(reference, tiny_collection, tmp_path):
    run = make_run(tmp_path, tiny_collection, "budget")
    config = ExplainConfig(max_neurons_in_flight=4, **CONFIG)
    with LoopbackServer(latency=0.0) as server:
        backend, sim = llms(server, 8)
        explain_and_score(run, NEURONS, backend, sim, config, budget=Budget(max_requests=60), progress=False)
        stopped = run.manifest().stopped
        assert "request budget is spent" in stopped
        assert 0 < len(run.summaries()) < len(NEURONS) and backend.usage.requests < 60 + 4 * 20
        explain_and_score(run, NEURONS, backend, sim, config, progress=False)
        # a budget counts the call's own traffic: this backend already spent far more than 60 requests
        other = make_run(tmp_path, tiny_collection, "budget-again")
        explain_and_score(other, NEURONS[:2], backend, sim, config, budget=Budget(max_requests=60), progress=False)
        assert len(other.summaries()) == 2
    assert run.manifest().stopped is None
    assert outcome(run) == reference  # the same controls too: a control whose partner was not explained waited


def test_nxkit_run_stops_at_its_budget_and_resumes(tiny_collection, tmp_path, monkeypatch, capsys):
    from nxkit.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "local")
    monkeypatch.setenv("NXKIT_CACHE", str(tmp_path / "cache"))  # a response cache of its own
    run = make_run(tmp_path, tiny_collection, "cli")
    with LoopbackServer(latency=0.2) as server:  # requests overlap however slowly the client sends them
        argv = ["run", "--run-dir", str(run.path), "--corpus", "fortunes", "--explainer", MODEL,
                "--base-url", server.base_url, "--simulate.mode", "chat_text", "--neurons", "5:1", "5:2", "5:3",
                "5:4", "--explain.best-of", "2", "--explain.valid-windows", "2", "--explain.calibration-windows", "1",
                "--explain.sim-window-tokens", "16", "--explain.max-neurons-in-flight", "2", "--revise.rounds", "0",
                "--no-report"]  # fmt: skip
        assert main([*argv, "--max-requests", "12"]) == 0
        out = capsys.readouterr().out
        assert "stopped: the request budget is spent" in out and "neuron sides left" in out
        assert 0 < len(run.summaries()) < 4 and not run.side("negative").summaries()  # stopped before that side
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "positive and negative sides: " in out and "0 of 8 neuron sides to do" not in out
    assert [s.status for s in run.summaries()] == ["done"] * 4 and run.manifest().stopped is None
    assert [s.status for s in run.side("negative").summaries()] == ["done"] * 4
    assert server.max_in_flight > 1
    # each control used the partner fixed in advance, even for neurons whose partner came only after the resume: the
    # first along its seeded order with another explanation whose control is defined (the loopback simulator predicts
    # 9 on the explanation's words: a partner none of whose words is in the windows predicts a constant)
    from nxkit.explain_score import CONTROL_TRIES
    from nxkit.heldout import scored_windows

    done = {s.neuron_id: s for s in run.summaries()}
    for nid, s in done.items():
        others = [p for p in control_order(list(done), seed=0)[nid] if done[p].explanation != s.explanation]
        tokens = {t.strip().lower() for w in scored_windows(run.read_results(nid), s.window_splits) for t in w.tokens}

        def defined(p, tokens=tokens):
            words = set(re.findall(r"\w+", done[p].explanation.lower().removeprefix("it fires on")))
            return bool(words & tokens)

        expected = next(
            (p for p in others[: CONTROL_TRIES - 1] if defined(p)), others[min(len(others), CONTROL_TRIES) - 1]
        )
        assert s.shuffled_control_from == expected


def test_revision_of_many_neurons_in_flight_gives_the_same_records(tiny_collection, subject, tmp_path):
    from nxkit.revise import ReviseConfig, revise_run

    records, busiest = {}, {}
    for label, in_flight in (("one", 1), ("many", 8)):
        run = make_run(tmp_path, tiny_collection, f"revise-{label}")
        with LoopbackServer(latency=0.0) as server:
            backend, sim = llms(server, 32)
            explain_and_score(run, NEURONS[8:14], backend, sim, ExplainConfig(**CONFIG), progress=False)
        with LoopbackServer(latency=0.2) as server:  # a server of its own: what revision alone keeps in flight
            backend, sim = llms(server, 32)
            config = ReviseConfig(n_fire=2, n_silent=2, max_neurons_in_flight=in_flight)
            revisions = revise_run(run, subject, backend, sim, config, progress=False)
            busiest[label] = server.max_in_flight
        records[label] = [(r.neuron_id, r.status, r.final_explanation, r.score_after, len(r.rounds)) for r in revisions]
    assert records["one"] == records["many"] and any(r[1] == "done" for r in records["many"])
    assert busiest["many"] > busiest["one"]


def test_revision_stops_at_its_budget_and_a_later_call_finishes(tiny_collection, subject, tmp_path):
    from nxkit.revise import ReviseConfig, pending, revise_run

    run = make_run(tmp_path, tiny_collection, "revise-budget")
    neurons = NEURONS[8:12]
    with LoopbackServer(latency=0.0) as server:
        backend, sim = llms(server, 8)
        explain_and_score(run, neurons, backend, sim, ExplainConfig(**CONFIG), progress=False)
        config = ReviseConfig(n_fire=2, n_silent=2, max_neurons_in_flight=1)
        first = revise_run(run, subject, backend, sim, config, progress=False, budget=Budget(max_requests=1))
        assert 1 <= len(first) < len(neurons)  # the first neuron spends the budget; no other starts
        assert run.manifest().stopped.startswith("revision: the request budget is spent")
        left = pending(run, neurons)
        assert len(left) == len(neurons) - len(first)
        rest = revise_run(run, subject, backend, sim, config, progress=False)
    assert len(rest) == len(neurons) and not pending(run, neurons)
