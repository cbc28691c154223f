"""A prompted LLM as explainer: best-of-k sampled answers to the kit's explanation prompt."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import prompts
from ..llm.base import Backend, unusable
from ..records import (
    Candidate,
    Failure,
    NeuronRecord,
    Usage,
)
from ..seeds import mix_seed
from .base import ExplainConfig, explainer_windows


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

    @property
    def llm(self) -> Backend:
        return self.backend

    async def explain(self, record: NeuronRecord, config: ExplainConfig) -> tuple[list[Candidate], list[Failure]]:
        texts, failures = await explain_neuron(self.backend, record, config)
        return [Candidate(t) for t in texts], failures


async def explain_neuron(
    backend: Backend, record: NeuronRecord, config: ExplainConfig
) -> tuple[list[str], list[Failure]]:
    """Sample k explanations; returns (parsed explanations, failures with the raw text of unparsable ones)."""
    explanations, failures = [], []
    writes = None
    if config.show_output:
        if record.writes is None:
            why = (
                "--explain.show-output needs what the neuron writes, and this collection stores no vocabulary "
                "projection; run `nxkit run` on it again without --no-writes (it adds the projection and keeps the rest)"
            )
            return [], [Failure("explain", why)]
        n = config.output_tokens
        writes = ([t for t, _ in record.writes.raised[:n]], [t for t, _ in record.writes.lowered[:n]])
    messages = prompts.explain_messages(explainer_windows(record, config), writes)
    nid = record.neuron_id
    answers = await asyncio.gather(  # all k at once on a server; in turn in process
        *(
            backend.chat(
                messages,
                max_tokens=config.explanation_max_tokens,
                temperature=config.temperature,
                seed=mix_seed(config.seed, nid.layer_index, nid.neuron_index, i),
            )
            for i in range(config.best_of)
        )
    )
    for answer in answers:
        parsed = prompts.parse_explanation(answer.text)
        if parsed is None:
            unusable(answer)
            failures.append(Failure("explain", "unparsable explanation", answer.text))
        else:
            explanations.append(parsed)
    return explanations, failures
