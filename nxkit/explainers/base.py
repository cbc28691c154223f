"""The `Explainer` protocol, its settings, and the windows an explainer is shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .. import prompts, scorers
from ..heldout import top_splits
from ..records import (
    Candidate,
    Component,
    Failure,
    NeuronRecord,
    Usage,
    normalize_activations,
)

if TYPE_CHECKING:
    from ..llm.base import Backend


class ExplainError(ValueError):
    """An explainer that cannot run as configured."""


@dataclass
class ExplainConfig:
    """Settings of explanation and scoring (saved in the run manifest)."""

    best_of: int = 3
    """Explanations sampled per neuron; the best on the calibration windows is kept."""
    explain_windows: int = 5
    """Top training windows shown to the explainer."""
    explain_window_tokens: int | None = 32
    """Tokens shown per window, around its peak (None shows whole windows)."""
    temperature: float = 1.0
    """Sampling temperature of the candidates."""
    explanation_max_tokens: int = 48
    """Tokens an explanation may take."""
    seed: int = 0
    """Base seed; candidate i of a neuron samples with a seed mixed from (seed, layer, neuron, i), so the
    response cache can replay it and different neurons do not share one random stream."""
    term_margin: float = 0.02
    """A candidate that costs more (more formula terms; a sub-word fragment counts twice) is kept over a cheaper one
    only if its calibration score is higher by at least this per unit of cost: fewer, whole-word terms win near-ties.
    0 keeps the best calibration score whatever it costs; free-text candidates have no cost."""
    calibration_windows: int | None = 5
    """Top and random calibration windows used to rank the candidates, each (None: the whole split)."""
    valid_windows: int | None = None
    """Top and random valid windows the chosen explanation is scored on, each (None: the whole split)."""
    split_half: bool = True
    """Also score the kept explanation on the `test` windows (one more simulation per neuron), for the run's
    split-half reliability: the correlation across neurons of their valid and test scores."""
    sim_window_tokens: int | None = None
    """Crop held-out windows to this many tokens around their peaks before simulating (None: whole windows)."""
    scorers: list[str] = field(default_factory=lambda: ["simulation"])
    """Scorers of the kept explanation, by name: `simulation` (correlation; always run), the cheaper `detection` and
    `fuzzing` (one LLM request each per neuron: accuracy and balanced accuracy), `ablation` (the simulation patched
    into the subject model against mean ablation: does the explained part matter to the model's output?), or any
    registered scorer (`nxkit.scorers.register_scorer`)."""
    show_output: bool = False
    """Show the LLM explainer what the neuron writes beside its windows: the tokens its output raises and lowers most
    (the collection's vocabulary projection), so an explanation can say what the neuron does as well as what it
    reads. Measure its effect with the ablation score (`--explain.scorers simulation ablation`)."""
    output_tokens: int = 8
    """Raised and lowered tokens shown each with `show_output`."""
    max_neurons_in_flight: int = 32
    """Neurons in progress at once when the explainer and simulator talk to a server (bounds memory; requests in
    flight are bounded by the server backend's own `max_concurrency`). In-process models take one at a time."""

    def __post_init__(self):
        if self.best_of < 1 or self.explain_windows < 1 or self.explanation_max_tokens < 1:
            raise ExplainError("best_of, explain_windows and explanation_max_tokens must be >= 1")
        if self.temperature < 0:
            raise ExplainError("temperature must be >= 0")
        if not 0 <= self.term_margin < 1:
            raise ExplainError(f"term_margin must be in [0, 1), got {self.term_margin}")
        if self.max_neurons_in_flight < 1:
            raise ExplainError("max_neurons_in_flight must be >= 1")
        if self.output_tokens < 1:
            raise ExplainError(f"output_tokens must be >= 1, got {self.output_tokens}")
        unknown = [k for k in self.scorers if k not in scorers.scorer_names()]
        if unknown:
            raise ExplainError(f"unknown scorer {unknown[0]!r}; choose from {scorers.scorer_names()}")
        for name in ("explain_window_tokens", "calibration_windows", "valid_windows", "sim_window_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExplainError(f"{name} must be None or >= 1, got {value}")


def train_windows(record: NeuronRecord, n_windows: int, max_tokens: int | None) -> list[prompts.Window]:
    """The first `n_windows` top training windows as (token, 0-10 activation) pairs, cropped around their peaks."""
    out = []
    for rec in top_splits(record)["train"][:n_windows]:
        tokens, acts = prompts.crop_window(rec.tokens, rec.activations, max_tokens)
        out.append(list(zip(tokens, normalize_activations(acts, record.max_activation), strict=True)))
    return out


def explainer_windows(record: NeuronRecord, config: ExplainConfig) -> list[prompts.Window]:
    """The windows the explainer is shown."""
    return train_windows(record, config.explain_windows, config.explain_window_tokens)


@runtime_checkable
class Explainer(Protocol):
    """Writes candidate explanations of one neuron from its record.

    Implementations: `LLMExplainer` (a prompted LLM through any `Backend`) and `explainers.search.SearchExplainer`
    (compositional search, no LLM). A backend passed where an explainer is expected is wrapped in an
    `LLMExplainer` (`as_explainer`).
    """

    async def explain(self, record: NeuronRecord, config: ExplainConfig) -> tuple[list[Candidate], list[Failure]]:
        """Usable candidates (at most `config.best_of`) and failures with the raw text that caused them."""
        ...

    def describe(self) -> Component | dict[str, Any]:
        """What the run manifest records of this explainer (a plain dict is read as a `Component`)."""
        ...

    @property
    def usage(self) -> Usage:
        """Its LLM traffic so far (zeros for an explainer that sends none)."""
        ...

    @property
    def llm(self) -> Backend | None:
        """The LLM it talks to (None for one that sends no LLM traffic): how many neurons may be in flight, and
        which LLM the classification scorers ask, are read from it."""
        ...
