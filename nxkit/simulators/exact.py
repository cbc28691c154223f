"""The search explainer's formulas simulated exactly: the top of the 0-10 scale where the formula holds, 0 elsewhere;
in the graded form (a candidate with weights), each term's weight scaled so the largest is 10."""

from __future__ import annotations

from typing import Any

from ..formulas import Formula, SearchError, graded_values
from ..llm.base import count
from ..records import MAX_NORMALIZED, SIMULATED_NORMALIZED_ACTIVATIONS, Candidate, Component, SequenceSimulation, Usage


class FormulaSimulator:
    """Exact simulation of the search explainer's explanations: each token gets 10 where the explanation's formula
    holds and 0 elsewhere. It reads the structured formula the candidate carries (`Candidate.formula`), never its
    rendered text, so two formulas can never be confused by how they read."""

    mode = "exact"

    def __init__(self):
        self.usage = Usage()

    def __repr__(self) -> str:
        return "FormulaSimulator()"

    def describe(self) -> dict[str, Any]:
        return Component("exact", mode="exact", model="formula of the search explainer")

    @property
    def llm(self) -> None:
        return None

    @staticmethod
    def formula_of(explanation: Candidate) -> Formula:
        """The candidate's formula; a clear error for a text with none."""
        explanation = Candidate.of(explanation)
        if not explanation.formula:
            raise SearchError(
                f"exact simulation reads only the search explainer's formulas, and {explanation.text[:80]!r} carries "
                "none; score free-text explanations with a simulator that reads text (--simulator local, nxkit-sim or "
                "a model on a server)"
            )
        return Formula.from_json(explanation.formula)

    async def simulate_many(self, explanation: Candidate, windows: list[list[str]]) -> list[SequenceSimulation]:
        formula = self.formula_of(explanation)
        weights = Candidate.of(explanation).weights
        count(self.usage, requests=1)
        out = []
        top = float(MAX_NORMALIZED)
        if weights is not None:
            if len(weights) != len(formula.terms) or not any(w is not None and w > 0 for w in weights):
                raise SearchError(f"graded weights {weights} do not fit the formula {formula}: one per term, one > 0")
            peak = max(w for w in weights if w is not None)
        for tokens in windows:
            if weights is None:
                values = [top if v else 0.0 for v in formula.mask(tokens)]
            else:
                values = [round(top * float(v) / peak, 4) for v in graded_values(formula, weights, tokens)]
            out.append(
                SequenceSimulation(
                    tokens=list(tokens),
                    expected_activations=values,
                    activation_scale=SIMULATED_NORMALIZED_ACTIVATIONS,
                    distribution_values=[[0.0, top] for _ in values],
                    distribution_probabilities=[[1.0 - v / top, v / top] for v in values],
                )
            )
        return out
