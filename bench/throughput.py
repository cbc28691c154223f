"""How busy the pipeline keeps a large server: explain, calibrate, score and control >= 64 neurons against a loopback
OpenAI-compatible server that answers every request after a fixed latency whatever the load (`nxkit.llm.loopback`).

    .venv/bin/python bench/throughput.py [--neurons 64] [--latency 0.2] [--best-of 3]

Runs the same neurons twice in one go: one neuron at a time (`--explain.max-neurons-in-flight 1`), then many in
flight (the default, requests bounded by `--max-concurrency 64`), and prints for each the requests, the most in
flight, the wall time and the effective concurrency (requests x latency / wall time; target >= 32 at 64 neurons),
then requests, tokens and response-cache bytes per neuron, and the projection for the paper's 307,200 neurons.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from nxkit.explain_score import explain_and_score
from nxkit.explainers.base import ExplainConfig
from nxkit.llm.loopback import MODEL, LoopbackServer
from nxkit.llm.server import OpenAIBackend
from nxkit.notebook import ensure_collection
from nxkit.records import NeuronId
from nxkit.runs import Run
from nxkit.simulators import make_simulator
from nxkit.simulators.prompted import SimulateConfig

PAPER_NEURONS = 307_200


def one_pass(collection: Path, neurons, latency: float, config: ExplainConfig, concurrency: int, cache: Path | None):
    tmp = Path(tempfile.mkdtemp(prefix="nxkit-throughput-"))
    run = Run(tmp / "run")
    run.path.mkdir()
    (run.path / "activations").symlink_to(collection.resolve(), target_is_directory=True)
    with LoopbackServer(latency=latency) as server:
        backend = OpenAIBackend(
            MODEL, base_url=server.base_url, api_key="local", max_concurrency=concurrency, prompt_logprobs=False,
            cache=cache is not None, cache_root=cache,
        )  # fmt: skip
        sim = make_simulator(backend, SimulateConfig(mode="chat_text"))
        t0 = time.perf_counter()
        explain_and_score(run, neurons, backend, sim, config, progress=False)
        wall = time.perf_counter() - t0
    summaries = run.summaries()
    shutil.rmtree(tmp, ignore_errors=True)
    return server, backend, wall, summaries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    ap.add_argument("--best-of", type=int, default=3)
    ap.add_argument("--max-concurrency", type=int, default=64)
    ap.add_argument("--in-flight", type=int, default=32, help="neurons in progress at once")
    ap.add_argument("--run", default="runs/bench-throughput", help="where the small collection is kept")
    args = ap.parse_args()

    run = ensure_collection(args.run, layers=[0, 5], max_tokens=64 * 256, source="default")
    acts = run.activations()
    rng = random.Random(0)
    neurons = sorted(
        NeuronId(layer, n) for layer in acts.layers for n in rng.sample(range(acts.d_mlp), args.neurons // 2)
    )
    base = dict(best_of=args.best_of, sim_window_tokens=32, scorers=["simulation", "detection", "fuzzing"])
    print(f"{len(neurons)} neurons, best of {args.best_of}, calibration 5+5 windows, valid 10+10, control 10+10, "
          f"detection and fuzzing on the valid windows, server latency {args.latency} s")  # fmt: skip

    rows = {}
    for label, in_flight in (("one neuron at a time", 1), (f"{args.in_flight} neurons in flight", args.in_flight)):
        cache = Path(tempfile.mkdtemp(prefix="nxkit-cache-")) if in_flight > 1 else None
        config = ExplainConfig(max_neurons_in_flight=in_flight, **base)
        server, backend, wall, summaries = one_pass(
            run.activations_dir, neurons, args.latency, config, args.max_concurrency, cache
        )
        effective = server.requests * args.latency / wall
        rows[label] = (server, backend, wall, effective, summaries, cache)
        print(f"{label:>24}: {server.requests:,} requests, at most {server.max_in_flight} in flight, "
              f"{wall:.1f} s, effective concurrency {effective:.1f}")  # fmt: skip

    (_, _, wall1, eff1, _, _), (server, backend, wall, eff, summaries, cache) = rows.values()
    print(f"speed-up: {wall1 / wall:.1f}x; effective concurrency {eff:.1f} (target >= 32)")
    done = [s for s in summaries if s.status == "done"]
    n = len(summaries)
    req = backend.usage.requests / n
    prompt, completion = backend.usage.prompt_tokens / n, backend.usage.completion_tokens / n
    from nxkit.llm.cache import ResponseCache

    store = ResponseCache(cache) if cache else None
    cache_bytes = store.size_bytes() if store else 0
    print(f"per neuron (all scorers, {len(done)} of {n} done): {req:.1f} requests, {prompt:,.0f} prompt and "
          f"{completion:,.0f} completion tokens; response cache {cache_bytes / n / 1024:.1f} KB "
          f"({len(store) if store else 0:,} entries in one SQLite file)")  # fmt: skip
    for kind, (r, p, c) in sorted(server.by_kind.items()):
        scorer = {"explain": "explanation (best of k)", "simulate": "simulation (calibration, valid, control)"}
        print(f"  {scorer.get(kind, kind + ' scorer'):<42} {r / n:6.1f} requests, {p / n:8,.0f} prompt and "
              f"{c / n:6,.0f} completion tokens per neuron")  # fmt: skip
    rate = server.requests / wall
    hours = PAPER_NEURONS * req / rate / 3600
    print(
        f"projection for {PAPER_NEURONS:,} neurons at the measured {rate:.0f} requests/s: {PAPER_NEURONS * req:,.0f} "
        f"requests, {PAPER_NEURONS * (prompt + completion) / 1e9:.2f}B tokens, {hours:.1f} hours; response cache "
        f"{PAPER_NEURONS * cache_bytes / n / 1e9:.0f} GB"
    )
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
