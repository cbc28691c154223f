"""Patch one neuron's activation in the subject model and measure how far the next-token distributions move.

The ablation score (`nxkit.scorers.ablation`) runs each held-out window three ways from the neuron's layer on:
unchanged, with the neuron's activation replaced by its simulation, and with it replaced by its mean. Everything
below the layer is the same in all three, so the residual stream entering the layer is computed once per window and
only the blocks from the layer up run again (`logits_from`), with every (neuron, window, variant) of one layer in
one batch. The upper path is checked once per model and layer against a full forward with the same patch
(`cached_path_agrees`); a model whose upper path disagrees (an architecture that adds something to its input
embeddings) is patched by full forwards instead, with a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .probe import _FORWARD
from .subject import check_neuron, hook_name

log = logging.getLogger(__name__)

ROWS = 24
"""Sequences per forward pass of the upper blocks (each (window, variant) is one)."""
AGREE = 1e-3
"""Largest logit difference, relative to the largest logit, for the upper path to count as equal to a full forward."""


@dataclass
class AblationJob:
    """One neuron's windows to patch: its token ids and, per window, the values put in place of its activation."""

    layer: int
    neuron: int
    token_ids: list[list[int]]
    """The windows (token ids; windows of one job may differ in length)."""
    simulated: list[list[float]]
    """Per window and token, the simulation in activation units (the real sign)."""
    mean: float
    """The neuron's mean activation (the real sign)."""


@dataclass
class AblationResult:
    """Per window and position: the JSD (nats) of the simulation-patched and of the mean-ablated next-token
    distributions from the unchanged ones."""

    jsd_simulated: list[list[float]]
    jsd_mean: list[list[float]]


class _Stop(Exception):
    """Raised in the hook at the layer's input: nothing above it is needed."""


