"""Command line: `nxkit run` (the whole pipeline), `nxkit collect` (activation records) and `nxkit top` (print top windows)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .collect import Activations, CollectConfig, CollectError, collect
from .corpus import CorpusError, make_windows
from .explain import ExplainError
from .llm import LLMError
from .pipeline import PipelineError
from .simulate import SimulateError
from .subject import OFFLINE_DEFAULT, SubjectError, load_subject


def _run_dir(args) -> Path:
    return Path(args.run_dir) if args.run_dir else Path("runs") / args.name


def add_collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="demo", help="run name: results go to runs/NAME (default: demo)")
    p.add_argument("--run-dir", help="explicit run directory (overrides --name)")
    p.add_argument("--model", default=OFFLINE_DEFAULT, help=f"subject model (default: {OFFLINE_DEFAULT}, offline)")
    p.add_argument(
        "--corpus",
        default="default",
        help="default | fortunes | pydoc | hf:NAME[:CONFIG][:SPLIT] | FILE.txt | FILE.jsonl",
    )
    p.add_argument("--max-tokens", type=int, default=200_000, help="corpus tokens to use (default: 200000)")
    p.add_argument("--window", type=int, default=64, help="tokens per window (default: 64)")
    p.add_argument("--layers", type=int, nargs="+", help="layers to collect (default: all)")
    p.add_argument("--top-k", type=int, default=CollectConfig.top_k)
    p.add_argument("--n-random", type=int, default=CollectConfig.n_random)
    p.add_argument("--batch-size", type=int, default=CollectConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-seconds", type=float, default=CollectConfig.checkpoint_seconds)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reductions")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")


def cmd_collect(args) -> Path:
    model = load_subject(args.model, device=args.device)
    windows = make_windows(model.tokenizer, args.corpus, window=args.window, max_tokens=args.max_tokens, seed=args.seed)
    print(f"corpus: {windows.summary()}")
    cfg = CollectConfig(
        layers=args.layers,
        top_k=args.top_k,
        n_random=args.n_random,
        batch_size=args.batch_size,
        seed=args.seed,
        checkpoint_seconds=args.checkpoint_seconds,
        compile=not args.no_compile,
    )
    out = collect(model, windows, _run_dir(args) / "activations", cfg)
    print(f"activations: {out}")
    return out


def describe_top(
    acts: Activations, layers: list[int] | None = None, per_layer: int = 2, windows: int = 3, context: int = 8
) -> str:
    """Text showing, for the most selective neurons (highest kurtosis) of a few layers, the top
    tokens in context, the strongest token in [brackets]."""
    import numpy as np

    chosen = layers or sorted({acts.layers[0], acts.layers[len(acts.layers) // 2], acts.layers[-1]})
    lines = []
    for layer in chosen:
        kurt = np.nan_to_num(np.asarray(acts._array(layer, "moments")[:, 3]), nan=-np.inf)
        for neuron in np.argsort(-kurt)[:per_layer]:
            rec = acts.neuron_record(layer, int(neuron))
            lines.append(f"layer {layer} neuron {neuron}  (max {rec.max_activation:.2f}, kurtosis {rec.kurtosis:.0f})")
            for r in rec.most_positive_activation_records[:windows]:
                i = int(np.argmax(r.activations))
                lo, hi = max(0, i - context), min(len(r.tokens), i + context + 1)
                text = "".join(r.tokens[lo:i]) + "[" + r.tokens[i] + "]" + "".join(r.tokens[i + 1 : hi])
                lines.append(f"    {r.activations[i]:6.2f}  {text!r}")
    return "\n".join(lines)


def cmd_top(args) -> None:
    acts = Activations(_run_dir(args) / "activations")
    print(describe_top(acts, args.layers, args.per_layer))


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `nxkit run`: the collection's, then neurons, LLMs, best-of-k and revision."""
    from .pipeline import PipelineConfig as C

    add_collect_args(p)
    g = p.add_argument_group("neurons")
    g.add_argument(
        "--explain-layers",
        type=int,
        nargs="+",
        help="explain neurons of these layers only (default: every collected layer)",
    )
    g.add_argument(
        "--neurons", nargs="+", metavar="N|L:N", help="neurons to explain: N (in every chosen layer) or LAYER:N"
    )
    g.add_argument(
        "--sample",
        type=int,
        default=C.sample,
        help=f"else sample this many neurons per layer with --seed (default: {C.sample})",
    )
    g = p.add_argument_group("explainer and simulator")
    g.add_argument(
        "--explainer",
        default=C.explainer,
        help="local (offline SmolLM2, smoke-level) or a model name on an OpenAI-compatible server",
    )
    g.add_argument("--simulator", help="local or a model name (default: the explainer's)")
    g.add_argument(
        "--base-url", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1 (key from $OPENAI_API_KEY)"
    )
    g.add_argument("--simulator-base-url", help="the simulator's server, when it is another one")
    g.add_argument(
        "--best-of",
        type=int,
        default=C.best_of,
        help=f"explanations sampled per neuron, best kept (default: {C.best_of})",
    )
    g.add_argument("--explain-windows", type=int, default=C.explain_windows, help="top windows shown to the explainer")
    g.add_argument(
        "--calibration-windows",
        type=int,
        default=C.calibration_windows,
        help="top and random windows, each, that rank candidates",
    )
    g.add_argument(
        "--valid-windows",
        type=int,
        default=C.valid_windows,
        help="top and random windows, each, scored (default: all 10 and 10)",
    )
    g.add_argument("--sim-window-tokens", type=int, help="crop scored windows to this many tokens around their peak")
    g.add_argument(
        "--revision-rounds",
        type=int,
        default=C.revision_rounds,
        help=f"revision rounds, 0 to skip (default: {C.revision_rounds})",
    )
    g.add_argument("--retry-failed", action="store_true", help="retry neurons whose explanation failed")
    g.add_argument("--no-report", action="store_true", help="do not write report.html")


