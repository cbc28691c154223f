"""What the pipeline does when the server misbehaves: each fault mode of the loopback server, on a few neurons.

    .venv/bin/python bench/faults.py [--neurons 4]

Per mode (`nxkit.llm.loopback.FAULTS`, on every third request, or on every request): whether the run finished or
stopped with a named error, whether its results equal a fault-free run's, what the backend counted (retries,
malformed answers), and how many requests a rerun against a healthy server on the same address sends with the same
response cache (nothing bad was cached if a finished run's rerun sends none; a stopped run's rerun finishes it).
`tests/test_faults.py` runs the same table on the test collection.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

CASES = [
    ("none", 1), ("malformed_json", 3), ("truncated", 3), ("wrong_shape", 3), ("http_500", 3), ("http_429", 3),
    ("trickle", 7), ("malformed_json", 1), ("http_500", 1),
]  # fmt: skip
"""(fault, every n-th request): transient faults first, then a server that always fails."""


def outcome(run) -> dict:
    return {s.neuron_id: (s.status, s.explanation, s.scores, s.shuffled_control) for s in run.summaries()}


def one_run(collection: Path, work: Path, neurons, fault: str, every: int) -> dict:
    """One run against a server with `fault` on every `every`-th request, then a rerun on a healthy one."""
    from nxkit.explain_score import explain_and_score
    from nxkit.explainers.base import ExplainConfig
    from nxkit.llm.base import LLMError
    from nxkit.llm.loopback import MODEL, LoopbackServer
    from nxkit.llm.server import OpenAIBackend
    from nxkit.runs import Run
    from nxkit.simulators import make_simulator

    run = Run(work / "run")
    run.path.mkdir(parents=True)
    (run.path / "activations").symlink_to(collection.resolve(), target_is_directory=True)
    config = ExplainConfig(best_of=2, calibration_windows=2, valid_windows=2, sim_window_tokens=16)
    settings = dict(api_key="local", cache_root=work / "cache", backoff=0.01, max_retries=3, timeout=2.0)

    def attempt(server) -> str:
        backend = OpenAIBackend(MODEL, base_url=server.base_url, **settings)
        try:
            explain_and_score(run, neurons, backend, make_simulator(backend), config, progress=False)
            what = "finished"
        except LLMError as exc:
            what = f"stopped: {str(exc).split(':', 1)[0]}"
        backend.cache.flush()
        return what, backend.usage

    faulty = LoopbackServer(latency=0.0, fault=None if fault == "none" else fault, fault_every=every, retry_after=0.05)
    with faulty:
        port = int(faulty.base_url.rsplit(":", 1)[1].split("/")[0])
        what, usage = attempt(faulty)
        sent = faulty.requests
    first = outcome(run)
    # a fresh run folder on a healthy server at the same address, with the same cache: what was not cached is sent
    fresh = Run(work / "again")
    fresh.path.mkdir(parents=True)
    (fresh.path / "activations").symlink_to(collection.resolve(), target_is_directory=True)
    with LoopbackServer(latency=0.0, port=port) as healthy:
        backend = OpenAIBackend(MODEL, base_url=healthy.base_url, **settings)
        explain_and_score(fresh, neurons, backend, make_simulator(backend), config, progress=False)
        resent = healthy.requests
    return {
        "fault": fault, "every": every, "what": what, "requests": sent, "retries": usage.retries,
        "malformed": usage.malformed, "resent": resent, "first": first, "again": outcome(fresh),
    }  # fmt: skip


def fault_table(collection: Path, neurons, cases=CASES) -> list[dict]:
    """Every case of `cases`, each in a folder of its own; `same` says whether the results equal the fault-free
    run's (for a run that stopped, the rerun's)."""
    work = Path(tempfile.mkdtemp(prefix="nxkit-faults-"))
    try:
        rows = [
            one_run(collection, work / f"{i}-{fault}", neurons, fault, every) for i, (fault, every) in enumerate(cases)
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reference = rows[0]["first"]
    for row in rows:
        row["same"] = (row["first"] if row["what"] == "finished" else row["again"]) == reference
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'fault':>16} {'every':>5}  {'the run':<48} {'same':>5} {'requests':>8} {'retries':>7} {'malformed':>9} "
          f"{'re-sent on rerun':>16}")  # fmt: skip
    for r in rows:
        print(f"{r['fault']:>16} {r['every']:>5}  {r['what'][:48]:<48} {str(r['same']):>5} {r['requests']:>8} "
              f"{r['retries']:>7} {r['malformed']:>9} {r['resent']:>16}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=4)
    ap.add_argument("--run", default="runs/bench-throughput", help="where the small collection is kept")
    args = ap.parse_args()
    from nxkit.notebook import ensure_collection
    from nxkit.records import NeuronId

    run = ensure_collection(args.run, layers=[0, 5], max_tokens=64 * 256, source="default")
    neurons = [NeuronId(layer, n) for layer in (0, 5) for n in range(args.neurons // 2)]
    print_table(fault_table(run.activations_dir, neurons))


if __name__ == "__main__":
    main()
