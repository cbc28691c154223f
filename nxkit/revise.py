"""Counterexample-driven revision: test an explanation on texts the explainer writes, revise it where it fails.

One round, for a neuron and its current explanation:
1. the explainer proposes short texts that, by the explanation, should make the neuron fire, and
   texts that should leave it silent (two requests, each answered as a numbered list);
2. the subject model gives their real activations (`nxkit.collection.probe`, the collection's hook and scale);
3. the mismatches (meant to fire but silent, meant to be silent but firing), with their real
   per-token activations, go back to the explainer, which writes a revised explanation;
4. the revision is simulated and scored on the same held-out windows as the original (never on the
   counterexamples), and the better of the two is kept.

On disk: `runs/<name>/revisions/{layer}/{neuron}.json`, one file per neuron with every round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from . import prompts
from .collection.probe import ProbeError, probe_many
from .explain_score import Budget, _sum_usage, simulate_and_score
from .explainers import as_explainer
from .explainers.base import train_windows
from .heldout import held_out, scored_windows
from .llm.base import Backend, Deferred, LLMError, run_sync, unusable
from .offline import SubjectError
from .prompts import KINDS
from .records import (
    FIRES,
    NEGATIVE,
    POSITIVE,
    ActivationRecord,
    Component,
    HeldOutWindow,
    Mismatch,
    NeuronId,
    NeuronRecord,
    NeuronRevision,
    ProbedText,
    RevisionRound,
    ScoredSimulation,
    Scores,
    StageRecord,
    check_sign,
    normalize_activations,
)
from .runs import Run, as_run
from .seeds import mix_seed
from .simulators.base import SimulateError, Simulator, concurrent

log = logging.getLogger(__name__)

STATUSES = ("done", "skipped", "failed")


class ReviseError(ValueError):
    """A revision that cannot run as configured, or a run that has nothing to revise."""


@dataclass
class ReviseConfig:
    """Settings of counterexample revision (saved in the run manifest)."""

    rounds: int = 1
    """Propose-probe-revise rounds per neuron; each starts from the better explanation so far (0 skips revision)."""
    n_fire: int = 4
    """Texts asked for that, by the explanation, should make the neuron fire."""
    n_silent: int = 4
    """Texts asked for that, by the explanation, should leave the neuron silent."""
    fire_threshold: float = FIRES
    """A text fires when its peak activation reaches this fraction of the neuron's top-window maximum."""
    max_text_chars: int = 200
    """Longer proposals are cut to this many characters before probing."""
    n_top_windows: int = 2
    """Top training windows shown again with the mismatches, so the revision stays grounded."""
    top_window_tokens: int = 16
    """Tokens shown per top window, around its peak."""
    temperature: float = 0.7
    """Sampling temperature of proposals and revisions."""
    proposal_max_tokens: int = 160
    """Tokens a list of proposals may take."""
    revision_max_tokens: int = 48
    """Tokens a revised explanation may take."""
    seed: int = 0
    """Base seed of every sampled answer: round r's requests mix (seed, r, 0 fire | 1 silent | 2 revision)."""
    only_below: float | None = None
    """Revise only neurons whose original score is below this (None: every scored neuron)."""
    rescore_original: bool | None = None
    """Re-simulate the original on the held-out windows; None: only when the simulator differs from the run's."""
    max_neurons_in_flight: int = 16
    """Neurons revised at once when the explainer and simulator talk to a server (their probes of the subject model
    take turns); in-process models revise one neuron at a time."""

    def __post_init__(self):
        if self.rounds < 0:
            raise ReviseError(f"rounds must be >= 0 (0 skips revision), got {self.rounds}")
        if self.max_neurons_in_flight < 1:
            raise ReviseError("max_neurons_in_flight must be >= 1")
        if self.n_fire < 0 or self.n_silent < 0 or self.n_fire + self.n_silent < 1:
            raise ReviseError("n_fire and n_silent must be >= 0 and ask for at least one text together")
        if not 0 < self.fire_threshold < 1:
            raise ReviseError(
                f"fire_threshold is a fraction of the neuron's maximum in (0, 1), got {self.fire_threshold}"
            )
        if self.max_text_chars < 1 or self.proposal_max_tokens < 1 or self.revision_max_tokens < 1:
            raise ReviseError("max_text_chars, proposal_max_tokens and revision_max_tokens must be >= 1")
        if self.n_top_windows < 0 or self.top_window_tokens < 1:
            raise ReviseError("n_top_windows must be >= 0 and top_window_tokens >= 1")
        if self.temperature < 0:
            raise ReviseError("temperature must be >= 0")


