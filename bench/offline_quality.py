"""Does the offline simulator read explanations? Held-out synthetic neurons scored with their true explanation
and with another neuron's, per family, for nxkit-sim and for the prompted SmolLM2; the same for training kinds on
new windows (in-distribution); simulation speed on the same windows, and explanations per second on fixed windows.

    .venv/bin/python bench/offline_quality.py [--neurons 200] [--prompted-neurons 30] [--sim PATH]

Prints one line per measure; every figure is measured in this run (the training time is the one recorded in the
weights' config.json by `nxkit train simulator`). The prompted SmolLM2 takes about a second per window on a CPU,
so it runs on the first `--prompted-neurons` of the same neurons (said in its line).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from nxkit.explain_score import simulate_and_score
from nxkit.heldout import held_out
from nxkit.llm.base import run_sync
from nxkit.simulators import make_simulator
from nxkit.simulators.trained import shipped_dir
from nxkit.training.train import SimTrainConfig, corpus_token_windows, synthetic_records, windows_apart

FAMILIES = ("concept", "surface", "context", "mixture")


def synthetic_neurons(n: int, seed: int, held_out_side: bool = True, max_concepts: int | None = None):
    """`n` synthetic neurons with their records over windows that training never used (corpus seed `seed + 1`, and no
    window sharing a 16-token span with a training window):
    held-out kinds and WordNet subtrees, or (`held_out_side=False`) training kinds on new windows."""
    from nxkit.offline import load_offline_hf

    tok = load_offline_hf()[1]
    training = corpus_token_windows(tok, SimTrainConfig().corpus_windows, seed=0)  # what nxkit-sim trained on
    windows = windows_apart(corpus_token_windows(tok, 3000, seed=seed + 1), training)[:1500]  # no 16-token span shared
    config = SimTrainConfig(seed=seed, n_mixtures=40, max_concepts=max_concepts)
    records = synthetic_records(windows, config, held_out=held_out_side)
    rng = random.Random(seed)
    rng.shuffle(records)
    # every surface and context neuron (a dozen held-out kinds), then concepts and mixtures: a family of one or two
    # neurons would make its gap a coin toss
    rules = [r for r in records if r[0].family in ("surface", "context")]
    picked = (rules + [r for r in records if r[0].family not in ("surface", "context")])[:n]
    rng.shuffle(picked)
    return picked


def scores(simulator, records, n_windows: int, crop: int, seed: int):
    """Per family, the top-and-random scores with the true and with a shuffled explanation; seconds and windows."""
    rng = random.Random(seed)
    out: dict[tuple[str, str], list[float]] = {}
    n_sim, t0 = 0, time.perf_counter()
    for i, (neuron, rec) in enumerate(records):
        other = records[(i + 1 + rng.randrange(len(records) - 1)) % len(records)][0]
        windows = held_out(rec, "valid", n_windows, crop)
        for key, text in (("true", neuron.explanations[0]), ("shuffled", other.explanations[0])):
            _, s, _ = run_sync(simulate_and_score(simulator, text, windows, rec.max_activation))
            n_sim += len(windows)
            if s.top_and_random is not None:
                out.setdefault((neuron.family, key), []).append(s.top_and_random)
    return out, time.perf_counter() - t0, n_sim


def report(name: str, n: int, got: dict, windows_s: float) -> float:
    """Prints the overall line and one per family; returns the overall gap."""
    true = [v for (_, k), vs in got.items() if k == "true" for v in vs]
    shuffled = [v for (_, k), vs in got.items() if k == "shuffled" for v in vs]
    t, s = float(np.mean(true)), float(np.mean(shuffled))
    print(
        f"{name:28s} on {n:3d} neurons: true explanation {t:+.3f} (n={len(true)}), "
        f"shuffled {s:+.3f} (n={len(shuffled)}), gap {t - s:+.3f}; {windows_s:.2f} windows/s"
    )
    for f in FAMILIES:
        if (f, "true") in got and (f, "shuffled") in got:
            ft, fs = float(np.mean(got[(f, "true")])), float(np.mean(got[(f, "shuffled")]))
            print(f"    {f:8s} n={len(got[(f, 'true')]):3d}: true {ft:+.3f}, shuffled {fs:+.3f}, gap {ft - fs:+.3f}")
    return t - s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--neurons", type=int, default=200)
    p.add_argument("--in-distribution", type=int, default=100, help="training-kind neurons on new windows")
    p.add_argument("--prompted-neurons", type=int, default=30)
    p.add_argument("--windows", type=int, default=5, help="top and random held-out windows, each")
    p.add_argument("--crop", type=int, default=32, help="tokens per window")
    p.add_argument("--sim", default=None, help="nxkit-sim weights (default: the shipped data/nxkit-sim)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    records = synthetic_neurons(args.neurons, args.seed)
    families = {f: sum(n.family == f for n, _ in records) for f in FAMILIES}
    print(
        f"held-out synthetic neurons: {len(records)} {families}; {args.windows}+{args.windows} windows of {args.crop}"
    )
    sim = make_simulator("nxkit-sim", path=args.sim)
    speed = {}
    runs = [("nxkit-sim held-out", sim, records)]
    if args.prompted_neurons:
        runs.append(("prompted SmolLM2 held-out", make_simulator("local"), records[: args.prompted_neurons]))
    for name, simulator, recs in runs:
        got, seconds, n_sim = scores(simulator, recs, args.windows, args.crop, args.seed)
        speed[name] = n_sim / seconds
        report(name, len(recs), got, n_sim / seconds)
    if args.in_distribution:
        seen = synthetic_neurons(args.in_distribution, args.seed, held_out_side=False, max_concepts=200)
        got, seconds, n_sim = scores(sim, seen, args.windows, args.crop, args.seed)
        report("nxkit-sim training kinds", len(seen), got, n_sim / seconds)
    if len(speed) == 2:
        ratio = speed["nxkit-sim held-out"] / speed["prompted SmolLM2 held-out"]
        print(f"speed nxkit-sim / prompted SmolLM2: {ratio:.1f}x (windows/s, same neurons' windows)")
    # best-of-k: many candidate explanations on the same fixed windows
    windows = [list(w.tokens) for w in held_out(records[0][1], "valid", args.windows, args.crop)]
    texts = [n.explanations[0] for n, _ in records[:50]]
    t0 = time.perf_counter()
    for text in texts:
        sim.simulate_sync(text, windows)
    print(f"nxkit-sim: {len(texts) / (time.perf_counter() - t0):.1f} explanations/s on {len(windows)} fixed windows")
    config = json.loads((Path(args.sim) if args.sim else shipped_dir()).joinpath("config.json").read_text())
    print(f"nxkit-sim training time (recorded by nxkit train simulator): {config.get('train_seconds', '?')} s")
    print("targets: milestone 1: held-out true >= 0.35, gap >= 0.15, every family's gap > 0; goal: true >= 0.6 and")
    print("gap >= 0.4; speed >= 20x")


if __name__ == "__main__":
    main()
