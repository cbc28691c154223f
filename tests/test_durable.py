"""Nothing lost: torn journal lines, a second process on a run, write order, checkpoints that could run code, damaged
files named, folders replaced safely, and bad input named before anything runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import make_fake_run

from nxkit.cli import main
from nxkit.records import NeuronId, NeuronRevision
from nxkit.rundir import RunFileError, RunLockedError
from nxkit.runs import Run


def test_a_torn_last_journal_line_is_left_out_and_cut_before_the_next_append(tmp_path, caplog):
    run = make_fake_run(tmp_path / "run")
    before = run.table()
    with open(run.journal_path, "a", encoding="utf-8") as f:
        f.write('{"layer": 0, "neuron": 1, "explanat')  # a kill mid-append
    with caplog.at_level("WARNING"):
        table = run.table()
    assert len(table) == len(before) and "cut off" in caplog.text
    run.compact_table()  # compaction reads past it too
    summary = run.read_neuron(NeuronId(0, 1))
    run.append_row(summary)
    lines = run.journal_path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # the torn piece is gone, every line whole
    assert len(run.table()) == len(before)


def test_a_damaged_journal_line_in_the_middle_is_named(tmp_path):
    run = make_fake_run(tmp_path / "run")
    run.journal_path.write_text('{"layer": 0}\nnot json\n{"layer": 1}\n', encoding="utf-8")
    with pytest.raises(RunFileError, match=r"table.journal.jsonl line 2 is damaged.*delete the journal"):
        run.table()


HOLD = """
import sys, time
from nxkit.runs import Run
with Run(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_process_on_a_run_stops_at_once_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            with Run(tmp_path / "run").lock():
                pass
        assert time.perf_counter() - t0 < 5
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder releases the lock by itself
        holder.wait()
    with Run(tmp_path / "run").lock():
        with Run(tmp_path / "run").lock():  # re-entrant within a process
            pass


def test_nxkit_run_on_a_run_in_use_is_a_one_line_error(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", "--run-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("nxkit: error:") and f"process {holder.pid}" in err and len(err.splitlines()) == 1
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_the_revision_file_is_written_after_the_summary_it_changes(tmp_path, monkeypatch):
    """Resume skips a neuron with a revision file, so that file must be the last of a revision's writes."""
    import nxkit.runs as runs

    run = make_fake_run(tmp_path / "run", revise=False)
    nid = NeuronId(0, 1)
    order = []
    real = runs.atomic_write
    monkeypatch.setattr(
        runs, "atomic_write", lambda path, data: order.append(path.parent.parent.name) or real(path, data)
    )
    summary = run.read_neuron(nid)
    revision = NeuronRevision(nid, "done", original_explanation=summary.explanation, final_explanation="x")
    run.write_revision(revision)
    assert order.index("revisions") > order.index("neurons")
    assert not (run.path / "pending").exists() or not any((run.path / "pending").iterdir())


def test_a_neuron_write_cut_short_is_finished_on_the_next_lock(tmp_path):
    run = make_fake_run(tmp_path / "run")
    nid = NeuronId(0, 1)
    summary = run.read_neuron(nid)
    summary.explanation = "a new explanation whose row was never appended"
    from nxkit.files import atomic_write
    from nxkit.records import dumps

    atomic_write(run._pending_path(nid), "")  # what a write leaves when killed after the summary, before the row
    atomic_write(run.summary_path(nid), dumps(summary))
    assert run.table().set_index(["layer", "neuron"]).loc[(0, 1), "explanation"] != summary.explanation
    with Run(run.root).lock():
        pass
    assert run.table().set_index(["layer", "neuron"]).loc[(0, 1), "explanation"] == summary.explanation
    assert not any((run.path / "pending").iterdir())


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['NXKIT_TEST_MARK']}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    import torch

    from nxkit.collection.activations import CollectError
    from nxkit.collection.collect import _Pass

    mark = tmp_path / "ran"
    monkeypatch.setenv("NXKIT_TEST_MARK", str(mark))
    path = tmp_path / "checkpoint.pt"
    torch.save({"done_windows": 3, "layers": {0: _Boom()}}, path)
    with pytest.raises(CollectError, match="not a checkpoint of plain tensors.*delete it"):
        _Pass.load(object.__new__(_Pass), path, "cpu")
    assert not mark.exists()


def test_a_damaged_summary_is_named_with_the_fix(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run")
    run.summary_path(NeuronId(0, 1)).write_text('{"dataclass_name": "NeuronSummary", "neur', encoding="utf-8")
    with pytest.raises(RunFileError, match=r"neurons/0/1.json is damaged.*move it away"):
        run.summaries()
    (run.path / "manifest.json").write_text("{", encoding="utf-8")
    with pytest.raises(RunFileError, match=r"manifest.json is damaged"):
        run.manifest()


def test_replacing_a_folder_keeps_the_old_one_until_the_new_one_is_in(tmp_path, monkeypatch):
    from pathlib import Path

    from nxkit.files import atomic_directory

    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    real = Path.rename

    def fail_moving_in(self, dest):
        if Path(dest) == target and ".tmp" in self.name:
            raise OSError("disk full")
        return real(self, dest)

    monkeypatch.setattr(Path, "rename", fail_moving_in)
    with pytest.raises(OSError, match="disk full"):
        with atomic_directory(target) as tmp:
            (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "old"
    monkeypatch.setattr(Path, "rename", real)
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left beside it


BAD = [
    (["--name", "../../x"], "not a plain name"),
    (["--name", "/tmp/abs"], "--run-dir"),
    (["--neurons", "a:b"], "LAYER:N"),
    (["--explain-layers", "-1"], "numbered from 0"),
    (["--corpus", "nosuch"], "unknown corpus"),
    (["--corpus", "/nonexistent/file.txt"], "does not exist"),
    (["--corpus", "hf:"], "hf:DATASET"),
    (["--base-url", "ftp://host/v1"], "not a server URL"),
    (["--base-url", "http://user:sk-secret@/v1"], "not a server URL"),
    (["--max-requests", "0"], "max_requests must be"),
    (["--max-tokens", "10", "--window", "64"], "max_tokens"),
    (["--max-concurrency", "0"], "max_concurrency"),
]


@pytest.mark.parametrize("argv,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_a_one_line_error_naming_the_problem(argv, named, capsys):
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nxkit: error:") and named in err and len(err.splitlines()) == 1, err
    assert "sk-secret" not in err


def test_nxkit_run_on_a_damaged_collection_manifest_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "run" / "activations").mkdir(parents=True)
    (tmp_path / "run" / "activations" / "manifest.json").write_text('{"status": "comp', encoding="utf-8")
    assert main(["run", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nxkit: error:") and "activations/manifest.json is damaged" in err, err
    assert len(err.splitlines()) == 1