# --- pure steps --------------------------------------------------------------------------------


def describe_probe(text: str, record: ActivationRecord, max_activation: float) -> ProbedText:
    """A probed text: tokens, real activations and their peak, in the neuron's units and 0-10."""
    normalized = normalize_activations(record.activations, max_activation)
    return ProbedText(
        text=text,
        tokens=list(record.tokens),
        activations=[round(a, 6) for a in record.activations],
        max_activation=round(record.max_activation, 6),
        normalized=normalized,
        max_normalized=max(normalized, default=0),
    )


def find_mismatches(
    probes: dict[str, list[ProbedText]], max_activation: float, fire_threshold: float
) -> list[Mismatch]:
    """Proposals whose real peak contradicts their kind: `fire` below the threshold, `silent` at or above it.

    The threshold is `fire_threshold` x the neuron's maximum over its top windows.
    """
    level = fire_threshold * max_activation
    return [
        Mismatch(kind, i, p)
        for kind in KINDS
        for i, p in enumerate(probes.get(kind, []))
        if (p.max_activation >= level) != (kind == "fire")
    ]


def held_out_windows(run: Run, nid: NeuronId, record: NeuronRecord | None = None) -> list[HeldOutWindow]:
    """The windows the original explanation was scored on, with their splits, read back from the run.

    Falls back to the whole valid split of the collection when the run has no explanation file.
    """
    results, summary = run.read_results(nid), run.read_neuron(nid)
    if results is not None and results.scored_explanations and summary is not None:
        return scored_windows(results, summary.window_splits)
    if record is None:
        record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
    return held_out(record, "valid", None)


def calibration_windows(run: Run, record: NeuronRecord) -> list[HeldOutWindow]:
    """The calibration windows keep-or-revise is chosen on: as many, and cropped as, the run's best-of-k used."""
    settings = (run.manifest().explain or StageRecord()).config
    return held_out(record, "calibration", settings.get("calibration_windows", 5), settings.get("sim_window_tokens"))


def top_windows(record: NeuronRecord, config: ReviseConfig) -> list[prompts.Window]:
    """The strongest training windows, cropped around their peaks, on the 0-10 scale."""
    return train_windows(record, config.n_top_windows, config.top_window_tokens)


def sample_live_neurons(acts, n: int, seed: int = 0, layers: list[int] | None = None) -> list[NeuronId]:
    """`n` neurons drawn at random (by `seed`) from a collection's layers, skipping those that never fire."""
    pool = [NeuronId(layer, i) for layer in (layers or acts.layers) for i in range(acts.d_mlp)]
    random.Random(seed).shuffle(pool)
    out = []
    for nid in pool:
        if len(out) == n:
            break
        if acts.neuron_record(nid.layer_index, nid.neuron_index).max_activation > 0:
            out.append(nid)
    return out


# --- one round ---------------------------------------------------------------------------------


def _asked(kind: str, config: ReviseConfig) -> int:
    return config.n_fire if kind == "fire" else config.n_silent


async def _propose(
    explainer: Backend, explanation: str, config: ReviseConfig, round_index: int = 0
) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """Ask for fire and silent texts; returns (parsed proposals per kind, raw answers per kind)."""
    proposals: dict[str, list[str]] = {}
    raw: dict[str, str | None] = {}
    for k, kind in enumerate(KINDS):
        n = _asked(kind, config)
        if n == 0:
            proposals[kind], raw[kind] = [], None
            continue
        answer = await explainer.chat(
            prompts.proposal_messages(explanation, kind, n),
            max_tokens=config.proposal_max_tokens,
            temperature=config.temperature,
            seed=mix_seed(config.seed, round_index, k),
        )
        raw[kind] = answer.text
        proposals[kind] = prompts.parse_proposals(answer.text, n, config.max_text_chars)
        if not proposals[kind]:
            unusable(answer)
    return proposals, raw


