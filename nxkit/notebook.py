"""What the notebooks and benchmarks share: a small run made when missing, a collection made when missing,
and the LLM backend and simulator a notebook works with."""

from __future__ import annotations

from pathlib import Path

from .collection.collect import CollectConfig
from .explainers.base import ExplainConfig
from .pipeline import SEARCH, PipelineConfig, SourceConfig, run_pipeline
from .revise import ReviseConfig
from .runs import Run


def small_run_config(
    run_dir: str, revision_rounds: int = 0, layers: list[int] | None = None, explainer: str = SEARCH
) -> PipelineConfig:
    """A run small enough for a notebook on a CPU in a few minutes (one layer, two neurons, short windows)."""
    return PipelineConfig(
        explainer=explainer,
        source=SourceConfig(run_dir=run_dir, max_tokens=64 * 128),
        collect=CollectConfig(layers=layers or [0], top_k=8, n_random=6),
        sample=2,
        explain=ExplainConfig(best_of=1, valid_windows=1, sim_window_tokens=32),
        revise=ReviseConfig(rounds=revision_rounds),
        report=False,
    )


def ensure_run(config: PipelineConfig) -> Run:
    """The run of `config`, running the pipeline first when it has no explained neurons (notebooks use this)."""
    run = Run(config.source.path)
    if not run.neurons():
        run_pipeline(config)
    return run


def open_notebook_run(
    run_dir: str,
    layers: list[int],
    max_tokens: int,
    llm: str = "local",
    base_url: str | None = None,
    api_key: str | None = None,
    simulator: str | None = None,
):
    """The run a notebook works on (collecting a small one first if it has none), the LLM backend and the
    simulator (`simulator`, else `default_simulator(llm)`: nxkit-sim for the offline model, else the same
    model): the setup the explain, simulate and revise notebooks share."""
    from .llm import make_backend
    from .simulators import simulator_for

    run = ensure_collection(run_dir, layers=layers, max_tokens=max_tokens)
    backend = make_backend(llm, base_url=base_url, api_key=api_key)
    sim = simulator_for(llm, backend, simulator, base_url=base_url, explainer_base_url=base_url, api_key=api_key)
    return run, backend, sim


def ensure_collection(
    run_dir: str | Path,
    layers: list[int],
    max_tokens: int = 64 * 256,
    source: str = "default",
    model=None,
    **config,
) -> Run:
    """The run at `run_dir`, collecting a small activation set first if it has none (notebooks and benchmarks)."""
    from .collection.collect import collect
    from .collection.corpus import make_windows
    from .collection.subject import load_subject

    run = Run(run_dir)
    if run.has_collection():
        return run
    model = model or load_subject()
    windows = make_windows(model.tokenizer, source, max_tokens=max_tokens)
    config.setdefault("quantile_calibration_windows", 64)
    collect(model, windows, run.activations_dir, CollectConfig(layers=layers, **config))
    return run
