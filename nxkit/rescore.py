"""OpenAI's public GPT-2 XL release scored by our simulator: each released explanation on the very windows the
release scored, beside the released score, and optionally our own explanation of the same records."""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

from .explain_score import process_neuron, run_scorers, simulate_and_score
from .explainers.base import ExplainConfig
from .llm.base import run_sync
from .public import PublicDataError, released_windows
from .records import max_activation_of
from .scorers.correlation import scores

log = logging.getLogger(__name__)


def rescore_released(
    neurons, simulator, explainer=None, explain_config: ExplainConfig | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Score each released explanation with our simulator on the very windows the release scored, side by side.

    Windows carry their split (found by matching the neuron's records), so random-only scores never mix
    in top windows. With an `explainer`, also explain each neuron from its released records with our
    pipeline and score that explanation on the same windows. Returns one plain row per neuron.
    """
    rows = []
    for neuron in tqdm(list(neurons), desc="re-score", unit="neuron", disable=not progress):
        windows = released_windows(neuron)
        splits = [w.split for w in windows]
        released = neuron.results.scored_explanations[0]
        max_act = max_activation_of(record=neuron.record, seqs=released.scored_simulation.scored_sequence_simulations)
        _, ours, _ = run_sync(simulate_and_score(simulator, released.explanation, windows, max_act))
        row = {
            "layer": neuron.neuron_id.layer_index,
            "neuron": neuron.neuron_id.neuron_index,
            "n_windows": len(windows),
            "splits": splits,
            "released_explanation": released.explanation,
            "released_score": released.scored_simulation.ev_correlation_score,
            "released_random_only": scores(released.scored_simulation, splits).random_only,
            "rescored": ours.top_and_random,
            "rescored_random_only": ours.random_only,
            "rescored_flag": ours.top_and_random_flag,
        }
        if explainer is not None:
            if neuron.record is None:
                raise PublicDataError(f"neuron {neuron.neuron_id} needs its activation records to be explained by us")
            summary, _ = run_sync(
                process_neuron(neuron.record, explainer, simulator, explain_config or ExplainConfig())
            )
            own = None
            if summary.explanation:
                _, own, _ = run_sync(simulate_and_score(simulator, summary.explanation, windows, max_act))
            row |= {
                "our_explanation": summary.explanation,
                "our_score": own.top_and_random if own else None,
                "our_random_only": own.random_only if own else None,
                "our_status": summary.status,
            }
        rows.append(row)
    return rows


def add_scores(run, neurons, simulator, names: list[str], config: ExplainConfig | None = None, subject=None,
               progress: bool = True) -> int:  # fmt: skip
    """Run more scorers (`names`, e.g. `["ablation"]`) on a run's finished neurons that lack them, on the same valid
    windows their kept explanation was scored on, and write them into their summaries and the run table; returns how
    many neurons got a new result. `config` must be the run's (it says which windows are valid); `subject` gives the
    subject model (default: the collection's, loaded when first needed)."""
    from . import scorers
    from .heldout import held_out
    from .runs import as_run

    run, config = as_run(run), config or ExplainConfig()
    for name in names:
        scorers.get_scorer(name)  # an unknown name fails before any work
    if subject is None and (manifest := run.collection_manifest()) is not None:
        from .collection.subject import SubjectLoader

        subject = SubjectLoader.of(manifest)
    acts, added = run.activations(), 0
    for nid in tqdm(list(neurons), desc="add scores", unit="neuron", disable=not progress):
        summary = run.read_neuron(nid)
        todo = [
            n for n in names if summary is not None and summary.status == "done" and n not in summary.scorer_results
        ]
        if not todo:
            continue
        record = acts.neuron_record(nid.layer_index, nid.neuron_index)
        valid = held_out(record, "valid", config.valid_windows, config.sim_window_tokens)
        scored = run.read_results(nid).scored_explanations[0].scored_simulation
        stored = [s.simulation.tokens for s in scored.scored_sequence_simulations]
        if [w.tokens for w in valid] != stored:  # scored with other window settings: say so, leave it as it is
            log.warning(
                "neuron %d:%d: the valid windows of this config are not the ones its explanation was scored on; "
                "skipped (pass the run's own ExplainConfig: valid_windows, sim_window_tokens)",
                nid.layer_index, nid.neuron_index,
            )  # fmt: skip
            continue
        results, lost = run_sync(
            run_scorers(todo, record, summary.original_candidate, valid, scored, config, run.sign, simulator,
                        simulator.llm, subject)
        )  # fmt: skip
        summary.scorer_results.update(results)
        summary.failures += lost
        run.write_neuron(summary)
        added += 1
    run.compact_table()
    return added
