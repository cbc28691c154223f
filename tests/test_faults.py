"""A server that misbehaves: each fault mode of the loopback server, with the pipeline on a few neurons (real HTTP
through the client). Transient faults are retried and the results equal a fault-free run's, with nothing bad
cached; a server that always fails stops the run with a named error, and a rerun asks again and finishes it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from faults import CASES, fault_table, print_table  # noqa: E402

from nxkit.records import NeuronId  # noqa: E402


@pytest.mark.slow
def test_every_fault_mode_finishes_or_stops_named_and_nothing_bad_is_cached(tiny_collection, capsys):
    rows = fault_table(tiny_collection, [NeuronId(layer, n) for layer in (0, 5) for n in range(2)])
    with capsys.disabled():
        print()
        print_table(rows)
    assert [(r["fault"], r["every"]) for r in rows] == CASES
    for r in rows:
        assert r["same"], r  # the results of a fault-free run (for a stopped run, after its rerun)
        if r["every"] > 1 or r["fault"] == "none":  # transient: retried through, nothing bad cached: a rerun sends none
            assert r["what"] == "finished" and r["resent"] == 0, r
            assert r["fault"] == "none" or r["retries"] > 0, r
        else:  # always failing: a named stop, and the rerun asks the server again
            assert r["what"].startswith("stopped: giving up after 4 attempts") and r["resent"] > 0, r
        if r["fault"] in ("malformed_json", "wrong_shape"):
            assert r["malformed"] > 0, r
