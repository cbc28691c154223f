"""Shared fixtures: the real offline subject model and small real collections, built once per session; the one
scripted fake LLM (for parsing and arithmetic only); and `make_fake_run`, a run directory built without any model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nxkit.llm.base import Capabilities, Completion, logprobs_at
from nxkit.records import (
    Candidate,
    NeuronId,
    NeuronRevision,
    NeuronSimulationResults,
    NeuronSummary,
    ScoredExplanation,
    Scores,
    SequenceSimulation,
    Usage,
)
from nxkit.runs import Run
from nxkit.scorers.correlation import score_simulation


def pytest_collection_modifyitems(config, items):
    """`NXKIT_TEST_ORDER=reverse` runs the tests last to first (notebooks stay in order), to show that no test leans on
    what an earlier one left behind."""
    if os.environ.get("NXKIT_TEST_ORDER") == "reverse":
        tests = [item for item in items if item.path.suffix == ".py"]
        items[:] = tests[::-1] + [item for item in items if item.path.suffix != ".py"]


class ScriptedLLM:
    """A fake LLM with fixed answers, for testing how answers are parsed and counted, never for scores.

    `answers` is one text (every request gets it) or a list (each request takes the next). `tokens` are the
    generated tokens' log-probabilities a chat with `top_logprobs` returns; `prompt` the prompt log-probabilities
    `placeholder_logprobs` reads. Every request's messages are kept in `seen`.
    """

    def __init__(self, answers: str | list[str], tokens=None, prompt=None):
        self.answers, self.tokens, self.prompt = answers, tokens, prompt
        self.capabilities = Capabilities(
            chat=True, generated_logprobs=tokens is not None, prompt_logprobs=prompt is not None
        )
        self.usage, self.seen = Usage(), []

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def chat(self, messages, **kw) -> Completion:
        self.seen.append(messages)
        text = self.answers if isinstance(self.answers, str) else self.answers.pop(0)
        return Completion(text, self.tokens if kw.get("top_logprobs") else None)

    async def placeholder_logprobs(self, prefix, text, offsets, candidates, top=20):
        return logprobs_at(self.prompt, [len(prefix) + o for o in offsets], candidates)

    async def check(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": "scripted"}


XSS = "<script>window.__nxkit_xss=1</script>"
"""A token text that must show as text and run nothing."""
WORDS = [" the", " cat", " sat", " on", " mat", "\n", " Monday", " Friday", XSS, " dog", ".", " and"]


def _per_neuron(acts: np.ndarray, window_ids: np.ndarray) -> np.ndarray:
    """[d_mlp, k, window]: each neuron's activations on its own chosen windows."""
    return np.stack([acts[window_ids[n], :, n] for n in range(acts.shape[-1])])


