"""Neuron records: the data every stage reads, in the schema of OpenAI's public GPT-2 XL release.

The JSON written here is field-for-field that release's: every dataclass becomes an object with a
``dataclass_name`` key, so files written by the kit load in tools built for the release and the
release's files load here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")

_REGISTRY: dict[str, type] = {}


def register(cls: type[T]) -> type[T]:
    """Register a dataclass so that `from_json_obj` can rebuild it from its `dataclass_name`."""
    _REGISTRY[cls.__name__] = cls
    return cls


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

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0

    def negated(self) -> ActivationRecord:
        """The same window on the neuron's negative side (every activation negated; -0.0 shown as 0.0)."""
        return ActivationRecord(list(self.tokens), [-a + 0.0 for a in self.activations])


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

    @property
    def max_activation(self) -> float:
        """Largest activation over the top windows (0 for a neuron that never fires)."""
        return max((r.max_activation for r in self.most_positive_activation_records), default=0.0)


# --- what runs record of their components and traffic ------------------------------------------


@register
@dataclass
class Usage:
    """Counters of one backend's traffic (a run sums them into its manifest)."""

    requests: int = 0
    """Requests actually computed (sent to a server, or forward passes run locally)."""
    prompt_tokens: int = 0
    """Prompt tokens processed."""
    completion_tokens: int = 0
    """Tokens generated."""
    cache_hits: int = 0
    """Responses served from the on-disk cache (nothing sent)."""
    reused_prompt_tokens: int = 0
    """Prompt tokens whose keys and values were reused from a shared prefix (local backend)."""
    retries: int = 0
    """Requests sent again after a rate limit, a server error or a timeout."""

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def reset(self) -> None:
        for k in dataclasses.asdict(self):
            setattr(self, k, 0)

    def minus(self, before: Usage) -> Usage:
        """The traffic since `before` (an earlier snapshot of the same counters)."""
        return Usage(**{k: v - getattr(before, k) for k, v in dataclasses.asdict(self).items()})

    @classmethod
    def of(cls, value: Usage | dict | None) -> Usage:
        """A usage from a record or a plain dict (summaries and manifests written before usage was typed)."""
        if isinstance(value, Usage):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in (value or {}).items() if k in known and v is not None})

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together (what a budget counts)."""
        return self.prompt_tokens + self.completion_tokens


@register
@dataclass
class Component:
    """What a run records of an explainer or a simulator, so that "has it changed" is a field comparison. Never
    holds a key."""

    kind: str = "unknown"
    """`llm` (a backend), `prompted` (an LLM reading a simulation prompt), `trained` (nxkit-sim), `exact` (the search's
    formulas), `search` (the compositional-search explainer), or what a user's own component calls itself."""
    mode: str | None = None
    """A simulator's mode (`all_at_once`, `chat_logprobs`, `chat_text`, `exact`)."""
    model: str | None = None
    """The model's name."""
    backend: str | None = None
    """The backend that serves it (`openai`, `local`)."""
    base_url: str | None = None
    """The server's address, for a backend on one."""
    path: str | None = None
    """Where trained weights were loaded from (None: the shipped ones)."""
    weights_hash: str | None = None
    """SHA-256 of trained weights, so a changed file counts as another simulator."""
    smoke_level: bool = False
    """True for a model whose scores say little (the offline prompted SmolLM2)."""
    settings: dict[str, Any] | None = None
    """Its own settings (e.g. the search's), and anything else a component's description held."""

    @classmethod
    def of(cls, value: Component | dict | None) -> Component | None:
        """A description from a record or a plain dict (what a user's component, or an older run, wrote)."""
        if value is None or isinstance(value, Component):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"a component description is a Component or a dict, not {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        out = {k: v for k, v in value.items() if k in known}
        extra = {k: v for k, v in value.items() if k not in known and k not in ("settings", "dataclass_name")}
        if "kind" not in out:
            out["kind"] = "llm" if "backend" in value else "unknown"
        settings = {**(value.get("settings") or {}), **extra}
        return cls(**out, settings=settings or None)

    @property
    def label(self) -> str:
        """In a word or two: `exact`, `trained nxkit-sim`, `prompted all_at_once`."""
        detail = self.model if self.kind == "trained" else self.mode
        return " ".join(str(x) for x in (self.kind, detail if detail != self.kind else None) if x)


