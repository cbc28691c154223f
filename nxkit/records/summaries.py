"""What a run writes besides the release's records: held-out windows with their split, failures, candidates, scores,
the per-neuron summary, probed texts and revisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .manifests import Component, Usage
from .release import ActivationRecord, NeuronId, NeuronRecord, ScoredSequenceSimulation, register

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


@dataclass
class ScoredWindow:
    """A held-out window an explanation was scored on, with its label: its real and its simulated activations."""

    split: str
    """`top` or `random` (`unknown` for a window whose membership nothing records)."""
    simulation: ScoredSequenceSimulation
    """The window's tokens, real activations and simulation."""


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
    cost: int | None = None
    """How much the formula asks a reader to hold: its terms, a sub-word fragment counting twice (None for free
    text). The pick on calibration keeps a costlier candidate only if it scores higher by `term_margin` per unit."""
    weights: list[float] | None = None
    """Graded form: one fitted weight per term of the formula (None for a gate: AND, AND NOT), read by the exact
    simulator as how strongly the neuron fires where that term holds; None: the binary form."""

    @staticmethod
    def of(explanation: str | Candidate) -> Candidate:
        """An explanation as a candidate: a bare text (a user's, a release's, a revision's) carries no formula."""
        return explanation if isinstance(explanation, Candidate) else Candidate(str(explanation))


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
    top_and_random_interval: list[float] | None = None
    """The 95% interval of `top_and_random` from a seeded bootstrap over the windows (None: undefined)."""
    random_only_interval: list[float] | None = None
    """The same for `random_only`."""


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
    auc_flag: str | None = None
    """Why there is no AUC although there are answers: `binary_answers` (the backend gave no log-probabilities at the
    answer digits, and 0/1 answers rank nothing: their AUC would only repeat the balanced accuracy). With them, the
    AUC ranks the items by the probability of 1 against 0."""


@register
@dataclass
class AblationScore:
    """The ablation score of one explanation: how much of the neuron's effect on the model's next-token
    distributions its simulation keeps, against mean ablation (Bills et al. 2023). 1 - JSD(unchanged, simulation
    patched in) / JSD(unchanged, mean patched in), each averaged over every position of the valid windows."""

    top_and_random: float | None = None
    """Over the valid top and random windows together (None: undefined, see the flag)."""
    random_only: float | None = None
    """Over the valid random windows alone."""
    flag: str | None = None
    """Why it is undefined: `no_subject`, `no_token_ids`, `no_simulation`, or `no_effect` (mean ablation changes
    nothing the model says: the neuron has no effect to keep)."""
    top_and_random_interval: list[float] | None = None
    """Its 95% bootstrap interval over windows."""
    random_only_interval: list[float] | None = None
    """The same for `random_only`."""
    n_windows: int = 0
    """Valid windows scored (those the simulation failed on are left out)."""
    slope: float | None = None
    """The linear map from simulation to activation units, fitted on the calibration windows: its slope ..."""
    intercept: float | None = None
    """... and its intercept (activation = slope * simulation + intercept, on the neuron's side)."""
    jsd_simulated: float | None = None
    """Mean JSD (nats) between the unchanged and the simulation-patched next-token distributions."""
    jsd_mean: float | None = None
    """Mean JSD (nats) between the unchanged and the mean-ablated distributions."""


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
    test_scores: Scores | None = None
    """The original's scores on the `test` windows, held back from every choice and from the headline: the run's
    split-half reliability compares them with the valid ones (None: not scored)."""
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
    shuffled_control_interval: list[float] | None = None
    """The control's 95% interval (a seeded bootstrap over the windows)."""
    shuffled_gap_value: float | None = None
    """The original explanation's score minus the control's on the same windows (those both simulations scored)."""
    shuffled_gap_interval: list[float] | None = None
    """Its 95% interval, from one bootstrap that resamples the same windows for both."""
    failures: list[Failure] = field(default_factory=list)
    """Unparsable answers and failed windows, with their raw text."""
    simulator: Component | None = None
    """The simulator that scored it (kind, mode, model)."""
    seconds: float = 0.0
    """Wall time of explanation and scoring."""
    usage: Usage = field(default_factory=lambda: Usage())
    """LLM traffic spent on this neuron (requests, prompt and completion tokens)."""
    scorer_results: dict[str, Any] = field(default_factory=dict)
    """Each further scorer's result on the kept explanation (`--explain.scorers`), by scorer name: detection and
    fuzzing give a `ClassifierScore`; a scorer of one's own, its own registered record."""
    negative_mass_share: float | None = None
    """Share of the neuron's summed |activation| over the corpus that is negative (the same on both sides)."""
    negative_tail_share: float | None = None
    """The same over the tokens above the top-k threshold (see `collection.activations.SignShares`); None when unknown."""

    def __post_init__(self):  # summaries written before these were typed hold plain dicts
        self.simulator = Component.of(self.simulator or None)
        self.usage = Usage.of(self.usage)

    @staticmethod
    def migrate(values: dict[str, Any]) -> dict[str, Any]:
        """Summaries written before `scorer_results` held detection and fuzzing in fields of their own."""
        results = dict(values.get("scorer_results") or {})
        for name in ("detection", "fuzzing"):
            if values.get(name) is not None:
                results.setdefault(name, values[name])
        return {**values, "scorer_results": results}

    @property
    def detection(self) -> ClassifierScore | None:
        """The detection scorer's verdict, when the run asked for it."""
        return self.scorer_results.get("detection")

    @property
    def fuzzing(self) -> ClassifierScore | None:
        """The fuzzing scorer's verdict, when the run asked for it."""
        return self.scorer_results.get("fuzzing")

    @property
    def original_candidate(self) -> Candidate | None:
        """The best-of-k explanation as its candidate (with its formula, when the search wrote it)."""
        if self.original_explanation is None:
            return None
        found = (c for c in self.candidates if c.text == self.original_explanation)
        return next(found, Candidate(self.original_explanation))

    @property
    def top_and_random(self) -> float | None:
        return self.scores.top_and_random

    @property
    def random_only(self) -> float | None:
        return self.scores.random_only

    @property
    def shuffled_gap(self) -> float | None:
        """The explanation's score minus the shuffled control's on the same windows (near 0: the simulator ignores
        explanations); for summaries written before that was stored, the kept score minus the control."""
        if self.shuffled_gap_value is not None:
            return self.shuffled_gap_value
        if self.shuffled_control_interval is not None or self.top_and_random is None or self.shuffled_control is None:
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
    """That explanation's top-and-random score on the calibration windows (what keep-or-revise is chosen on)."""
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
    """The revision's scores on the same calibration windows (the choice; never the reported score)."""
    kept: str = "original"
    """`revised` when the revision scored higher on the calibration windows, else `original`."""
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
    """The original's top-and-random score on the valid windows."""
    score_after: float | None = None
    """The final explanation's score on the same valid windows (it was chosen on the calibration windows)."""
    scores_after: Scores | None = None
    """The final explanation's scores on the valid windows, when a revision was kept."""
    score_before_source: str = "run"
    """`run` (from the run's summary) or `rescored` (simulated again with this simulator)."""
    n_held_out_windows: int | None = None
    """Valid windows both explanations were scored on."""
    n_calibration_windows: int | None = None
    """Calibration windows every keep-or-revise choice was made on."""
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
