"""Probe one neuron on any text: its tokens and its real activation on each, from the same hook as collection.

Revision uses this to test counterexample texts, and the inspector widget to try a reader's own
text. Tokens are decoded one by one, as in collected records; no special tokens are added, as
collection windows are cut from a plain token stream. The forward pass stops at the probed layer.
"""

from __future__ import annotations

import threading

import torch
from jaxtyping import Float
from torch import Tensor

from ..records import ActivationRecord
from .subject import check_neuron, hook_name, run_capture

DEFAULT_BATCH = 16


class ProbeError(ValueError):
    """A text that cannot be probed (empty, or longer than the model's context)."""


def token_ids(model, text: str) -> list[int]:
    """Token ids of `text` as collection would see them inside a window (no special tokens added)."""
    if not isinstance(text, str):
        raise ProbeError(f"a probe text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ProbeError("the probe text is empty; give it some words")
    return list(model.tokenizer(text, add_special_tokens=False)["input_ids"])


_FORWARD = threading.Lock()
"""Probes from several threads (revision of many neurons in flight) take turns on the subject model."""


def probe_tokens_many(
    model, token_ids: list[list[int]], layer: int, neuron: int, batch_size: int = DEFAULT_BATCH
) -> list[ActivationRecord]:
    """One record per token sequence: each token decoded on its own and the neuron's activation on it.

    Sequences are right-padded into batches; with causal attention the padding never reaches the
    real tokens, so a batched probe equals probing each sequence alone.
    """
    check_neuron(model, layer, neuron)
    if batch_size < 1:
        raise ProbeError(f"batch_size must be >= 1, got {batch_size}")
    n_ctx = model.cfg.n_ctx
    for i, ids in enumerate(token_ids):
        if len(ids) == 0:
            raise ProbeError(f"token sequence {i} is empty; give each probe at least one token")
        if len(ids) > n_ctx:
            raise ProbeError(
                f"sequence {i} has {len(ids)} tokens, more than the model's context of {n_ctx}; shorten it"
            )
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = next(model.parameters()).device
    got: dict[str, Tensor] = {}

    def keep(layer: int, x: Float[Tensor, "batch pos d_mlp"]) -> None:
        got["acts"] = x[:, :, neuron].detach().float().cpu()

    out: list[ActivationRecord] = []
    for start in range(0, len(token_ids), batch_size):
        chunk = token_ids[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        batch = torch.full((len(chunk), width), pad, dtype=torch.long)
        for row, ids in enumerate(chunk):
            batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        with _FORWARD, torch.inference_mode():  # one probe at a time: a hook sees only its own forward pass
            got.clear()
            run_capture(model, batch.to(device), [layer], keep)
            acts = got.get("acts")
        if acts is None:
            raise ProbeError(f"the hook {hook_name(layer)} never ran; this model does not expose it")
        for row, ids in enumerate(chunk):
            out.append(
                ActivationRecord(
                    tokens=[tok.decode([i]) for i in ids],
                    activations=[float(v) for v in acts[row, : len(ids)]],
                )
            )
    return out


def probe_tokens(model, token_ids: list[int], layer: int, neuron: int) -> ActivationRecord:
    """The neuron's activations on a given token sequence (e.g. a collected window's ids)."""
    return probe_tokens_many(model, [list(token_ids)], layer, neuron)[0]


def probe_many(
    model, texts: list[str], layer: int, neuron: int, batch_size: int = DEFAULT_BATCH
) -> list[ActivationRecord]:
    """`probe` for several texts, batched."""
    if isinstance(texts, str):
        raise ProbeError("probe_many takes a list of texts; use probe() for one text")
    check_neuron(model, layer, neuron)
    return probe_tokens_many(model, [token_ids(model, t) for t in texts], layer, neuron, batch_size)


def probe(model, text: str, layer: int, neuron: int) -> ActivationRecord:
    """Tokens of `text` (each decoded on its own) and neuron `neuron` of layer `layer`'s activation on each."""
    return probe_many(model, [text], layer, neuron)[0]