def make_fake_run(
    root: Path, layers=(0, 1), d_mlp: int = 4, n_windows: int = 48, window: int = 16, revise: bool = True
) -> Run:
    """A finished run with a collection and every neuron explained and scored, built from random numbers."""
    rng = np.random.default_rng(0)
    acts_dir = root / "activations"
    acts_dir.mkdir(parents=True)
    ids = rng.integers(0, len(WORDS), size=(n_windows, window)).astype(np.int32)
    ids[0, 3] = WORDS.index(XSS)  # window 0 holds the script token, and is neuron 0's top window
    np.save(acts_dir / "windows.npy", ids)
    (acts_dir / "token_strings.json").write_text(json.dumps(WORDS))
    k, n_random, levels = 8, 6, [0.5, 0.9]
    manifest = {
        "status": "complete", "model": "smollm2-135m", "layers": list(layers), "d_mlp": d_mlp, "n_layers": 30,
        "config": {"quantile_levels": levels, "top_k": k, "n_random": n_random},
        "corpus": {"source": "fake", "n_windows": n_windows, "window": window, "n_tokens": n_windows * window},
    }  # fmt: skip
    (acts_dir / "manifest.json").write_text(json.dumps(manifest))
    run = Run(root)
    run.update_manifest(
        explain={"explainer": {"backend": "fake"}, "simulator": {"kind": "fake", "mode": "all_at_once"}}
    )
    for li, layer in enumerate(layers):
        acts = np.abs(rng.normal(size=(n_windows, window, d_mlp))).astype(np.float32) * (1 + li)
        acts[0, 3, 0] = 20.0  # neuron 0 fires hardest on the script token
        maxima = acts.max(1)  # [n_windows, d_mlp]
        top_w = np.argsort(-maxima, axis=0)[:k].T  # [d_mlp, k]
        rand_w = rng.integers(0, n_windows, size=(d_mlp, n_random))
        d = acts_dir / f"layer_{layer:02d}"
        d.mkdir()
        np.save(d / "top_acts.npy", _per_neuron(acts, top_w))
        np.save(d / "top_windows.npy", top_w)
        np.save(d / "random_acts.npy", _per_neuron(acts, rand_w))
        np.save(d / "random_windows.npy", rand_w)
        bottom_w = np.argsort(-maxima, axis=0)[k : 2 * k].T  # the negative side: other windows, negated
        np.save(d / "bottom_acts.npy", -_per_neuron(acts, bottom_w))
        np.save(d / "bottom_windows.npy", bottom_w)
        np.save(d / "band_acts.npy", np.zeros((d_mlp, 3, 1, window), np.float32))
        np.save(d / "band_windows.npy", -np.ones((d_mlp, 3, 1), np.int64))
        np.save(d / "moments.npy", np.tile([0.8, 0.5, 1.0, 3.0], (d_mlp, 1)).astype(np.float32))
        np.save(d / "quantile_boundaries.npy", np.tile([1.0, 2.0], (d_mlp, 1)).astype(np.float32))
        for n in range(d_mlp):
            nid = NeuronId(layer, n)
            record = run.activations().neuron_record(layer, n)
            valid = record.most_positive_activation_records[2:4] + record.random_sample[1:3]
            sims = [
                SequenceSimulation(
                    r.tokens,
                    list(np.clip(np.array(r.activations) * 3 + rng.normal(0, 1.5 * n + 0.2, window), 0, 9)),
                    "simulated_normalized_activations",
                    [],
                    [],
                )
                for r in valid
            ]
            scored = score_simulation(valid, sims, record.max_activation)
            splits = ["top", "top", "random", "random"]
            expl = f"the word cat <b>{layer}.{n}</b>" if n != 1 else XSS
            s = Scores(scored.ev_correlation_score, 0.1 * n, n_windows=4)
            summary = NeuronSummary(
                nid, "done", max_activation=record.max_activation, explanation=expl, scores=s,
                candidates=[Candidate(expl, 0.5), Candidate("dogs & cats", 0.1)], original_explanation=expl,
                original_scores=s, window_splits=splits, shuffled_control=0.05,
            )  # fmt: skip
            run.write_neuron(summary, NeuronSimulationResults(nid, [ScoredExplanation(expl, scored)]))
            if revise and n < 2:  # a kept revision (scored on the same windows) for neurons 0 and 1
                after = Scores(0.9, 0.2, n_windows=4)
                rev = NeuronRevision(
                    nid, "done", original_explanation=expl, final_explanation=f"revised {expl}",
                    score_before=scored.ev_correlation_score, score_after=0.9, scores_after=after,
                )  # fmt: skip
                run.write_revision(rev, kept=scored)
    # layer 0's last neuron turns out dead (its summary says why)
    run.write_neuron(NeuronSummary(NeuronId(layers[0], d_mlp - 1), "dead", reason="never fires <i>x</i>"))
    return run


@pytest.fixture(scope="session")
def subject():
    """The offline default subject model (SmolLM2-135M-Instruct) as a TransformerLens bridge."""
    from nxkit.collection.subject import load_subject

    return load_subject(device="cpu")


@pytest.fixture(scope="session")
def small_windows(subject):
    """96 windows of 64 tokens from the default corpus (deterministic)."""
    from nxkit.collection.corpus import make_windows

    return make_windows(subject.tokenizer, "default", window=64, max_tokens=64 * 96, seed=1)


# --- explain / simulate / score (issue 3) ---------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_collection(subject, tmp_path_factory):
    """A finished collection of layers 0 and 5 on 256 fortune windows (~30 s on CPU); returns its directory."""
    from nxkit.collection.collect import CollectConfig, collect
    from nxkit.collection.corpus import make_windows

    windows = make_windows(subject.tokenizer, "fortunes", max_tokens=64 * 256)
    out = tmp_path_factory.mktemp("tiny_run") / "activations"
    collect(subject, windows, out, CollectConfig(layers=[0, 5], quantile_calibration_windows=64), progress=False)
    return out


@pytest.fixture(scope="session")
def local_backend():
    """The offline SmolLM2 as an in-process LLM backend (loads in about a second once converted)."""
    from nxkit.llm.local import LocalBackend

    return LocalBackend()
