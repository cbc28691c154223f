"""Simulators: `make_simulator` knows every one: the exact simulation of the search's formulas (`exact`),
nxkit-sim (`nxkit-sim`), and a prompted LLM (`local`, a model on a server, or any `Backend`)."""

from __future__ import annotations

from ..llm.base import Backend
from .base import Simulator
from .prompted import AllAtOnceSimulator, ChatSimulator, SimulateConfig, choose_mode

EXACT = "exact"
"""The exact simulation of the compositional search's formulas."""
TRAINED = ("nxkit-sim",)
"""Simulators by name that are trained models rather than prompted LLMs (loaded on first use: they need torch)."""
OFFLINE_SIMULATOR = "nxkit-sim"
"""The simulator of free-text explanations when the explainer is the offline model."""
IN_PROCESS = (EXACT, *TRAINED)
"""Simulators by name that run in this process with no LLM behind them."""


def default_simulator(explainer: str) -> str:
    """The simulator an `explainer` is scored with when none is named: the exact one for the search's formulas,
    nxkit-sim for the offline `local` model (the prompted SmolLM2 ignores explanations: shuffled-explanation gap about
    0), else the same model."""
    if explainer == "search":
        return EXACT
    return OFFLINE_SIMULATOR if explainer == "local" else explainer


def make_simulator(spec: str | Backend = "local", config: SimulateConfig | None = None, **backend_kwargs) -> Simulator:
    """A simulator by name (`exact`, `nxkit-sim`, `local`, or a model on an OpenAI-compatible server, with
    `base_url=` ...) or around a backend, in the mode `config.mode` asks for (`auto`: the most informative the backend
    can do). `backend_kwargs` go to `llm.make_backend`; nxkit-sim takes `path` (other weights) alone."""
    from ..llm import make_backend

    if spec == EXACT:
        from .exact import FormulaSimulator

        return FormulaSimulator()
    if spec in TRAINED:
        from .trained import TrainedSimulator

        return TrainedSimulator(**{k: v for k, v in backend_kwargs.items() if k == "path"})
    backend = make_backend(spec, **backend_kwargs) if isinstance(spec, str) else spec
    config = config or SimulateConfig()
    mode = choose_mode(backend.capabilities, config.mode)
    if mode == "all_at_once":
        return AllAtOnceSimulator(backend, config)
    return ChatSimulator(backend, config, with_logprobs=mode == "chat_logprobs")


def simulator_for(
    explainer: str,
    explainer_llm: Backend | None,
    spec: str | None = None,
    config: SimulateConfig | None = None,
    base_url: str | None = None,
    explainer_base_url: str | None = None,
    **backend_kwargs,
) -> Simulator:
    """The simulator a run (or a notebook) scores `explainer`'s explanations with: `spec`, else
    `default_simulator(explainer)`; the explainer's own backend when it names the same model on the same server (one
    backend, one connection pool and one usage count for both)."""
    spec = spec or default_simulator(explainer)
    if explainer_llm is not None and spec == explainer and base_url == explainer_base_url:
        return make_simulator(explainer_llm, config)
    return make_simulator(spec, config, base_url=base_url, **backend_kwargs)
