"""Synthetic neurons: each rule fires where it claims to, and its record is built as collection builds one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nxkit.collection.collect import CollectConfig
from nxkit.heldout import top_splits
from nxkit.records import NeuronId
from nxkit.rules import WordSet
from nxkit.training import synthetic as syn


def fired(rule, tokens: list[str]) -> list[str]:
    return [t for t, a in zip(tokens, rule(tokens), strict=True) if a > 0]


def test_word_spans_join_pieces_and_split_at_spaces_and_punctuation():
    tokens = ["The", " cat", "s", " sat", ",", " then", "\n", "Ran", "."]
    assert [t for _, _, t in syn.word_spans(tokens)] == ["The", "cats", "sat", ",", "then", "", "Ran", "."]
    assert syn.word_spans(tokens)[1][:2] == (1, 3)  # " cat" + "s" is one word of two tokens


def test_surface_rules():
    tokens = ["In", " 1984", " we", " had", " 42", " RUNNING", " dogs", ",", " quickly", "?", "\n", "Next", " nation"]
    assert fired(syn.SURFACE["year"][0], tokens) == [" 1984"]
    assert fired(syn.SURFACE["number"][0], tokens) == [" 1984", " 42"]
    assert fired(syn.SURFACE["allcaps"][0], tokens) == [" RUNNING"]
    assert fired(syn.SURFACE["capitalised"][0], tokens) == ["In", "Next"]
    assert fired(syn.SURFACE["suffix:ly"][0], tokens) == [" quickly"]
    assert fired(syn.SURFACE["suffix:tion"][0], tokens) == [" nation"]
    assert fired(syn.SURFACE["comma"][0], tokens) == [","] and fired(syn.SURFACE["question"][0], tokens) == ["?"]
    assert fired(syn.SURFACE["line_start"][0], tokens) == ["Next"]


def test_context_rules():
    tokens = ["A", " cup", " of", " tea", " and", " not", " much", " sugar", " (", "sweet", " enough", ")", " tea"]
    assert fired(syn.CONTEXT["after:of"][0], tokens) == [" tea"]
    assert fired(syn.CONTEXT["after_negation"][0], tokens) == [" much", " sugar"]
    assert fired(syn.CONTEXT["brackets"][0], tokens) == ["sweet", " enough"]
    assert fired(syn.CONTEXT["repeat"][0], tokens) == [" tea"]  # the second "tea" only
    quoted = ["He", " said", ' "', "stop", " now", '"', " and", " left", "<|im_end|>", "x"]
    assert fired(syn.CONTEXT["quotes"][0], quoted) == ["stop", " now"]


def test_word_sets_grade_strength_and_mixtures_take_the_stronger():
    rule = WordSet(frozenset({"apple", "pear"}))
    acts = rule(["An", " apple", " and", " a", " pear", " and", " an", " Apple"])
    assert acts[1] == acts[7] > 0 and acts[4] > 0 and acts[[0, 2, 3, 5, 6]].tolist() == [0] * 5
    assert 0.5 <= acts[1] <= 1 and acts[1] != acts[4]  # graded, the same word always the same
    mix = syn.Mixture(rule, syn.SURFACE["comma"][0], weight_b=0.7)
    out = mix(["apple", ",", " pear"])
    assert out[1] == pytest.approx(0.7) and out[0] == acts[1]


def test_record_is_built_as_collection_builds_one():
    rng = np.random.default_rng(0)
    words = [" apple", " stone", " river", " pear", " cloud", ",", " sky"]
    windows = [[words[i] for i in rng.integers(0, len(words), 16)] for _ in range(300)]
    neuron = syn.SyntheticNeuron("test", "concept", WordSet(frozenset({"apple", "pear"})), ("fruit",))
    rec = neuron.record(windows, NeuronId(3, 7), CollectConfig(top_k=40, n_random=30), noise=0.0, seed=2)
    assert rec.neuron_id == NeuronId(3, 7)
    maxima = [r.max_activation for r in rec.most_positive_activation_records]
    assert len(maxima) == 40 and maxima == sorted(maxima, reverse=True)
    for r in rec.most_positive_activation_records[:5]:  # activations are the rule's, on the window's own tokens
        assert r.activations == [round(float(v), 4) for v in neuron.activations(r.tokens)]
    assert len(rec.random_sample) == 30 and len(top_splits(rec)["train"]) == 10
    assert len(rec.quantile_boundaries) == 3 and len(rec.random_sample_by_quantile) == 4
    noisy = neuron.record(windows, noise=0.05, seed=2)
    assert noisy.max_activation > 0 and min(min(r.activations) for r in noisy.random_sample) >= 0
    assert noisy == neuron.record(windows, noise=0.05, seed=2)  # seeded


@pytest.mark.skipif(
    not (syn.WORDNET_DIR / "data.noun").exists() and not os.environ.get("CI"),
    reason="needs Debian's wordnet-base (make setup installs it as root); CI always has it",
)
def test_concept_neurons_from_wordnet_hold_out_whole_subtrees(tmp_path, monkeypatch):
    monkeypatch.setenv("NXKIT_CACHE", str(tmp_path))
    syn.wordnet.cache_clear()
    try:
        wn = syn.wordnet()
        fruit = syn.concept_words(wn.synset("edible_fruit.n.01"))
        assert {"apple", "apples", "pear", "banana"} <= fruit and "table" not in fruit
        vocab = {
            "apple",
            "pears",
            "banana",
            "plum",
            "cherry",
            "grape",
            "red",
            "blue",
            "green",
            "yellow",
            "purple",
            "pink",
        }
        neurons = {n.name: n for n in syn.concept_neurons(vocab, min_hits=6)}
        assert neurons["concept:edible_fruit.n.01"].held_out  # noun.food is a held-out subtree
        colours = neurons["concept:chromatic_color.n.01"]
        assert not colours.held_out and colours.explanations[0] == "chromatic color"
        assert colours.activations([" a", " red", " car"]).tolist()[1] > 0
        assert all(len(n.explanations) >= 3 for n in neurons.values())
    finally:
        syn.wordnet.cache_clear()


def test_rule_neurons_and_mixtures_keep_held_out_apart():
    rules = syn.rule_neurons()
    held = {n.name for n in rules if n.held_out}
    assert held == set(syn.HELD_OUT_KINDS)
    for mix in syn.mixtures(rules, 40, seed=1):
        a, b = mix.name[4:].split("+")
        assert mix.held_out == (a in held) == (b in held)
        assert len(mix.explanations) == 2