def probe_proposals(
    model, layer: int, neuron: int, proposals: dict[str, list[str]], max_activation: float, sign: str = POSITIVE
) -> dict[str, list[ProbedText]]:
    """Real activations of every proposal, per kind (one batched forward pass), on the side `sign` (the negative
    side's are negated, as its records are)."""
    texts = [(kind, t) for kind in KINDS for t in proposals.get(kind, [])]
    records = probe_many(model, [t for _, t in texts], layer, neuron) if texts else []
    if check_sign(sign) == NEGATIVE:
        records = [r.negated() for r in records]
    out: dict[str, list[ProbedText]] = {kind: [] for kind in KINDS}
    for (kind, text), rec in zip(texts, records, strict=True):
        out[kind].append(describe_probe(text, rec, max_activation))
    return out


def unparsable_reason(proposals: dict[str, list[str]], config: ReviseConfig) -> str | None:
    """Why a round's proposals cannot be used (a kind that was asked for came back with no numbered text)."""
    missing = [kind for kind in KINDS if _asked(kind, config) > 0 and not proposals[kind]]
    if missing:
        return f"unparsable proposal list: no numbered {' or '.join(missing)} texts in the answer (see raw)"
    return None


async def _ask_revision(
    explainer: Backend, explanation: str, mismatches: list[Mismatch], windows, config: ReviseConfig, round_index: int
) -> tuple[str | None, str]:
    """Ask for a revised explanation; returns (parsed text or None, raw answer)."""
    answer = await explainer.chat(
        prompts.revision_messages(explanation, mismatches, windows),
        max_tokens=config.revision_max_tokens,
        temperature=config.temperature,
        seed=mix_seed(config.seed, round_index, 2),
    )
    parsed = prompts.parse_explanation(answer.text)
    if parsed is None:
        unusable(answer)
    return parsed, answer.text


def score_on(
    simulator: Simulator, explanation: str, windows: list[HeldOutWindow], max_activation: float
) -> tuple[ScoredSimulation, Scores]:
    """`explanation`'s scored simulation and scores on labelled held-out windows."""
    return run_sync(_score_on(simulator, explanation, windows, max_activation))


async def _score_on(
    simulator: Simulator, explanation: str, windows: list[HeldOutWindow], max_activation: float, intervals: bool = True
) -> tuple[ScoredSimulation, Scores]:
    scored, scores, _ = await simulate_and_score(simulator, explanation, windows, max_activation, intervals=intervals)
    return scored, scores


def _better(new: float | None, old: float | None) -> bool:
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    return old is None or new > old


def revise_round(
    model,
    record: NeuronRecord,
    explanation: str,
    score: float | None,
    windows: list[HeldOutWindow],
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig,
    round_index: int = 0,
    sign: str = POSITIVE,
    probe: Probe | None = None,
) -> tuple[RevisionRound, ScoredSimulation | None]:
    """One propose-probe-revise-score round from `explanation` (whose score on `windows` is `score`), on the side
    `sign` of the neuron (`record` is that side's). The proposals' real activations come from the subject `model`,
    or from `probe` (proposals per kind -> probed texts per kind) when given.

    Returns the round and, when the revision was kept, its scored simulation.
    """
    return run_sync(
        _revise_round(
            model, record, explanation, score, windows, explainer, simulator, config, round_index, sign, probe
        )
    )


Probe = Callable[[dict[str, list[str]]], dict[str, list[ProbedText]]]
"""Real activations of proposals: texts per kind (`fire`, `silent`) -> probed texts per kind."""


