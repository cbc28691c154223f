"""The probe against the real offline model: the collection's hook, batching, errors, hook hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nxkit.collection.probe import ProbeError, probe, probe_many, probe_tokens, probe_tokens_many
from nxkit.collection.subject import hook_name
from nxkit.offline import SubjectError

TEXT = "We met on Monday and again on Friday, when it rained."


def _no_hooks(model) -> bool:
    return all(not hp._forward_hooks for hp in model.hook_dict.values())


def test_probe_matches_a_cached_forward_pass(subject):
    layer, neuron = 5, 123
    rec = probe(subject, TEXT, layer, neuron)
    ids = subject.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    _, cache = subject.run_with_cache(torch.tensor([ids]), names_filter=hook_name(layer))
    want = cache[hook_name(layer)][0, :, neuron].float().numpy()
    assert rec.tokens == [subject.tokenizer.decode([i]) for i in ids]
    assert "".join(rec.tokens) == TEXT
    np.testing.assert_allclose(rec.activations, want, rtol=1e-4, atol=1e-5)
    assert _no_hooks(subject)


def test_probe_reproduces_stored_top_windows(subject, tiny_collection):
    """A top window of the collection, re-probed from its token ids, gives the stored activations."""
    layer = 5
    top_acts = np.load(tiny_collection / f"layer_{layer:02d}" / "top_acts.npy")
    top_windows = np.load(tiny_collection / f"layer_{layer:02d}" / "top_windows.npy")
    windows = np.load(tiny_collection / "windows.npy")
    neurons = np.argsort(-top_acts[:, 0].max(-1))[:3]  # the three strongest neurons of the layer
    for neuron in neurons:
        ids = windows[top_windows[neuron, 0]].tolist()
        rec = probe_tokens(subject, ids, layer, int(neuron))
        stored = top_acts[neuron, 0]
        scale = float(np.abs(stored).max())
        np.testing.assert_allclose(rec.activations, stored, atol=1e-3 * scale)
        assert int(np.argmax(rec.activations)) == int(np.argmax(stored))


def test_batched_probe_equals_one_at_a_time(subject):
    texts = ["Short one.", TEXT, "A third text, longer than the first but shorter than the second"]
    batched = probe_many(subject, texts, 3, 40)
    single = [probe(subject, t, 3, 40) for t in texts]
    for b, s in zip(batched, single, strict=True):
        assert b.tokens == s.tokens
        np.testing.assert_allclose(b.activations, s.activations, rtol=1e-4, atol=1e-5)
    # batches smaller than the list give the same records
    small = probe_tokens_many(
        subject, [subject.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], 3, 40, batch_size=2
    )
    for b, s in zip(small, single, strict=True):
        np.testing.assert_allclose(b.activations, s.activations, rtol=1e-4, atol=1e-5)


def test_different_neurons_differ(subject):
    a, b = probe(subject, TEXT, 5, 1), probe(subject, TEXT, 5, 2)
    assert a.activations != b.activations


@pytest.mark.parametrize(
    ("layer", "neuron", "match"),
    [(30, 0, "layer 30 is out of range"), (-1, 0, "layer -1"), (0, 1536, "neuron 1536 is out of range")],
)
def test_out_of_range_is_a_clear_error(subject, layer, neuron, match):
    with pytest.raises(SubjectError, match=match):
        probe(subject, TEXT, layer, neuron)
    assert _no_hooks(subject)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_a_clear_error(subject, text):
    with pytest.raises(ProbeError, match="empty"):
        probe(subject, text, 0, 0)
    with pytest.raises(ProbeError, match="list of texts"):
        probe_many(subject, "not a list", 0, 0)
    with pytest.raises(ProbeError, match="empty"):
        probe_tokens(subject, [], 0, 0)
