"""The `Simulator` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..llm.base import run_sync
from ..records import Candidate, Component, SequenceSimulation, SimulationFailure, Usage

if TYPE_CHECKING:
    from ..llm.base import Backend


class SimulateError(ValueError):
    """A simulator that cannot run as configured."""


@runtime_checkable
class Simulator(Protocol):
    """Predicts a neuron's activation on every token of windows from an explanation alone.

    Implementations: the prompted modes (`prompted.py`; `make_simulator` picks one from what the backend
    declares), nxkit-sim (`trained.py`), the exact simulation of formulas (`exact.py`), and any class with these
    members (a rule in a test).
    """

    async def simulate_many(
        self, explanation: Candidate, windows: list[list[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        """One prediction (or a recorded failure) per window of token strings. `explanation.text` is what a reader
        reads; `explanation.formula` is the structured formula when the compositional search wrote it."""
        ...

    def describe(self) -> Component | dict[str, Any]:
        """What the run manifest records of this simulator (kind, mode, model; `smoke_level` when it is one). A plain
        dict is read as a `Component` (its unknown keys go to `settings`)."""
        ...

    @property
    def usage(self) -> Usage:
        """Its LLM traffic so far (zeros for a simulator that sends none)."""
        ...

    @property
    def llm(self) -> Backend | None:
        """The LLM it talks to (None for one that sends no LLM traffic)."""
        ...


def simulate_sync(simulator: Simulator, explanation: str | Candidate, windows: list[list[str]]):
    """`simulator.simulate_many` from sync code (also inside Jupyter); a bare text is read as a `Candidate`."""
    return run_sync(simulator.simulate_many(Candidate.of(explanation), windows))


def concurrent(*components: Any) -> bool:
    """True when every component's traffic goes to a server that serves many requests at once (its `llm` declares
    `capabilities.concurrent`); in-process models and rules run one neuron at a time."""
    return all(c.llm is not None and c.llm.capabilities.concurrent for c in components)