async def _revise_round(
    model, record, explanation, score, windows, explainer, simulator, config, round_index=0, sign=POSITIVE, probe=None
) -> tuple[RevisionRound, ScoredSimulation | None]:
    nid = record.neuron_id
    rnd = RevisionRound(round=round_index, explanation=explanation, score_explanation=score)
    rnd.proposals, rnd.raw = await _propose(explainer, explanation, config, round_index)
    if reason := unparsable_reason(rnd.proposals, config):
        rnd.skipped_reason = reason
        return rnd, None
    max_act = record.max_activation
    if probe is None:
        rnd.probes = await asyncio.to_thread(  # the subject model's forward pass, off the event loop
            probe_proposals, model, nid.layer_index, nid.neuron_index, rnd.proposals, max_act, sign
        )
    else:
        rnd.probes = probe(rnd.proposals)
    rnd.mismatches = find_mismatches(rnd.probes, max_act, config.fire_threshold)
    if not rnd.mismatches:
        rnd.skipped_reason = "no mismatches: every proposal behaved as the explanation predicted"
        return rnd, None
    rnd.revised, rnd.raw_revision = await _ask_revision(
        explainer, explanation, rnd.mismatches, top_windows(record, config), config, round_index
    )
    if rnd.revised is None:
        rnd.skipped_reason = "unparsable revision: the answer held no usable explanation (see raw_revision)"
        return rnd, None
    if rnd.revised.strip().lower() == explanation.strip().lower():
        rnd.skipped_reason = "the revision repeats the current explanation"
        return rnd, None
    scored, rnd.scores_revised = await _score_on(simulator, rnd.revised, windows, max_act, intervals=False)
    if not _better(rnd.score_revised, score):
        return rnd, None
    rnd.kept = "revised"
    return rnd, scored


# --- one neuron, a run -------------------------------------------------------------------------


def _simulator_changed(run: Run, simulator: Simulator) -> bool:
    stage = run.manifest().explain
    return stage is None or stage.simulator != Component.of(simulator.describe())


def revise_neuron(
    run: Run | str,
    model,
    layer: int,
    neuron: int,
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig | None = None,
) -> NeuronRevision:
    """Revise one neuron's chosen explanation for `config.rounds` rounds; writes and returns its revision record.

    Status `skipped` when the run has no scored explanation for it (or it already scores above
    `only_below`); `failed` when an LLM, simulator or probe error stopped it (reason says which).
    A kept revision becomes the neuron's explanation in the run's summary and explanation file.
    """
    return run_sync(_revise_neuron(as_run(run), model, layer, neuron, explainer, simulator, config))


async def _revise_neuron(
    run: Run, model, layer: int, neuron: int, explainer: Backend, simulator: Simulator, config: ReviseConfig | None
) -> NeuronRevision:
    config = config or ReviseConfig()
    nid = NeuronId(layer, neuron)
    t0 = time.perf_counter()
    summary = run.read_neuron(nid)
    original = summary.original_explanation if summary else None
    before = summary.original_scores.top_and_random if summary and summary.original_scores else None
    out = NeuronRevision(
        nid, "done", original_explanation=original, final_explanation=original, score_before=before,
        score_after=before, config=asdict(config),
    )  # fmt: skip
    kept = None
    if summary is None or summary.status != "done" or not original:
        out.status = "skipped"
        out.reason = (
            "no explanation in the run: explain and score this neuron first"
            if summary is None
            else f"the run's status for this neuron is {summary.status!r}, not 'done'"
        )
    elif config.only_below is not None and before is not None and before >= config.only_below:
        out.status, out.reason = "skipped", f"score {before:.3f} is not below only_below={config.only_below}"
    else:
        try:
            kept = await _revise_rounds(out, run, model, explainer, simulator, config)
        except (LLMError, SimulateError, ProbeError, SubjectError) as exc:
            out.status, out.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("revision of %s failed: %s", nid, out.reason)
    out.seconds = round(time.perf_counter() - t0, 2)
    run.write_revision(out, kept)
    return out


