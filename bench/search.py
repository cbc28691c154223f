"""The compositional-search explainer, measured: planted rules recovered on synthetic neurons, held-out scores and
the shuffled control on real SmolLM2 neurons across all 30 layers, beside the prompted SmolLM2, and speed.

    .venv/bin/python bench/search.py [--synthetic 240] [--per-layer 7] [--llm-neurons 8] [--run runs/demo]

Synthetic part: neurons of the held-out side of `nxkit.training.synthetic` (WordNet subtrees noun.food, noun.animal,
noun.body, verb.motion; the held-out rule kinds; mixtures) plus every other surface and context kind, built over
1,000 windows of the default corpus. A rule is recovered when a (not negated) term of the best formula is the
same concept, its parent or its child, or the same surface or context rule; a mixture when both of its parts are.

Real part: `--per-layer` neurons sampled from each layer of the run's collection (`make demo` makes it; collected
here when missing), each explained by search and scored exactly on its held-out valid windows; the shuffled
control scores each neuron's windows with the formula of a neuron fixed in advance by a seeded permutation. The
prompted SmolLM2 explains and simulates the first `--llm-neurons` of them (it takes about a minute a neuron on a
2-core CPU), with its own shuffled control. Ten neurons are printed with their top tokens in context.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict

import numpy as np

from nxkit.explain_score import process_neuron, simulate_and_score
from nxkit.explainers.base import ExplainConfig
from nxkit.explainers.llm import LLMExplainer
from nxkit.explainers.search import SearchConfig, SearchExplainer
from nxkit.formulas import Formula, Primitive
from nxkit.heldout import held_out
from nxkit.llm.base import run_sync
from nxkit.records import NeuronId
from nxkit.rules import word_spans
from nxkit.scorers.correlation import difference_of_means
from nxkit.simulators.exact import FormulaSimulator
from nxkit.wordnet import is_related

SURFACE_NAMES = {"comma": "punct:,", "question": "punct:?", "period": "punct:.", "colon": "punct::"}


def true_primitive(name: str) -> Primitive | str:
    """The primitive a synthetic rule neuron is (a concept's synset name for concepts)."""
    if name.startswith("concept:"):
        return name[len("concept:") :]
    if name.startswith("after:"):
        return Primitive("after", name[len("after:") :])
    if name in ("quotes", "brackets", "after_negation", "repeat"):
        return Primitive("context", name)
    return Primitive("surface", SURFACE_NAMES.get(name, name))


def matches(truth: Primitive | str, formula) -> bool:
    terms = [formula.first] + [p for op, p in formula.rest if op != "and_not"]
    if isinstance(truth, str):
        return any(t.kind == "concept" and is_related(t.arg, truth) for t in terms)
    return truth in terms


def recovered(name: str, formula) -> bool:
    if name.startswith("mix:"):
        a, b = name[len("mix:") :].split("+")
        return matches(true_primitive(a), formula) and matches(true_primitive(b), formula)
    return matches(true_primitive(name), formula)


def synthetic_part(n: int, seed: int) -> None:
    from nxkit.offline import load_offline_hf
    from nxkit.training import synthetic as syn
    from nxkit.training.train import corpus_token_windows

    _, tok = load_offline_hf()
    windows = corpus_token_windows(tok, 1000, seed=seed)
    concepts = [c for c in syn.concept_neurons(syn.corpus_vocabulary(windows)) if c.held_out]
    # the 20 kinds this benchmark was first run on (synthetic.py has more since; the search's own primitives and
    # After/Before cover these)
    first = {*syn.SURFACE_FIRST, *syn.CONTEXT_FIRST}
    rules = [r for r in syn.rule_neurons() if r.name in first]
    rng = random.Random(seed)
    n_mix = max(20, n // 8)
    picked = rng.sample(concepts, min(len(concepts), n - len(rules) - n_mix))
    neurons = (
        picked + rules + syn.mixtures([r for r in rules if r.held_out] + picked[:40], n_mix * 3, seed=seed)[:n_mix]
    )
    explainer, config = SearchExplainer(), ExplainConfig(best_of=1)
    simulator = FormulaSimulator()
    by_family: dict[str, list] = defaultdict(list)
    scores, seconds, misses = defaultdict(list), [], []
    t0 = time.perf_counter()
    for i, neuron in enumerate(neurons):
        record = neuron.record(windows, NeuronId(0, i), seed=seed + i)
        t = time.perf_counter()
        summary, _ = run_sync(process_neuron(record, explainer, simulator, config))
        seconds.append(time.perf_counter() - t)
        ok = False
        if summary.status == "done":
            formula = Formula.from_json(summary.original_candidate.formula)
            ok = recovered(neuron.name, formula)
            if summary.top_and_random is not None:
                scores[neuron.family].append(summary.top_and_random)
            if not ok:
                misses.append((neuron.name, str(formula)))
        by_family[neuron.family].append(ok)
    total = sum(sum(v) for v in by_family.values())
    count = sum(len(v) for v in by_family.values())
    print(
        f"\n== synthetic neurons (held-out side, {count} neurons over 1,000 windows; {time.perf_counter() - t0:.0f} s)"
    )
    for family, oks in sorted(by_family.items()):
        s = scores[family]
        print(
            f"  {family:<8} recovered {sum(oks):>3} of {len(oks):>3} ({sum(oks) / len(oks):.0%}); held-out score "
            f"mean {statistics.mean(s) if s else float('nan'):.3f}, median {statistics.median(s) if s else float('nan'):.3f}"
        )
    print(f"recovered: {total} of {count} = {total / count:.1%} (target >= 80%)")
    print(f"seconds per neuron (search + exact scoring): mean {statistics.mean(seconds):.2f}, max {max(seconds):.2f}")
    for name, formula in misses[:8]:
        print(f"  missed {name}: found {formula}")


def _control(sim, summaries, records, config, seed):
    """Each neuron scored with the explanation of the neuron after it in a seeded shuffle (never itself)."""
    order = [i for i, s in enumerate(summaries) if s.status == "done"]
    random.Random(seed).shuffle(order)
    out = {}
    for k, i in enumerate(order if len(order) > 1 else []):
        j = order[(k + 1) % len(order)]
        windows = held_out(records[i], "valid", config.valid_windows, config.sim_window_tokens)
        _, s, _ = run_sync(simulate_and_score(sim, summaries[j].original_candidate, windows, records[i].max_activation))
        out[i] = s.top_and_random
    return out


def _top_in_context(record, width: int = 6) -> str:
    rec = record.most_positive_activation_records[0]
    k = int(np.argmax(rec.activations))
    left = "".join(rec.tokens[max(0, k - width) : k]).replace("\n", "⏎")
    return f"{left}[[{rec.tokens[k]}]]{''.join(rec.tokens[k + 1 : k + 3])}".replace("\n", "⏎")


def _fragment(kind: str, arg: str, record) -> bool:
    """A token term that is, in most of its occurrences in the neuron's top windows, part of a longer word (written
    here, not imported, so the same measure runs on an older checkout: `--dump` before and after)."""
    if kind != "token":
        return False
    inside = total = 0
    for rec in record.most_positive_activation_records:
        for a, b, _ in word_spans(rec.tokens):
            hits = sum(1 for t in rec.tokens[a:b] if t == arg)
            total += hits
            inside += hits if b - a > 1 else 0
    return total > 0 and inside * 2 > total


def _configs(margin: float | None, graded: bool):
    """The explanation and search settings of one variant (fields an older checkout lacks are left out)."""
    extra = {} if margin is None or "term_margin" not in ExplainConfig.__dataclass_fields__ else {"term_margin": margin}
    search = SearchConfig(graded=True) if graded else SearchConfig()
    return ExplainConfig(best_of=3, **extra), search


def explain_all(records, margin: float | None = None, graded: bool = False):
    config, search = _configs(margin, graded)
    explainer, sim = SearchExplainer(search), FormulaSimulator()
    t0 = time.perf_counter()
    summaries = [run_sync(process_neuron(r, explainer, sim, config))[0] for r in records]
    return summaries, (time.perf_counter() - t0) / max(1, len(records)), config


def quality(summaries, records) -> dict:
    """Held-out mean with counts, share >= 0.5, and how the kept explanations read: single term or concept, naming a
    sub-word fragment, mean number of terms."""
    done = [(s, r) for s, r in zip(summaries, records, strict=True) if s.status == "done"]
    scores = [s.top_and_random for s, _ in done if s.top_and_random is not None]
    terms = [s.original_candidate.formula for s, _ in done]
    frag = [any(_fragment(k, a, r) for _, k, a in f) for f, (_, r) in zip(terms, done, strict=True)]
    return {
        "neurons": len(summaries), "done": len(done), "defined": len(scores),
        "mean": statistics.mean(scores) if scores else None, "scores": scores,
        "at_least_0.5": sum(v >= 0.5 for v in scores), "single": sum(len(f) == 1 for f in terms),
        "fragment": sum(frag), "mean_terms": statistics.mean(len(f) for f in terms) if terms else None,
    }  # fmt: skip


def quality_line(name: str, q: dict) -> str:
    n = q["done"] or 1
    return (
        f"  {name:<22} mean {q['mean']:+.3f} over {q['defined']} defined of {q['done']} done "
        f"({q['done'] - q['defined']} undefined); >= 0.5: {q['at_least_0.5']} of {q['defined']} "
        f"({q['at_least_0.5'] / max(1, q['defined']):.1%}); single term: {q['single']} of {q['done']} "
        f"({q['single'] / n:.1%}); names a fragment: {q['fragment']} of {q['done']} ({q['fragment'] / n:.1%}); "
        f"mean terms {q['mean_terms']:.2f}"
    )


def real_part(
    run_dir: str, per_layer: int, n_llm: int, seed: int, margins: list[float], dump: str | None, before: str | None
) -> None:
    from nxkit.pipeline import PipelineConfig, SourceConfig, prepare_collection
    from nxkit.runs import Run

    run = Run(run_dir)
    if not run.has_collection():
        print(f"collecting {run_dir} first (the demo's collection: 200k tokens, every layer)")
        prepare_collection(PipelineConfig(source=SourceConfig(run_dir=run_dir, max_tokens=200_000)), run)
    acts = run.activations()
    rng = random.Random(seed)
    neurons = [NeuronId(layer, n) for layer in acts.layers for n in sorted(rng.sample(range(acts.d_mlp), per_layer))]
    records = [acts.neuron_record(n.layer_index, n.neuron_index) for n in neurons]
    summaries, per_neuron, config = explain_all(records)
    sim = FormulaSimulator()
    if dump:
        rows = [
            {"layer": n.layer_index, "neuron": n.neuron_index, "status": s.status, "score": s.top_and_random,
             "explanation": s.explanation, "formula": s.original_candidate.formula if s.status == "done" else None}
            for n, s in zip(neurons, summaries, strict=True)
        ]  # fmt: skip
        with open(dump, "w") as f:
            json.dump({"quality": quality(summaries, records), "neurons": rows}, f)
        print(f"dumped {len(rows)} neurons to {dump}")
    control = _control(sim, summaries, records, config, seed)
    by_layer = defaultdict(list)
    for n, s in zip(neurons, summaries, strict=True):
        if s.top_and_random is not None:
            by_layer[n.layer_index].append(s.top_and_random)
    all_scores = [v for vs in by_layer.values() for v in vs]
    gaps = [
        summaries[i].top_and_random - c
        for i, c in control.items()
        if c is not None and summaries[i].top_and_random is not None
    ]
    status = defaultdict(int)
    for s in summaries:
        status[s.status] += 1
    print(f"\n== real SmolLM2 neurons: {len(neurons)} ({per_layer} per layer x {len(acts.layers)} layers) of {run_dir}")
    print(
        f"status: {dict(status)}; seconds per neuron (search, best of 3 on calibration, exact scoring): {per_neuron:.2f}"
    )
    print("held-out top-and-random score by layer (exact simulation of the formula):")
    for layer in sorted(by_layer):
        v = by_layer[layer]
        print(
            f"  layer {layer:>2}: mean {statistics.mean(v):+.3f}  median {statistics.median(v):+.3f}  max {max(v):+.3f}  (n={len(v)})"
        )
    undefined = sum(s.status == "done" and s.top_and_random is None for s in summaries)
    print(
        f"undefined held-out scores (flagged, left out of the means): {undefined}, e.g. the formula holds nowhere there"
    )
    print(
        f"all: mean {statistics.mean(all_scores):+.3f}, median {statistics.median(all_scores):+.3f}; "
        f"share >= 0.5: {sum(v >= 0.5 for v in all_scores)} of {len(all_scores)} = {np.mean([v >= 0.5 for v in all_scores]):.1%}"
    )
    ctrl = [c for c in control.values() if c is not None]
    print(
        f"shuffled control (seeded permutation): mean {statistics.mean(ctrl):+.3f} over {len(ctrl)}; "
        f"gap mean {statistics.mean(gaps):+.3f} over {len(gaps)} (target >= 0.3)"
    )
    print("\nten neurons (spread over layers): explanation | held-out score | strongest token in context")
    done = [i for i, s in enumerate(summaries) if s.status == "done"]
    for i in done[:: max(1, len(done) // 10)][:10]:
        s = summaries[i]
        score = "  —  " if s.top_and_random is None else f"{s.top_and_random:+.2f}"
        print(f"  {neurons[i].layer_index:>2}:{neurons[i].neuron_index:<5} {score}  {s.explanation}")
        print(f"             top: {_top_in_context(records[i])}")

    print(f"\n== how the kept explanations read ({len(neurons)} neurons, the same ones in every row; held-out valid)")
    base = quality(summaries, records)
    fields = ExplainConfig.__dataclass_fields__
    print(quality_line("this checkout" + (f" (margin {config.term_margin})" if "term_margin" in fields else ""), base))
    if before:
        with open(before) as f:
            old = json.load(f)
        print(quality_line("before (--before file)", old["quality"]))
        diff, ci = difference_of_means(base["scores"], old["quality"]["scores"])
        if diff is not None:
            print(
                f"  difference of means (this - before): {diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] (neurons resampled)"
            )
        by_id = {(r["layer"], r["neuron"]): r for r in old["neurons"]}
        print("\n  ten neurons, before | after, with their strongest token in context:")
        done = [i for i, s in enumerate(summaries) if s.status == "done"]
        for i in done[:: max(1, len(done) // 10)][:10]:
            n, s = neurons[i], summaries[i]
            o = by_id.get((n.layer_index, n.neuron_index), {})
            fmt = lambda v: "  —  " if v is None else f"{v:+.2f}"  # noqa: E731
            print(f"  {n.layer_index:>2}:{n.neuron_index:<5} top: {_top_in_context(records[i])}")
            print(f"      before {fmt(o.get('score'))}  {o.get('explanation')}")
            print(f"      after  {fmt(s.top_and_random)}  {s.explanation}")
    if "term_margin" in fields:
        for m in margins:
            q = quality(explain_all(records, margin=m)[0], records)
            print(quality_line(f"term margin {m}", q))
        graded, _, _ = explain_all(records, graded=True)
        qg = quality(graded, records)
        print(quality_line("graded form", qg))
        diff, ci = difference_of_means(qg["scores"], base["scores"])
        if diff is not None:
            print(
                f"  graded - binary: {diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] (difference of means, neurons resampled)"
            )

    if n_llm:
        from nxkit.llm.local import LocalBackend
        from nxkit.simulators import make_simulator

        backend = LocalBackend()
        llm_sim = make_simulator(backend)
        llm_config = ExplainConfig(best_of=1, valid_windows=3, calibration_windows=2)
        pick = done[:: max(1, len(done) // n_llm)][:n_llm]
        t0 = time.perf_counter()
        llm = [run_sync(process_neuron(records[i], LLMExplainer(backend), llm_sim, llm_config))[0] for i in pick]
        llm_seconds = (time.perf_counter() - t0) / len(pick)
        llm_control = _control(llm_sim, llm, [records[i] for i in pick], llm_config, seed)
        # the search's scores on the same neurons and the same (fewer) valid windows, for a like-for-like row
        same = []
        for i in pick:
            windows = held_out(records[i], "valid", llm_config.valid_windows)
            _, s, _ = run_sync(
                simulate_and_score(sim, summaries[i].original_candidate, windows, records[i].max_activation)
            )
            same.append(s.top_and_random)
        ls = [s.top_and_random for s in llm if s.top_and_random is not None]
        lg = [
            llm[k].top_and_random - c
            for k, c in llm_control.items()
            if c is not None and llm[k].top_and_random is not None
        ]
        print(f"\n== prompted SmolLM2 (explainer and simulator) on {len(pick)} of the same neurons, 3+3 valid windows")
        print(f"  SmolLM2: score mean {statistics.mean(ls) if ls else float('nan'):+.3f} (n={len(ls)}), "
              f"shuffled gap mean {statistics.mean(lg) if lg else float('nan'):+.3f} (n={len(lg)}), {llm_seconds:.0f} s per neuron")  # fmt: skip
        sv = [v for v in same if v is not None]
        print(f"  search:  score mean {statistics.mean(sv):+.3f} (n={len(sv)}) on the same windows")
        for k, i in enumerate(pick[:4]):
            print(f"    {neurons[i].layer_index}:{neurons[i].neuron_index} SmolLM2: {llm[k].explanation!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=240, help="synthetic neurons (>= 200)")
    ap.add_argument("--per-layer", type=int, default=7, help="real neurons sampled per layer (30 layers)")
    ap.add_argument("--llm-neurons", type=int, default=8, help="of those, explained by the prompted SmolLM2 too")
    ap.add_argument("--run", default="runs/demo", help="run directory whose collection the real neurons come from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--margins", default="0,0.05", help="other term margins to measure (comma-separated)")
    ap.add_argument("--dump", help="write the real neurons' explanations and measures to this JSON file")
    ap.add_argument("--before", help="a --dump file of an older checkout, printed beside this one")
    args = ap.parse_args()
    if not args.skip_synthetic:
        synthetic_part(args.synthetic, args.seed)
    if not args.skip_real:
        margins = [float(m) for m in args.margins.split(",") if m]
        real_part(args.run, args.per_layer, args.llm_neurons, args.seed, margins, args.dump, args.before)


if __name__ == "__main__":
    main()
