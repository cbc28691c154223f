"""The ablation score measured (issue 29): its cost on this CPU, and how it relates to the correlation score on real
SmolLM2 neurons, trained against randomly re-initialised.

    .venv/bin/python bench/ablation.py cost [--neurons 8]
    .venv/bin/python bench/ablation.py runs [--sample 7]
    .venv/bin/python bench/ablation.py report
    .venv/bin/python bench/ablation.py show-output --collection runs/NAME/activations [--sample 1]

`cost`: for `--neurons` neurons spread over the layers, each with 10 valid windows of 64 tokens (5 top, 5 random) of
the trained collection and a simulation (their real activations with noise), the seconds per neuron of three paths:
a naive full forward per variant (unchanged, simulation, mean) per neuron, the cached layer input with the upper
blocks only per neuron, and the same with all the neurons batched in one call. Prints the ratios, measured in this
one run.

`runs`: `nxkit run` with the offline default (search explainer, exact simulator), positive side, `--sample` neurons per
layer of all 30 layers, `--explain.scorers simulation ablation`, on `runs/ablation-trained` and, with
`--subject-init random`, on `runs/ablation-random` (resumable). When `runs/trust-trained` / `runs/trust-random` hold a
finished collection of the same corpus (bench/trust.py), it is linked instead of collected again.

`report`: for each model, the correlation across neurons between the correlation score and the ablation score, the
ablation score's mean with its count and undefined count, the binned relation (mean ablation per band of
correlation) beside the paper's (correlation 0.9 goes with ablation about 0.6 on top and random windows, Bills et al.
2023), and ten neurons with their explanation, what they write and the three scores side by side.

`show-output`: the LLM explainer (`--explainer`, default the offline `local` SmolLM2) on `--sample` neurons per layer of
one collection, without and with what each neuron writes in its prompt (`--explain.show-output`), into
`runs/show-output-off` and `runs/show-output-on`; prints each score's mean both ways and the paired difference over
neurons with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path("runs")
BANDS = [(-1.0, 0.0), (0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01)]


def cost(args) -> None:
    import torch

    from nxkit.collection.ablate import AblationJob, ablate
    from nxkit.collection.subject import load_subject
    from nxkit.heldout import held_out
    from nxkit.runs import Run

    torch.set_num_threads(2)
    acts = Run(_trained_dir()).activations()
    model = load_subject()
    rng = np.random.default_rng(0)
    layers = np.linspace(0, 29, args.neurons).round().astype(int)
    jobs = []
    for layer in layers:
        neuron = int(rng.integers(0, acts.d_mlp))
        record = acts.neuron_record(int(layer), neuron)
        windows = held_out(record, "valid", 5)
        sim = [[a + float(rng.normal(0, 0.1)) for a in w.activations] for w in windows]
        mean = float(record.mean)
        jobs.append(AblationJob(int(layer), neuron, [w.token_ids for w in windows], sim, mean))
    n_windows = sum(len(j.token_ids) for j in jobs)
    print(f"{len(jobs)} neurons (layers {layers.tolist()}), {n_windows} windows of 64 tokens, 3 variants each")
    ablate(model, jobs[:1])  # warm up (and the cached path's one-off check per layer below)
    for j in jobs:
        ablate(model, [AblationJob(j.layer, j.neuron, j.token_ids[:1], j.simulated[:1], j.mean)])
    timings = {}
    for label, call in [
        ("naive: full forward per variant, per neuron", lambda: [ablate(model, [j], cached=False) for j in jobs]),
        ("cached layer input, per neuron", lambda: [ablate(model, [j]) for j in jobs]),
        ("cached layer input, neurons batched", lambda: ablate(model, jobs)),
    ]:
        t0 = time.perf_counter()
        out = call()
        timings[label] = (time.perf_counter() - t0) / len(jobs)
        print(f"  {label}: {timings[label]:.2f} s per neuron (10 windows)", flush=True)
    naive, per, batched = timings.values()
    print(f"speed-up over naive: cached {naive / per:.2f}x, cached and batched {naive / batched:.2f}x")
    print(f"target <= 1 s per neuron: {'met' if batched <= 1 else 'missed'} ({batched:.2f} s)")
    del out


def _trained_dir() -> Path:
    for name in ("ablation-trained", "trust-trained", "demo"):
        if (ROOT / name / "activations" / "manifest.json").exists():
            return ROOT / name
    sys.exit("no trained collection in runs/: run `bench/ablation.py runs` first")


def runs(args) -> None:
    from nxkit.cli import main as nxkit

    for init, name, reuse in [
        ("trained", "ablation-trained", "trust-trained"),
        ("random", "ablation-random", "trust-random"),
    ]:
        path = ROOT / name
        path.mkdir(parents=True, exist_ok=True)
        src = ROOT / reuse / "activations"
        if not (path / "activations").exists() and (src / "manifest.json").exists():
            (path / "activations").symlink_to(src.resolve(), target_is_directory=True)
        argv = [
            "run", "--name", name, "--max-tokens", str(args.max_tokens), "--sample", str(args.sample), "--sign",
            "positive", "--no-report", "--explain.scorers", "simulation", "ablation", "--explain.valid-windows", "5",
            "--revise.rounds", "0",
        ]  # fmt: skip
        if init == "random":
            argv += ["--subject-init", "random"]
        t0 = time.perf_counter()
        assert nxkit(argv) == 0
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


def report(args) -> None:
    from nxkit.runs import Run

    for name in ("ablation-trained", "ablation-random"):
        run = Run(ROOT / name)
        df = run.table()
        df = df[df["status"] == "done"]
        corr, abl = df["top_and_random"], df["ablation_top_and_random"]
        both = df[corr.notna() & abl.notna()]
        print(f"\n## {name}: {len(df)} neurons done, {int(abl.isna().sum())} with an undefined ablation score")
        flags = df["ablation_flag"].dropna().value_counts().to_dict()
        print(f"undefined ablation scores by flag: {flags or 'none'}")
        print(
            f"ablation (top and random): mean {abl.mean():+.3f} over {int(abl.notna().sum())}; random only "
            f"{df['ablation_random_only'].mean():+.3f} over {int(df['ablation_random_only'].notna().sum())}"
        )
        print(f"correlation (top and random): mean {corr.mean():+.3f} over {int(corr.notna().sum())}")
        if len(both) > 2:
            r = float(np.corrcoef(both["top_and_random"], both["ablation_top_and_random"])[0, 1])
            rho = float(both["top_and_random"].rank().corr(both["ablation_top_and_random"].rank()))
            print(f"across {len(both)} neurons: Pearson r(correlation, ablation) {r:+.3f}, Spearman {rho:+.3f}")
        print("binned: correlation band -> mean ablation (count); the paper: 0.9 -> about 0.6")
        for low, high in BANDS:
            band = both[(both["top_and_random"] >= low) & (both["top_and_random"] < high)]
            value = f"{band['ablation_top_and_random'].mean():+.3f}" if len(band) else "   -  "
            print(f"  [{low:+.1f}, {min(high, 1.0):+.1f}): {value} ({len(band)})")
        if name == "ablation-trained":
            ten(run, both)


def ten(run, both) -> None:
    acts = run.activations()
    pick = both.sort_values("top_and_random", ascending=False)
    pick = pd_concat_every(pick, 10)
    print(
        "\nten neurons (spread over the range of correlation): explanation | writes | corr t&r, random-only, ablation"
    )
    for _, row in pick.iterrows():
        writes = acts.writes(int(row["layer"]), int(row["neuron"]))
        line = writes.line(4) if writes is not None else "-"
        print(
            f"  {int(row['layer'])}:{int(row['neuron'])} {row['explanation'][:70]!r} | {line} | "
            f"{row['top_and_random']:+.2f} {_f(row['random_only'])} {row['ablation_top_and_random']:+.2f}"
        )


def pd_concat_every(df, n: int):
    """`n` rows of `df` at even steps (its first and its last included)."""
    idx = np.unique(np.linspace(0, len(df) - 1, min(n, len(df))).round().astype(int))
    return df.iloc[idx]


def _f(x) -> str:
    return "  -  " if x is None or x != x else f"{x:+.2f}"


def show_output(args) -> None:
    """The LLM explainer with and without what the neuron writes (`--explain.show-output`), on the same neurons of one
    collection, each explanation scored by correlation and by ablation; the paired differences over neurons."""
    from nxkit.cli import main as nxkit
    from nxkit.runs import Run

    collection = Path(args.collection).resolve()
    if not (collection / "manifest.json").exists():
        sys.exit(f"--collection {collection}: no finished collection there (it needs what neurons write, too)")
    tables = {}
    for label, extra in (("off", []), ("on", ["--explain.show-output"])):
        name = f"show-output-{label}"
        path = ROOT / name
        path.mkdir(parents=True, exist_ok=True)
        if not (path / "activations").exists():
            (path / "activations").symlink_to(collection, target_is_directory=True)
        argv = [
            "run", "--name", name, "--explainer", args.explainer, "--corpus", args.corpus, "--max-tokens",
            str(args.max_tokens), "--sample", str(args.sample), "--sign", "positive", "--no-report",
            "--explain.best-of", str(args.best_of), "--explain.scorers", "simulation", "ablation",
            "--explain.valid-windows", "5", "--revise.rounds", "0", *extra,
        ]  # fmt: skip
        t0 = time.perf_counter()
        assert nxkit(argv) == 0
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        df = Run(path).table()
        tables[label] = df[df["status"] == "done"].set_index(["layer", "neuron"])
    off, on = tables["off"], tables["on"]
    print(f"\nexplainer {args.explainer!r}, {len(off)} and {len(on)} neurons done without and with what they write")
    rng = np.random.default_rng(0)
    for column in ("top_and_random", "ablation_top_and_random"):
        pair = off[[column]].add_suffix("_off").join(on[[column]].add_suffix("_on"), how="inner").dropna()
        d = (pair[f"{column}_on"] - pair[f"{column}_off"]).to_numpy()
        if not len(d):
            print(f"{column}: no neuron with both scores defined")
            continue
        boot = [rng.choice(d, len(d)).mean() for _ in range(2000)]
        low, high = np.percentile(boot, [2.5, 97.5])
        print(
            f"{column}: off {pair[f'{column}_off'].mean():+.3f}, on {pair[f'{column}_on'].mean():+.3f} over {len(d)} "
            f"neurons with both defined; on - off {d.mean():+.3f} [{low:+.3f}, {high:+.3f}] (95% bootstrap over neurons)"
        )
    for (layer, neuron), row in on.head(6).iterrows():
        before = off.loc[(layer, neuron), "explanation"] if (layer, neuron) in off.index else "-"
        print(f"  {layer}:{neuron} off {str(before)[:60]!r} | on {str(row['explanation'])[:60]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["cost", "runs", "report", "show-output"])
    parser.add_argument("--collection", help="show-output: a finished collection (its activations/ folder)")
    parser.add_argument("--explainer", default="local", help="show-output: the LLM explainer")
    parser.add_argument("--corpus", default="fortunes")
    parser.add_argument("--best-of", type=int, default=2)
    parser.add_argument("--neurons", type=int, default=8)
    parser.add_argument("--sample", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=200000)
    args = parser.parse_args()
    {"cost": cost, "runs": runs, "report": report, "show-output": show_output}[args.part](args)


if __name__ == "__main__":
    main()
