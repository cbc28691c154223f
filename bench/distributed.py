"""Collection past one process, on this machine (issue 31): 1 process x 2 threads against 2 torchrun ranks x 1 thread
over the same corpus, every layer of the offline model, in one run.

    .venv/bin/python bench/distributed.py [--tokens 200000] [--layers 0 ... 29]

Prints, per layout: wall time (start to the finished collection, the model's load included) and tokens/s, the ratio
of the two, each rank's pass and merge-and-write seconds with the merge's share of the wall time, and each rank's
peak memory; then whether the two collections keep the same windows (exact) and moments (within float tolerance).
Then a projection table for larger models from published forward-pass rates (see `PROJECTION`).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXACT = ["top_windows", "top_acts", "bottom_windows", "bottom_acts", "random_windows", "random_acts"]

A100_FP16 = 312e12
"""An A100's dense fp16/bf16 peak, FLOP/s (NVIDIA's datasheet)."""
UTILISATION = 0.4
"""An assumed share of that peak a large-batch forward pass reaches (an assumption, not measured here)."""
PROJECTION = [
    # (model, parameters, MLP neurons)
    ("GPT-2 XL", 1.56e9, 48 * 6400),
    ("Llama-3.1-8B", 8.0e9, 32 * 14336),
    ("Llama-3.1-70B", 70.6e9, 80 * 28672),
]
"""Forward-pass rates from FLOPs: about 2 x parameters per token (Kaplan et al., 2020) at `UTILISATION` of an A100's
peak; collection at the 0.7 of the bare forward pass that bench/collect.py targets. No GPU was measured: estimates."""


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--layers", type=int, nargs="*", default=None)
    ap.add_argument("--keep", help="keep the two collections under this folder")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="nxkit-dist-"))
    common = ["--max-tokens", str(args.tokens), "--corpus", "fortunes", "--collect.no-compile"]
    if args.layers:
        common += ["--collect.layers", *map(str, args.layers)]
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    base.pop("WORLD_SIZE", None)
    layouts = {
        "1 process x 2 threads": (
            [str(BIN / "nxkit"), "collect", "--run-dir", str(tmp / "one"), *common],
            {**base, "OMP_NUM_THREADS": "2"},
        ),
        "2 ranks x 1 thread": (
            [
                str(BIN / "torchrun"),
                "--standalone",
                "--nproc-per-node=2",
                "-m",
                "nxkit",
                "collect",
                "--run-dir",
                str(tmp / "two"),
                *common,
            ],
            {**base, "OMP_NUM_THREADS": "1"},
        ),  # fmt: skip
    }
    rates = {}
    for name, (cmd, env) in layouts.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        wall, err = run(cmd, env)
        rates[name] = args.tokens / wall
        ranks = re.findall(
            r"rank (\d+) of \d+: pass ([\d.]+) s, merge and write ([\d.]+) s, peak memory (\d+) MiB", err
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"{name}: {wall:.0f} s, {rates[name]:,.0f} tokens/s" + ("" if ranks else f"; peak memory {peak / 1024:.0f} MiB"
              + (" (the largest child so far)" if peak == before else "")))  # fmt: skip
        for rank, t_pass, t_merge, mem in ranks:
            print(f"  rank {rank}: pass {float(t_pass):.0f} s, merge and write {float(t_merge):.1f} s "
                  f"({float(t_merge) / wall:.1%} of the wall time), peak memory {mem} MiB")  # fmt: skip
    a, b = rates.values()
    print(f"ratio (2 ranks / 1 process): {b / a:.2f}")

    one, two = tmp / "one" / "activations", tmp / "two" / "activations"
    layers = sorted(int(p.name.split("_")[1]) for p in one.glob("layer_*"))
    same = all(
        np.array_equal(np.load(one / f"layer_{i:02d}/{n}.npy"), np.load(two / f"layer_{i:02d}/{n}.npy"))
        for i in layers
        for n in EXACT
    )
    worst = max(
        float(np.nanmax(np.abs(m1 - m2) / np.maximum(np.abs(m1), 1e-3)))
        for i in layers
        for m1, m2 in [(np.load(one / f"layer_{i:02d}/moments.npy"), np.load(two / f"layer_{i:02d}/moments.npy"))]
    )
    print(f"{len(layers)} layers: kept windows and values {'identical' if same else 'DIFFER'}; moments differ by at "
          f"most {worst:.1e} relative")  # fmt: skip

    print(f"\nprojection (no GPU measured: 2 x parameters FLOPs per token at {UTILISATION:.0%} of an A100's fp16 peak, "
          "collection at 0.7 of the bare forward pass):")  # fmt: skip
    print(f"{'model':<14} {'neurons':>9} {'tokens/s/GPU':>12} {'10M tokens':>11} {'100M tokens':>12}")
    for model, params, neurons in PROJECTION:
        rate = UTILISATION * A100_FP16 / (2 * params)
        eff = 0.7 * rate
        print(f"{model:<14} {neurons:>9,} {rate:>12,.0f} {10e6 / eff / 3600:>10.2f}h {100e6 / eff / 3600:>11.1f}h")
    print("(one GPU; N GPUs under torchrun divide the time by about N, the merge excepted; 70B needs several GPUs per "
          "replica for its weights)")  # fmt: skip


if __name__ == "__main__":
    main()
