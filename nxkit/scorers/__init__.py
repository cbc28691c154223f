"""Scorers of a kept explanation, chosen by name: the correlation of its simulation (`simulation`, always run: it
chooses among candidates, in `correlation.py`), and any registered `Scorer` (`detection`, `fuzzing`, `ablation`, ...).

`register_scorer` adds one; `--explain.scorers` names them; each result lands in the summary's `scorer_results`,
the run table (`table_columns`), the summary printout and the report without any stage knowing the scorer.
"""

from __future__ import annotations

from ..seeds import mix_seed
from .base import Scorer, ScorerError, ScoringContext

SIMULATION = "simulation"
"""The correlation of the simulation: always run, kept in `NeuronSummary.scores`."""
_SCORERS: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer, replace: bool = False) -> Scorer:
    """Make `scorer` available by its name (to `--explain.scorers`, the run table and the views)."""
    if scorer.name == SIMULATION or (scorer.name in _SCORERS and not replace):
        raise ScorerError(f"a scorer named {scorer.name!r} is already registered; give yours another name")
    _SCORERS[scorer.name] = scorer
    return scorer


def unregister_scorer(name: str) -> None:
    """Take a registered scorer away again (a test's, or one replaced for good)."""
    _SCORERS.pop(name, None)


def scorer_names() -> tuple[str, ...]:
    """Every name `--explain.scorers` accepts."""
    return (SIMULATION, *_SCORERS)


def get_scorer(name: str) -> Scorer:
    """The registered scorer of that name."""
    try:
        return _SCORERS[name]
    except KeyError:
        raise ScorerError(f"unknown scorer {name!r}; choose from {scorer_names()}") from None


def registered() -> list[Scorer]:
    """Every registered scorer, in the order registered."""
    return list(_SCORERS.values())


def scorer_seed(seed: int, layer: int, neuron: int, name: str) -> int:
    """The seed of one scorer on one neuron (the same for every run with the same base seed)."""
    return mix_seed(seed, layer, neuron, scorer_names().index(name))


def table_columns() -> list[str]:
    """The run-table columns of every registered scorer."""
    return [f"{s.name}_{c}" for s in registered() for c in s.columns]


def table_values(results: dict) -> dict:
    """The run-table cells of a summary's `scorer_results` (every registered scorer's columns; None where absent)."""
    out = {}
    for scorer in registered():
        result = results.get(scorer.name)
        for c in scorer.columns:
            out[f"{scorer.name}_{c}"] = None if result is None else getattr(result, c)
    return out


def summary_lines(table) -> list[str]:
    """Every registered scorer's line of the run summary."""
    return [line for s in registered() if (line := s.summary_line(table))]


from .ablation import ABLATION_SCORER  # noqa: E402  (the built-in scorers register themselves)
from .classify import DETECTION, FUZZING  # noqa: E402

register_scorer(DETECTION)
register_scorer(FUZZING)
register_scorer(ABLATION_SCORER)

__all__ = [
    "SIMULATION", "Scorer", "ScorerError", "ScoringContext", "get_scorer", "register_scorer", "registered",
    "scorer_names", "scorer_seed", "summary_lines", "table_columns", "table_values", "unregister_scorer",
]  # fmt: skip
