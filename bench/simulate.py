"""Seconds per neuron to simulate and score 10 windows (5 top, 5 random) with the local backend,
one full prompt per window (no reuse) versus reusing the few-shot + explanation prefix's keys and values.

    .venv/bin/python bench/simulate.py [--neurons 3] [--run runs/offline-scores]

Prints one line per mode and the ratio, measured in one run (modes interleaved per neuron).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nxkit.explain_score import simulate_and_score
from nxkit.heldout import held_out
from nxkit.llm.base import run_sync
from nxkit.llm.local import LocalBackend
from nxkit.notebook import ensure_collection
from nxkit.scorers.correlation import OFFLINE_NOTE
from nxkit.simulators import make_simulator

EXPLANATIONS = ["words about money", "the end of a sentence", "names of people", "verbs in the past tense"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/offline-scores")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--neurons", type=int, default=3)
    args = ap.parse_args()
    run = ensure_collection(args.run, layers=[args.layer], max_tokens=64 * 512, source="default")
    acts = run.activations()
    backend = LocalBackend()
    sim = make_simulator(backend)
    records = [acts.neuron_record(args.layer, n) for n in range(acts.d_mlp)]
    records = [r for r in records if r.max_activation > 0][: args.neurons]
    run_sync(simulate_and_score(sim, "warm-up", held_out(records[0], "valid", 1), records[0].max_activation))
    stats = {mode: {"s": 0.0, "requests": 0, "prompt_tokens": 0, "reused": 0} for mode in ("no reuse", "prefix reuse")}
    diffs = []
    for i, rec in enumerate(records):
        windows = held_out(rec, "valid", 5)
        assert len(windows) == 10, f"neuron {rec.neuron_id} has {len(windows)} valid windows"
        expl = EXPLANATIONS[i % len(EXPLANATIONS)]
        preds = {}
        for mode, reuse in (("no reuse", False), ("prefix reuse", True)):
            backend.reuse_prefix = reuse
            backend.usage.reset()
            t0 = time.perf_counter()
            scored, _ = run_sync(simulate_and_score(sim, expl, windows, rec.max_activation))
            st = stats[mode]
            st["s"] += time.perf_counter() - t0
            st["requests"] += backend.usage.requests
            st["prompt_tokens"] += backend.usage.prompt_tokens
            st["reused"] += backend.usage.reused_prompt_tokens
            preds[mode] = np.concatenate(
                [s.simulation.expected_activations for s in scored.scored_sequence_simulations]
            )
        diffs.append(float(np.abs(preds["no reuse"] - preds["prefix reuse"]).max()))
    n = len(records)
    print(
        f"local backend (SmolLM2-135M, CPU), {n} neurons x 10 windows of {len(records[0].random_sample[0].tokens)} tokens, all-at-once simulation + scoring"
    )
    for mode, st in stats.items():
        print(
            f"{mode:13s}: {st['s'] / n:6.2f} s/neuron | {st['requests'] / n:.0f} requests/neuron | "
            f"{st['prompt_tokens'] / n:,.0f} prompt tokens computed/neuron | {st['reused'] / n:,.0f} reused/neuron"
        )
    print(f"speed-up of prefix reuse: {stats['no reuse']['s'] / stats['prefix reuse']['s']:.2f}x (target >= 2x)")
    print(f"largest difference between the two modes' predictions: {max(diffs):.2e} (0-9 scale)")
    print(OFFLINE_NOTE)


if __name__ == "__main__":
    main()
