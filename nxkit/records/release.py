"""The schema of OpenAI's public GPT-2 XL release: neuron records and simulation results, and their JSON.

The JSON written here is field-for-field that release's: every dataclass becomes an object with a
``dataclass_name`` key, so files written by the kit load in tools built for the release and the
release's files load here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

_REGISTRY: dict[str, type] = {}


_MIGRATIONS: dict[str, Any] = {}


def register(cls: type[T]) -> type[T]:
    """Register a dataclass so that `from_json_obj` can rebuild it from its `dataclass_name` (a static `migrate`
    method, when the class has one, turns the fields of files written by earlier versions into today's)."""
    _REGISTRY[cls.__name__] = cls
    if "migrate" in vars(cls):
        _MIGRATIONS[cls.__name__] = cls.migrate
    return cls


def registered_records() -> dict[str, type]:
    """Every registered record class by its `dataclass_name`."""
    return dict(_REGISTRY)


@register
@dataclass(frozen=True, order=True)
class NeuronId:
    """Where a neuron lives in the subject model."""

    layer_index: int
    """Index of the transformer block, from 0."""
    neuron_index: int
    """Index of the neuron in that block's MLP hidden layer, from 0."""


@register
@dataclass
class ActivationRecord:
    """One text window and one neuron's activation on each of its tokens."""

    tokens: list[str]
    """Each token decoded on its own, as a reader sees it."""
    activations: list[float]
    """The neuron's raw activation on each token."""
    token_ids: list[int] | None = field(default=None, compare=False, repr=False, metadata={"json": False})
    """The tokens' ids in the subject model's vocabulary, when the window came from a collection (the ablation score
    runs them through the model again); never written to JSON, so the release's layout is unchanged."""

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0

    def negated(self) -> ActivationRecord:
        """The same window on the neuron's negative side (every activation negated; -0.0 shown as 0.0)."""
        return ActivationRecord(list(self.tokens), [-a + 0.0 for a in self.activations], self.token_ids)


@register
@dataclass
class NeuronRecord:
    """Everything collection keeps for one neuron."""

    neuron_id: NeuronId
    """The neuron."""
    random_sample: list[ActivationRecord] = field(default_factory=list)
    """Windows drawn uniformly at random, independently for each neuron."""
    random_sample_by_quantile: list[list[ActivationRecord]] | None = None
    """Random windows from each band of window-maximum activation (bands in `quantile_boundaries`)."""
    quantile_boundaries: list[float] | None = None
    """Window-maximum activations that separate the bands of `random_sample_by_quantile`."""
    mean: float | None = math.nan
    """Mean activation over every token of the corpus."""
    variance: float | None = math.nan
    """Variance of the activation over every token."""
    skewness: float | None = math.nan
    """Skewness of the activation over every token."""
    kurtosis: float | None = math.nan
    """Excess kurtosis of the activation over every token."""
    most_positive_activation_records: list[ActivationRecord] = field(default_factory=list)
    """The windows with the highest maximum activation, strongest first."""
    writes: Any = field(default=None, compare=False, repr=False, metadata={"json": False})
    """What the neuron writes to the logits (`collection.activations.NeuronWrites`), when the collection stores it;
    never written to JSON (the release's layout has no such field)."""

    @property
    def max_activation(self) -> float:
        """Largest activation over the top windows (0 for a neuron that never fires)."""
        return max((r.max_activation for r in self.most_positive_activation_records), default=0.0)


# --- JSON in the release's shape -------------------------------------------------------------


def to_json_obj(obj: Any) -> Any:
    """Turn registered dataclasses (nested in lists and dicts) into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"dataclass_name": type(obj).__name__}
        for f in dataclasses.fields(obj):
            if f.metadata.get("json", True):
                out[f.name] = to_json_obj(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_json_obj(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json_obj(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # the release writes NaN moments as null
    return obj


def from_json_obj(obj: Any) -> Any:
    """Inverse of `to_json_obj`: objects with a known `dataclass_name` become dataclasses."""
    if isinstance(obj, list):
        return [from_json_obj(v) for v in obj]
    if isinstance(obj, dict):
        name = obj.get("dataclass_name")
        values = {k: from_json_obj(v) for k, v in obj.items() if k != "dataclass_name"}
        if name is None:
            return values
        if name not in _REGISTRY:
            raise ValueError(f"unknown dataclass_name {name!r}; known: {sorted(_REGISTRY)}")
        cls = _REGISTRY[name]
        if name in _MIGRATIONS:
            values = _MIGRATIONS[name](values)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
    return obj


def dumps(obj: Any) -> str:
    """Serialise registered dataclasses as compact JSON in the release's shape."""
    return json.dumps(to_json_obj(obj), separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """Parse JSON written by `dumps` or by the public release."""
    return from_json_obj(json.loads(text))


def dump_neuron_record(record: NeuronRecord) -> str:
    """One neuron record as a JSON string (the release's `collated-activations` file)."""
    return dumps(record)


def load_neuron_record(text: str | bytes) -> NeuronRecord:
    """Parse one neuron record; raises ValueError when the JSON holds something else."""
    record = loads(text)
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"expected a NeuronRecord, got {type(record).__name__}")
    return record


# --- the two signs of a neuron ----------------------------------------------------------------

POSITIVE, NEGATIVE = "positive", "negative"
SIGNS = (POSITIVE, NEGATIVE)
"""A neuron's sides: each is explained, simulated and scored as its own unit. The negative side is the neuron's
activations negated, so every stage reads it exactly as it reads the positive side."""


def check_sign(sign: str) -> str:
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    return sign


# --- 0-10 scale -----------------------------------------------------------------------------

MAX_NORMALIZED = 10
"""The top of the release's normalised activation scale 0-10: explainers are shown it, nxkit-sim predicts its bins,
the exact simulator predicts its top where a formula holds."""
FIRES = 0.3
"""A token fires when its activation reaches this fraction of the neuron's maximum (and a window fires when one of
its tokens does): the one threshold detection, fuzzing and revision call firing."""


def normalize_activations(activations: list[float], max_activation: float) -> list[int]:
    """Scale to integers 0-10 against the neuron's maximum; negatives count as 0.

    A neuron whose maximum is not positive maps to all zeros rather than dividing by zero.
    """
    if max_activation <= 0:
        return [0] * len(activations)
    return [
        min(MAX_NORMALIZED, max(0, int(math.floor(MAX_NORMALIZED * a / max_activation + 0.5)))) for a in activations
    ]


# --- simulation results, in the release's `explanations/{layer}/{neuron}.jsonl` shape ------------

NEURON_ACTIVATIONS = "neuron_activations"
SIMULATED_NORMALIZED_ACTIVATIONS = "simulated_normalized_activations"


@register
@dataclass
class SequenceSimulation:
    """A simulator's prediction for one window."""

    tokens: list[str]
    """The window's tokens, as the subject model split them."""
    expected_activations: list[float]
    """Predicted activation per token (an expected value where probabilities were available)."""
    activation_scale: str
    """Units of the predictions: `simulated_normalized_activations` (0-10) or `neuron_activations`."""
    distribution_values: list[list[float]]
    """Per token, the values of the simulator's discrete distribution (e.g. the digits 0-10)."""
    distribution_probabilities: list[list[float]]
    """Per token, the probability of each of those values."""
    uncalibrated_simulation: SequenceSimulation | None = None
    """The prediction before calibration, when one was applied."""


@register
@dataclass
class ScoredSequenceSimulation:
    """One window's simulation with its real activations and per-window scores."""

    simulation: SequenceSimulation
    """The prediction."""
    true_activations: list[float]
    """The neuron's real activations on the window (not normalised)."""
    ev_correlation_score: float | None
    """Correlation of predicted and real activations on this window (None when undefined)."""
    rsquared_score: float | None = None
    """R^2 of the prediction against the real activations."""
    absolute_dev_explained_score: float | None = None
    """1 - mean|real - predicted| / mean|real|."""


@register
@dataclass
class ScoredSimulation:
    """A simulation scored over several windows together."""

    scored_sequence_simulations: list[ScoredSequenceSimulation]
    """Each window's simulation."""
    ev_correlation_score: float | None = None
    """Correlation over all windows concatenated (not an average of per-window scores)."""
    rsquared_score: float | None = None
    """R^2 over all windows concatenated."""
    absolute_dev_explained_score: float | None = None
    """Absolute deviation explained over all windows concatenated."""


@register
@dataclass
class ScoredExplanation:
    """An explanation and how well the simulation from it matched the neuron."""

    explanation: str
    """The explanation the simulator was given."""
    scored_simulation: ScoredSimulation
    """Its scored simulation."""


@register
@dataclass
class NeuronSimulationResults:
    """Every scored explanation of one neuron (one line of the release's explanations file)."""

    neuron_id: NeuronId
    """The neuron."""
    scored_explanations: list[ScoredExplanation]
    """Its explanations, each with its scored simulation."""


def dump_simulation_results(results: NeuronSimulationResults) -> str:
    """One neuron's simulation results as a JSON line (the release's `explanations` file)."""
    return dumps(results)


def load_simulation_results(text: str | bytes) -> NeuronSimulationResults:
    """Parse one neuron's simulation results; raises ValueError when the JSON holds something else."""
    results = loads(text)
    if not isinstance(results, NeuronSimulationResults):
        raise ValueError(f"expected NeuronSimulationResults, got {type(results).__name__}")
    return results
