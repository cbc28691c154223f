"""Scores to trust, measured: the offline default on the trained SmolLM2 and on its random re-initialisation side by
side, the interval coverage on synthetic neurons, and (optionally) the protocol before the change on the same neurons.

    .venv/bin/python bench/trust.py [--sample 10] [--max-tokens 200000] [--before-tree DIR]

Runs `nxkit run` (search explainer, exact simulator, both signs) on `runs/trust-trained` and, with
`--subject-init random`, on `runs/trust-random` (resumable: finished stages are reused), `--sample` neurons of each of
the 30 layers. Prints for each: the means with their counts and undefined counts, the mean with undefined as 0, the
share of neurons whose interval's lower bound is above 0, the split-half reliability, and the difference trained -
random with its bootstrap interval. `--before-tree DIR` (a checkout of the commit before the protocol change,
c51ce74) scores the same neurons of the same collection with that code, for the size of the selection effects.
Interval coverage: synthetic neurons (rule neurons and mixtures over Python's pydoc text), simulated by their own rule
plus noise; the share of 95% intervals from the valid windows that cover the score on the test windows.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nxkit.cli import main as nxkit
from nxkit.collection.collect import CollectConfig
from nxkit.heldout import held_out
from nxkit.records import SIMULATED_NORMALIZED_ACTIVATIONS, NeuronId, SequenceSimulation
from nxkit.runs import Run
from nxkit.scorers.correlation import difference_of_means, mean_scores, means_line, score_simulation, scores
from nxkit.training import synthetic as syn
from nxkit.views.report import split_half_line


def run_one(name: str, args, extra: list[str]) -> Run:
    argv = ["run", "--name", name, "--max-tokens", str(args.max_tokens), "--sample", str(args.sample), "--no-report"]
    t0 = time.perf_counter()
    assert nxkit([*argv, *extra]) == 0
    print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return Run(Path("runs") / name)


def describe(label: str, run: Run) -> dict:
    out = {}
    for side in run.sides():
        df = side.table()
        done = df[df["status"] == "done"]
        m = mean_scores(done.to_dict("records"))
        print(f"{label}, {side.sign} side: {means_line(m)}")
        print(f"{label}, {side.sign} side: {split_half_line(df)}")
        out[side.sign] = done
    return out


def coverage(n_neurons: int = 240, seed: int = 0) -> None:
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)).split()
    windows = [[" " + w for w in words[i * 24 : (i + 1) * 24]] for i in range(600)]
    neurons = syn.rule_neurons()
    neurons += syn.mixtures(neurons, n_neurons, seed=seed)
    rng = np.random.default_rng(seed)
    covered = total = wide = 0
    for i, neuron in enumerate(neurons[:n_neurons]):
        record = neuron.record(windows, NeuronId(0, i), CollectConfig(top_k=40, n_random=30), seed=i)
        if record.max_activation <= 0:
            continue
        got = []
        for split in ("valid", "test"):
            ws = held_out(record, split, None)
            sims = [
                SequenceSimulation(
                    list(w.tokens),
                    list(np.clip(neuron.activations(w.tokens) / record.max_activation * 10 + rng.normal(0, 2, len(w.tokens)), 0, 10)),
                    SIMULATED_NORMALIZED_ACTIVATIONS, [], [],
                )
                for w in ws
            ]  # fmt: skip
            got.append(scores(score_simulation(ws, sims, record.max_activation), [w.split for w in ws]))
        interval, fresh = got[0].top_and_random_interval, got[1].top_and_random
        if interval is None or fresh is None:
            continue
        total += 1
        covered += interval[0] <= fresh <= interval[1]
        # a fresh estimate has noise of its own: the interval for it is sqrt(2) times as wide around the score
        mid, half = got[0].top_and_random, (interval[1] - interval[0]) / 2 * math.sqrt(2)
        wide += mid - half <= fresh <= mid + half
    print(f"interval coverage: {covered} of {total} 95% intervals from the valid windows cover the score on the test "
          f"windows ({covered / total:.1%}; target 90-97%)")  # fmt: skip
    print(f"the same intervals widened by sqrt(2) around the score (a prediction interval for a fresh estimate): "
          f"{wide} of {total} ({wide / total:.1%})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=10, help="neurons per layer (30 layers)")
    ap.add_argument("--max-tokens", type=int, default=200_000)
    ap.add_argument("--before-tree", default=None, help="a checkout of the commit before the protocol change")
    ap.add_argument("--skip-runs", action="store_true", help="only the interval coverage")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; command: {' '.join(sys.argv)}", flush=True)
    coverage()
    if args.skip_runs:
        return
    trained = run_one("trust-trained", args, [])
    random_run = run_one("trust-random", args, ["--subject-init", "random"])
    a, b = describe("trained", trained), describe("random init", random_run)
    for sign in a:
        for key in ("top_and_random", "random_only"):
            diff, interval = difference_of_means(a[sign][key].tolist(), b.get(sign, a[sign])[key].tolist())
            ci = f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "n/a"
            print(f"{sign} side, {key}: trained - random {diff:+.3f}, 95% interval {ci}")
    if args.before_tree:
        before = Path("runs") / "trust-before"
        if not (before / "activations").exists():
            before.mkdir(parents=True, exist_ok=True)
            (before / "activations").symlink_to((trained.path / "activations").resolve(), target_is_directory=True)
        env = {**os.environ, "PYTHONPATH": str(Path(args.before_tree).resolve())}
        cmd = [sys.executable, "-m", "nxkit.cli", "run", "--run-dir", str(before.resolve()), "--max-tokens",
               str(args.max_tokens), "--sample", str(args.sample), "--no-report"]  # fmt: skip
        # run from inside that checkout: `python -m` puts the working directory before PYTHONPATH
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=args.before_tree)
        old = describe("before the protocol change (same collection, same neurons)", Run(before))
        for sign in old:
            for key in ("top_and_random", "random_only", "shuffled_gap"):
                x, y = a[sign][key], old[sign][key]
                nx_, ny = int(x.notna().sum()), int(y.notna().sum())
                mx = x.mean() if nx_ else math.nan
                my = y.mean() if ny else math.nan
                print(f"{sign} side, {key}: now {mx:+.3f} (n={nx_}) vs before {my:+.3f} (n={ny})")


if __name__ == "__main__":
    main()