def cmd_run(args) -> Path:
    """Run or resume the pipeline, then print the summary table and the report's path."""
    from .pipeline import PipelineConfig, run_pipeline, summary_table
    from .score import OFFLINE_NOTE

    config = PipelineConfig(
        run_dir=str(_run_dir(args)),
        model=args.model,
        corpus=args.corpus,
        max_tokens=args.max_tokens,
        window=args.window,
        layers=args.layers,
        neurons=args.neurons,
        sample=args.sample,
        explain_layers=args.explain_layers,
        seed=args.seed,
        explainer=args.explainer,
        simulator=args.simulator,
        base_url=args.base_url,
        simulator_base_url=args.simulator_base_url,
        best_of=args.best_of,
        explain_windows=args.explain_windows,
        calibration_windows=args.calibration_windows,
        valid_windows=args.valid_windows,
        sim_window_tokens=args.sim_window_tokens,
        revision_rounds=args.revision_rounds,
        top_k=args.top_k,
        n_random=args.n_random,
        batch_size=args.batch_size,
        compile=not args.no_compile,
        checkpoint_seconds=args.checkpoint_seconds,
        device=args.device,
        retry_failed=args.retry_failed,
        report=not args.no_report,
    )
    t0 = time.perf_counter()
    result = run_pipeline(config)
    print("\n" + summary_table(result.run, result.neurons))
    if "local" in (config.explainer, config.simulator):
        print(OFFLINE_NOTE)
    if result.revision_skipped:
        print(f"note: {result.revision_skipped}")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"\nrun: {result.run.path}  ({time.perf_counter() - t0:.0f} s: {stages})")
    if result.report:
        print(f"report: {result.report}")
    return result.run.path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="nxkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="collect, explain, simulate and score, revise, and write the report (resumes)")
    add_run_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("collect", help="record every MLP neuron's activations over a corpus")
    add_collect_args(p)
    p.set_defaults(func=cmd_collect)
    p = sub.add_parser("top", help="print top-activating tokens in context for a few neurons")
    p.add_argument("--name", default="demo")
    p.add_argument("--run-dir")
    p.add_argument("--layers", type=int, nargs="+", help="layers to show (default: first, middle, last)")
    p.add_argument("--per-layer", type=int, default=2)
    p.set_defaults(func=cmd_top)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (SubjectError, CorpusError, CollectError, PipelineError, LLMError, ExplainError, SimulateError) as exc:
        print(f"nxkit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
