"""The explainer, and the per-neuron stage: explain (best-of-k), simulate, score, write the run directory.

For each neuron: k sampled explanations from its top training windows; each is simulated on the
calibration split and the best kept; the chosen one is scored on the valid split (top windows and
random windows, each labelled with its split). Afterwards a shuffled-explanation control scores each
neuron's valid windows with another neuron's explanation: if the gap is near 0, the simulator is not
reading explanations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm

from . import prompts
from .llm import Backend, Usage, run_sync
from .records import (
    RANDOM,
    TOP,
    Candidate,
    Failure,
    HeldOutWindow,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    NeuronSummary,
    ScoredExplanation,
    ScoredSimulation,
    Scores,
    SimulationFailure,
    normalize_activations,
    random_splits,
    top_splits,
)
from .runs import Run, as_run
from .score import score_simulation, scores
from .seeds import mix_seed
from .simulate import Simulator

log = logging.getLogger(__name__)


class ExplainError(ValueError):
    """An explainer that cannot run as configured."""


@dataclass
class ExplainConfig:
    """Settings of explanation and scoring (saved in the run manifest)."""

    best_of: int = 3
    """Explanations sampled per neuron; the best on the calibration windows is kept."""
    explain_windows: int = 5
    """Top training windows shown to the explainer."""
    explain_window_tokens: int | None = 32
    """Tokens shown per window, around its peak (None shows whole windows)."""
    temperature: float = 1.0
    """Sampling temperature of the candidates."""
    explanation_max_tokens: int = 48
    """Tokens an explanation may take."""
    seed: int = 0
    """Base seed; candidate i of a neuron samples with a seed mixed from (seed, layer, neuron, i), so the
    response cache can replay it and different neurons do not share one random stream."""
    calibration_windows: int | None = 5
    """Top and random calibration windows used to rank the candidates, each (None: the whole split)."""
    valid_windows: int | None = None
    """Top and random valid windows the chosen explanation is scored on, each (None: the whole split)."""
    sim_window_tokens: int | None = None
    """Crop held-out windows to this many tokens around their peaks before simulating (None: whole windows)."""

    def __post_init__(self):
        if self.best_of < 1 or self.explain_windows < 1 or self.explanation_max_tokens < 1:
            raise ExplainError("best_of, explain_windows and explanation_max_tokens must be >= 1")
        if self.temperature < 0:
            raise ExplainError("temperature must be >= 0")
        for name in ("explain_window_tokens", "calibration_windows", "valid_windows", "sim_window_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExplainError(f"{name} must be None or >= 1, got {value}")


# --- windows --------------------------------------------------------------------------------------


def train_windows(record: NeuronRecord, n_windows: int, max_tokens: int | None) -> list[prompts.Window]:
    """The first `n_windows` top training windows as (token, 0-10 activation) pairs, cropped around their peaks."""
    out = []
    for rec in top_splits(record)["train"][:n_windows]:
        tokens, acts = prompts.crop_window(rec.tokens, rec.activations, max_tokens)
        out.append(list(zip(tokens, normalize_activations(acts, record.max_activation), strict=True)))
    return out


def explainer_windows(record: NeuronRecord, config: ExplainConfig) -> list[prompts.Window]:
    """The windows the explainer is shown."""
    return train_windows(record, config.explain_windows, config.explain_window_tokens)


def held_out(record: NeuronRecord, split: str, n: int | None, crop: int | None = None) -> list[HeldOutWindow]:
    """Top windows then random windows of a split, `n` of each (None: all), each labelled with where it came from,
    optionally cropped around their peaks."""
    labelled = [(r, TOP) for r in top_splits(record)[split][:n]] + [
        (r, RANDOM) for r in random_splits(record)[split][:n]
    ]
    return [HeldOutWindow(*prompts.crop_window(r.tokens, r.activations, crop), split=label) for r, label in labelled]


def windows_of(results: NeuronSimulationResults, splits: list[str]) -> list[HeldOutWindow]:
    """The held-out windows an explanation file was scored on, with their split labels from the summary."""
    seqs = results.scored_explanations[0].scored_simulation.scored_sequence_simulations
    if len(splits) != len(seqs):
        raise ValueError(f"{len(splits)} split labels for {len(seqs)} scored windows")
    return [
        HeldOutWindow(list(s.simulation.tokens), list(s.true_activations), split)
        for s, split in zip(seqs, splits, strict=True)
    ]


# --- one neuron ---------------------------------------------------------------------------------


@runtime_checkable
class Explainer(Protocol):
    """Writes candidate explanations of one neuron from its record.

    Implementations: `LLMExplainer` (a prompted LLM through any `Backend`) and `search.SearchExplainer`
    (compositional search, no LLM). A backend passed where an explainer is expected is wrapped in an
    `LLMExplainer` (`as_explainer`).
    """

    async def explain(self, record: NeuronRecord, config: ExplainConfig) -> tuple[list[Candidate], list[Failure]]:
        """Usable candidates (at most `config.best_of`) and failures with the raw text that caused them."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run manifest records of this explainer."""
        ...

    @property
    def usage(self) -> Usage:
        """Its LLM traffic so far (zeros for an explainer that sends none)."""
        ...


