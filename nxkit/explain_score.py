"""The explain-and-score stage: for many neurons in flight, explain (best-of-k), simulate, score, write the run
directory, with the shuffled control and a budget.

For each neuron: k sampled explanations from its top training windows; each is simulated on the
calibration split and the best kept; the chosen one is scored on the valid split (top windows and
random windows, each labelled with its split). Afterwards a shuffled-explanation control scores each
neuron's valid windows with another neuron's explanation: if the gap is near 0, the simulator is not
reading explanations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from . import scorers
from .explainers import as_explainer
from .explainers.base import ExplainConfig, Explainer, ExplainError
from .heldout import held_out, scored_windows
from .llm.base import NEURON_USAGE, Backend, Deferred, endpoint_usage, run_sync
from .records import (
    POSITIVE,
    Candidate,
    Component,
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
    StageRecord,
    Usage,
)
from .runs import Run, as_run
from .scorers import ScoringContext
from .scorers.correlation import paired_difference, score_simulation, scores
from .seeds import mix_seed
from .simulators.base import Simulator, concurrent

log = logging.getLogger(__name__)


# --- one neuron ---------------------------------------------------------------------------------


async def simulate_and_score(
    simulator: Simulator,
    explanation: str | Candidate,
    windows: list[HeldOutWindow],
    max_activation: float,
    stage: str = "simulate",
    intervals: bool = True,
) -> tuple[ScoredSimulation, Scores, list[Failure]]:
    """Simulate `windows` from `explanation` and score them; returns the scored simulation, its scores (top-and-random
    and random-only from the windows' labels, with their bootstrap intervals unless `intervals` is False: a choice
    reads only the score) and the failed windows."""
    sims = await simulator.simulate_many(Candidate.of(explanation), [w.tokens for w in windows])
    failures = [Failure(stage, s.reason, s.raw) for s in sims if isinstance(s, SimulationFailure)]
    scored = score_simulation(windows, sims, max_activation)
    return scored, scores(scored, [w.split for w in windows], intervals=intervals), failures


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
        scored = await asyncio.gather(
            *(simulate_and_score(simulator, c, calib, record.max_activation, intervals=False) for c in candidates)
        )
        for cand, (_, s, fails) in zip(candidates, scored, strict=True):
            cand.calibration_score, cand.calibration_flag = s.top_and_random, s.top_and_random_flag
            failures += fails
    return candidates


def choose_candidate(candidates: list[Candidate], margin: float = 0.0) -> Candidate:
    """The candidate kept: the best calibration score, except that a candidate costing more (`Candidate.cost`) must
    beat the one kept so far by `margin` per unit of cost, walking from the cheapest; candidates without a cost (free
    text) compete on score alone. With no defined calibration score, the first (the explainer's own best)."""
    scored = [c for c in candidates if c.calibration_score is not None]
    if not scored:
        return candidates[0]
    if any(c.cost is None for c in scored) or margin <= 0:
        return max(scored, key=lambda c: c.calibration_score)
    kept = None
    for c in sorted(scored, key=lambda c: (c.cost, -c.calibration_score)):
        if kept is None or c.calibration_score >= kept.calibration_score + margin * (c.cost - kept.cost):
            kept = c
    return kept


async def process_neuron(
    record: NeuronRecord,
    explainer: Explainer | Backend,
    simulator: Simulator,
    config: ExplainConfig,
    sign: str = POSITIVE,
    subject: Callable[[], object] | None = None,
) -> tuple[NeuronSummary, NeuronSimulationResults | None]:
    """Explain, select and score one neuron (on the side `sign`; `subject` gives the subject model to scorers that
    run it); returns its summary and its results (None unless done)."""
    explainer = as_explainer(explainer)
    nid = record.neuron_id
    t0 = time.perf_counter()
    base = {"neuron_id": nid, "max_activation": record.max_activation, "simulator": Component.of(simulator.describe())}
    if record.max_activation <= 0:
        reason = f"max activation {record.max_activation:g} <= 0: the neuron never fires on the corpus"
        return NeuronSummary(status="dead", reason=reason, **base), None
    candidates, failures = await explainer.explain(record, config)
    if not candidates:
        reason = failures[0].reason if failures and failures[0].raw is None else None
        reason = reason or f"none of {config.best_of} answers held a usable explanation"
        return NeuronSummary(status="failed", reason=reason, failures=failures, **base), None
    candidates = await _rank_candidates(candidates, record, simulator, config, failures)
    best = choose_candidate(candidates, config.term_margin)
    valid = held_out(record, "valid", config.valid_windows, config.sim_window_tokens)
    scored, s, fails = await simulate_and_score(simulator, best, valid, record.max_activation)
    test_scores = None
    if config.split_half:
        test = held_out(record, "test", config.valid_windows, config.sim_window_tokens)
        _, test_scores, test_fails = await simulate_and_score(
            simulator, best, test, record.max_activation, "test", intervals=False
        )
        fails = fails + test_fails
    more = [k for k in dict.fromkeys(config.scorers) if k != scorers.SIMULATION]
    llm = simulator.llm if simulator.llm is not None else explainer.llm
    results, lost = await run_scorers(more, record, best, valid, scored, config, sign, simulator, llm, subject)
    failures += lost
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
        scorer_results=results,
        test_scores=test_scores,
        **base,
    )
    return summary, NeuronSimulationResults(nid, [ScoredExplanation(best.text, scored)])