@register
@dataclass
class StageRecord:
    """What a stage of a run recorded: its settings and the components it ran with."""

    config: dict[str, Any] = field(default_factory=dict)
    """The stage's settings (its config dataclass, as given)."""
    explainer: Component | None = None
    """The explainer."""
    simulator: Component | None = None
    """The simulator."""

    def __post_init__(self):
        self.explainer, self.simulator = Component.of(self.explainer), Component.of(self.simulator)


@register
@dataclass
class RunManifest:
    """A run's `manifest.json`: what each stage ran with, what it spent, where it stopped."""

    pipeline: dict[str, Any] | None = None
    """`nxkit run`'s settings as given (source, collect, explain, simulate, revise and the rest)."""
    neurons: list[list[int]] | None = None
    """The neurons chosen, `[layer, neuron]`."""
    explain: StageRecord | None = None
    """The explain-and-score stage."""
    revise: StageRecord | None = None
    """The revision stage."""
    usage: Usage | None = None
    """LLM traffic of the last explain-and-score call."""
    stopped: str | None = None
    """Why the last call stopped early (a budget), None when it did not."""
    pipeline_seconds: dict[str, float] | None = None
    """Wall time per stage of the last `nxkit run`."""

    def __post_init__(self):
        for name in ("explain", "revise"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(
                    self, name, StageRecord(**{k: v for k, v in value.items() if k in StageRecord.__dataclass_fields__})
                )
        if self.usage is not None:
            self.usage = Usage.of(self.usage)

    @classmethod
    def from_json_obj(cls, obj: dict) -> RunManifest:
        """From `manifest.json`, whether written typed or as the plain dict of an older version."""
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})


@register
@dataclass
class CollectionManifest:
    """A collection's `manifest.json`: what identifies the pass (model, layers, settings, corpus) and its progress."""

    format_version: int = 1
    model: str = "?"
    """The subject model's name."""
    n_layers: int = 0
    d_mlp: int = 0
    layers: list[int] = field(default_factory=list)
    """The layers collected."""
    config: dict[str, Any] = field(default_factory=dict)
    """The collection's settings (`CollectConfig`, `bottom_k` resolved)."""
    corpus: dict[str, Any] = field(default_factory=dict)
    """The corpus: source, n_windows, window, n_tokens, n_documents."""
    quantile_calibration_windows_used: int = 0
    gated_mlp: bool | None = None
    """True for act(gate) x up MLPs (None: collected before nxkit recorded it)."""
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions."""
    status: str = "partial"
    """`partial` or `complete`."""
    done_windows: int = 0
    """Windows done so far."""

    @classmethod
    def from_json_obj(cls, obj: dict) -> CollectionManifest:
        return cls(**{k: v for k, v in obj.items() if k in cls.__dataclass_fields__})

    def identity(self) -> tuple:
        """What a resumed pass must share with the pass it resumes: every field but versions and progress (a field
        added later counts unless it is named here)."""
        progress = {"versions", "status", "done_windows"}
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in progress)

    @property
    def corpus_source(self) -> str | None:
        return self.corpus.get("source")

    @property
    def n_tokens(self) -> int:
        return int(self.corpus.get("n_tokens", 0))

    @property
    def quantile_levels(self) -> list[float] | None:
        return self.config.get("quantile_levels")


# --- JSON in the release's shape -------------------------------------------------------------


def to_json_obj(obj: Any) -> Any:
    """Turn registered dataclasses (nested in lists and dicts) into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"dataclass_name": type(obj).__name__}
        for f in dataclasses.fields(obj):
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


# --- what a run writes besides the release's records ---------------------------------------------

TOP, RANDOM, UNKNOWN = "top", "random", "unknown"
"""Where a held-out window came from: the neuron's top windows, its random sample, or (for records made
elsewhere, such as the public release) a window that matches neither."""
WINDOW_SPLITS = (TOP, RANDOM, UNKNOWN)


@register
@dataclass
class HeldOutWindow(ActivationRecord):
    """A held-out window with the sample it was drawn from, so scores never infer it from a position."""

    split: str = TOP
    """`top` (from the top-activating windows), `random` (from the random sample) or `unknown`."""

    def __post_init__(self):
        if self.split not in WINDOW_SPLITS:
            raise ValueError(f"split must be one of {WINDOW_SPLITS}, got {self.split!r}")


@register
@dataclass
class SimulationFailure:
    """A window the simulator's answer could not be turned into predictions for."""

    reason: str
    """What went wrong."""
    raw: str
    """The raw answer text (or a description of the raw log-probabilities)."""


