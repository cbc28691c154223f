"""The ablation score: does the part of the neuron an explanation predicts matter to what the model says?

Correlation asks whether the simulation follows the neuron. The ablation score (Bills et al. 2023, who found that a
correlation of 0.9 goes with an ablation score of only about 0.6 on top and random windows) asks whether the model's
next-token distributions survive when the neuron's real activation is replaced by the simulation:

    score = 1 - JSD(unchanged, simulation patched in) / JSD(unchanged, mean patched in)

each JSD averaged over every position of the neuron's valid windows. 1: the simulation keeps all of the neuron's
effect; 0: it keeps no more than the neuron's mean would; below 0: worse than the mean. The simulation (0-10, or
the exact simulator's values) is mapped to activation units by a least-squares line fitted on the calibration
windows (every choice is made there), and back to the real sign on the negative side. Undefined (flagged, never 0)
when mean ablation changes nothing (`no_effect`), when there is no subject model or no token ids to run, or no
simulation. The interval is a seeded bootstrap over windows, as for correlation.

Scoring runs the subject model (`nxkit.collection.ablate`): the residual stream at the layer's input is computed
once per window and only the blocks above run again, with the neurons of every scorer call waiting at that moment
batched together.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..records import NEGATIVE, RANDOM, AblationScore, Failure, SimulationFailure
from .base import ScoringContext
from .correlation import _interval, _resample_counts

if TYPE_CHECKING:
    import pandas as pd

ABLATION = "ablation"
NO_EFFECT = 1e-6
"""A mean-ablation JSD (nats, averaged over positions) at or below which the neuron is taken to change nothing: float32
forward passes differ by about 3e-8 nats with no change at all (a neuron whose output weights are zero, measured on
SmolLM2), so below this the ratio would be a ratio of rounding noise."""
MAX_JOBS = 64
"""Neurons patched in one batched call."""


def linear_map(simulated: Sequence[Sequence[float]], real: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Least-squares slope and intercept from simulated to real activations over every token of the windows; slope 0
    and the real mean when the simulation is constant (it then says nothing the mean does not)."""
    x = np.concatenate([np.asarray(s, dtype=np.float64) for s in simulated]) if simulated else np.zeros(0)
    y = np.concatenate([np.asarray(r, dtype=np.float64) for r in real]) if real else np.zeros(0)
    if x.size != y.size:
        raise ValueError(f"{x.size} simulated values for {y.size} real ones")
    if not y.size:
        return 0.0, 0.0
    vx = float(((x - x.mean()) ** 2).sum())
    if vx <= 1e-12 * max(1.0, float((x**2).sum())):
        return 0.0, float(y.mean())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / vx)
    return slope, float(y.mean() - slope * x.mean())


def ablation_value(jsd_simulated: Sequence[Sequence[float]], jsd_mean: Sequence[Sequence[float]]) -> float | None:
    """1 - mean JSD of the simulation / mean JSD of the mean, over every position of the windows; None when mean
    ablation changes nothing."""
    sim = [v for w in jsd_simulated for v in w]
    mean = [v for w in jsd_mean for v in w]
    if not mean or sum(mean) / len(mean) <= NO_EFFECT:
        return None
    return 1.0 - (sum(sim) / len(sim)) / (sum(mean) / len(mean))


def ablation_interval(jsd_simulated, jsd_mean, seed: int) -> list[float] | None:
    """A seeded bootstrap over windows of `ablation_value`: the 95% interval, or None (fewer than 2 windows)."""
    if len(jsd_simulated) < 2:
        return None
    per = np.array([[sum(s), sum(m), len(s)] for s, m in zip(jsd_simulated, jsd_mean, strict=True)], dtype=np.float64)
    counts = _resample_counts(len(per), seed)
    sim, mean, n = (counts @ per).T
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(mean / n > NO_EFFECT, 1.0 - sim / mean, np.nan)
    return _interval(values)


def _score_from(jsd_simulated, jsd_mean, splits: list[str], seed: int) -> dict:
    rand = [i for i, s in enumerate(splits) if s == RANDOM]
    out = {
        "top_and_random": ablation_value(jsd_simulated, jsd_mean),
        "top_and_random_interval": ablation_interval(jsd_simulated, jsd_mean, seed),
        "random_only": ablation_value([jsd_simulated[i] for i in rand], [jsd_mean[i] for i in rand]),
        "random_only_interval": ablation_interval(
            [jsd_simulated[i] for i in rand], [jsd_mean[i] for i in rand], seed + 1
        ),
    }
    flat = lambda ws: [v for w in ws for v in w]  # noqa: E731
    sim, mean = flat(jsd_simulated), flat(jsd_mean)
    out["jsd_simulated"] = round(sum(sim) / len(sim), 8) if sim else None
    out["jsd_mean"] = round(sum(mean) / len(mean), 8) if mean else None
    for k in ("top_and_random", "random_only"):
        if out[k] is not None:
            out[k] = round(out[k], 4)
    return out


