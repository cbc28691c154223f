"""Batch files for the LLM stages (issue 31, part 2): requests the cache lacks are written as OpenAI Batch API JSONL
instead of being sent, their answers (OpenAI's and vLLM's output format) are checked and imported into the response
cache, and a whole run driven through rounds of files ends with the same results as the same run online."""

from __future__ import annotations

import json

import orjson
import pytest

from nxkit.llm import batch as batch_mod
from nxkit.llm.base import Deferred, LLMError, run_sync
from nxkit.llm.batch import BatchOut, attach, custom_id, import_answers
from nxkit.llm.loopback import MODEL, LoopbackServer, answer_batch
from nxkit.llm.server import OpenAIBackend

MESSAGES = [[{"role": "user", "content": f"What does this neuron respond to? token {i}"}] for i in range(5)]


def _backend(tmp_path, name="cache", **kw):
    kw.setdefault("base_url", "http://127.0.0.1:9/v1")  # nothing listens there: batch mode sends nothing
    return OpenAIBackend(MODEL, api_key="local", cache_root=tmp_path / name, **kw)


def _lines(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_requests_are_written_not_sent_then_imported_answers_are_read_back(tmp_path):
    backend = _backend(tmp_path, prompt_logprobs=False)
    out = attach([backend], tmp_path / "batches")
    run_sync(backend.check())  # no server is asked: a batch service answers
    for m in MESSAGES + MESSAGES[:2]:  # a request asked twice is one line
        with pytest.raises(Deferred):
            run_sync(backend.chat(m, max_tokens=64))
    assert out.pending == 5 and backend.usage.requests == 0
    written = out.write("explain+score")
    assert written.requests == 5 and written.earlier == 0 and written.completion_tokens == 5 * 64
    assert "5 requests" in written.message() and "nxkit cache import" in written.message()
    (path,) = written.files
    assert path.name == "requests-001-explain-score.jsonl"
    lines = _lines(path)
    assert [set(line) for line in lines] == [{"custom_id", "method", "url", "body"}] * 5
    assert {line["url"] for line in lines} == {"/v1/chat/completions"} and lines[0]["method"] == "POST"
    assert lines[0]["body"]["model"] == MODEL and lines[0]["body"]["max_tokens"] == 64
    assert lines[0]["custom_id"] == custom_id("/chat/completions", lines[0]["body"])

    answers = tmp_path / "out.jsonl"
    assert answer_batch(path, answers) == 5
    report = import_answers([answers], backend.cache)
    assert (report.stored, report.lines, report.errors, report.malformed, report.unknown) == (5, 5, [], [], 0)
    again = import_answers([answers], backend.cache)  # imported already: nothing is waiting for these lines
    assert again.stored == 0 and again.unknown == 5

    got = [run_sync(backend.chat(m, max_tokens=64)).text for m in MESSAGES]  # from the cache, nothing deferred
    assert out.pending == 0 and backend.usage.cache_hits == 5
    with LoopbackServer(latency=0.0) as server:  # the same requests online
        online = OpenAIBackend(MODEL, base_url=server.base_url, api_key="local", cache=False)
        assert got == [run_sync(online.chat(m, max_tokens=64)).text for m in MESSAGES]


def test_error_lines_and_wrong_shapes_are_reported_and_not_stored(tmp_path):
    backend = _backend(tmp_path, prompt_logprobs=False)
    out = attach([backend], tmp_path / "batches")
    for m in MESSAGES[:4]:
        with pytest.raises(Deferred):
            run_sync(backend.chat(m))
    (path,) = out.write("explain").files
    lines = _lines(path)
    answered = tmp_path / "answered.jsonl"
    answer_batch(path, answered)
    rows = _lines(answered)
    rows[1]["response"]["body"] = {"object": "error", "detail": "no choices"}  # valid JSON, the wrong shape
    rows[2] = {"id": "x", "custom_id": lines[2]["custom_id"], "response": None, "error": {"code": "expired"}}
    rows[3]["response"]["status_code"] = 500
    answered.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\nnot json\n")
    report = import_answers([answered], backend.cache)
    assert report.stored == 1 and len(report.errors) == 2 and len(report.malformed) == 2
    assert (
        "expired" in report.errors[0]
        and "choices" in report.malformed[0]
        and "not a batch output" in report.malformed[1]
    )
    assert "written again by the next run" in report.message()
    run_sync(backend.chat(MESSAGES[0]))  # the good answer is there
    with pytest.raises(Deferred):
        run_sync(backend.chat(MESSAGES[1]))  # the rejected ones are asked for again
    assert out.write("explain").earlier == 1  # and said to be in an earlier file too

    with pytest.raises(LLMError, match="no batch output file"):
        import_answers([tmp_path / "missing.jsonl"], backend.cache)


def test_files_are_split_at_the_batch_services_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_mod, "MAX_LINES", 2)
    backend = _backend(tmp_path, prompt_logprobs=False)
    out = attach([backend], tmp_path / "b")
    for m in MESSAGES:
        with pytest.raises(Deferred):
            run_sync(backend.chat(m))
    written = out.write("explain")
    assert [p.name for p in written.files] == [f"requests-001-explain-{i}.jsonl" for i in (1, 2, 3)]
    assert [len(_lines(p)) for p in written.files] == [2, 2, 1]
    assert out.pending == 0 and out.root == tmp_path / "b"