class LLMExplainer:
    """A prompted LLM as explainer: `best_of` sampled answers to the kit's explanation prompt."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def __repr__(self) -> str:
        return f"LLMExplainer({self.backend!r})"

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    @property
    def usage(self) -> Usage:
        return self.backend.usage

    async def explain(self, record: NeuronRecord, config: ExplainConfig) -> tuple[list[Candidate], list[Failure]]:
        texts, failures = await explain_neuron(self.backend, record, config)
        return [Candidate(t) for t in texts], failures


def as_explainer(explainer: Explainer | Backend) -> Explainer:
    """An explainer as is; a backend (anything that chats but does not explain) wrapped in an `LLMExplainer`."""
    return explainer if callable(getattr(explainer, "explain", None)) else LLMExplainer(explainer)


async def explain_neuron(
    backend: Backend, record: NeuronRecord, config: ExplainConfig
) -> tuple[list[str], list[Failure]]:
    """Sample k explanations; returns (parsed explanations, failures with the raw text of unparsable ones)."""
    messages = prompts.explain_messages(explainer_windows(record, config))
    explanations, failures = [], []
    nid = record.neuron_id
    for i in range(config.best_of):
        seed = mix_seed(config.seed, nid.layer_index, nid.neuron_index, i)
        answer = await backend.chat(
            messages, max_tokens=config.explanation_max_tokens, temperature=config.temperature, seed=seed
        )
        parsed = prompts.parse_explanation(answer.text)
        if parsed is None:
            failures.append(Failure("explain", "unparsable explanation", answer.text))
        else:
            explanations.append(parsed)
    return explanations, failures


async def simulate_and_score(
    simulator: Simulator, explanation: str, windows: list[HeldOutWindow], max_activation: float, stage: str = "simulate"
) -> tuple[ScoredSimulation, Scores, list[Failure]]:
    """Simulate `windows` from `explanation` and score them; returns the scored simulation, its scores (top-and-random
    and random-only from the windows' labels) and the failed windows."""
    sims = await simulator.simulate_many(explanation, [w.tokens for w in windows])
    failures = [Failure(stage, s.reason, s.raw) for s in sims if isinstance(s, SimulationFailure)]
    scored = score_simulation(windows, sims, max_activation)
    return scored, scores(scored, [w.split for w in windows]), failures


async def _rank_candidates(
    candidates: list[Candidate],
    record: NeuronRecord,
    simulator: Simulator,
    config: ExplainConfig,
    failures: list[Failure],
) -> list[Candidate]:
    """Each candidate with its score on the calibration windows (not simulated when there is only one)."""
    if len(candidates) > 1:
        calib = held_out(record, "calibration", config.calibration_windows, config.sim_window_tokens)
        for cand in candidates:
            _, s, fails = await simulate_and_score(simulator, cand.text, calib, record.max_activation)
            cand.calibration_score, cand.calibration_flag = s.top_and_random, s.top_and_random_flag
            failures += fails
    return candidates


async def process_neuron(
    record: NeuronRecord, explainer: Explainer | Backend, simulator: Simulator, config: ExplainConfig
) -> tuple[NeuronSummary, NeuronSimulationResults | None]:
    """Explain, select and score one neuron; returns its summary and its results (None unless done)."""
    explainer = as_explainer(explainer)
    nid = record.neuron_id
    t0 = time.perf_counter()
    base = {"neuron_id": nid, "max_activation": record.max_activation, "simulator": simulator.describe()}
    if record.max_activation <= 0:
        reason = f"max activation {record.max_activation:g} <= 0: the neuron never fires on the corpus"
        return NeuronSummary(status="dead", reason=reason, **base), None
    candidates, failures = await explainer.explain(record, config)
    if not candidates:
        reason = failures[0].reason if failures and failures[0].raw is None else None
        reason = reason or f"none of {config.best_of} answers held a usable explanation"
        return NeuronSummary(status="failed", reason=reason, failures=failures, **base), None
    candidates = await _rank_candidates(candidates, record, simulator, config, failures)
    best = max(candidates, key=lambda c: -2.0 if c.calibration_score is None else c.calibration_score)
    valid = held_out(record, "valid", config.valid_windows, config.sim_window_tokens)
    scored, s, fails = await simulate_and_score(simulator, best.text, valid, record.max_activation)
    summary = NeuronSummary(
        status="done",
        candidates=candidates,
        explanation=best.text,
        scores=s,
        original_explanation=best.text,
        original_scores=s,
        window_splits=[w.split for w in valid],
        failures=failures + fails,
        seconds=round(time.perf_counter() - t0, 2),
        **base,
    )
    return summary, NeuronSimulationResults(nid, [ScoredExplanation(best.text, scored)])


# --- a run --------------------------------------------------------------------------------------


def _usage_delta(before: dict[str, int], *usages: Usage) -> dict[str, int]:
    now = _sum_usage(*usages)
    return {k: now[k] - before.get(k, 0) for k in now}


def _sum_usage(*usages: Usage) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in {id(u): u for u in usages}.values():  # one backend serving both counts once
        for k, v in u.as_dict().items():
            out[k] = out.get(k, 0) + v
    return out


def explain_and_score(
    run: Run | str,
    neurons: list[NeuronId],
    explainer: Explainer | Backend,
    simulator: Simulator,
    config: ExplainConfig | None = None,
    retry_failed: bool = False,
    on_neuron_done: Callable[[NeuronSummary], None] | None = None,
    progress: bool = True,
) -> list[NeuronSummary]:
    """Process every unfinished neuron of `neurons` into the run directory; returns the new summaries.

    Finished neurons are skipped, so a stopped run resumes where it was.
    """
    run = as_run(run)
    config = config or ExplainConfig()
    explainer = as_explainer(explainer)
    acts = run.activations()
    todo = run.todo(neurons, retry_failed)
    run.update_manifest(
        explain={"config": asdict(config), "explainer": explainer.describe(), "simulator": simulator.describe()}
    )
    usages = [explainer.usage, simulator.usage]
    out = []
    for nid in tqdm(todo, desc="explain+score", unit="neuron", disable=not progress):
        record = acts.neuron_record(nid.layer_index, nid.neuron_index)
        before = _sum_usage(*usages)
        summary, results = run_sync(process_neuron(record, explainer, simulator, config))
        summary.usage = _usage_delta(before, *usages)
        run.write_neuron(summary, results)
        out.append(summary)
        if on_neuron_done is not None:
            on_neuron_done(summary)
    run.update_manifest(usage=_sum_usage(*usages))
    return out


def shuffled_controls(run: Run | str, simulator: Simulator, progress: bool = True) -> list[NeuronSummary]:
    """Score each done neuron's valid windows with the next done neuron's explanation (cyclic order).

    The windows are read back from the neuron's explanation file, with their split labels. Neurons that
    already have a control are skipped. Returns the updated summaries.
    """
    run = as_run(run)
    done = run.summaries(("done",))
    out = []
    for i, s in enumerate(tqdm(done, desc="shuffled control", unit="neuron", disable=not progress)):
        if s.shuffled_control_from is not None:
            continue
        others = [done[(i + j) % len(done)] for j in range(1, len(done))]
        other = next((o for o in others if o.original_explanation != s.original_explanation), None)
        if other is None:
            s.shuffled_control_reason = "no other neuron with a different explanation in this run yet"
        else:
            windows = windows_of(run.read_results(s.neuron_id), s.window_splits)
            text = other.original_explanation
            _, control, fails = run_sync(
                simulate_and_score(simulator, text, windows, s.max_activation, stage="shuffled_control")
            )
            s.shuffled_control, s.shuffled_control_from, s.shuffled_control_explanation = (
                control.top_and_random,
                other.neuron_id,
                text,
            )
            s.failures.extend(fails)
            out.append(s)
        run.write_neuron(s)
    return out
