"""nxkit-sim: token alignment across subject tokenizers, counterfactual targets, a tiny training run that saves,
loads and simulates, and that the shipped weights read explanations."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from nxkit.rules import WordSet
from nxkit.simulators.trained import DATA_DIR, shipped_dir
from nxkit.training import synthetic as syn
from nxkit.training.train import counterfactual_bins, sample_example

FIXTURES = Path(__file__).parent / "fixtures" / "public"
"""Three hand-made neurons in the release's layout (two with an explanation file)."""
needs_wordnet = pytest.mark.skipif(
    not (syn.WORDNET_DIR / "data.noun").exists() and not os.environ.get("CI"),
    reason="needs Debian's wordnet-base (make setup installs it as root); CI always has it",
)


@pytest.fixture(scope="module")
def reader():
    from nxkit.offline import load_offline_hf
    from nxkit.simulators.reader import Reader

    lm, tok = load_offline_hf()
    return Reader(lm, tok)


@pytest.mark.slow
def test_each_subject_token_is_read_through_its_whole_word(reader):
    # the same text as GPT-2 (the public release), SmolLM2 and a character-level tokenizer might cut it
    cuts = ([" I", " like", " cat", "s", ",", " then", " 1984"], [" I", " like", " cats", ",", " then", " 1984"],
            [" ", "I", " ", "l", "i", "k", "e", " ", "c", "a", "t", "s", ",", " ", "t", "h", "e", "n"])  # fmt: skip
    cats = reader.first_piece(" cats")
    for tokens in cuts:
        w = reader.window_ids(tokens)
        assert w.ids.shape == (len(tokens), 7) and w.flags.shape[0] == len(tokens)
        in_cats = [i for i, t in enumerate(tokens) if t.strip() in {"cat", "s", "cats", "c", "a", "t"}]
        in_cats = [i for i in in_cats if "".join(tokens[: i + 1]).endswith(("c", "ca", "cat", "cats"))]
        assert in_cats and all(w.ids[i, 0] == cats for i in in_cats)  # every piece of "cats" reads " cats"
        comma = tokens.index(",")
        assert w.ids[comma, 4] == cats  # the word before the comma is "cats" (the previous-word column)
        assert w.flags[in_cats[0], 0] == 1 and all(w.flags[i, 0] == 0 for i in in_cats[1:])  # word starts
    empty = reader.window_ids(["", "a"])
    assert empty.ids.shape == (2, 7) and reader.window_ids([]).ids.shape == (0, 7)


def test_an_explanations_literal_terms():
    from nxkit.simulators.reader import stem, terms

    assert {stem(w) for w in ("follow", "follows", "followed", "following")} == {"follow"}
    t = terms("the word after 'with', or words ending in -ful like careful, and un- words")
    assert "with" in t.quoted and "with" not in t.words and "careful" in t.words  # function words count quoted only
    assert t.suffixes == ("ful",) and t.prefixes == ("un",)


@pytest.mark.slow
def test_word_matches_read_the_token_and_its_neighbours(reader):
    from nxkit.simulators.reader import N_LEXICAL, N_NEIGHBOURS, READING, features, n_features

    window = reader.window_ids([" I", " went", " with", " a", " careful", " friend", " unhappy"])
    (r,) = reader.read(["the word after 'with', also words ending in -ful and the friends"])
    feats = features(r, reader.prior(), window)
    assert feats.shape == (7, n_features()) and READING == 2
    per = 2 + 2 * N_NEIGHBOURS  # the word, its own piece, the neighbour words
    base = n_features(reading=1)
    sim, lex = feats[:, base], feats[:, base + per :].numpy()
    assert lex.shape[1] == N_LEXICAL
    cols = 1 + 2 * N_NEIGHBOURS  # own word, then the words 2 and 1 before, 1 and 2 after
    own, before = 0, N_NEIGHBOURS  # the column of the word right before
    assert lex[:, own].tolist() == [0, 0, 0, 0, 0, 1, 0]  # "friend" is one of its words ("friends")
    assert lex[:, cols + own].tolist() == [0, 0, 1, 0, 0, 0, 0]  # 'with' is quoted
    assert lex[:, cols + before].tolist() == [0, 0, 0, 1, 0, 0, 0]  # the word after 'with'
    assert lex[:, -2].tolist() == [0, 0, 0, 0, 1, 0, 0] and lex[:, -1].sum() == 0  # -ful; no prefix named
    assert sim[5] == pytest.approx(sim.max().item()) and sim[5] > sim[0]  # " friend" is nearest the explanation
    (v1,) = [features(r, reader.prior(), window, version=1)]  # older weights read the PMI part alone
    assert v1.shape == (7, base) and (v1 == feats[:, :base]).all()


@pytest.mark.slow
def test_an_explanation_raises_its_own_words(reader):
    fruit, colour = reader.tables(["kinds of fruit", "colours"]).mean(1)  # PMI averaged over the templates
    apple, red = reader.first_piece(" apple"), reader.first_piece(" red")
    assert fruit[apple] > colour[apple] + 1 and colour[red] > fruit[red] + 1


