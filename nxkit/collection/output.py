"""What a neuron writes: its output weights projected on the vocabulary (its direct path to the logits).

A neuron's output direction `W_out[layer][n]` (d_model) goes through the final norm as TransformerLens folds it (its
weight applied, a LayerNorm's centring too; the norm's data-dependent scale is left out: it changes no ranking) and
the unembedding `W_U`: one logit per vocabulary token. The tokens it raises most and lowers most, per neuron, are
computed once per collection for every neuron (a few matrix products per layer) and stored beside the activations as
numpy arrays, so they read without torch (`Activations.writes`). On the negative side the neuron's activation is
negative, so what it raises and lowers swap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..files import atomic_write

OUTPUT_K = 20
"""Tokens kept per neuron, raised and lowered each."""
FILES = ("writes_up_ids", "writes_up", "writes_down_ids", "writes_down")
"""The arrays stored per layer ([d_mlp, OUTPUT_K] each): token ids and logit weights, raised and lowered."""


def final_norm_fold(model) -> tuple[Float[Tensor, " d_model"], bool]:
    """The final norm's weight (ones when it has none) and whether it centres (a LayerNorm, with a bias) or not (an
    RMSNorm)."""
    params = dict(model.ln_final.named_parameters())
    weight = next((p for name, p in params.items() if name == "w" or name.endswith((".w", "weight"))), None)
    centres = any(name.endswith(("bias", ".b")) for name in params)
    d_model = model.W_U.shape[0]
    return (weight.detach().float() if weight is not None else torch.ones(d_model)), centres


def direct_logits(model, layer: int, neurons: slice | None = None) -> Float[Tensor, "neuron vocab"]:
    """Each neuron's output direction through the folded final norm and the unembedding (no bias)."""
    w_out = model.W_out[layer].detach().float()  # [d_mlp, d_model]
    if neurons is not None:
        w_out = w_out[neurons]
    weight, centres = final_norm_fold(model)
    if centres:
        w_out = w_out - w_out.mean(dim=1, keepdim=True)
    return (w_out * weight.to(w_out.device)) @ model.W_U.detach().float()


@torch.no_grad()
def project_layer(model, layer: int, k: int = OUTPUT_K, chunk: int = 256) -> dict[str, np.ndarray]:
    """The `k` tokens each neuron of `layer` raises most and lowers most, with their weights, in chunks of neurons
    (a whole layer's [d_mlp, vocab] matrix at once would take hundreds of MB)."""
    d_mlp = model.W_out.shape[1]
    out = {name: [] for name in FILES}
    for start in range(0, d_mlp, chunk):
        logits = direct_logits(model, layer, slice(start, min(d_mlp, start + chunk)))
        up, down = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
        out["writes_up_ids"].append(up.indices.cpu().numpy().astype(np.int32))
        out["writes_up"].append(up.values.cpu().numpy().astype(np.float32))
        out["writes_down_ids"].append(down.indices.cpu().numpy().astype(np.int32))
        out["writes_down"].append((-down.values).cpu().numpy().astype(np.float32))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def has_writes(activations_dir: str | Path, layers: list[int]) -> bool:
    return all((Path(activations_dir) / f"layer_{la:02d}" / f"{FILES[-1]}.npy").exists() for la in layers)


def write_writes(model, activations_dir: str | Path, layers: list[int], k: int = OUTPUT_K) -> None:
    """Store every neuron's raised and lowered tokens for `layers` beside a collection (each file written whole)."""
    for layer in layers:
        d = Path(activations_dir) / f"layer_{layer:02d}"
        for name, array in project_layer(model, layer, k).items():
            atomic_write(d / f"{name}.npy", lambda f, a=array: np.save(f, a))
