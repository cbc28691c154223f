"""The explainer, and the per-neuron pipeline: explain (best-of-k), simulate, score, write the run directory.

For each neuron: k sampled explanations from its top training windows; each is simulated on the
calibration split and the best kept; the chosen one is scored on the valid split (top windows, then
random windows). Afterwards a shuffled-explanation control scores each neuron's valid windows with
another neuron's explanation: if the gap is near 0, the simulator is not reading explanations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from . import prompts
from .llm import Backend, run_sync
from .records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    ScoredExplanation,
    normalize_activations,
    random_splits,
    top_splits,
)
from .runs import Run
from .score import random_only, score_flag, score_simulation, summary
from .simulate import SimulationFailure, Simulator

log = logging.getLogger(__name__)


class ExplainError(ValueError):
    """An explainer that cannot run as configured."""


@dataclass
class ExplainConfig:
    """Settings of explanation and scoring (saved in the run manifest)."""

    n_candidates: int = 3
    """Explanations sampled per neuron (best-of-k)."""
    n_windows: int = 5
    """Top training windows shown to the explainer."""
    max_window_tokens: int | None = 32
    """Tokens shown per window, around its peak (None shows whole windows)."""
    temperature: float = 1.0
    """Sampling temperature of the candidates."""
    max_tokens: int = 48
    """Tokens an explanation may take."""
    seed: int = 0
    """Base seed; candidate i of a neuron samples with a seed derived from (seed, layer, neuron, i), so the
    response cache can replay it and different neurons do not share one random stream."""
    calibration_windows: int | None = 5
    """Top and random calibration windows used to rank the candidates, each (None: the whole split)."""
    valid_windows: int | None = None
    """Top and random valid windows the chosen explanation is scored on, each (None: the whole split)."""
    sim_window_tokens: int | None = None
    """Crop held-out windows to this many tokens around their peaks before simulating (None: whole windows)."""

    def __post_init__(self):
        if self.n_candidates < 1 or self.n_windows < 1 or self.max_tokens < 1:
            raise ExplainError("n_candidates, n_windows and max_tokens must be >= 1")
        if self.temperature < 0:
            raise ExplainError("temperature must be >= 0")
        for name in ("max_window_tokens", "calibration_windows", "valid_windows", "sim_window_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExplainError(f"{name} must be None or >= 1, got {value}")


def train_windows(record: NeuronRecord, n_windows: int, max_tokens: int | None) -> list[prompts.Window]:
    """The first `n_windows` top training windows as (token, 0-10 activation) pairs, cropped around their peaks."""
    out = []
    for rec in top_splits(record)["train"][:n_windows]:
        tokens, acts = prompts.crop_window(rec.tokens, rec.activations, max_tokens)
        out.append(list(zip(tokens, normalize_activations(acts, record.max_activation), strict=True)))
    return out


def explainer_windows(record: NeuronRecord, config: ExplainConfig) -> list[prompts.Window]:
    """The windows the explainer is shown."""
    return train_windows(record, config.n_windows, config.max_window_tokens)


async def explain_neuron(backend: Backend, record: NeuronRecord, config: ExplainConfig) -> tuple[list[str], list[dict]]:
    """Sample k explanations; returns (parsed explanations, failures with the raw text of unparsable ones)."""
    messages = prompts.explain_messages(explainer_windows(record, config))
    explanations, failures = [], []
    nid = record.neuron_id
    for i in range(config.n_candidates):
        seed = (config.seed * 1_000_003 + nid.layer_index * 100_003 + nid.neuron_index * 101 + i) % 2**31
        answer = await backend.chat(messages, max_tokens=config.max_tokens, temperature=config.temperature, seed=seed)
        parsed = prompts.parse_explanation(answer.text)
        if parsed is None:
            failures.append({"stage": "explain", "reason": "unparsable explanation", "raw": answer.text})
        else:
            explanations.append(parsed)
    return explanations, failures


def held_out(record: NeuronRecord, split: str, n: int | None, crop: int | None = None) -> list[ActivationRecord]:
    """Top windows then random windows of a split, `n` of each (None: all), optionally cropped around their peaks."""
    top, rand = top_splits(record)[split], random_splits(record)[split]
    records = top[:n] + rand[:n]
    if crop is None:
        return records
    return [ActivationRecord(*prompts.crop_window(r.tokens, r.activations, crop)) for r in records]


async def simulate_and_score(
    simulator: Simulator, explanation: str, records: list[ActivationRecord], max_activation: float
):
    """Simulate `records` from `explanation` and score them; returns (ScoredSimulation, failures)."""
    sims = await simulator.simulate_many(explanation, [r.tokens for r in records])
    failures = [
        {"stage": "simulate", "reason": s.reason, "raw": s.raw} for s in sims if isinstance(s, SimulationFailure)
    ]
    return score_simulation(records, sims, max_activation), failures


async def process_neuron(
    record: NeuronRecord, explainer: Backend, simulator: Simulator, config: ExplainConfig
) -> tuple[dict, NeuronSimulationResults | None]:
    """Explain, select and score one neuron; returns its summary and its results (None unless done)."""
    nid = record.neuron_id
    t0 = time.perf_counter()
    base = {"layer": nid.layer_index, "neuron": nid.neuron_index, "max_activation": record.max_activation}
    if record.max_activation <= 0:
        return {
            **base,
            "status": "dead",
            "reason": f"max activation {record.max_activation:g} <= 0: the neuron never fires on the corpus",
        }, None
    texts, failures = await explain_neuron(explainer, record, config)
    if not texts:
        return {
            **base,
            "status": "failed",
            "reason": f"none of {config.n_candidates} answers held a usable explanation",
            "failures": failures,
        }, None
    candidates = [{"text": t, "calibration_score": None, "calibration_flag": None} for t in texts]
    if len(texts) > 1:
        calib = held_out(record, "calibration", config.calibration_windows, config.sim_window_tokens)
        for cand in candidates:
            scored, fails = await simulate_and_score(simulator, cand["text"], calib, record.max_activation)
            cand["calibration_score"], cand["calibration_flag"] = scored.ev_correlation_score, score_flag(scored)
            failures += fails
    best = max(candidates, key=lambda c: -2.0 if c["calibration_score"] is None else c["calibration_score"])
    valid = held_out(record, "valid", config.valid_windows, config.sim_window_tokens)
    scored, fails = await simulate_and_score(simulator, best["text"], valid, record.max_activation)
    failures += fails
    rand = random_only(scored, record.max_activation)
    results = NeuronSimulationResults(nid, [ScoredExplanation(best["text"], scored)])
    summary_ = {
        **base,
        "status": "done",
        "reason": None,
        "explanation": best["text"],
        "candidates": candidates,
        "top_and_random": scored.ev_correlation_score,
        "random_only": rand.ev_correlation_score,
        "flags": {"top_and_random": score_flag(scored), "random_only": score_flag(rand)},
        "valid": summary(scored),
        "shuffled_control": None,
        "shuffled_gap": None,
        "shuffled_control_from": None,
        "failures": failures,
        "simulator_mode": simulator.mode,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return summary_, results


def explain_and_score(
    run: Run | str,
    neurons: list[NeuronId],
    explainer: Backend,
    simulator: Simulator,
    config: ExplainConfig | None = None,
    retry_failed: bool = False,
    on_neuron_done: Callable[[NeuronId, dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Process every unfinished neuron of `neurons` into the run directory; returns the new summaries.

    Finished neurons are skipped, so a stopped run resumes where it was.
    """
    run = Run(run) if not isinstance(run, Run) else run
    config = config or ExplainConfig()
    acts = run.activations()
    todo = run.todo(neurons, retry_failed)
    run.update_manifest(
        explain={
            "config": asdict(config),
            "explainer": repr(explainer),
            "simulator": repr(simulator),
            "simulator_mode": simulator.mode,
        }
    )
    out = []
    for nid in tqdm(todo, desc="explain+score", unit="neuron", disable=not progress):
        record = acts.neuron_record(nid.layer_index, nid.neuron_index)
        summary_, results = run_sync(process_neuron(record, explainer, simulator, config))
        run.write_neuron(nid, summary_, results)
        out.append(summary_)
        if on_neuron_done is not None:
            on_neuron_done(nid, summary_)
    _record_usage(run, explainer, simulator)
    return out


