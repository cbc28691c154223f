"""The simulator: predict a neuron's activation on every token of a window from an explanation alone.

Three modes, picked from what the backend can do (`Capabilities`):
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
from dataclasses import dataclass

import torch

from . import prompts
from .llm import Backend, Capabilities, LocalBackend, run_sync
from .records import SIMULATED_NORMALIZED_ACTIVATIONS, SequenceSimulation

MODES = ("all_at_once", "chat_logprobs", "chat_text")
DIGITS = [str(d) for d in range(prompts.SIM_MAX + 1)]


class SimulateError(ValueError):
    """A simulator that cannot run as configured."""


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


@dataclass
class SimulationFailure:
    """A window the simulator's answer could not be turned into predictions for."""

    reason: str
    """What went wrong."""
    raw: str
    """The raw answer text (or a description of the raw log-probabilities)."""


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


class Simulator:
    """Simulates windows from an explanation with one backend, in the mode the backend allows."""

    def __init__(self, backend: Backend, config: SimulateConfig | None = None):
        self.backend = backend
        self.config = config or SimulateConfig()
        self.mode = choose_mode(backend.capabilities, self.config.mode)
        self._digit_ids: list[int] | None = None
        self._prefix_ids: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"Simulator({self.backend!r}, mode={self.mode!r})"

    def digit_ids(self) -> list[int]:
        """Vocabulary ids of the digits 0-9 (each must be one token)."""
        if self._digit_ids is None:
            tok = self.backend.tokenizer
            ids = [tok(d, add_special_tokens=False)["input_ids"] for d in DIGITS]
            if any(len(i) != 1 for i in ids):
                raise SimulateError("the simulator's tokenizer splits a single digit into several tokens")
            self._digit_ids = [i[0] for i in ids]
        return self._digit_ids

    async def simulate(self, explanation: str, tokens: list[str]) -> SequenceSimulation | SimulationFailure:
        """One window's prediction, or a failure with the raw answer."""
        if not tokens:
            raise SimulateError("cannot simulate an empty window")
        if self.mode == "all_at_once":
            if isinstance(self.backend, LocalBackend):
                return self._all_at_once_local(explanation, tokens)
            return await self._all_at_once_remote(explanation, tokens)
        return await self._chat(explanation, tokens, with_logprobs=self.mode == "chat_logprobs")

    async def simulate_many(
        self, explanation: str, windows: list[list[str]]
    ) -> list[SequenceSimulation | SimulationFailure]:
        """Every window with the same explanation: in order locally (so the prefix is reused), concurrently on a server."""
        if isinstance(self.backend, LocalBackend):
            return [await self.simulate(explanation, w) for w in windows]
        return list(await asyncio.gather(*(self.simulate(explanation, w) for w in windows)))

    def simulate_sync(self, explanation: str, windows: list[list[str]]) -> list[SequenceSimulation | SimulationFailure]:
        """`simulate_many` from sync code (also inside Jupyter)."""
        return run_sync(self.simulate_many(explanation, windows))

    def _all_at_once_local(self, explanation: str, tokens: list[str]) -> SequenceSimulation | SimulationFailure:
        backend: LocalBackend = self.backend  # type: ignore[assignment]
        if explanation not in self._prefix_ids:
            self._prefix_ids = {explanation: backend.encode(prompts.simulate_prefix(explanation))[0]}
        prefix = self._prefix_ids[explanation]
        text, places = prompts.simulate_window_text(tokens)
        ids, offsets = backend.encode(text)
        index = {o: j for j, o in enumerate(offsets)}
        missing = [p for p in places if p not in index]
        if missing:
            return SimulationFailure(
                f"{len(missing)} placeholders merged with neighbouring text by the tokenizer", text
            )
        logprobs = backend.next_token_logprobs(prefix, ids, [index[p] for p in places])
        probs = torch.softmax(logprobs[:, self.digit_ids()], dim=-1)
        return _sequence(tokens, probs.tolist())

    async def _all_at_once_remote(self, explanation: str, tokens: list[str]) -> SequenceSimulation | SimulationFailure:
        prefix = prompts.simulate_prefix(explanation)
        text, places = prompts.simulate_window_text(tokens)
        lp = await self.backend.prompt_logprobs(prefix + text, top=self.config.top_logprobs)
        index = {o: j for j, o in enumerate(lp.offsets)}
        dists, bad = [], []
        for p in places:
            j = index.get(len(prefix) + p)
            dist = digit_distribution(lp.top[j] or {}) if j is not None else None
            if dist is None:
                bad.append(p)
            dists.append(dist)
        if bad:
            sample = [lp.top[index[len(prefix) + p]] if len(prefix) + p in index else None for p in bad[:3]]
            return SimulationFailure(
                f"no digit among the top {self.config.top_logprobs} log-probabilities at {len(bad)} of {len(places)} tokens",
                f"top log-probabilities at the first such positions: {sample}",
            )
        return _sequence(tokens, dists)

    async def _chat(
        self, explanation: str, tokens: list[str], with_logprobs: bool
    ) -> SequenceSimulation | SimulationFailure:
        answer = await self.backend.chat(
            prompts.simulate_messages(explanation, tokens),
            max_tokens=8 * len(tokens) + 16,
            temperature=0.0,
            top_logprobs=self.config.top_logprobs if with_logprobs else 0,
        )
        lines = prompts.align_lines(tokens, prompts.parse_simulation_lines(answer.text))
        missing = sum(line is None for line in lines)
        if missing:
            return SimulationFailure(
                f"{missing} of {len(tokens)} tokens have no `token<TAB>digit` line in the answer", answer.text
            )
        starts: dict[int, int] = {}
        if with_logprobs and answer.tokens:
            pos = 0
            for j, t in enumerate(answer.tokens):
                starts[pos] = j
                pos += len(t.token)
        dists = []
        for line in lines:
            j = starts.get(line.digit_offset)
            dist = None
            if j is not None and answer.tokens[j].token.strip() == str(line.digit):
                top = dict(answer.tokens[j].top)
                if answer.tokens[j].logprob is not None:
                    top.setdefault(answer.tokens[j].token.strip(), answer.tokens[j].logprob)
                dist = digit_distribution(top)
            dists.append(dist or one_hot(line.digit))
        return _sequence(tokens, dists)