def test_counterfactual_targets_are_the_neurons_own_rule_on_any_window():
    fruit = syn.SyntheticNeuron("fruit", "concept", WordSet(frozenset({"apple", "pear"})), ("fruit",))
    comma = syn.SyntheticNeuron("comma", "surface", syn.SURFACE["comma"][0], ("commas",))
    rng = np.random.default_rng(0)
    words = [" apple", " stone", ",", " pear", " sky", " river"]
    windows = [[words[i] for i in rng.integers(0, len(words), 16)] for _ in range(60)]
    records = [(n, n.record(windows, noise=0.0)) for n in (fruit, comma)]
    comma_window = [" stone", ",", " apple", " sky"]
    assert counterfactual_bins(fruit, records[0][1], comma_window) == [0, 0, round(10 * fruit.rule(comma_window)[2]), 0]
    assert counterfactual_bins(comma, records[1][1], comma_window) == [0, 10, 0, 0]
    for step in range(20):
        i, ex = sample_example(records, random.Random(step), per_side=2, crop=8)
        neuron, rec = records[i]
        assert ex.explanation in neuron.explanations and len(ex.windows) == 6
        for tokens, bins in zip(ex.windows, ex.bins, strict=True):  # own and other neurons' windows alike
            assert len(tokens) == 8 and bins == counterfactual_bins(neuron, rec, tokens)


@needs_wordnet
def test_hard_negatives_are_near_concepts_and_rules_of_the_same_family():
    from nxkit.training.train import negative_pools

    wn = syn.wordnet()
    names = ("edible_fruit.n.01", "vegetable.n.01", "dog.n.01", "cat.n.01", "hammer.n.02")
    concepts = [syn.SyntheticNeuron(n, "concept", syn.Concept(n), (n,)) for n in names]
    rules = [syn.SyntheticNeuron(k, "surface", syn.SURFACE[k][0], syn.SURFACE[k][1]) for k in ("comma", "number")]
    rules.append(syn.SyntheticNeuron("after:of", "context", *syn.CONTEXT["after:of"][:2]))
    words = [" apple", " carrot", " dog", " cat", " hammer", ",", " 42", " of", " the"]
    rng = np.random.default_rng(0)
    windows = [[words[i] for i in rng.integers(0, len(words), 16)] for _ in range(60)]
    records = [(n, n.record(windows, noise=0.0)) for n in concepts + rules]
    pools = negative_pools(records)
    near = [[records[j][0].name for j in js] for js in pools.near]
    # fruit and vegetable are both produce; dog and cat are both carnivores; a hammer is near neither
    assert near[:5] == [["vegetable.n.01"], ["edible_fruit.n.01"], ["cat.n.01"], ["dog.n.01"], []]
    assert wn.synset("produce.n.01") in wn.synset("vegetable.n.01").hypernyms()
    assert near[5:] == [["number"], ["comma"], []]  # rules: the others of the same family
    for step in range(30):  # with hard_negatives=1 another neuron's window is a near one's whenever there is one
        i, ex = sample_example(records, random.Random(step), per_side=2, crop=None, hard_negatives=1.0, pools=pools)
        if pools.near[i]:
            tops = {tuple(r.tokens) for j in pools.near[i] for r in records[j][1].most_positive_activation_records}
            assert all(tuple(w) in tops for w in ex.windows[4:])


@pytest.mark.slow
def test_a_tiny_training_run_saves_weights_that_load_by_name(tmp_path):
    from nxkit.simulators import make_simulator
    from nxkit.training.train import SimTrainConfig, train_simulator

    config = SimTrainConfig(
        out_dir=str(tmp_path / "sim"), steps=4, batch_size=2, hidden=8, window_tokens=12, corpus_windows=80,
        n_mixtures=2, max_neurons=6, checkpoint_every=2, from_public=str(FIXTURES),
    )  # fmt: skip
    out = train_simulator(config, progress=False)
    assert (out / "weights.safetensors").stat().st_size < 50_000 and not (out / "checkpoint.pt").exists()
    sim = make_simulator("nxkit-sim", path=str(out))
    assert sim.describe().model == "nxkit-sim"
    (one,) = sim.simulate_sync("numbers", [[" I", " have", " 42", " cats"]])
    assert len(one.expected_activations) == 4 and one.distribution_values[0] == [float(v) for v in range(11)]
    for v, values, probs in zip(
        one.expected_activations, one.distribution_values, one.distribution_probabilities, strict=True
    ):  # each prediction is the expected value of the head's distribution over 0-10
        assert v == pytest.approx(sum(a * b for a, b in zip(values, probs, strict=True)), abs=1e-3)


