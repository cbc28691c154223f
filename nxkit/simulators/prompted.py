"""The simulator: predict a neuron's activation on every token of a window from an explanation alone.

`Simulator` is the protocol every stage uses. Three prompted implementations, picked by
`make_simulator` from what the backend can do (`Capabilities`):
- `all_at_once`: one pass over the prompt with a placeholder per token; at each placeholder the
  expected value over the digit tokens 0-9 of the next-token distribution (local model, or a server
  returning prompt log-probabilities with echo=True: vLLM, llama.cpp);
- `chat_logprobs`: the model rewrites each token with a digit; the expected value comes from the top
  log-probabilities at each digit;
- `chat_text`: the same answer without log-probabilities; the written digit is the prediction.
Predictions are on the 0-9 scale (`prompts.SIM_MAX`; "10" is two tokens in many tokenizers).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from typing import Any

from .. import prompts
from ..llm.base import Backend, Capabilities, unusable
from ..records import (
    SIMULATED_NORMALIZED_ACTIVATIONS,
    Candidate,
    Component,
    SequenceSimulation,
    SimulationFailure,
    Usage,
)
from .base import SimulateError, simulate_sync

MODES = ("all_at_once", "chat_logprobs", "chat_text")
DIGITS = [str(d) for d in range(prompts.SIM_MAX + 1)]


@dataclass
class SimulateConfig:
    """Settings of the simulator (saved in the run manifest)."""

    mode: str = "auto"
    """One of `all_at_once`, `chat_logprobs`, `chat_text`, or `auto` (the best the backend can do)."""
    top_logprobs: int = 20
    """Alternatives requested per position from a server (20 is the most OpenAI's chat API and vLLM's default allow).
    In `all_at_once` mode a window fails when no digit is among them at some token."""

    def __post_init__(self):
        if self.mode != "auto" and self.mode not in MODES:
            raise SimulateError(f"mode must be 'auto' or one of {MODES}, got {self.mode!r}")
        if not 1 <= self.top_logprobs <= 20:
            raise SimulateError("top_logprobs must be between 1 and 20")


def choose_mode(capabilities: Capabilities, requested: str = "auto") -> str:
    """The requested mode if the backend supports it; for `auto`, the most informative supported one."""
    can = {
        "all_at_once": capabilities.prompt_logprobs,
        "chat_logprobs": capabilities.chat and capabilities.generated_logprobs,
        "chat_text": capabilities.chat,
    }
    if requested == "auto":
        for mode in MODES:
            if can[mode]:
                return mode
        raise SimulateError("this backend can neither chat nor return prompt log-probabilities")
    if not can.get(requested, False):
        raise SimulateError(
            f"this backend cannot run simulator mode {requested!r}; it supports {[m for m in MODES if can[m]]}"
        )
    return requested


def digit_distribution(top: dict[str, float]) -> list[float] | None:
    """Probabilities of the digits 0-9 among log-probabilities keyed by token text, renormalised; None if none is there."""
    lps = [top.get(d) for d in DIGITS]
    if all(lp is None for lp in lps):
        return None
    probs = [math.exp(lp) if lp is not None else 0.0 for lp in lps]
    total = sum(probs)
    return [p / total for p in probs]


def _sequence(tokens: list[str], dists: list[list[float]]) -> SequenceSimulation:
    values = [float(d) for d in range(prompts.SIM_MAX + 1)]
    return SequenceSimulation(
        tokens=list(tokens),
        expected_activations=[sum(v * p for v, p in zip(values, dist, strict=True)) for dist in dists],
        activation_scale=SIMULATED_NORMALIZED_ACTIVATIONS,
        distribution_values=[values for _ in dists],
        distribution_probabilities=dists,
    )


def one_hot(digit: int) -> list[float]:
    return [1.0 if d == digit else 0.0 for d in range(prompts.SIM_MAX + 1)]


class _Prompted:
    """What the prompted simulators share: the backend, the settings, sync access and the description."""

    mode = ""

    def __init__(self, backend: Backend, config: SimulateConfig | None = None):
        self.backend = backend
        self.config = config or SimulateConfig()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r}, mode={self.mode!r})"

    def describe(self) -> dict[str, Any]:
        return replace(Component.of(self.backend.describe()), kind="prompted", mode=self.mode)

    @property
    def usage(self) -> Usage:
        return self.backend.usage

    @property
    def llm(self) -> Backend:
        return self.backend

    def simulate_sync(
        self, explanation: str | Candidate, windows: list[list[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        """`simulate_many` from sync code (also inside Jupyter)."""
        return simulate_sync(self, explanation, windows)

    async def simulate_many(
        self, explanation: Candidate, windows: list[list[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        """Every window with the same explanation: in turn in process (the prefix is reused), concurrently on a server."""
        if any(not w for w in windows):
            raise SimulateError("cannot simulate an empty window")
        text = Candidate.of(explanation).text
        if not self.backend.capabilities.concurrent:
            return [await self.simulate(text, w) for w in windows]
        return list(await asyncio.gather(*(self.simulate(text, w) for w in windows)))

    async def simulate(self, explanation: str, tokens: list[str]) -> SequenceSimulation | SimulationFailure:
        raise NotImplementedError


class AllAtOnceSimulator(_Prompted):
    """One pass over the prompt with a placeholder per token; each prediction is the expected digit there."""

    mode = "all_at_once"

    async def simulate(self, explanation: str, tokens: list[str]) -> SequenceSimulation | SimulationFailure:
        prefix = prompts.simulate_prefix(explanation)
        text, places = prompts.simulate_window_text(tokens)
        tops = await self.backend.placeholder_logprobs(prefix, text, places, DIGITS, top=self.config.top_logprobs)
        dists = [digit_distribution(t) if t is not None else None for t in tops]
        bad = [i for i, d in enumerate(dists) if d is None]
        if bad:
            return SimulationFailure(
                f"no digit log-probabilities at {len(bad)} of {len(places)} tokens (no digit among the top "
                f"{self.config.top_logprobs}, or a placeholder merged with its neighbour in tokenisation)",
                f"log-probabilities at the first such positions: {[tops[i] for i in bad[:3]]}",
            )
        return _sequence(tokens, dists)


class ChatSimulator(_Prompted):
    """The model rewrites each token with a digit; expected values from the digits' log-probabilities where given."""

    def __init__(self, backend: Backend, config: SimulateConfig | None = None, with_logprobs: bool = True):
        super().__init__(backend, config)
        self.with_logprobs = with_logprobs
        self.mode = "chat_logprobs" if with_logprobs else "chat_text"

    async def simulate(self, explanation: str, tokens: list[str]) -> SequenceSimulation | SimulationFailure:
        answer = await self.backend.chat(
            prompts.simulate_messages(explanation, tokens),
            max_tokens=8 * len(tokens) + 16,
            temperature=0.0,
            top_logprobs=self.config.top_logprobs if self.with_logprobs else 0,
        )
        lines = prompts.align_lines(tokens, prompts.parse_simulation_lines(answer.text))
        missing = sum(line is None for line in lines)
        if missing:
            unusable(answer)
            return SimulationFailure(
                f"{missing} of {len(tokens)} tokens have no `token<TAB>digit` line in the answer", answer.text
            )
        starts: dict[int, int] = {}
        if self.with_logprobs and answer.tokens:
            pos = 0
            for j, t in enumerate(answer.tokens):
                starts[pos] = j
                pos += len(t.token)
        return _sequence(
            tokens, [self._distribution(answer, starts.get(line.digit_offset), line.digit) for line in lines]
        )

    @staticmethod
    def _distribution(answer, j: int | None, digit: int) -> list[float]:
        """The digits' probabilities at answer token `j` when it is the written digit, else that digit for certain."""
        if j is not None and answer.tokens[j].token.strip() == str(digit):
            top = dict(answer.tokens[j].top)
            if answer.tokens[j].logprob is not None:
                top.setdefault(answer.tokens[j].token.strip(), answer.tokens[j].logprob)
            if (dist := digit_distribution(top)) is not None:
                return dist
        return one_hot(digit)
