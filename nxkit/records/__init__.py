"""Neuron records: the data every stage reads and writes, typed.

`release.py` holds the schema of OpenAI's public GPT-2 XL release (neuron records, simulation results, their JSON:
every dataclass becomes an object with a ``dataclass_name`` key, so files written by the kit load in tools built
for the release and the release's files load here); `manifests.py` what a run records of its settings, components
and traffic; `summaries.py` what a run writes besides the release's records. Every name is importable from here.
"""

from __future__ import annotations

from .manifests import (  # noqa: F401
    LISTED,
    SAMPLE,
    SELECTIVE,
    CollectionManifest,
    Component,
    RunManifest,
    StageRecord,
    Usage,
)
from .release import (  # noqa: F401
    FIRES,
    MAX_NORMALIZED,
    NEGATIVE,
    NEURON_ACTIVATIONS,
    POSITIVE,
    SIGNS,
    SIMULATED_NORMALIZED_ACTIVATIONS,
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    check_sign,
    dump_neuron_record,
    dump_simulation_results,
    dumps,
    from_json_obj,
    load_neuron_record,
    load_simulation_results,
    loads,
    normalize_activations,
    register,
    registered_records,
    to_json_obj,
)
from .summaries import (  # noqa: F401
    RANDOM,
    TOP,
    UNKNOWN,
    WINDOW_SPLITS,
    AblationScore,
    Candidate,
    ClassifierScore,
    Failure,
    HeldOutWindow,
    Mismatch,
    NeuronRevision,
    NeuronSummary,
    ProbedText,
    RevisionRound,
    ScoredWindow,
    Scores,
    SimulationFailure,
    max_activation_of,
)