async def revise_record(
    record: NeuronRecord,
    original: str,
    valid: list[HeldOutWindow],
    calibration: list[HeldOutWindow],
    model,
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig,
    sign: str = POSITIVE,
    probe: Probe | None = None,
) -> tuple[list[RevisionRound], str, ScoredSimulation | None, Scores | None]:
    """`config.rounds` rounds from `original`, each revision kept only when it beats the current explanation on the
    `calibration` windows; the final explanation is then scored on the `valid` windows, which no choice saw. Returns
    the rounds, the final explanation, and its scored simulation and scores on `valid` (None when the original
    stays)."""
    _, start = await _score_on(simulator, original, calibration, record.max_activation, intervals=False)
    current, score, rounds = original, start.top_and_random, []
    for r in range(config.rounds):
        rnd, chosen = await _revise_round(
            model, record, current, score, calibration, explainer, simulator, config, r, sign, probe
        )
        rounds.append(rnd)
        if chosen is not None:
            current, score = rnd.revised, rnd.score_revised
    if current == original:
        return rounds, current, None, None
    kept, scores = await _score_on(simulator, current, valid, record.max_activation)
    return rounds, current, kept, scores


async def _revise_rounds(
    out: NeuronRevision, run: Run, model, explainer, simulator, config: ReviseConfig
) -> ScoredSimulation | None:
    """Run the rounds into `out`; returns the kept revision's scored simulation on the valid windows (None when the
    original stays). Every keep-or-revise choice is made on the calibration windows; the kept revision is then
    scored on the valid windows, which nothing chose on, beside the original's valid score."""
    nid = out.neuron_id
    record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
    windows = held_out_windows(run, nid, record)
    calibration = calibration_windows(run, record)
    out.n_held_out_windows, out.n_calibration_windows = len(windows), len(calibration)
    rescore = _simulator_changed(run, simulator) if config.rescore_original is None else config.rescore_original
    if rescore:
        _, rescored = await _score_on(simulator, out.original_explanation, windows, record.max_activation)
        out.score_before = rescored.top_and_random
        out.score_before_source = "rescored"
    out.rounds, out.final_explanation, kept, out.scores_after = await revise_record(
        record, out.original_explanation, windows, calibration, model, explainer, simulator, config, run.sign
    )
    out.score_after = out.scores_after.top_and_random if out.scores_after else out.score_before
    skipped = [rnd.skipped_reason for rnd in out.rounds if rnd.skipped_reason]
    if len(skipped) == len(out.rounds):
        out.reason = f"every round was skipped: {skipped[0]}" + (" (and others)" if len(set(skipped)) > 1 else "")
    return kept