def _record_usage(run: Run, explainer: Backend, simulator: Simulator) -> None:
    usage = {"explainer": explainer.usage.as_dict()}
    if simulator.backend is not explainer:
        usage["simulator"] = simulator.backend.usage.as_dict()
    run.update_manifest(usage=usage)


def shuffled_controls(
    run: Run | str, simulator: Simulator, config: ExplainConfig | None = None, progress: bool = True
) -> list[dict]:
    """Score each done neuron's valid windows with the next done neuron's explanation (cyclic order).

    Neurons that already have a control are skipped. Returns the updated summaries.
    """
    run = Run(run) if not isinstance(run, Run) else run
    config = config or ExplainConfig()
    done = run.done_neurons(("done",))
    summaries = {n: run.read_neuron(n) for n in done}
    acts = run.activations()
    out = []
    for i, nid in enumerate(tqdm(done, desc="shuffled control", unit="neuron", disable=not progress)):
        s = summaries[nid]
        if s.get("shuffled_control_from") is not None:
            continue
        others = [done[(i + j) % len(done)] for j in range(1, len(done))]
        other = next((o for o in others if summaries[o]["explanation"] != s["explanation"]), None)
        if other is None:
            s["shuffled_control_reason"] = "no other neuron with a different explanation in this run yet"
            run.write_neuron(nid, s)
            continue
        record = acts.neuron_record(nid.layer_index, nid.neuron_index)
        valid = held_out(record, "valid", config.valid_windows, config.sim_window_tokens)
        expl = summaries[other]["explanation"]
        scored, fails = run_sync(simulate_and_score(simulator, expl, valid, record.max_activation))
        s["shuffled_control"] = scored.ev_correlation_score
        s["shuffled_control_from"] = {"layer": other.layer_index, "neuron": other.neuron_index, "explanation": expl}
        s["shuffled_gap"] = (
            None
            if s["top_and_random"] is None or scored.ev_correlation_score is None
            else s["top_and_random"] - scored.ev_correlation_score
        )
        s.setdefault("failures", []).extend({**f, "stage": "shuffled_control"} for f in fails)
        run.write_neuron(nid, s)
        out.append(s)
    return out