def layer_input(model, ids: Tensor, layer: int) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block `layer` for a batch of token ids (the blocks below run, no higher)."""
    got = {}

    def grab(x, hook):
        got["resid"] = x.detach().clone()
        raise _Stop

    try:
        model.run_with_hooks(ids, fwd_hooks=[(f"blocks.{layer}.hook_in", grab)], return_type=None)
    except _Stop:
        pass
    if "resid" not in got:
        raise RuntimeError(f"the hook blocks.{layer}.hook_in never ran; this model does not expose it")
    return got["resid"]


def _block_list(model) -> tuple[torch.nn.Module, str]:
    """The module and attribute of the model's own list of blocks (the Hugging Face model's `layers`, `h`, ...)."""
    found = getattr(model, "_nxkit_block_list", None)
    if found is not None:
        return found
    blocks = list(model.blocks)
    for module in model.original_model.modules():
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == len(blocks):
                if all(a is b for a, b in zip(child, blocks, strict=True)):
                    model._nxkit_block_list = (module, name)
                    return module, name
    raise RuntimeError("the subject model's blocks were not found in its Hugging Face model")


@contextmanager
def _from_layer(model, layer: int):
    """The Hugging Face model with the blocks below `layer` taken out (put back on the way out)."""
    owner, name = _block_list(model)
    every = getattr(owner, name)
    setattr(owner, name, torch.nn.ModuleList(list(every)[layer:]))
    try:
        yield model.original_model
    finally:
        setattr(owner, name, every)


def _patch_hook(neurons: Tensor, values: Tensor):
    """A hook that puts `values[row, pos]` in place of neuron `neurons[row]` of each row (NaN: left unchanged)."""

    def patch(x, hook):
        x = x.clone()
        rows = torch.arange(x.shape[0], device=x.device)
        old = x[rows, :, neurons]
        new = values.to(x.dtype)
        x[rows, :, neurons] = torch.where(torch.isnan(new), old, new)
        return x

    return patch


def logits_from(
    model, resid: Tensor, layer: int, neurons: Tensor | None = None, values: Tensor | None = None
) -> Tensor:
    """Logits from the residual `resid` entering block `layer`, running only the blocks from `layer` up, with the
    neuron of each row patched (`_patch_hook`) when `neurons` is given."""
    hooks = [] if neurons is None else [(hook_name(layer), _patch_hook(neurons, values))]
    with _from_layer(model, layer) as hf, model.hooks(fwd_hooks=hooks):
        return hf(inputs_embeds=resid, use_cache=False).logits


def full_logits(model, ids: Tensor, layer: int, neurons: Tensor | None = None, values: Tensor | None = None) -> Tensor:
    """The same logits from a full forward pass of `ids` (every block, the patch at `layer`)."""
    hooks = [] if neurons is None else [(hook_name(layer), _patch_hook(neurons, values))]
    return model.run_with_hooks(ids, fwd_hooks=hooks)


def cached_path_agrees(model, layer: int) -> bool:
    """Whether `logits_from` equals a full forward with the same patch on this model and layer (checked once per
    model and layer, on one short sequence)."""
    seen = model.__dict__.setdefault("_nxkit_upper_ok", {})
    if layer not in seen:
        gen = torch.Generator().manual_seed(layer)
        ids = torch.randint(0, model.cfg.d_vocab, (1, 12), generator=gen).to(_device(model))
        neurons = torch.tensor([0], device=ids.device)
        values = torch.full((1, 12), 1.0, device=ids.device)
        with torch.inference_mode():
            full = full_logits(model, ids, layer, neurons, values)
            try:
                upper = logits_from(model, layer_input(model, ids, layer), layer, neurons, values)
                ok = bool((full - upper).abs().max() <= AGREE * full.abs().max().clamp(min=1.0))
            except Exception as exc:  # an architecture whose HF forward takes no inputs_embeds, or no layer list
                log.warning("the cached path failed on layer %d (%s); full forwards instead", layer, exc)
                ok = False
        if not ok:
            log.warning(
                "layer %d: the upper blocks alone disagree with a full forward; ablation runs full forwards", layer
            )
        seen[layer] = ok
    return seen[layer]


def jsd(logp: Tensor, logq: Tensor) -> Tensor:
    """Jensen-Shannon divergence (nats) between distributions given as log-probabilities over the last axis."""
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    kl_p = (logp.exp() * (logp - logm)).sum(-1)
    kl_q = (logq.exp() * (logq - logm)).sum(-1)
    return (0.5 * (kl_p + kl_q)).clamp(min=0.0)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def ablate(model, jobs: Sequence[AblationJob], cached: bool = True, rows: int = ROWS) -> list[AblationResult]:
    """The per-position JSDs of every job: the windows of one layer's jobs are batched together; each window runs
    unchanged, with the simulation and with the mean. `cached=False` runs every variant as a full forward from the
    tokens (the naive path, for the benchmark and for models whose upper path disagrees)."""
    results = [AblationResult([[] for _ in j.token_ids], [[] for _ in j.token_ids]) for j in jobs]
    by_key: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for ji, job in enumerate(jobs):
        check_neuron(model, job.layer, job.neuron)
        if len(job.simulated) != len(job.token_ids):
            raise ValueError(f"{len(job.simulated)} simulated windows for {len(job.token_ids)} windows")
        for wi, ids in enumerate(job.token_ids):
            if len(job.simulated[wi]) != len(ids):
                raise ValueError(f"window {wi}: {len(job.simulated[wi])} simulated values for {len(ids)} tokens")
            by_key.setdefault((job.layer, len(ids)), []).append((ji, wi))
    device = _device(model)
    per_batch = max(1, rows // 3)
    with _FORWARD, torch.inference_mode():
        for (layer, _), pairs in sorted(by_key.items()):
            upper = cached and cached_path_agrees(model, layer)
            for start in range(0, len(pairs), per_batch):
                chunk = pairs[start : start + per_batch]
                ids = torch.tensor([jobs[ji].token_ids[wi] for ji, wi in chunk], device=device)
                neurons = torch.tensor([jobs[ji].neuron for ji, _ in chunk], device=device)
                sim = torch.tensor([jobs[ji].simulated[wi] for ji, wi in chunk], device=device)
                mean = torch.tensor([jobs[ji].mean for ji, _ in chunk], device=device)[:, None].expand_as(sim)
                unpatched = torch.full_like(sim, math.nan)
                b = len(chunk)
                three_n = neurons.repeat(3)
                three_v = torch.cat([unpatched, sim, mean])
                if upper:
                    resid = layer_input(model, ids, layer)
                    logits = logits_from(model, resid.repeat(3, 1, 1), layer, three_n, three_v)
                else:
                    logits = full_logits(model, ids.repeat(3, 1), layer, three_n, three_v)
                logp = torch.log_softmax(logits.float(), dim=-1)
                ref, with_sim, with_mean = logp[:b], logp[b : 2 * b], logp[2 * b :]
                d_sim, d_mean = jsd(ref, with_sim).cpu(), jsd(ref, with_mean).cpu()
                for row, (ji, wi) in enumerate(chunk):
                    results[ji].jsd_simulated[wi] = d_sim[row].tolist()
                    results[ji].jsd_mean[wi] = d_mean[row].tolist()
    return results