def test_real_explanations_from_the_public_layout_and_from_a_run_train_on_their_own_windows(tmp_path):
    from conftest import make_fake_run

    from nxkit.simulators.trained import TrainError
    from nxkit.training.train import RealNeuron, real_records

    run = make_fake_run(tmp_path / "run", layers=(0,), d_mlp=3)
    public = real_records(from_public=str(FIXTURES))
    ours = real_records(from_run=str(run.path))
    assert [n.name for n, _ in public] == ["public:0/1", "public:5/7"]  # 0/2 has no explanation file
    assert public[0][0].explanations == (" the word cat and other names for house cats",)
    done = [s.neuron_id for s in run.summaries() if s.status == "done" and s.explanation]
    assert [n.name for n, _ in ours] == [f"run:0/{nid.neuron_index}" for nid in done] and ours
    assert ours[0][0].explanations[0] == run.read_neuron(ours[0][1].neuron_id).explanation
    assert len(real_records(str(FIXTURES), str(run.path), limit=3)) == 3
    neuron, rec = public[0]
    top = rec.most_positive_activation_records[0]
    assert counterfactual_bins(neuron, rec, top.tokens) == [
        min(10, max(0, int(np.floor(10 * a / rec.max_activation + 0.5)))) for a in top.activations
    ]
    with pytest.raises(TrainError, match="own windows only"):
        neuron.activations(["not", "its", "window"])
    records = public + ours
    for step in range(10):  # a real neuron is shown its own top and random windows only, never another's
        i, ex = sample_example(records, random.Random(step), per_side=2, crop=None)
        own = {tuple(r.tokens) for r in (*records[i][1].most_positive_activation_records, *records[i][1].random_sample)}
        assert isinstance(records[i][0], RealNeuron) and len(ex.windows) == 4
        assert all(tuple(w) in own for w in ex.windows)
    with pytest.raises(TrainError, match="explanations/ folder"):
        real_records(from_public=str(tmp_path))
    # no window a later score reads: the records keep the explainer's train split only
    from nxkit.heldout import split_records

    acts = run.activations()
    for _, rec in ours:
        full = acts.neuron_record(rec.neuron_id.layer_index, rec.neuron_id.neuron_index)
        held = {tuple(r.tokens) for split in ("calibration", "valid", "test") for r in split_records(full, split)}
        kept = {tuple(r.tokens) for r in (*rec.most_positive_activation_records, *rec.random_sample)}
        assert kept and not kept & held
        assert kept == {tuple(r.tokens) for r in split_records(full, "train")}


HELD_OUT_CONCEPTS = ("edible_fruit.n.01", "vegetable.n.01", "bird.n.01", "dog.n.01", "body_part.n.01", "meat.n.01")
"""A few fixed synsets of held-out WordNet subtrees (noun.food, noun.animal, noun.body)."""


@pytest.mark.slow
@needs_wordnet
def test_the_shipped_weights_read_explanations():
    from nxkit.explain_score import simulate_and_score
    from nxkit.heldout import held_out
    from nxkit.llm.base import run_sync
    from nxkit.offline import load_offline_hf
    from nxkit.simulators import make_simulator
    from nxkit.training.train import corpus_token_windows

    wn = syn.wordnet()
    neurons = []
    for name in HELD_OUT_CONCEPTS:
        synset = wn.synset(name)
        assert synset.lexname() in syn.HELD_OUT_LEXNAMES
        concept = synset.lemmas()[0].name().replace("_", " ")
        neurons.append(syn.SyntheticNeuron(name, "concept", syn.Concept(name, graded=True), (concept,), True))
    assert shipped_dir() == DATA_DIR / "nxkit-sim" and (shipped_dir() / "README.md").exists()  # with its model card
    windows = corpus_token_windows(load_offline_hf()[1], 600, seed=5)
    sim = make_simulator("nxkit-sim")  # by name: the shipped weights
    true, shuffled = [], []
    for i, neuron in enumerate(neurons):
        rec = neuron.record(windows, seed=i)
        wins = held_out(rec, "valid", 5, 32)
        other = neurons[(i + 1) % len(neurons)].explanations[0]
        for text, out in ((neuron.explanations[0], true), (other, shuffled)):
            _, scores, _ = run_sync(simulate_and_score(sim, text, wins, rec.max_activation))
            out.append(scores.top_and_random)
    gap = float(np.mean(true) - np.mean(shuffled))
    assert gap > 0.1, f"true {np.mean(true):+.3f} vs shuffled {np.mean(shuffled):+.3f}"


def test_new_windows_share_no_span_with_the_training_windows():
    from nxkit.training.train import windows_apart

    training = [[f"t{i}" for i in range(64)]]
    same_passage = [f"t{i}" for i in range(40, 64)] + [f"n{i}" for i in range(40)]  # 24 tokens of it, shifted
    short_overlap = [f"t{i}" for i in range(50, 64)] + [f"n{i}" for i in range(50)]  # 14 tokens: under the span
    fresh = [f"n{i}" for i in range(64)]
    assert windows_apart([same_passage, short_overlap, fresh], training) == [short_overlap, fresh]