@register
@dataclass
class Failure:
    """Something that went wrong for a neuron, kept with the raw text that caused it."""

    stage: str
    """Where: `explain`, `simulate`, `shuffled_control`, `revise`."""
    reason: str
    """What went wrong."""
    raw: str | None = None
    """The raw answer, when there was one."""


@register
@dataclass
class Candidate:
    """One sampled explanation and how it did on the calibration windows."""

    text: str
    """The explanation."""
    calibration_score: float | None = None
    """Top-and-random correlation on the calibration windows (None: undefined, or only one candidate)."""
    calibration_flag: str | None = None
    """Why the calibration score is undefined, when it is."""
    formula: list | None = None
    """The structured formula behind the text, when the compositional search wrote it (`[[op, kind, arg], ...]`),
    so it can be simulated exactly."""
    search_score: float | None = None
    """The formula's correlation with the neuron on the windows it was searched on."""


@register
@dataclass
class Scores:
    """One explanation's scores on a neuron's held-out windows."""

    top_and_random: float | None = None
    """Correlation over the top and random windows together (None: undefined, see the flag)."""
    random_only: float | None = None
    """Correlation over the random windows alone."""
    top_and_random_flag: str | None = None
    """Why `top_and_random` is undefined, when it is."""
    random_only_flag: str | None = None
    """Why `random_only` is undefined, when it is."""
    n_windows: int = 0
    """Windows scored."""
    n_failed: int = 0
    """Windows whose simulation failed (left out of both scores)."""


@register
@dataclass
class ClassifierScore:
    """A classification scorer's verdict on one explanation (detection or fuzzing): how well an LLM told the
    neuron's windows (or markings) from others, reading only the explanation."""

    scorer: str
    """`detection` or `fuzzing`."""
    accuracy: float | None = None
    """Share of items classified right (None: nothing scored)."""
    balanced_accuracy: float | None = None
    """Mean of the true-positive and true-negative rates (None: one class only, see the flag)."""
    auc: float | None = None
    """Chance a positive item is ranked above a negative one (None: undefined, see the flag)."""
    flag: str | None = None
    """Why a score is undefined: `empty`, `one_class`, or `no_llm`."""
    n_items: int = 0
    """Items shown (windows, or marked windows)."""
    n_positive: int = 0
    """Of them, those whose right answer is 1."""
    n_failed: int = 0
    """Items the answer gave no 0/1 for (left out of the scores, never counted as wrong)."""


@register
@dataclass
class NeuronSummary:
    """nxkit's per-neuron summary: what was chosen, how it scored, the control, and what went wrong."""

    neuron_id: NeuronId
    """The neuron."""
    status: str
    """`done` (scored), `dead` (never fires on the corpus) or `failed` (no usable explanation)."""
    reason: str | None = None
    """Why the status is not `done`."""
    max_activation: float = 0.0
    """The neuron's largest activation over its top windows."""
    candidates: list[Candidate] = field(default_factory=list)
    """Every usable sampled explanation, with its calibration score."""
    explanation: str | None = None
    """The explanation kept: the revised one when revision beat the original, else the original."""
    scores: Scores = field(default_factory=Scores)
    """The kept explanation's scores on the held-out windows."""
    original_explanation: str | None = None
    """The best-of-k explanation before any revision."""
    original_scores: Scores | None = None
    """The original's scores (the same as `scores` until a revision is kept)."""
    kept: str = "original"
    """`original` or `revised`: which explanation `explanation` is."""
    window_splits: list[str] = field(default_factory=list)
    """The split (`top` or `random`) of each window in the explanation file, in its order."""
    shuffled_control: float | None = None
    """Correlation of the same windows simulated from another neuron's explanation (None: not run or undefined)."""
    shuffled_control_from: NeuronId | None = None
    """The neuron whose explanation the control used."""
    shuffled_control_explanation: str | None = None
    """That explanation."""
    shuffled_control_reason: str | None = None
    """Why there is no control, when there is none."""
    failures: list[Failure] = field(default_factory=list)
    """Unparsable answers and failed windows, with their raw text."""
    simulator: Component | None = None
    """The simulator that scored it (kind, mode, model)."""
    seconds: float = 0.0
    """Wall time of explanation and scoring."""
    usage: Usage = field(default_factory=lambda: Usage())
    """LLM traffic spent on this neuron (requests, prompt and completion tokens)."""
    detection: ClassifierScore | None = None
    """The detection scorer's verdict on the kept explanation, when asked for."""
    fuzzing: ClassifierScore | None = None
    """The fuzzing scorer's verdict on the kept explanation, when asked for."""
    negative_mass_share: float | None = None
    """Share of the neuron's summed |activation| over the corpus that is negative (the same on both sides)."""
    negative_tail_share: float | None = None
    """The same over the tokens above the top-k threshold (see `collect.SignShares`); None when unknown."""

    def __post_init__(self):  # summaries written before these were typed hold plain dicts
        self.simulator = Component.of(self.simulator or None)
        self.usage = Usage.of(self.usage)

    @property
    def top_and_random(self) -> float | None:
        return self.scores.top_and_random

    @property
    def random_only(self) -> float | None:
        return self.scores.random_only

    @property
    def shuffled_gap(self) -> float | None:
        """The kept explanation's score minus the shuffled control's (near 0: the simulator ignores explanations)."""
        if self.top_and_random is None or self.shuffled_control is None:
            return None
        return self.top_and_random - self.shuffled_control