def test_batch_mode_needs_a_server_model_and_the_cache(tmp_path):
    with pytest.raises(LLMError, match="has none"):
        attach([None], tmp_path)
    with pytest.raises(LLMError, match="needs the response cache"):
        attach([_backend(tmp_path, cache=False)], tmp_path / "b")
    (tmp_path / "file").write_text("")
    with pytest.raises(LLMError, match="is a file"):
        BatchOut(tmp_path / "file")


def test_the_prompt_shift_probe_goes_in_the_first_file(tmp_path):
    backend = _backend(tmp_path)  # a server other than OpenAI's: prompt log-probabilities, shift unknown
    out = attach([backend], tmp_path / "b")
    run_sync(backend.check())
    assert out.pending == 1
    (line,) = _lines(out.write("explain").files[0])
    assert line["url"] == "/v1/completions" and line["body"]["echo"] is True


ROUNDS = 40


def _outcome(run):
    """What a run concluded per neuron (`test_flight.outcome`) and per revision."""
    from test_flight import outcome

    summaries = outcome(run)
    revisions = {n: (r.status, r.final_explanation, r.score_after) for n in summaries if (r := run.read_revision(n))}
    return summaries, revisions


@pytest.mark.slow
def test_a_whole_run_through_batch_files_matches_the_online_run(tmp_path, monkeypatch, capsys):
    from test_cli_run import TINY

    from nxkit.cli import main
    from nxkit.runs import Run

    monkeypatch.setenv("OPENAI_API_KEY", "local")
    args = [*TINY[2:], "--explainer", MODEL, "--explain.best-of", "2", "--no-report"]
    online_dir, batch_dir = tmp_path / "online", tmp_path / "batch"
    monkeypatch.setenv("NXKIT_LLM_CACHE", str(tmp_path / "online-cache"))
    with LoopbackServer(latency=0.0) as server:
        assert main(["run", "--run-dir", str(online_dir), *args, "--base-url", server.base_url]) == 0
        sent = server.stats()["by_kind"]
    capsys.readouterr()

    monkeypatch.setenv("NXKIT_LLM_CACHE", str(tmp_path / "batch-cache"))
    batch_dir.mkdir()
    (batch_dir / "activations").symlink_to(online_dir / "activations", target_is_directory=True)
    files, stages = tmp_path / "files", []
    argv = ["run", "--run-dir", str(batch_dir), *args, "--base-url", "http://127.0.0.1:9/v1", "--batch-out", str(files)]
    for _ in range(ROUNDS):
        assert main(argv) == 0
        printed = capsys.readouterr().out
        if "requests the response cache does not hold" not in printed:
            break
        stages.append(printed.rsplit("\n", 2)[-2].split(":")[0])
        new = sorted(p for p in files.glob("requests-*.jsonl") if not p.with_suffix(".out").exists())
        for path in new:  # the batch service: the loopback's rules, answered into OpenAI's output format
            answer_batch(path, path.with_suffix(".out"))
        assert main(["cache", "import", *(str(p.with_suffix(".out")) for p in new)]) == 0
        assert "stored" in capsys.readouterr().out
    else:
        pytest.fail(f"still writing batch files after {ROUNDS} rounds: {stages}")
    assert "mean over" in printed  # the last call finished the run and printed its summary
    assert stages[0] == "explain+score" and "revision" in stages
    assert len(stages) >= 4  # explanations, calibration, valid windows, controls, revision: a round each
    assert json.loads((files / "requests-001-explain-score.jsonl").read_text().splitlines()[0])["body"]
    assert sum(counts[0] for counts in sent.values()) > 0
    assert _outcome(Run(batch_dir)) == _outcome(Run(online_dir))