async def run_scorers(
    names: list[str], record: NeuronRecord, explanation: Candidate, valid: list, simulation, config: ExplainConfig,
    sign: str, simulator: Simulator, llm, subject=None,
) -> tuple[dict, list]:  # fmt: skip
    """The scorers `names` (registered, other than `simulation`) on one neuron's kept explanation, scored on its
    `valid` windows (`simulation`: their simulation); each gets the calibration windows to fit on and a seed of its
    own. Returns their results by name and the failures met on the way (what `process_neuron` and
    `rescore.add_scores` both run)."""
    nid, results, failures = record.neuron_id, {}, []
    calibration = held_out(record, "calibration", config.calibration_windows, config.sim_window_tokens) if names else []
    for name in names:
        seed = scorers.scorer_seed(config.seed, nid.layer_index, nid.neuron_index, name)
        context = ScoringContext(
            nid, explanation, valid, record.max_activation, seed, llm, sign=sign, simulation=simulation,
            calibration=calibration, simulator=simulator, mean_activation=record.mean, subject=subject,
        )  # fmt: skip
        results[name], lost = await scorers.get_scorer(name).score(context)
        failures += lost
    return results, failures


# --- a run: many neurons in flight -----------------------------------------------------------------


@dataclass
class Budget:
    """Limits on what one `explain_and_score` call may spend; reaching one stops the run cleanly (resumable)."""

    max_requests: int | None = None
    """Requests (LLM calls computed, cache hits not counted) before no further neuron is started."""
    max_tokens: int | None = None
    """Prompt and completion tokens before no further neuron is started."""

    def __post_init__(self):
        for name in ("max_requests", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExplainError(f"{name} must be None or >= 1, got {value}")

    def reached(self, spent: Usage) -> str | None:
        """Why no further neuron may start, or None."""
        if self.max_requests is not None and spent.requests >= self.max_requests:
            return f"the request budget is spent ({spent.requests:,} of {self.max_requests:,} requests)"
        if self.max_tokens is not None and spent.tokens >= self.max_tokens:
            return f"the token budget is spent ({spent.tokens:,} of {self.max_tokens:,} tokens)"
        return None

    def remaining(self, spent: Usage) -> Budget | None:
        """What is left of this budget after `spent` (None: nothing is left)."""
        if self.reached(spent):
            return None
        return Budget(
            None if self.max_requests is None else self.max_requests - spent.requests,
            None if self.max_tokens is None else self.max_tokens - spent.tokens,
        )


def _sum_usage(*usages: Usage) -> Usage:
    out = Usage()
    for u in {id(u): u for u in usages}.values():  # one backend serving both counts once
        out.add(**u.as_dict())
    return out


def control_order(neurons: list[NeuronId], seed: int = 0) -> dict[NeuronId, list[NeuronId]]:
    """For each neuron, the neurons whose explanation its shuffled control tries, in order: a seeded permutation of
    the sample read as a cycle, starting after the neuron itself. Fixed before anything is explained, so the control
    never depends on which neuron happens to finish first."""
    order = sorted(set(neurons))
    random.Random(mix_seed(seed, len(order), 7)).shuffle(order)
    at = {n: i for i, n in enumerate(order)}
    return {n: [order[(at[n] + k) % len(order)] for k in range(1, len(order))] for n in order}


PENDING = "<pending>"
"""A control partner this call will not explain (the budget stopped it): the control waits for a later call."""


class _Flight:
    """The shared state of one `explain_and_score` call: who has an explanation, the budget, the stop flag."""

    def __init__(
        self, run: Run, neurons: list[NeuronId], seed: int, budget: Budget | None, usages: list[Usage], subject=None
    ):
        loop = asyncio.get_running_loop()
        self.run, self.budget, self.usages, self.subject = run, budget, usages, subject
        self.spent_before = _sum_usage(*usages)  # a budget counts this call's traffic only
        self.order = control_order(neurons, seed)
        self.explanations: dict[NeuronId, asyncio.Future] = {n: loop.create_future() for n in self.order}
        self.stopped: str | None = None
        self.failed = False

    def publish(self, nid: NeuronId, summary: NeuronSummary | None, pending: bool = False) -> None:
        """A neuron's explanation for the others' controls: its candidate, None when it has none (dead, failed), or
        `PENDING` when this call will not explain it (a budget stop): controls that need it wait for a later call."""
        fut = self.explanations.get(nid)
        if fut is not None and not fut.done():
            done = summary is not None and summary.status == "done"
            fut.set_result(PENDING if pending else summary.original_candidate if done else None)

    def may_start(self) -> bool:
        if self.failed or self.stopped:
            return False
        if self.budget is not None and (why := self.budget.reached(self.spent())):
            self.stopped = why
            return False
        return True

    def spent(self) -> Usage:
        """What this call has spent so far (its backends may have served earlier calls too)."""
        return _sum_usage(*self.usages).minus(self.spent_before)

    async def partners(self, summary: NeuronSummary):
        """The neurons along this one's control order with an explanation different from its own, in order, each
        as (neuron, explanation); `PENDING` (and no more) when one before them will only be explained by a later
        call."""
        for other in self.order.get(summary.neuron_id, []):
            explanation = await self.explanations[other]
            if explanation is PENDING:
                yield PENDING
                return
            if explanation is not None and explanation.text != summary.original_explanation:
                yield other, explanation


CONTROL_TRIES = 5
"""Partners a neuron's shuffled control tries, in its seeded order, until one gives a defined control (another
neuron's formula often holds nowhere on this neuron's windows: a constant prediction has no correlation)."""


async def _control(flight: _Flight, simulator: Simulator, summary: NeuronSummary) -> NeuronSummary:
    """Score a done neuron's valid windows with its control partner's explanation, as soon as that one has one: the
    windows the real score was computed on (failed ones left out of both), the first partner along the seeded order
    whose control is defined (up to `CONTROL_TRIES`), and the gap's interval from a paired bootstrap."""
    results = flight.run.read_results(summary.neuron_id)
    real = results.scored_explanations[0].scored_simulation.scored_sequence_simulations
    kept = [i for i, s in enumerate(real) if s.simulation.expected_activations]
    every = scored_windows(results, summary.window_splits)
    windows = [every[i] for i in kept]
    tried, last = 0, None
    async for found in flight.partners(summary):
        if found is PENDING:
            return summary  # left without a control or a reason: a later call runs it with the same partners
        other, explanation = found
        scored, control, fails = await simulate_and_score(
            simulator, explanation, windows, summary.max_activation, stage="shuffled_control"
        )
        summary.failures.extend(fails)
        tried, last = tried + 1, (other, explanation, scored, control)
        if control.top_and_random is not None or tried >= CONTROL_TRIES:
            break
    if last is None:
        summary.shuffled_control_reason = "no other neuron of the sample has a different explanation"
        return summary
    other, explanation, scored, control = last
    summary.shuffled_control, summary.shuffled_control_from = control.top_and_random, other
    summary.shuffled_control_explanation = explanation.text
    summary.shuffled_control_interval = control.top_and_random_interval
    if control.top_and_random is None:
        summary.shuffled_control_reason = (
            f"undefined for each of the {tried} partners tried ({control.top_and_random_flag}): their explanations "
            "predict a constant on these windows"
        )
    theirs = [s.simulation.expected_activations for s in scored.scored_sequence_simulations]
    mine = [real[i] for i in kept]
    seed = mix_seed(summary.neuron_id.layer_index, summary.neuron_id.neuron_index, 11)
    summary.shuffled_gap_value, summary.shuffled_gap_interval = paired_difference(mine, theirs, seed)
    return summary


def _needs_control(summary: NeuronSummary | None) -> bool:
    return (
        summary is not None
        and summary.status == "done"
        and summary.shuffled_control_from is None
        and summary.shuffled_control_reason is None
    )


async def _one_neuron(flight, nid, acts, explainer, simulator, config, control, slots, on_done, bar) -> NeuronSummary:
    """Explain and score one neuron inside a slot, write it, publish its explanation, then run its control."""
    usage = Usage()
    NEURON_USAGE.set(usage)  # this task's context only: the neuron's own traffic
    async with slots:
        if not flight.may_start():
            flight.publish(nid, None, pending=True)
            return None
        try:
            record = acts.neuron_record(nid.layer_index, nid.neuron_index)
            summary, results = await process_neuron(
                record, explainer, simulator, config, flight.run.sign, flight.subject
            )
            shares = acts.sign_shares(nid.layer_index, nid.neuron_index)
            summary.negative_mass_share, summary.negative_tail_share = (
                shares.negative_mass_share,
                shares.negative_tail_share,
            )
            summary.usage = Usage(**usage.as_dict())
            flight.run.write_neuron(summary, results)
            if on_done is not None:
                on_done(summary)
        except Deferred:  # a request waits for a batch answer: the neuron waits for a later call, nothing is written
            flight.publish(nid, None, pending=True)
            return None
        except BaseException:
            flight.failed = True  # no neuron starts after a failure; the others in flight finish or are cancelled
            flight.publish(nid, None, pending=True)
            raise
        flight.publish(nid, summary)
    if control and summary.status == "done":
        with contextlib.suppress(Deferred):  # waiting for a batch answer: a later call runs the control
            summary = await _control(flight, simulator, summary)
            summary.usage = Usage(**usage.as_dict())
            flight.run.write_neuron(summary)
    bar.update(1)
    return summary


async def _control_only(flight, nid, simulator) -> None:
    """The control of a neuron finished in an earlier call (its explanation is already published)."""
    summary = flight.run.read_neuron(nid)
    usage = Usage(**summary.usage.as_dict())
    NEURON_USAGE.set(usage)  # the control's traffic adds to the neuron's
    try:
        summary = await _control(flight, simulator, summary)
    except Deferred:  # waiting for a batch answer: a later call runs it
        return
    summary.usage = Usage(**usage.as_dict())
    flight.run.write_neuron(summary)


async def explain_many(
    run: Run,
    neurons: list[NeuronId],
    explainer: Explainer,
    simulator: Simulator,
    config: ExplainConfig,
    retry_failed: bool = False,
    control: bool = True,
    budget: Budget | None = None,
    on_neuron_done: Callable[[NeuronSummary], None] | None = None,
    progress: bool = True,
    subject: Callable[[], object] | None = None,
) -> tuple[list[NeuronSummary], str | None]:
    """Every unfinished neuron of `neurons`, many in flight (up to `config.max_neurons_in_flight` when the explainer
    and simulator talk to a server; one at a time in process), each written as it finishes, each with its shuffled
    control as soon as its control partner has an explanation. Returns the summaries written now (in neuron order)
    and why the run stopped early (a budget), if it did."""
    acts = run.activations()
    todo = run.todo(neurons, retry_failed)
    flight = _Flight(run, neurons, config.seed, budget, [explainer.usage, simulator.usage], subject)
    for nid in flight.order:
        if nid not in todo:
            flight.publish(nid, run.read_neuron(nid))
    in_flight = config.max_neurons_in_flight if concurrent(explainer, simulator) else 1
    slots = asyncio.Semaphore(in_flight)
    desc = "explain+score" if run.sign == POSITIVE else f"explain+score ({run.sign} side)"
    with tqdm(total=len(todo), desc=desc, unit="neuron", disable=not progress) as bar:
        tasks = [
            asyncio.ensure_future(
                _one_neuron(flight, n, acts, explainer, simulator, config, control, slots, on_neuron_done, bar)
            )
            for n in todo
        ]
        if control:
            tasks += [
                asyncio.ensure_future(_control_only(flight, n, simulator))
                for n in neurons
                if n not in todo and _needs_control(run.read_neuron(n))
            ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    done = sorted((s for s in results[: len(todo)] if s is not None), key=lambda s: s.neuron_id)
    return done, flight.stopped


def explain_and_score(
    run: Run | str,
    neurons: list[NeuronId],
    explainer: Explainer | Backend,
    simulator: Simulator,
    config: ExplainConfig | None = None,
    retry_failed: bool = False,
    on_neuron_done: Callable[[NeuronSummary], None] | None = None,
    progress: bool = True,
    control: bool = True,
    budget: Budget | None = None,
    subject: Callable[[], object] | None = None,
) -> list[NeuronSummary]:
    """Process every unfinished neuron of `neurons` into the run directory, with its shuffled control; returns the
    summaries written now. Scorers that run the subject model (`ablation`) get `subject` (by default the
    collection's model, loaded when first needed).

    Finished neurons are skipped, so a stopped run resumes where it was. With a `budget`, no neuron starts once it
    is spent; the run stops cleanly and says so (`Run.manifest().stopped`), and a later call resumes.
    """
    run = as_run(run)
    config = config or ExplainConfig()
    explainer = as_explainer(explainer)
    run.update_manifest(
        explain=StageRecord(asdict(config), Component.of(explainer.describe()), Component.of(simulator.describe()))
    )
    if subject is None and (manifest := run.collection_manifest()) is not None:
        from .collection.subject import SubjectLoader

        subject = SubjectLoader.of(manifest)
    done, stopped = run_sync(
        explain_many(  # fmt: skip
            run,
            neurons,
            explainer,
            simulator,
            config,
            retry_failed,
            control,
            budget,
            on_neuron_done,
            progress,
            subject,
        )
    )
    run.compact_table()
    run.update_manifest(
        usage=_sum_usage(explainer.usage, simulator.usage),
        endpoints=endpoint_usage(explainer.llm, simulator.llm),
        stopped=stopped,
    )
    if stopped:
        left = len(run.todo(neurons, retry_failed))
        log.warning("stopped: %s; %d neurons left (run again with a larger budget to resume)", stopped, left)
    return done


def shuffled_controls(
    run: Run | str, simulator: Simulator, neurons: list[NeuronId] | None = None, seed: int = 0, progress: bool = True
) -> list[NeuronSummary]:
    """The shuffled control of every done neuron that has none yet (`explain_and_score` already runs each neuron's
    control as it goes; this catches up on runs made without it). Each neuron is scored with the explanation of the
    first neuron along its seeded control order (`control_order` over `neurons`, default every neuron of the run)
    that has a different one. Returns the updated summaries."""
    run = as_run(run)
    neurons = neurons if neurons is not None else run.neurons()

    async def go():
        flight = _Flight(run, neurons, seed, None, [])
        for nid in flight.order:
            summary = run.read_neuron(nid)
            flight.publish(nid, summary, pending=summary is None)  # not explained yet: its partners' controls wait
        todo = [n for n in neurons if _needs_control(run.read_neuron(n))]
        for nid in tqdm(todo, desc="shuffled control", unit="neuron", disable=not progress):
            await _control_only(flight, nid, simulator)
        return [run.read_neuron(n) for n in todo]

    return run_sync(go())
