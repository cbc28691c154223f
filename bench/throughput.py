"""How busy the pipeline keeps a large server: explain, calibrate, score and control >= 64 neurons against a loopback
OpenAI-compatible server in a process of its own, answering every request after a fixed latency whatever the load
(`nxkit.llm.loopback`), in both of its modes:

- `realistic` (the default): answers as a real server sends them; the simulator runs all at once, and every
  simulation request's answer echoes the whole prompt with its top-20 log-probabilities (about 380 KB);
- `short`: chat answers with no log-probabilities; the simulator writes its digits (`chat_text`).

    .venv/bin/python bench/throughput.py [--neurons 64] [--latency 0.2] [--best-of 3] [--modes realistic,short]
        [--client-tree DIR]   # also run the client of another checkout (e.g. `git worktree add /tmp/old HEAD~5`)

Prints per mode and client: requests, the most in flight, wall time, effective concurrency (requests x latency /
wall time; target >= 32), client CPU per request (the client process's user+system time and its parsing workers', over the
requests; target <= 3 ms), the server's CPU, requests per second (target >= 200 with realistic answers), the response cache's bytes
per request, whether the results equal the first client's, and the projection for the paper's 307,200 neurons.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER_NEURONS = 307_200


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_pass(args) -> dict:
    """One run of the pipeline against `args.url`, in this process: what it sent, how long, at what CPU."""
    from nxkit.explain_score import explain_and_score
    from nxkit.explainers.base import ExplainConfig
    from nxkit.llm.cache import ResponseCache
    from nxkit.llm.loopback import MODEL
    from nxkit.llm.server import OpenAIBackend
    from nxkit.records import NeuronId
    from nxkit.runs import Run
    from nxkit.simulators import make_simulator
    from nxkit.simulators.prompted import SimulateConfig

    neurons = [NeuronId(*n) for n in json.loads(args.neuron_list)]
    tmp = Path(tempfile.mkdtemp(prefix="nxkit-throughput-"))
    run = Run(tmp / "run")
    run.path.mkdir()
    (run.path / "activations").symlink_to(Path(args.collection).resolve(), target_is_directory=True)
    cache = tmp / "cache"
    realistic = args.mode == "realistic"
    backend = OpenAIBackend(
        MODEL, base_url=args.url, api_key="local", max_concurrency=args.max_concurrency, prompt_logprobs=realistic,
        cache_root=cache,
    )  # fmt: skip
    sim = make_simulator(backend, SimulateConfig(mode="all_at_once" if realistic else "chat_text"))
    config = ExplainConfig(
        max_neurons_in_flight=args.in_flight, best_of=args.best_of, sim_window_tokens=32,
        scorers=["simulation", "detection", "fuzzing"],
    )  # fmt: skip
    import openai  # noqa: F401  (imported before the clock starts: a one-off second of CPU, not per-request work)

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    explain_and_score(run, neurons, backend, sim, config, progress=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    try:  # the parsing workers' CPU counts as the client's (a checkout before them has none)
        from nxkit.llm.server import parse_workers_cpu

        workers = parse_workers_cpu()
    except ImportError:
        workers = 0.0
    summaries = run.summaries()
    outcome = sorted(
        (str(s.neuron_id), s.status, s.explanation, repr(s.scores), str(s.shuffled_control)) for s in summaries
    )
    store = ResponseCache(cache)
    cache_bytes, entries = store.size_bytes(), len(store)
    shutil.rmtree(tmp, ignore_errors=True)
    u = backend.usage
    return {
        "wall": wall, "cpu": cpu + workers, "workers_cpu": workers, "requests": u.requests, "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens, "cache_bytes": cache_bytes, "cache_entries": entries,
        "neurons": len(summaries), "done": sum(s.status == "done" for s in summaries),
        "outcome": hashlib.sha256(json.dumps(outcome).encode()).hexdigest()[:12],
    }  # fmt: skip


def measure(args, mode: str, url: str, tree: str | None) -> dict:
    """`client_pass` in a fresh process (this checkout's nxkit, or `tree`'s), so each client's CPU is its own."""
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    cmd = [sys.executable, __file__, "--client", "--mode", mode, "--url", url, "--collection", args.collection,
           "--neuron-list", args.neuron_list, "--best-of", str(args.best_of), "--in-flight", str(args.in_flight),
           "--max-concurrency", str(args.max_concurrency)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree or None)
    if out.returncode:
        raise SystemExit(f"the client in {tree or 'this checkout'} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    ap.add_argument("--best-of", type=int, default=3)
    ap.add_argument("--max-concurrency", type=int, default=64)
    ap.add_argument("--in-flight", type=int, default=32, help="neurons in progress at once")
    ap.add_argument("--modes", default="realistic,short")
    ap.add_argument("--client-tree", help="another checkout whose client to measure too (the 'before')")
    ap.add_argument("--run", default="runs/bench-throughput", help="where the small collection is kept")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--collection", help=argparse.SUPPRESS)
    ap.add_argument("--neuron-list", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client_pass(args)))
        return

    from nxkit.llm.loopback import LoopbackProcess
    from nxkit.notebook import ensure_collection

    run = ensure_collection(args.run, layers=[0, 5], max_tokens=64 * 256, source="default")
    acts = run.activations()
    rng = random.Random(0)
    neurons = sorted((layer, n) for layer in acts.layers for n in rng.sample(range(acts.d_mlp), args.neurons // 2))
    args.collection, args.neuron_list = str(Path(run.activations_dir).resolve()), json.dumps(neurons)
    print(f"{len(neurons)} neurons, best of {args.best_of}, calibration 5+5 windows, valid 10+10, control 10+10, "
          f"detection and fuzzing on the valid windows, server latency {args.latency} s, {args.in_flight} neurons "
          f"and at most {args.max_concurrency} requests in flight; {os.cpu_count()} cores, the server in a process "
          "of its own")  # fmt: skip
    clients = [("this checkout", None)] + (
        [(f"client of {args.client_tree}", args.client_tree)] if args.client_tree else []
    )
    for mode in args.modes.split(","):
        first = None
        for label, tree in clients:
            with LoopbackProcess(latency=args.latency, answers=mode) as server:
                before = server.stats()
                r = measure(args, mode, server.base_url, tree)
                after = server.stats()
            requests = after["requests"] - before["requests"]
            server_cpu = after["cpu_s"] - before["cpu_s"]
            effective = requests * args.latency / r["wall"]
            rate = requests / r["wall"]
            same = "" if first is None else ("; results identical" if r["outcome"] == first else "; RESULTS DIFFER")
            first = first or r["outcome"]
            print(f"{mode:>9} answers, {label}: {requests:,} requests ({after['bytes_sent'] / max(requests, 1) / 1024:.0f} KB "
                  f"per answer), at most {after['max_in_flight']} in flight, {r['wall']:.1f} s, effective concurrency "
                  f"{effective:.1f}, {rate:.0f} requests/s, client CPU {1000 * r['cpu'] / max(requests, 1):.1f} ms per "
                  f"request ({1000 * r['workers_cpu'] / max(requests, 1):.1f} of them in parsing workers), server CPU {server_cpu:.1f} s; cache {r['cache_bytes'] / max(r['cache_entries'], 1) / 1024:.1f} KB "
                  f"per answer; {r['done']} of {r['neurons']} done{same}")  # fmt: skip
            n = r["neurons"]
            per = requests / n
            hours = PAPER_NEURONS * per / rate / 3600
            print(f"{'':>11}projection for {PAPER_NEURONS:,} neurons at {rate:.0f} requests/s: "
                  f"{PAPER_NEURONS * per:,.0f} requests, {hours:,.1f} hours ({hours / 24:.1f} days) of client time; "
                  f"{PAPER_NEURONS * (r['prompt_tokens'] + r['completion_tokens']) / n / 1e9:.2f}B tokens; response "
                  f"cache {PAPER_NEURONS * r['cache_bytes'] / n / 1e9:.0f} GB")  # fmt: skip


if __name__ == "__main__":
    main()
