"""The selection-bias test: with a simulator that predicts noise unrelated to any explanation, best-of-5 and one
revision round must not lift the headline score above 0. Choosing on the windows a score is reported on would
(the same candidates and revisions, chosen on the valid windows, are scored beside it, so the test can fail)."""

from __future__ import annotations

import math
import zlib
from pydoc_data.topics import topics

import numpy as np

from nxkit.collection.collect import CollectConfig
from nxkit.explain_score import process_neuron, simulate_and_score
from nxkit.explainers.base import ExplainConfig
from nxkit.heldout import held_out
from nxkit.llm.base import Capabilities, Completion, run_sync
from nxkit.records import (
    SIMULATED_NORMALIZED_ACTIVATIONS,
    ActivationRecord,
    Candidate,
    Component,
    NeuronId,
    SequenceSimulation,
    Usage,
)
from nxkit.revise import ReviseConfig, describe_probe, revise_record
from nxkit.training import synthetic as syn

N_NEURONS, BEST_OF = 200, 5


class NoiseSimulator:
    """Predicts noise seeded by the explanation and the window: no relation to the neuron at all."""

    usage, llm = Usage(), None

    async def simulate_many(self, explanation, windows):
        out = []
        for w in windows:
            rng = np.random.default_rng(zlib.crc32(("|".join(w) + "#" + explanation.text).encode()))
            out.append(
                SequenceSimulation(list(w), list(rng.random(len(w)) * 9), SIMULATED_NORMALIZED_ACTIVATIONS, [], [])
            )
        return out

    def describe(self):
        return Component("noise (test)")


class Guesser:
    """An explainer that writes `best_of` different guesses per neuron (their words do not matter here)."""

    usage, llm = Usage(), None

    async def explain(self, record, config):
        nid = record.neuron_id
        return [Candidate(f"guess {k} about neuron {nid.neuron_index}") for k in range(config.best_of)], []

    def describe(self):
        return Component("guesses (test)")


class Reviser:
    """A scripted LLM for revision: fixed proposals, and a new explanation each time it is asked to revise."""

    capabilities = Capabilities(chat=True, generated_logprobs=False, prompt_logprobs=False)

    def __init__(self):
        self.usage, self.revisions = Usage(), 0

    async def chat(self, messages, **kwargs):
        last = messages[-1]["content"]
        if "should make the neuron fire" in last:
            return Completion("1. the quick brown fox\n2. jumps over the lazy dog")
        if "should leave the neuron silent" in last:
            return Completion("1. of and the, in a\n2. 1984 was a year.")
        self.revisions += 1
        return Completion(f"revision number {self.revisions}")


def _windows(n: int = 400, width: int = 24) -> list[list[str]]:
    words = " ".join(topics[k] for k in sorted(topics)).split()
    return [[" " + w for w in words[i * width : (i + 1) * width]] for i in range(n)]


def _headlines():
    """Per neuron: the honest headline (choices on calibration, score on valid) and the one choosing on valid."""
    windows = _windows()
    neurons = syn.rule_neurons()
    neurons += syn.mixtures(neurons, N_NEURONS - len(neurons) + 80, seed=1)
    records = [n.record(windows, NeuronId(0, i), CollectConfig(top_k=16, n_random=12), seed=i) for i, n in
               enumerate(neurons)]  # fmt: skip
    records = [r for r in records if r.max_activation > 0]
    simulator, config = NoiseSimulator(), ExplainConfig(best_of=BEST_OF, calibration_windows=None)
    revise = ReviseConfig(rounds=1, n_fire=2, n_silent=2)
    honest, chosen_on_valid, before = [], [], []
    for record in records:
        summary, _ = run_sync(process_neuron(record, Guesser(), simulator, config))
        valid = held_out(record, "valid", None)
        calibration = held_out(record, "calibration", None)

        def probe(proposals, neuron=neurons[record.neuron_id.neuron_index], record=record):
            return {
                kind: [
                    describe_probe(t, ActivationRecord(t.split(), list(neuron.activations(t.split()))), record.max_activation)
                    for t in texts
                ]
                for kind, texts in proposals.items()
            }  # fmt: skip

        rounds, final, _, after = run_sync(
            revise_record(
                record, summary.explanation, valid, calibration, None, Reviser(), simulator, revise, probe=probe
            )
        )
        honest.append(after.top_and_random if after else summary.top_and_random)
        # the same candidates and revision, every choice made on the valid windows instead
        texts = [c.text for c in summary.candidates] + [r.revised for r in rounds if r.revised]
        on_valid = [run_sync(simulate_and_score(simulator, t, valid, record.max_activation))[1].top_and_random
                    for t in texts]  # fmt: skip
        chosen_on_valid.append(max((v for v in on_valid if v is not None), default=None))
        # the protocol before this change: best-of-k on calibration, a revision kept when it beat it on valid
        revised = [v for v in on_valid[len(summary.candidates) :] if v is not None]
        before.append(max([summary.top_and_random, *revised]) if summary.top_and_random is not None else None)
    return honest, chosen_on_valid, before


def _mean_se(values) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None and not math.isnan(x)])
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))), len(v)


def test_best_of_k_and_revision_do_not_lift_a_noise_simulators_score():
    honest, chosen_on_valid, before = _headlines()
    mean, se, n = _mean_se(honest)
    biased, biased_se, _ = _mean_se(chosen_on_valid)
    old, old_se, _ = _mean_se(before)
    print(f"the protocol before (revision kept on valid): mean {old:+.4f} (SE {old_se:.4f})")
    print(
        f"honest protocol: mean {mean:+.4f} (SE {se:.4f}, n={n}); choosing on valid: {biased:+.4f} (SE {biased_se:.4f})"
    )
    assert n >= N_NEURONS
    assert abs(mean) <= 2 * se, (mean, se)
    assert biased > 2 * biased_se  # choosing on the reported windows does lift it: the test can fail
