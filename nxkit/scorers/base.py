"""The `Scorer` protocol: a way of scoring a kept explanation beside the correlation of its simulation.

A scorer has a name (what `--explain.scorers` and the summary's `scorer_results` call it), says which fields of
its result go into the run table, scores one neuron from a `ScoringContext`, and writes its line of the run
summary. Its result is a registered record (`records.register`), so it is saved in the neuron's summary and read
back typed. A new scorer is one module with one such class and one `register_scorer` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..records import POSITIVE, Candidate, Failure, HeldOutWindow, NeuronId, ScoredSimulation

if TYPE_CHECKING:
    import pandas as pd

    from ..llm.base import Backend
    from ..simulators.base import Simulator


class ScorerError(ValueError):
    """A scorer that is not known, or is registered twice."""


@dataclass
class ScoringContext:
    """What a scorer may read of one neuron: the kept explanation and the held-out windows it is scored on."""

    neuron_id: NeuronId
    """The neuron (on its side: a negative side's windows hold the negated activations)."""
    explanation: Candidate
    """The kept explanation (its text, and its formula when the search explainer wrote it)."""
    windows: list[HeldOutWindow]
    """The `valid` windows, each labelled `top` or `random`: nothing was chosen on them."""
    max_activation: float
    """The neuron's largest activation over its top windows (the scale of 0-10)."""
    seed: int
    """A seed for this neuron and scorer (`scorer_seed`)."""
    llm: Backend | None
    """The LLM the run's simulator talks to, else the explainer's; None when neither sends LLM traffic."""
    sign: str = POSITIVE
    """The side scored (`positive`, or `negative`: its windows' activations are the real ones negated)."""
    simulation: ScoredSimulation | None = None
    """The kept explanation's simulation of `windows` (one scored window each, in order)."""
    calibration: list[HeldOutWindow] = field(default_factory=list)
    """The neuron's calibration windows (a scorer may fit on them: every choice is made there)."""
    simulator: Simulator | None = None
    """The run's simulator (to simulate `calibration`)."""
    mean_activation: float | None = None
    """The side's mean activation over every token of the corpus."""
    subject: Callable[[], Any] | None = None
    """The subject model, loaded on the first call (None: the run has none to give, e.g. a re-scored release)."""


@runtime_checkable
class Scorer(Protocol):
    """Scores a kept explanation on a neuron's valid windows; its result is kept in `NeuronSummary.scorer_results`."""

    name: str
    """Its name in `--explain.scorers`, in `scorer_results` and as its run-table columns' prefix."""
    columns: tuple[str, ...]
    """Fields of its result that become run-table columns (`{name}_{field}`); those ending in `flag` hold text."""

    async def score(self, context: ScoringContext) -> tuple[Any, list[Failure]]:
        """Its result for one neuron (a registered record) and what went wrong on the way (raw text kept)."""
        ...

    def summary_line(self, table: pd.DataFrame) -> str | None:
        """Its line of the run summary, from the run table (None: nothing to say)."""
        ...