class _Batcher:
    """Patches the neurons of every scorer call that is waiting in one batched call off the event loop: while one
    batch runs, new calls queue, and the next batch takes them all."""

    def __init__(self):
        self.queue: list[tuple[object, object, asyncio.Future]] = []
        self.busy = False

    async def submit(self, model, job):
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((model, job, fut))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._work())
        return await fut

    async def _work(self):
        from ..collection.ablate import ablate

        try:
            while self.queue:
                model = self.queue[0][0]
                batch = [q for q in self.queue if q[0] is model][:MAX_JOBS]
                self.queue = [q for q in self.queue if q not in batch]
                try:
                    results = await asyncio.to_thread(ablate, model, [job for _, job, _ in batch])
                except Exception as exc:  # every waiting call hears of it
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for (_, _, fut), res in zip(batch, results, strict=True):
                        if not fut.done():
                            fut.set_result(res)
        finally:
            self.busy = False


class AblationScorer:
    """The ablation score as a `Scorer` (no LLM traffic beyond simulating the calibration windows)."""

    name = ABLATION
    columns = ("top_and_random", "random_only", "flag")

    def __init__(self):
        self._batchers: dict[int, _Batcher] = {}

    def __repr__(self) -> str:
        return "AblationScorer()"

    async def score(self, context: ScoringContext) -> tuple[AblationScore, list[Failure]]:
        if context.subject is None:
            why = "the ablation score needs the subject model; score inside a run that has its collection"
            return AblationScore(flag="no_subject"), [Failure(ABLATION, why)]
        if any(w.token_ids is None for w in context.windows):
            why = "the held-out windows carry no token ids (they were not read from a collection)"
            return AblationScore(flag="no_token_ids"), [Failure(ABLATION, why)]
        seqs = context.simulation.scored_sequence_simulations if context.simulation is not None else []
        kept = [i for i, s in enumerate(seqs) if s.simulation.expected_activations]
        if not kept or context.simulator is None:
            return AblationScore(flag="no_simulation"), []
        slope, intercept, failures = await self._fit(context)
        sign = -1.0 if context.sign == NEGATIVE else 1.0
        sim = [[sign * (slope * v + intercept) for v in seqs[i].simulation.expected_activations] for i in kept]
        mean = context.mean_activation
        if mean is None or not math.isfinite(mean):
            mean = (
                float(np.mean([a for w in context.calibration for a in w.activations])) if context.calibration else 0.0
            )
        from ..collection.ablate import AblationJob

        nid = context.neuron_id
        job = AblationJob(
            nid.layer_index, nid.neuron_index, [context.windows[i].token_ids for i in kept], sim, sign * mean
        )
        model = await asyncio.to_thread(context.subject)
        res = await self._batchers.setdefault(id(asyncio.get_running_loop()), _Batcher()).submit(model, job)
        values = _score_from(res.jsd_simulated, res.jsd_mean, [context.windows[i].split for i in kept], context.seed)
        flag = None if values["top_and_random"] is not None else "no_effect"
        score = AblationScore(
            **values, flag=flag, n_windows=len(kept), slope=round(slope, 6), intercept=round(intercept, 6)
        )
        return score, failures

    async def _fit(self, context: ScoringContext) -> tuple[float, float, list[Failure]]:
        """The line from simulation to activation units on the calibration windows (side units)."""
        if not context.calibration:
            return 0.0, 0.0, [Failure(ABLATION, "no calibration windows to fit the simulation's scale on")]
        sims = await context.simulator.simulate_many(context.explanation, [w.tokens for w in context.calibration])
        failures = [Failure(ABLATION, s.reason, s.raw) for s in sims if isinstance(s, SimulationFailure)]
        pairs = [
            (s.expected_activations, w.activations)
            for s, w in zip(sims, context.calibration, strict=True)
            if not isinstance(s, SimulationFailure) and s.expected_activations
        ]
        slope, intercept = linear_map([p for p, _ in pairs], [r for _, r in pairs])
        return slope, intercept, failures

    def summary_line(self, table: pd.DataFrame) -> str | None:
        col = table.get(f"{self.name}_top_and_random")
        flags = table.get(f"{self.name}_flag")
        if col is None or (not col.notna().any() and not flags.notna().any()):
            return None
        ok, rand = col.dropna(), table[f"{self.name}_random_only"].dropna()
        undefined = int(col.isna().sum())
        return (
            f"ablation: mean {ok.mean():+.2f} over {len(ok)} neurons (top and random), {rand.mean():+.2f} over "
            f"{len(rand)} (random only); {undefined} undefined"
            if len(ok)
            else f"ablation: undefined for all {undefined} neurons ({', '.join(sorted(set(flags.dropna())))})"
        )


ABLATION_SCORER = AblationScorer()
