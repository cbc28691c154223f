"""The offline subject model: faithful to the GGUF it came from, hooks give the MLP hidden activation."""

import pytest
import torch

from nxkit.collection.subject import check_layers, check_neuron, hook_name, info, load_subject
from nxkit.offline import SubjectError, gguf_path

TEXT = (
    "The committee met on Tuesday to discuss the budget. After a long debate, "
    "they agreed to fund the new library and repair the old bridge over the river."
)


@pytest.mark.slow
def test_logprobs_match_the_gguf_model(subject):
    """The bridge (from the cached safetensors) against transformers loading the GGUF itself."""
    from transformers import AutoModelForCausalLM

    path = gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = subject.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        ours = subject(ids, return_type="logits").log_softmax(-1)
        theirs = ref(ids).logits.log_softmax(-1)
    assert ours.shape == theirs.shape == (1, ids.shape[1], 49152)
    # every position, the log-probability of the token that actually came next
    nxt = ids[0, 1:]
    diff = (ours[0, :-1].gather(1, nxt[:, None]) - theirs[0, :-1].gather(1, nxt[:, None])).abs().max().item()
    assert diff < 1e-3, diff
    assert (ours - theirs).abs().max().item() < 1e-2


@pytest.mark.slow
def test_hook_post_is_the_mlp_hidden_activation(subject):
    """blocks.L.mlp.hook_post == act(gate_proj(x)) * up_proj(x), computed from the HF modules."""
    layer = 7
    hf_mlp = subject.original_model.model.layers[layer].mlp
    seen = {}
    handle = hf_mlp.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0].detach().clone()))
    got = {}
    ids = subject.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    try:
        with torch.inference_mode():
            subject.run_with_hooks(
                ids, fwd_hooks=[(hook_name(layer), lambda t, hook: got.setdefault("a", t.clone()))], return_type=None
            )
    finally:
        handle.remove()
    x = seen["x"]
    with torch.inference_mode():
        direct = hf_mlp.act_fn(hf_mlp.gate_proj(x)) * hf_mlp.up_proj(x)
    assert got["a"].shape == (1, ids.shape[1], 1536)
    scale = direct.abs().max().item()
    assert (got["a"] - direct).abs().max().item() <= 1e-5 * max(1.0, scale)


def test_shape_and_ranges(subject):
    s = info(subject)
    assert (s.n_layers, s.d_mlp, s.n_neurons) == (30, 1536, 46080)
    assert check_layers(subject, None) == list(range(30))
    assert check_layers(subject, [5, 2, 5]) == [2, 5]
    with pytest.raises(SubjectError, match="layer 30 is out of range: this model has layers 0 to 29"):
        check_layers(subject, [30])
    with pytest.raises(SubjectError, match="neuron 1536 is out of range"):
        check_neuron(subject, 0, 1536)


def test_unknown_model_names_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SubjectError) as err:
        load_subject("no-such-org/no-such-model", device="cpu")
    msg = str(err.value)
    assert "smollm2-135m" in msg and "reachable hub" in msg and "gpt2-small" in msg
