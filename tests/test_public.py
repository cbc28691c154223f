"""The public-release reader and writer, against a real HTTP server on 127.0.0.1 serving fixture files.

The server serves tests/fixtures/public in the release's layout, answers 404 for the neurons it lacks,
counts every request, and can drop chosen responses (closing the socket before the headers or halfway
through the body) to check retries, the cache and partial batches.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from nxkit.public import (
    ACTIVATIONS,
    EXPLANATIONS,
    FetchFailed,
    NeuronNotFound,
    PublicDataError,
    PublicDataset,
    export_run,
    parse_neuron_record,
    parse_simulation_results,
    released_rows,
    serve_directory,
    write_neuron,
)
from nxkit.records import NeuronId, NeuronSimulationResults, dump_simulation_results

FIXTURES = Path(__file__).parent / "fixtures" / "public"
FIXTURE_NEURONS = [NeuronId(0, 1), NeuronId(5, 7)]  # both files present
ONLY_ACTIVATIONS = NeuronId(0, 2)  # its explanations file is missing
ABSENT = NeuronId(0, 3)  # no files at all


class FixtureServer:
    """A real HTTP server on loopback (ephemeral port) over a directory, with request counts and drops."""

    def __init__(self, root: Path, hold_until: int = 0):
        self.root = root
        # the first requests wait until `hold_until` of them are in flight at once (0: none wait), so a test sees
        # a client's parallelism from counts, never from timing
        self.hold_until, self.gate = hold_until, threading.Event()
        self.requests: collections.Counter[str] = collections.Counter()
        self.drops: dict[str, list[str]] = {}  # path -> modes still to apply: "body", "unsized", "headers"
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, self, directory=str(root)))
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=partial(self.httpd.serve_forever, poll_interval=0.05), daemon=True)

    def drop(self, path: str, *modes: str) -> None:
        """Drop the next responses for `path`, one per mode."""
        self.drops[path] = list(modes)

    def count(self, part: str, nid: NeuronId) -> int:
        return self.requests[_path(part, nid)]


def _path(part: str, nid: NeuronId) -> str:
    suffix = ".jsonl" if part == EXPLANATIONS else ".json"
    return f"/{part}/{nid.layer_index}/{nid.neuron_index}{suffix}"


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, server_state: FixtureServer, *args, **kwargs):
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        state = self.state
        with state.lock:
            state.requests[self.path] += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            if state.in_flight >= state.hold_until:
                state.gate.set()
            modes = state.drops.get(self.path)
            mode = modes.pop(0) if modes else None
        try:
            state.gate.wait(timeout=10)  # only a client that never reaches hold_until requests waits
        finally:
            # counted out before answering: a client that has its answer has nothing in flight here, so the
            # count never includes a finished request whose handler has not returned yet
            with state.lock:
                state.in_flight -= 1
        if mode == "headers":  # close before any answer: the client sees the connection drop
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif mode in ("body", "unsized"):  # send half the file, close; "body" first promises all of it
            body = (state.root / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if mode == "body":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            super().do_GET()


@pytest.fixture
def server():
    srv = FixtureServer(FIXTURES)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def dataset(server, tmp_path):
    """The reader pointed at the local server, with its own empty cache and no waiting between retries."""
    return PublicDataset(server.base, cache=tmp_path / "cache", workers=4, retries=2, timeout=10, backoff=0)


def _fixture_json(part: str, nid: NeuronId) -> dict:
    return json.loads((FIXTURES / _path(part, nid).lstrip("/")).read_text(encoding="utf-8"))


def _untag(obj):
    if isinstance(obj, list):
        return [_untag(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _untag(v) for k, v in obj.items() if k != "dataclass_name"}
    return obj


# --- reading ---------------------------------------------------------------------------------------


def test_reads_a_neuron_over_http_into_our_records(dataset):
    got = dataset.neuron(0, 1)
    raw = _fixture_json(ACTIVATIONS, NeuronId(0, 1))
    assert got.record.neuron_id == NeuronId(0, 1)
    assert got.record.most_positive_activation_records[0].tokens == raw["most_positive_activation_records"][0]["tokens"]
    assert got.record.quantile_boundaries == [0.0, 1.25]
    assert got.record.max_activation == 4.25
    assert got.explanation == " the word cat and other names for house cats"
    assert (
        got.score
        == _fixture_json(EXPLANATIONS, NeuronId(0, 1))["scored_explanations"][0]["scored_simulation"][
            "ev_correlation_score"
        ]
    )
    sim = got.results.scored_explanations[0].scored_simulation.scored_sequence_simulations[0].simulation
    assert sim.activation_scale == "neuron_activations"
    assert sim.uncalibrated_simulation.activation_scale == "simulated_normalized_activations"


def test_untagged_files_load_as_dataclasses_with_null_moments(dataset):
    got = dataset.neuron(5, 7)
    assert "dataclass_name" not in (FIXTURES / "collated-activations/5/7.json").read_text()
    assert got.record.neuron_id == NeuronId(5, 7)
    assert got.record.mean is None and got.record.kurtosis is None
    assert got.record.most_positive_activation_records[0].tokens == ["Caf", "é", " au", " lait"]
    assert isinstance(got.results, NeuronSimulationResults)
    assert got.explanation == " accented letters in words borrowed from French"


def test_cache_means_a_second_fetch_sends_no_request(server, dataset, tmp_path):
    first = dataset.neuron(0, 1)
    assert server.count(EXPLANATIONS, NeuronId(0, 1)) == 1 and server.count(ACTIVATIONS, NeuronId(0, 1)) == 1
    again = PublicDataset(server.base, cache=tmp_path / "cache").neuron(0, 1)  # a fresh reader, same cache
    assert sum(server.requests.values()) == 2
    assert again == first
    cached = dataset.cache_path(dataset.url(ACTIVATIONS, NeuronId(0, 1)))
    assert cached.relative_to(tmp_path / "cache").parts[1:] == ("collated-activations", "0", "1.json")
    assert cached.read_bytes() == (FIXTURES / "collated-activations/0/1.json").read_bytes()


def test_missing_neuron_names_the_neuron_and_url_and_is_not_retried(server, dataset):
    with pytest.raises(NeuronNotFound) as info:
        dataset.simulation_results(0, 3)
    url = f"{server.base}/explanations/0/3.jsonl"
    assert "layer 0 neuron 3" in str(info.value) and url in str(info.value) and "404" in str(info.value)
    assert info.value.url == url and info.value.neuron_id == NeuronId(0, 3)
    assert server.count(EXPLANATIONS, ABSENT) == 1
    dataset.fetch_many([ABSENT], parts=[EXPLANATIONS], progress=False)
    assert server.count(EXPLANATIONS, ABSENT) == 2  # a 404 is not cached: the file may appear later


@pytest.mark.parametrize("modes", [("body",), ("headers",), ("unsized",), ("body", "headers")])
def test_dropped_connection_is_retried(server, dataset, modes):
    nid = NeuronId(5, 7)
    server.drop(_path(ACTIVATIONS, nid), *modes)
    record = dataset.neuron_record(5, 7)
    assert record.neuron_id == nid
    assert server.count(ACTIVATIONS, nid) == len(modes) + 1
    cached = dataset.cache_path(dataset.url(ACTIVATIONS, nid))
    assert cached.read_bytes() == (FIXTURES / "collated-activations/5/7.json").read_bytes()


def test_connection_dropped_every_time_gives_up_after_bounded_retries(server, dataset):
    nid = NeuronId(0, 1)
    server.drop(_path(EXPLANATIONS, nid), *["body"] * 10)
    with pytest.raises(FetchFailed) as info:
        dataset.simulation_results(0, 1)
    assert "layer 0 neuron 1" in str(info.value) and f"{server.base}/explanations/0/1.jsonl" in str(info.value)
    assert server.count(EXPLANATIONS, nid) == dataset.retries + 1
    assert not dataset.cache_path(dataset.url(EXPLANATIONS, nid)).exists()  # half a file is never cached


def test_no_server_gives_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ds = PublicDataset(f"http://127.0.0.1:{port}/data", cache=tmp_path, retries=1, backoff=0)
    with pytest.raises(FetchFailed) as info:
        ds.neuron_record(2, 30)
    message = str(info.value)
    assert "layer 2 neuron 30" in message and f"http://127.0.0.1:{port}/data/collated-activations/2/30.json" in message
    assert "2 tries" in message and "network" in message


def test_unresolvable_host_fails_at_once_and_says_there_is_no_network(tmp_path, monkeypatch):
    import urllib.request

    tries = []
    real = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: tries.append(a) or real(*a, **k))
    ds = PublicDataset("https://nxkit-test.invalid/data", cache=tmp_path, retries=5, backoff=10)
    with pytest.raises(
        FetchFailed, match=r"layer 1 neuron 2.*https://nxkit-test\.invalid/data/explanations/1/2\.jsonl"
    ):
        ds.simulation_results(1, 2)
    assert len(tries) == 1  # no retries (5 were allowed): a name that does not resolve will not resolve later


def test_batch_keeps_what_it_got_and_a_retry_fetches_only_the_missing(server, dataset):
    broken = NeuronId(5, 7)
    server.drop(_path(ACTIVATIONS, broken), *["headers"] * 10)
    wanted = [*FIXTURE_NEURONS, ONLY_ACTIVATIONS, ABSENT]
    first = dataset.fetch_many(wanted, progress=False)
    assert list(first.neurons) == [NeuronId(0, 1)]
    assert first.failed == [ONLY_ACTIVATIONS, ABSENT, broken]
    assert isinstance(first.errors[ONLY_ACTIVATIONS], NeuronNotFound)
    assert isinstance(first.errors[ABSENT], NeuronNotFound)
    assert isinstance(first.errors[broken], FetchFailed)
    assert "layer 5 neuron 7" in str(first.errors[broken]) and "/collated-activations/5/7.json" in str(
        first.errors[broken]
    )
    # What arrived for the failed neurons is kept.
    assert first.partial[ONLY_ACTIVATIONS].record is not None and first.partial[ONLY_ACTIVATIONS].results is None
    assert first.partial[broken].results is not None and first.partial[broken].record is None
    assert ABSENT not in first.partial
    with pytest.raises(PublicDataError, match="3 of 4 neurons failed"):
        first.raise_errors()

    server.drop(_path(ACTIVATIONS, broken))  # the network is back
    before = server.requests.copy()
    second = dataset.fetch_many(first.failed, progress=False)
    sent = server.requests - before
    assert sent == collections.Counter(
        {
            _path(ACTIVATIONS, broken): 1,  # only the file that failed
            _path(EXPLANATIONS, ONLY_ACTIVATIONS): 1,  # still missing: asked again
            _path(EXPLANATIONS, ABSENT): 1,
            _path(ACTIVATIONS, ABSENT): 1,
        }
    )
    assert list(second.neurons) == [broken]
    assert second.neurons[broken].record.neuron_id == broken


def test_batch_runs_in_parallel_within_the_bound(tmp_path):
    srv = FixtureServer(FIXTURES, hold_until=3)
    srv.thread.start()
    try:
        ds = PublicDataset(srv.base, cache=tmp_path, workers=3, retries=0)
        result = ds.fetch_many([(9, i) for i in range(12)], parts=[ACTIVATIONS], progress=False)
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
    assert len(result.errors) == 12 and sum(srv.requests.values()) == 12
    assert srv.max_in_flight == 3


def test_local_directory_and_file_url_read_in_place(tmp_path):
    for base in (FIXTURES, FIXTURES.as_uri(), str(FIXTURES) + "/"):
        ds = PublicDataset(base, cache=tmp_path / "unused")
        assert ds.neuron(0, 1).explanation == " the word cat and other names for house cats"
        with pytest.raises(NeuronNotFound, match=r"layer 0 neuron 3 .*collated-activations/0/3\.json"):
            ds.neuron_record(0, 3)
    assert not (tmp_path / "unused").exists()


def test_blob_paths_map_to_https():
    ds = PublicDataset("az://openaipublic/neuron-explainer/data")
    assert ds.url(EXPLANATIONS, (3, 4)) == (
        "https://openaipublic.blob.core.windows.net/neuron-explainer/data/explanations/3/4.jsonl"
    )


def test_bad_arguments_say_what_is_wrong():
    ds = PublicDataset(FIXTURES)
    with pytest.raises(ValueError, match="unknown part"):
        ds.url("neurons", (0, 1))
    with pytest.raises(ValueError, match="start at 0"):
        ds.neuron_record(-1, 3)
    with pytest.raises(ValueError, match="pair of integers"):
        ds.fetch_many(["0/1"], progress=False)
    with pytest.raises(ValueError, match="file://"):
        PublicDataset("s3://bucket/data")


def test_files_that_hold_something_else_are_refused_with_their_url():
    text = (FIXTURES / "collated-activations/0/1.json").read_text()
    with pytest.raises(PublicDataError, match=r"x\.json holds layer 0 neuron 1, not layer 0 neuron 9"):
        parse_neuron_record(text, "x.json", NeuronId(0, 9))
    with pytest.raises(PublicDataError, match="not NeuronSimulationResults"):
        parse_simulation_results(text, "y.jsonl")
    with pytest.raises(PublicDataError, match="z.json is not a file of the release's schema"):
        parse_neuron_record(text[:40], "z.json")


# --- writing ---------------------------------------------------------------------------------------


def test_writer_reproduces_the_release_files_byte_for_byte(dataset, tmp_path):
    """Tagged fixtures come back identical; untagged ones come back tagged, with the same content."""
    out = tmp_path / "export"
    for nid in FIXTURE_NEURONS:
        got = dataset.neuron(nid.layer_index, nid.neuron_index)
        write_neuron(out, got.record, got.results)
    write_neuron(out, dataset.neuron_record(0, 2))
    for path in sorted(p for p in FIXTURES.rglob("*.json*")):
        written = out / path.relative_to(FIXTURES)
        if "dataclass_name" in path.read_text(encoding="utf-8"):
            assert written.read_bytes() == path.read_bytes(), path
        else:
            assert _untag(json.loads(written.read_text())) == json.loads(path.read_text()), path
            assert written.read_text().startswith('{"dataclass_name":')
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json*")) == sorted(
        p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.json*")
    )
    # ... and what we wrote reads back, over HTTP, into equal objects.
    with serve_directory(out) as base:
        back = PublicDataset(base, cache=tmp_path / "cache2").fetch_many(FIXTURE_NEURONS, progress=False)
    assert back.errors == {}
    for nid in FIXTURE_NEURONS:
        assert back.neurons[nid] == dataset.neuron(nid.layer_index, nid.neuron_index)


def test_explanations_file_is_one_line(tmp_path):
    results = PublicDataset(FIXTURES).simulation_results(0, 1)
    (path,) = write_neuron(tmp_path, results=results)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[1:] == [""] and lines[0] == dump_simulation_results(results)


def test_serve_directory_serves_and_refuses_non_directories(tmp_path):
    with serve_directory(FIXTURES) as base:
        assert base.startswith("http://127.0.0.1:")
        assert PublicDataset(base, cache=tmp_path).neuron(5, 7).record.neuron_id == NeuronId(5, 7)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        with serve_directory(tmp_path / "nope"):
            pass


def test_export_run_needs_explanations(tmp_path):
    with pytest.raises(ValueError, match="has no explanations"):
        export_run(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_export_run_writes_a_real_collection_in_the_release_layout(tiny_collection, tmp_path):
    from nxkit.collection.activations import Activations
    from nxkit.heldout import split_records
    from nxkit.records import (
        NeuronSummary,
        ScoredExplanation,
        ScoredSequenceSimulation,
        ScoredSimulation,
        SequenceSimulation,
    )
    from nxkit.runs import Run

    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "activations").symlink_to(tiny_collection, target_is_directory=True)  # shared: never written to
    acts = Activations(run / "activations")
    explained = [NeuronId(0, 5), NeuronId(0, 1200)]
    for nid in explained:  # an explanations file as the explain stage writes it: valid split, top then random
        windows = split_records(acts.neuron_record(0, nid.neuron_index), "valid")
        sims = [
            ScoredSequenceSimulation(
                simulation=SequenceSimulation(
                    tokens=w.tokens,
                    expected_activations=[0.0] * len(w.tokens),
                    activation_scale="simulated_normalized_activations",
                    distribution_values=[[0.0]] * len(w.tokens),
                    distribution_probabilities=[[1.0]] * len(w.tokens),
                ),
                true_activations=w.activations,
                ev_correlation_score=None,
            )
            for w in windows
        ]
        results = NeuronSimulationResults(nid, [ScoredExplanation(" a test explanation", ScoredSimulation(sims))])
        summary = NeuronSummary(nid, "done", explanation=" a test explanation")
        Run(run).write_neuron(summary, results)

    out = tmp_path / "public"
    assert export_run(run, out, progress=False) == explained
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json*")) == [
        "collated-activations/0/1200.json",
        "collated-activations/0/5.json",
        "explanations/0/1200.jsonl",
        "explanations/0/5.jsonl",
        "nxkit-sidecar/0/1200.json",  # beside the release's layout: what its schema has no field for
        "nxkit-sidecar/0/5.json",
    ]
    with serve_directory(out) as base:
        back = PublicDataset(base, cache=tmp_path / "cache").fetch_many(explained, progress=False)
    assert back.errors == {}
    for nid in explained:
        assert back.neurons[nid].record == acts.neuron_record(0, nid.neuron_index)
        assert back.neurons[nid].explanation == " a test explanation"
    # Activation records alone, for a neuron that was not explained.
    assert export_run(run, out, neurons=[(0, 7)], progress=False) == [NeuronId(0, 7)]
    assert (out / "collated-activations/0/7.json").is_file() and not (out / "explanations/0/7.jsonl").exists()

    # a negative side goes beside, in the same layout: records of the negated activations
    neg_results = NeuronSimulationResults(NeuronId(0, 5), results.scored_explanations)
    Run(run, "negative").write_neuron(NeuronSummary(NeuronId(0, 5), "done", explanation=" below zero"), neg_results)
    neg_out = tmp_path / "public-signs"
    assert export_run(run, neg_out, progress=False) == explained
    assert sorted(p.relative_to(neg_out / "negative").as_posix() for p in (neg_out / "negative").rglob("*.json*")) == [
        "collated-activations/0/5.json", "explanations/0/5.jsonl", "nxkit-sidecar/0/5.json",
    ]  # fmt: skip
    with serve_directory(neg_out / "negative") as base:
        neg_back = PublicDataset(base, cache=tmp_path / "cache-neg").fetch_many([NeuronId(0, 5)], progress=False)
    record = neg_back.neurons[NeuronId(0, 5)].record
    assert record == acts.neuron_record(0, 5, "negative") != acts.neuron_record(0, 5)
    assert record.max_activation == pytest.approx(-float(acts._array(0, "bottom_acts")[5].min()))


@pytest.mark.slow
def test_rescore_released_scores_released_and_our_explanations_on_the_released_windows(local_backend):
    from nxkit.explainers.base import ExplainConfig
    from nxkit.public import released_windows
    from nxkit.rescore import rescore_released
    from nxkit.simulators import make_simulator
    from nxkit.simulators.base import simulate_sync

    ds = PublicDataset(FIXTURES)
    neurons = [ds.neuron(n.layer_index, n.neuron_index) for n in FIXTURE_NEURONS]
    assert [w.tokens for w in released_windows(neurons[0])] == [
        ["Feed", " the", " cats", " at", " noon"],
        ["Rain", " is", " expected", " later"],
    ]
    backend = local_backend
    simulator = make_simulator(backend)
    rows = rescore_released(neurons, simulator, progress=False)
    assert [(r["layer"], r["neuron"]) for r in rows] == [(0, 1), (5, 7)]
    assert [r["splits"] for r in rows] == [["top", "random"], ["top", "random"]]  # matched against the records
    for row, neuron in zip(rows, neurons, strict=True):
        assert row["released_explanation"] == neuron.explanation and row["released_score"] == neuron.score
        assert row["n_windows"] == 2
        assert row["released_random_only"] is None  # the random windows never fire: undefined, not 0
        # our simulator's predictions on the released windows, correlated here with numpy
        windows = released_windows(neuron)
        sims = simulate_sync(simulator, row["released_explanation"], [w.tokens for w in windows])
        pred = np.concatenate([s.expected_activations for s in sims])
        true = np.concatenate([w.activations for w in windows])
        if pred.std() > 0 and true.std() > 0:
            assert row["rescored"] == pytest.approx(np.corrcoef(pred, true)[0, 1], abs=1e-3)
        assert (row["rescored"] is None) == (row["rescored_flag"] is not None)
        assert "our_explanation" not in row
    # Our own explanation of one neuron, scored on the same windows (generation is the slow part).
    (row,) = rescore_released(
        neurons[:1], simulator, explainer=backend, explain_config=ExplainConfig(best_of=1), progress=False
    )
    # same windows, same simulator: the same score, up to float rounding (the second pass reuses the prefix's keys
    # and values computed after explaining, the first computed them afresh)
    assert row["rescored"] == pytest.approx(rows[0]["rescored"], abs=1e-4)
    assert row["our_status"] == "done" and row["our_explanation"]
    assert (row["our_score"] is None) == (row["our_explanation"] is None)


def test_reachable_and_table_rows(server, dataset, tmp_path):
    assert dataset.reachable() and PublicDataset(FIXTURES).reachable()
    assert not PublicDataset(tmp_path / "nothing").reachable()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not PublicDataset(f"http://127.0.0.1:{port}", cache=tmp_path).reachable(timeout=2)
    batch = dataset.fetch_many([*FIXTURE_NEURONS, ONLY_ACTIVATIONS], progress=False)
    rows = released_rows([*batch.neurons.values(), *batch.partial.values()])
    assert rows[0] == {
        "layer": 0,
        "neuron": 1,
        "explanation": " the word cat and other names for house cats",
        "score": batch.neurons[NeuronId(0, 1)].score,
        "max_activation": 4.25,
        "top_windows": 4,
        "random_windows": 3,
    }
    assert rows[2]["neuron"] == 2 and rows[2]["explanation"] is None and rows[2]["score"] is None


def test_a_file_far_larger_than_any_of_the_release_is_refused(server, dataset, monkeypatch):
    import nxkit.public as public
    from nxkit.public import FetchFailed

    monkeypatch.setattr(public, "MAX_FILE_BYTES", 64)  # the fixture's files are larger than this
    with pytest.raises(FetchFailed, match="over 0 MB, far larger than any file of the release"):
        dataset.neuron(0, 1)
