"""nxkit-sim: token alignment across subject tokenizers, and a tiny training run that saves, loads and simulates."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    from nxkit.offline import load_offline_hf

    return load_offline_hf()[1]


def test_each_subject_token_is_read_at_its_last_piece(tokenizer):
    from nxkit.train import encode_example

    # token strings as GPT-2 (the public release), SmolLM2 and a character-level tokenizer would give them
    for tokens in (["Hello", ",", " world", "!"], [" unbelievable", "ly", "\n", " 1984"], list("cat é")):
        ids, ends = encode_example(tokenizer, "numbers", tokens)
        assert len(ends) == len(tokens) and ends == sorted(ends) and ends[-1] == len(ids) - 1
        starts = [len(encode_example(tokenizer, "numbers", [])[0]), *[e + 1 for e in ends[:-1]]]
        for token, a, b in zip(tokens, starts, ends, strict=True):
            assert tokenizer.decode(ids[a : b + 1]) == token  # the pieces between two ends spell the token
    ids, ends = encode_example(tokenizer, "x", ["", "a"])  # an empty token string still gets a position of its own
    assert len(set(ends)) == 2


@pytest.mark.slow
def test_a_tiny_training_run_saves_weights_that_load_by_name(tmp_path):
    from nxkit.simulate import make_simulator
    from nxkit.train import SimTrainConfig, train_simulator

    config = SimTrainConfig(
        out_dir=str(tmp_path / "sim"), steps=3, batch_size=2, lora_r=2, lora_layers=1, window_tokens=12,
        corpus_windows=80, n_mixtures=2, max_neurons=6, checkpoint_every=2,
    )  # fmt: skip
    out = train_simulator(config, progress=False)
    assert (out / "weights.safetensors").stat().st_size < 200_000 and not (out / "checkpoint.pt").exists()
    sim = make_simulator("nxkit-sim", path=str(out))
    assert sim.describe().model == "nxkit-sim"
    (one,) = sim.simulate_sync("numbers", [[" I", " have", " 42", " cats"]])
    assert len(one.expected_activations) == 4 and one.distribution_values[0] == [float(v) for v in range(11)]
    for v, values, probs in zip(
        one.expected_activations, one.distribution_values, one.distribution_probabilities, strict=True
    ):  # each prediction is the expected value of the head's distribution over 0-10
        assert v == pytest.approx(sum(a * b for a, b in zip(values, probs, strict=True)), abs=1e-3)