@register
@dataclass
class ProbedText:
    """A text the explainer proposed, with the subject model's real activations on it."""

    text: str
    """The proposed text."""
    tokens: list[str]
    """Its tokens."""
    activations: list[float]
    """The neuron's activation on each token."""
    max_activation: float
    """The peak."""
    normalized: list[int]
    """Activations on the 0-10 scale, against the neuron's top-window maximum."""
    max_normalized: int
    """The peak on that scale."""


@register
@dataclass
class Mismatch:
    """A proposal the explanation got wrong."""

    kind: str
    """`fire` (meant to fire, stayed silent) or `silent` (meant to stay silent, fired)."""
    index: int
    """Its position among the proposals of its kind."""
    probe: ProbedText
    """The text and its real activations."""


@register
@dataclass
class RevisionRound:
    """One propose-probe-revise-score round."""

    round: int
    """Its index, from 0."""
    explanation: str
    """The explanation the round started from."""
    score_explanation: float | None
    """That explanation's top-and-random score on the held-out windows."""
    proposals: dict[str, list[str]] = field(default_factory=lambda: {"fire": [], "silent": []})
    """Parsed proposals per kind (`fire`, `silent`)."""
    raw: dict[str, str | None] = field(default_factory=lambda: {"fire": None, "silent": None})
    """The raw answers per kind."""
    probes: dict[str, list[ProbedText]] = field(default_factory=lambda: {"fire": [], "silent": []})
    """Each proposal's real activations, per kind."""
    mismatches: list[Mismatch] = field(default_factory=list)
    """The proposals the explanation got wrong."""
    revised: str | None = None
    """The revised explanation, when one was parsed."""
    raw_revision: str | None = None
    """The raw revision answer."""
    scores_revised: Scores | None = None
    """The revision's scores on the same held-out windows as the original."""
    kept: str = "original"
    """`revised` when the revision scored higher, else `original`."""
    skipped_reason: str | None = None
    """Why the round stopped early, when it did."""

    @property
    def score_revised(self) -> float | None:
        return self.scores_revised.top_and_random if self.scores_revised else None


@register
@dataclass
class NeuronRevision:
    """Every revision round of one neuron and what it ended with."""

    neuron_id: NeuronId
    """The neuron."""
    status: str
    """`done`, `skipped` (nothing to revise) or `failed` (an LLM, simulator or probe error)."""
    reason: str | None = None
    """Why it was skipped or failed, or why every round was skipped."""
    original_explanation: str | None = None
    """The explanation revision started from."""
    final_explanation: str | None = None
    """The best explanation after the last round."""
    score_before: float | None = None
    """The original's top-and-random score."""
    score_after: float | None = None
    """The final explanation's score (the same windows)."""
    scores_after: Scores | None = None
    """The final explanation's scores, when a revision was kept."""
    score_before_source: str = "run"
    """`run` (from the run's summary) or `rescored` (simulated again with this simulator)."""
    n_held_out_windows: int | None = None
    """Windows both explanations were scored on."""
    config: dict = field(default_factory=dict)
    """The revision settings."""
    rounds: list[RevisionRound] = field(default_factory=list)
    """Every round."""
    seconds: float = 0.0
    """Wall time."""


def max_activation_of(
    summary: NeuronSummary | None = None,
    record: NeuronRecord | None = None,
    seqs: Sequence[ScoredSequenceSimulation] = (),
) -> float:
    """The scale of a neuron's heatmaps: its top-window maximum when known, else the largest real activation
    among its scored windows, else 1."""
    for known in (record.max_activation if record else None, summary.max_activation if summary else None):
        if known is not None and known > 0:
            return float(known)
    return max((max(s.true_activations, default=0.0) for s in seqs), default=0.0) or 1.0
