"""The offline default's mean scores: explain (best-of-k), simulate and score N random live neurons
with the in-process SmolLM2, then the shuffled-explanation control.

    .venv/bin/python bench/offline_scores.py [--neurons 20] [--run runs/offline-scores]

Resumable: re-running skips finished neurons. Prints mean top-and-random, random-only,
shuffled-control scores and the gap.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from nxkit.explain_score import explain_and_score, shuffled_controls
from nxkit.explainers.base import ExplainConfig
from nxkit.llm.local import LocalBackend
from nxkit.notebook import ensure_collection
from nxkit.records import NeuronId
from nxkit.scorers.correlation import OFFLINE_NOTE, mean_scores
from nxkit.simulators import make_simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/offline-scores")
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--neurons", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64 * 512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--candidates", type=int, default=2, help="explanations per neuron (best-of-k)")
    ap.add_argument("--explain-windows", type=int, default=5, help="top windows shown to the explainer")
    ap.add_argument("--valid-windows", type=int, default=5, help="top and random valid windows scored, each")
    ap.add_argument("--sim-window-tokens", type=int, default=None, help="crop held-out windows (None: 64 tokens)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    run = ensure_collection(args.run, layers=args.layers, max_tokens=args.max_tokens, source="default")
    acts = run.activations()
    pool = [NeuronId(layer, n) for layer in args.layers for n in range(acts.d_mlp)]
    random.Random(args.seed).shuffle(pool)
    neurons = pool[: args.neurons]
    backend = LocalBackend()
    simulator = make_simulator(backend)
    config = ExplainConfig(
        best_of=args.candidates,
        explain_windows=args.explain_windows,
        explain_window_tokens=32,
        calibration_windows=2,
        valid_windows=args.valid_windows,
        sim_window_tokens=args.sim_window_tokens,
    )
    explain_and_score(run, neurons, backend, simulator, config)
    shuffled_controls(run, simulator)
    table = run.table(neurons=neurons)
    statuses = list(table.status)
    means = mean_scores(table[table.status == "done"].to_dict("records"))
    print(
        f"run {run.path}: {len(neurons)} neurons of layers {args.layers}; status counts "
        f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }; {time.perf_counter() - t0:.0f} s"
    )
    print(f"config: {json.dumps(config.__dict__)}; simulator mode {simulator.mode}")
    for key in ("top_and_random", "random_only", "shuffled_control", "shuffled_gap"):
        value = means[key]
        print(f"mean {key:17s} = {'undefined' if value is None else f'{value:+.3f}'} over {means['n_' + key]} neurons")
    print(OFFLINE_NOTE)


if __name__ == "__main__":
    main()