def revise_run(
    run: Run | str,
    model,
    explainer: Backend,
    simulator: Simulator,
    config: ReviseConfig | None = None,
    neurons: list[NeuronId] | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    budget: Budget | None = None,
) -> list[NeuronRevision]:
    """Revise `neurons` (default: every neuron the run scored); returns their revision records.

    Neurons that already have a revision file are read back, not redone (a stopped run resumes);
    `retry_failed` redoes those that failed. With a `budget`, no neuron starts once this call's traffic reached it:
    the rest wait for a later call (the manifest says why) and are not returned.
    """
    run, config = as_run(run), config or ReviseConfig()
    if neurons is None:
        neurons = run.done_neurons(("done",))
        if not neurons:
            raise ReviseError(f"{run.path} has no explained and scored neurons; run explain_and_score first")
    run.update_manifest(
        revise=StageRecord(asdict(config), Component.of(explainer.describe()), Component.of(simulator.describe()))
    )
    todo = set(pending(run, neurons, retry_failed))
    explainer_llm = as_explainer(explainer)
    in_flight = config.max_neurons_in_flight if concurrent(explainer_llm, simulator) else 1
    done: dict[NeuronId, NeuronRevision] = {n: run.read_revision(n) for n in neurons if n not in todo}
    usages = [c.llm.usage for c in (explainer_llm, simulator) if c.llm is not None]
    start, stopped = _sum_usage(*usages), []

    async def go() -> None:  # many neurons in flight on the one event loop, as explain_and_score does
        slots = asyncio.Semaphore(in_flight)

        async def one(nid: NeuronId) -> None:
            async with slots:
                if budget is not None and (why := budget.reached(_sum_usage(*usages).minus(start))):
                    stopped.append(why)
                    bar.update(1)
                    return
                layer, n = nid.layer_index, nid.neuron_index
                try:
                    done[nid] = await _revise_neuron(run, model, layer, n, explainer, simulator, config)
                except Deferred:  # a request waits for a batch answer: this neuron waits for a later call
                    return bar.update(1)
            bar.update(1)
            stats = summarize([r for r in done.values() if r is not None])
            if stats["n_compared"]:
                bar.set_postfix(improved=f"{stats['n_improved']}/{stats['n_compared']}")

        tasks = [asyncio.ensure_future(one(n)) for n in sorted(todo)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    with tqdm(total=len(todo), desc="revise", unit="neuron", disable=not progress) as bar:
        run_sync(go())
    if stopped:
        run.update_manifest(stopped=f"revision: {stopped[0]}")
    return [done[n] for n in neurons if done.get(n) is not None]


def pending(run: Run, neurons: list[NeuronId], retry_failed: bool = False) -> list[NeuronId]:
    """The neurons of `neurons` that `revise_run` would still work on."""
    out = []
    for nid in neurons:
        existing = run.read_revision(nid)
        if existing is None or (retry_failed and existing.status == "failed"):
            out.append(nid)
    return out


# --- what it did -------------------------------------------------------------------------------


def summarize(revisions: list[NeuronRevision]) -> dict:
    """Counts by status, and over neurons with both scores defined: mean before, mean after, improved."""
    pairs = [
        (r.score_before, r.score_after)
        for r in revisions
        if r.status == "done" and r.score_before is not None and r.score_after is not None
    ]
    n = len(pairs)
    return {
        "n_neurons": len(revisions),
        "statuses": {s: sum(r.status == s for r in revisions) for s in STATUSES},
        "n_compared": n,
        "mean_before": sum(b for b, _ in pairs) / n if n else None,
        "mean_after": sum(a for _, a in pairs) / n if n else None,
        "n_improved": sum(a > b for b, a in pairs),
        "n_rounds": sum(len(r.rounds) for r in revisions),
        "n_rounds_skipped": sum(bool(rnd.skipped_reason) for r in revisions for rnd in r.rounds),
    }


def proposals_table(round_: RevisionRound, max_activation: float, fire_threshold: float):
    """A round's probed proposals as a pandas table: kind, text, peak (units and 0-10), fired, mismatch."""
    import pandas as pd

    columns = ["kind", "text", "peak", "peak 0-10", "fired", "mismatch"]
    rows = []
    for kind in KINDS:
        for p in round_.probes.get(kind, []):
            fired = p.max_activation >= fire_threshold * max_activation
            rows.append([kind, p.text, p.max_activation, p.max_normalized, fired, fired != (kind == "fire")])
    return pd.DataFrame(rows, columns=columns)


def score_on_split(
    run: Run | str,
    revision: NeuronRevision,
    simulator: Simulator,
    split: str = "test",
    n_windows: int | None = None,
    crop: int | None = None,
) -> dict:
    """Score a revision's original and final explanations on another split, unseen by the keep-the-better choice.

    Keeping the better of two scores on the same windows favours the revision by chance alone;
    this gives an unbiased comparison. The original is scored once when the final is the same text.
    """
    run = as_run(run)
    nid = revision.neuron_id
    record = run.activations().neuron_record(nid.layer_index, nid.neuron_index)
    windows = held_out(record, split, n_windows, crop)
    original = score_on(simulator, revision.original_explanation, windows, record.max_activation)[1].top_and_random
    same = revision.final_explanation == revision.original_explanation
    final = (
        original
        if same
        else score_on(simulator, revision.final_explanation, windows, record.max_activation)[1].top_and_random
    )
    return {"split": split, "n_windows": len(windows), "original": original, "final": final}
