"""Does the offline simulator read explanations? Held-out synthetic neurons scored with their true explanation
and with another neuron's, for nxkit-sim and for the prompted SmolLM2, and simulation speed on the same windows.

    .venv/bin/python bench/offline_quality.py [--neurons 200] [--prompted-neurons 30] [--sim PATH]

Prints one line per measure; every figure is measured in this run. The prompted SmolLM2 takes about a second
per window on a CPU, so it runs on the first `--prompted-neurons` of the same neurons (said in its line).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from nxkit.explain import simulate_and_score
from nxkit.heldout import held_out
from nxkit.llm import run_sync
from nxkit.simulate import make_simulator
from nxkit.train import SimTrainConfig, corpus_token_windows, synthetic_examples


def held_out_neurons(n: int, seed: int):
    """`n` held-out synthetic neurons (kinds and WordNet subtrees never trained on) with their records."""
    from nxkit.offline import load_offline_hf

    tok = load_offline_hf()[1]
    windows = corpus_token_windows(tok, 1500, seed=seed + 1)  # other windows than training's (seed 0)
    records, _ = synthetic_examples(windows, SimTrainConfig(seed=seed, n_mixtures=40), held_out=True)
    random.Random(seed).shuffle(records)
    return records[:n]


def scores(simulator, records, n_windows: int, crop: int, seed: int) -> tuple[list[float], list[float], float, int]:
    """Mean top-and-random score with the true and with a shuffled explanation; seconds and windows simulated."""
    rng = random.Random(seed)
    true, shuffled, n_sim, t0 = [], [], 0, time.perf_counter()
    for i, (neuron, rec) in enumerate(records):
        other = records[(i + 1 + rng.randrange(len(records) - 1)) % len(records)][0]
        windows = held_out(rec, "valid", n_windows, crop)
        for text, out in ((neuron.explanations[0], true), (other.explanations[0], shuffled)):
            _, s, _ = run_sync(simulate_and_score(simulator, text, windows, rec.max_activation))
            n_sim += len(windows)
            if s.top_and_random is not None:
                out.append(s.top_and_random)
    return true, shuffled, time.perf_counter() - t0, n_sim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--neurons", type=int, default=200)
    p.add_argument("--prompted-neurons", type=int, default=30)
    p.add_argument("--windows", type=int, default=5, help="top and random held-out windows, each")
    p.add_argument("--crop", type=int, default=32, help="tokens per window")
    p.add_argument("--sim", default=None, help="nxkit-sim weights (default: the shipped data/nxkit-sim)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    records = held_out_neurons(args.neurons, args.seed)
    families = {f: sum(n.family == f for n, _ in records) for f in ("concept", "surface", "context", "mixture")}
    print(
        f"held-out synthetic neurons: {len(records)} {families}; {args.windows}+{args.windows} windows of {args.crop}"
    )
    rows = {}
    for name, sim, recs in (
        ("nxkit-sim", make_simulator("nxkit-sim", path=args.sim), records),
        ("prompted SmolLM2", make_simulator("local"), records[: args.prompted_neurons]),
    ):
        true, shuffled, seconds, n_sim = scores(sim, recs, args.windows, args.crop, args.seed)
        rows[name] = n_sim / seconds
        t, s = float(np.mean(true)), float(np.mean(shuffled))
        print(
            f"{name:17s} on {len(recs):3d} neurons: true explanation {t:+.3f} (n={len(true)}), "
            f"shuffled {s:+.3f} (n={len(shuffled)}), gap {t - s:+.3f}; {n_sim / seconds:.2f} windows/s"
        )
    print(
        f"speed nxkit-sim / prompted SmolLM2: {rows['nxkit-sim'] / rows['prompted SmolLM2']:.1f}x (windows/s, same neurons' windows)"
    )
    print("targets: nxkit-sim true >= 0.6 and gap >= 0.4; speed >= 5x")


if __name__ == "__main__":
    main()
