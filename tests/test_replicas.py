"""One model on several servers (issue 31, part 3): URLs given as a list, a string or a file; requests spread over the
replicas; a replica killed mid-run rests while the run finishes on the other, with the same results as one server."""

from __future__ import annotations

import pytest
from conftest import make_fake_run

from nxkit.llm.base import LLMError
from nxkit.llm.loopback import MODEL, LoopbackProcess
from nxkit.llm.server import OpenAIBackend, endpoint_urls
from nxkit.records import NeuronId


def test_server_urls_from_a_list_a_string_or_a_file(tmp_path):
    assert endpoint_urls(None) == [None]
    assert endpoint_urls("http://a/v1") == ["http://a/v1"]
    assert endpoint_urls(["http://a/v1", "http://b/v1"]) == ["http://a/v1", "http://b/v1"]
    assert endpoint_urls("http://a/v1, http://b/v1 http://a/v1") == ["http://a/v1", "http://b/v1"]
    (tmp_path / "urls.txt").write_text("# the fleet\nhttp://a/v1\n\nhttp://c/v1  # second\n")
    assert endpoint_urls([f"@{tmp_path / 'urls.txt'}", "http://d/v1"]) == ["http://a/v1", "http://c/v1", "http://d/v1"]
    with pytest.raises(LLMError, match="no file of server URLs"):
        endpoint_urls(f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(LLMError, match="no server URL"):
        endpoint_urls(" , ")


def test_a_bad_replica_url_is_named_before_any_request():
    from nxkit.pipeline import PipelineConfig, PipelineError

    with pytest.raises(PipelineError, match="ftp://nowhere"):
        PipelineConfig(explainer=MODEL, base_url=["http://127.0.0.1:8000/v1", "ftp://nowhere"]).check()


def _run(tmp_path, name, urls, kill=None):
    from nxkit.explain_score import explain_and_score
    from nxkit.explainers.base import ExplainConfig
    from nxkit.runs import Run
    from nxkit.simulators import make_simulator
    from nxkit.simulators.prompted import SimulateConfig

    fake = make_fake_run(tmp_path / f"{name}-fake", revise=False)
    run = Run(tmp_path / name)
    run.path.mkdir()
    (run.path / "activations").symlink_to(fake.activations_dir, target_is_directory=True)
    neurons = [NeuronId(layer, n) for layer in (0, 1) for n in range(4)]
    config = ExplainConfig(best_of=2, calibration_windows=2, valid_windows=2, max_neurons_in_flight=1)
    backend = OpenAIBackend(MODEL, base_url=urls, api_key="local", cache=False, prompt_logprobs=False, backoff=0.05)
    sim = make_simulator(backend, SimulateConfig(mode="chat_text"))
    done = explain_and_score(run, neurons, backend, sim, config, progress=False, on_neuron_done=kill)
    return run, done, backend


def test_a_replica_killed_mid_run_rests_and_the_run_finishes_alike(tmp_path):
    with LoopbackProcess(latency=0.02, answers="short") as a, LoopbackProcess(latency=0.02, answers="short") as b:
        killed = []

        def kill(summary):
            if not killed:
                served = b.stats()["requests"]
                b.__exit__(None, None, None)  # the process ends: its connections die with it
                killed.append(served)

        run, done, backend = _run(tmp_path, "two", [a.base_url, b.base_url], kill)
        served_a = a.stats()["requests"]
    assert [s.status for s in done] == ["done"] * 8
    usage = backend.endpoint_usage()
    assert list(usage) == [a.base_url, b.base_url]
    assert killed and killed[0] > 0  # b served part of the first neuron before it was killed
    assert usage[b.base_url].requests == killed[0]  # nothing after the kill reached it
    assert usage[b.base_url].retries >= 1  # requests sent to it after the kill failed and went to a
    assert usage[a.base_url].requests == served_a
    assert backend.usage.requests == served_a + killed[0]
    recorded = run.manifest().endpoints  # the run manifest keeps the share of each replica
    assert {url: u.requests for url, u in recorded.items()} == {a.base_url: served_a, b.base_url: killed[0]}
    with LoopbackProcess(latency=0.02, answers="short") as one:
        alone, done_alone, _ = _run(tmp_path, "one", one.base_url)
    assert [s.explanation for s in done] == [s.explanation for s in done_alone]
    assert [s.top_and_random for s in done] == [s.top_and_random for s in done_alone]


def test_requests_spread_over_replicas(tmp_path):
    import asyncio

    from nxkit.llm.base import run_sync

    with LoopbackProcess(latency=1.0, answers="short") as a, LoopbackProcess(latency=1.0, answers="short") as b:
        backend = OpenAIBackend(MODEL, base_url=f"{a.base_url},{b.base_url}", api_key="local", cache=False,
                                max_concurrency=4)  # fmt: skip
        run_sync(backend.check())  # checked first: every request is picked before any answer comes back

        async def many():
            messages = [[{"role": "user", "content": f"what is {i}?"}] for i in range(16)]
            return await asyncio.gather(*(backend.chat(m) for m in messages))

        assert len(run_sync(many())) == 16
        got = {url: u.requests for url, u in backend.endpoint_usage().items()}
    assert got == {a.base_url: 8, b.base_url: 8}  # the least busy each time: an even share
