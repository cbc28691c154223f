"""What a neuron writes: its direct path to the logits, against the real SmolLM2's own final norm and unembedding."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # loads the real offline SmolLM2


def test_direct_logits_match_the_models_own_final_norm_and_unembedding(subject):
    from nxkit.collection.output import direct_logits

    layer, neuron = 3, 17
    ours = direct_logits(subject, layer, slice(neuron, neuron + 1))[0]
    # a hand-built residual that is the neuron's output direction, through the model's own final norm and W_U
    resid = subject.W_out[layer][neuron].detach().float().reshape(1, 1, -1) * 3.0
    with torch.no_grad():
        theirs = (subject.ln_final(resid) @ subject.W_U + subject.b_U)[0, 0]
    # an RMSNorm only rescales: the same logits up to one positive factor (and the unembedding's bias, zero here)
    theirs = theirs - subject.b_U
    scale = float((theirs @ ours) / (ours @ ours))
    assert scale > 0
    torch.testing.assert_close(ours * scale, theirs, rtol=1e-4, atol=1e-4)
    # the strongest logits agree with a tolerance (their order is not compared: two float paths may break a near-tie
    # apart differently)
    torch.testing.assert_close((ours * scale).topk(10).values, theirs.topk(10).values, rtol=1e-4, atol=1e-4)


def test_stored_writes_read_without_torch_and_swap_on_the_negative_side(subject, tiny_collection, tmp_path):
    from nxkit.collection.activations import Activations
    from nxkit.collection.output import direct_logits, has_writes, write_writes

    acts_dir = tmp_path / "activations"
    shutil.copytree(tiny_collection, acts_dir)
    for f in acts_dir.glob("layer_*/writes_*.npy"):  # a run over the shared collection may have stored them already
        f.unlink()
    assert not has_writes(acts_dir, [0, 5]) and Activations(acts_dir).writes(0, 4) is None
    write_writes(subject, acts_dir, [0, 5], k=8)
    assert has_writes(acts_dir, [0, 5])
    acts = Activations(acts_dir)
    pos, neg = acts.writes(5, 11, "positive", k=8), acts.writes(5, 11, "negative", k=8)
    logits = direct_logits(subject, 5, slice(11, 12))[0].numpy()
    strings = acts.token_strings
    # stored in chunks, compared with the whole row: weights with a tolerance, tokens as sets of the clearly-ranked
    assert [v for _, v in pos.raised] == pytest.approx(sorted(logits, reverse=True)[:8], rel=1e-4, abs=1e-5)
    assert [v for _, v in pos.lowered] == pytest.approx(sorted(logits)[:8], rel=1e-4, abs=1e-5)
    assert pos.raised[0][0] in {strings[i] for i in np.argsort(-logits)[:2]}
    # a negative activation writes the negated direction: what the positive side lowers, it raises
    assert [t for t, _ in neg.raised] == [t for t, _ in pos.lowered] and neg.raised[0][1] > 0
    assert "raises" in pos.line() and "lowers" in pos.line()
    # a neuron's record carries what it writes (never in its JSON), so the LLM explainer can be shown it
    record = acts.neuron_record(5, 11, "negative")
    assert record.writes.raised == acts.writes(5, 11, "negative").raised
    from nxkit.records import to_json_obj

    assert "writes" not in to_json_obj(record)
    assert all("token_ids" not in r for r in to_json_obj(record)["most_positive_activation_records"])
