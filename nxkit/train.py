"""Training nxkit-sim: SmolLM2-135M with LoRA adapters on its top layers and a per-token head over the activation
bins 0-10, trained on synthetic neurons (`nxkit.synthetic`) to predict a neuron's activation on every token of a
window from its explanation alone.

The input is the explanation, then the window's tokens, each subject token re-tokenised on its own; the
prediction for a subject token is read at its last piece, so windows from any subject tokenizer work.
Training is seeded and resumable (a checkpoint every `checkpoint_every` steps); the result is a few MB:
the LoRA weights and the head in fp16, and the settings, in `out_dir` (`data/nxkit-sim` for the shipped model).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .files import atomic_write
from .records import normalize_activations

log = logging.getLogger(__name__)

N_BINS = 11
"""Activation bins 0-10, the release's normalised scale."""
FAMILY_WEIGHTS = {"concept": 0.4, "surface": 0.25, "context": 0.2, "mixture": 0.15}
"""How often each family of synthetic neuron is drawn for a training example."""
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""The shipped models (a source checkout's `data/`)."""


class TrainError(ValueError):
    """Training that cannot run as configured, or weights that cannot be loaded."""


@dataclass
class SimTrainConfig:
    """Settings of `nxkit train simulator` (saved beside the weights)."""

    out_dir: str = "data/nxkit-sim"
    """Where the adapter, the head and the settings go (a checkpoint is kept there while training)."""
    steps: int = 1800
    """Optimiser steps (the shipped model's: about 35 minutes on a 2-core CPU)."""
    batch_size: int = 8
    """Windows per step."""
    lr: float = 1e-3
    """Learning rate of the adapters and the head (AdamW, linear warm-up then cosine decay)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_layers: int = 6
    """LoRA on the attention and MLP projections of this many top layers (the rest stay frozen and fast)."""
    window_tokens: int = 32
    """Subject tokens per training window, cropped around its peak."""
    corpus_windows: int = 1500
    """Corpus windows (64 tokens) the synthetic neurons' records are built from."""
    n_mixtures: int = 60
    """Two-rule (polysemantic) neurons added to the concept, surface and context ones."""
    max_neurons: int | None = None
    """Train on at most this many synthetic neurons (None: all; tests use a few)."""
    seed: int = 0
    """Seed of the data, the initialisation and the order."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.lora_r, self.lora_layers, self.window_tokens) < 1:
            raise TrainError("steps, batch_size, lora_r, lora_layers and window_tokens must be >= 1")


# --- the model ------------------------------------------------------------------------------------


class SimModel(nn.Module):
    """The SmolLM2 body with LoRA adapters, and a linear head from each position's hidden state to N_BINS logits."""

    def __init__(self, body, tokenizer, lora_r: int, lora_layers: int):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        n_layers = body.config.num_hidden_layers
        config = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            layers_to_transform=list(range(n_layers - lora_layers, n_layers)),
            layers_pattern="layers",
            lora_dropout=0.0,
        )
        self.body = get_peft_model(body, config)
        self.head = nn.Linear(body.config.hidden_size, N_BINS)
        self.tokenizer = tokenizer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, pos] ids -> [batch, pos, N_BINS] logits."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The adapter and head weights (all that training changes)."""
        from peft import get_peft_model_state_dict

        state = {f"lora.{k}": v for k, v in get_peft_model_state_dict(self.body).items()}
        state |= {f"head.{k}": v for k, v in self.head.state_dict().items()}
        return state

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.body, {k[5:]: v.float() for k, v in state.items() if k.startswith("lora.")})
        self.head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})


def build_model(lora_r: int, lora_layers: int) -> SimModel:
    """The offline SmolLM2 body (no unembedding) with fresh adapters and head."""
    from .offline import load_offline_hf

    causal, tok = load_offline_hf(attn_implementation="sdpa")
    return SimModel(causal.model, tok, lora_r, lora_layers)


def encode_example(tokenizer, explanation: str, tokens: Sequence[str], cache: dict[str, list[int]] | None = None):
    """Input ids for one (explanation, window) pair and the index of each subject token's last piece."""
    ids = tokenizer(f"Neuron: {explanation.strip()}\nText:", add_special_tokens=False)["input_ids"]
    ends = []
    for t in tokens:
        pieces = cache.get(t) if cache is not None else None
        if pieces is None:
            pieces = (
                tokenizer(t, add_special_tokens=False)["input_ids"]
                or tokenizer(" ", add_special_tokens=False)["input_ids"]
            )
            if cache is not None:
                cache[t] = pieces
        ids.extend(pieces)
        ends.append(len(ids) - 1)
    return ids, ends


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, _) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    return input_ids, mask


def save_weights(model: SimModel, out_dir: Path, settings: dict) -> None:
    """The adapter and head in fp16 safetensors, and the settings, in `out_dir`."""
    from safetensors.torch import save

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.trainable_state().items()}
    atomic_write(out_dir / "weights.safetensors", save(state))
    atomic_write(out_dir / "config.json", json.dumps(settings, indent=1))


def load_model(path: str | Path | None = None) -> SimModel:
    """nxkit-sim from `path` (default: the shipped `data/nxkit-sim`), ready for inference."""
    from safetensors.torch import load_file

    path = Path(path) if path else DATA_DIR / "nxkit-sim"
    if not (path / "weights.safetensors").exists():
        raise TrainError(
            f"no nxkit-sim weights in {path}; train them with `nxkit train simulator --out-dir {path}` (or `make train`)"
        )
    settings = json.loads((path / "config.json").read_text())
    model = build_model(settings["lora_r"], settings["lora_layers"])
    model.load_trainable(load_file(str(path / "weights.safetensors")))
    model.eval()
    return model


# --- data -----------------------------------------------------------------------------------------


def corpus_token_windows(tokenizer, n_windows: int, seed: int = 0) -> list[list[str]]:
    """`n_windows` windows of 64 tokens of the default corpus, as token strings."""
    from .corpus import make_windows

    windows = make_windows(tokenizer, "default", window=64, max_tokens=64 * n_windows, seed=seed)
    strings = {}
    out = []
    for row in windows.tokens.tolist():
        out.append([strings.setdefault(i, tokenizer.decode([i])) for i in row])
    return out


@dataclass
class Example:
    """One training pair: an explanation, a window's tokens, and the neuron's binned activation on each."""

    explanation: str
    tokens: list[str]
    bins: list[int]


def synthetic_examples(windows: list[list[str]], config: SimTrainConfig, held_out: bool = False):
    """Records of every synthetic neuron on one side of the held-out split, and a sampler of examples from them."""
    from . import prompts, synthetic
    from .records import NeuronId

    rules = [n for n in synthetic.rule_neurons() if n.held_out == held_out]
    try:
        concepts = [
            n for n in synthetic.concept_neurons(synthetic.corpus_vocabulary(windows)) if n.held_out == held_out
        ]
    except synthetic.SyntheticError as exc:
        log.warning("%s; training without concept neurons", exc)
        concepts = []
    mixes = synthetic.mixtures(rules + concepts, config.n_mixtures * 2, seed=config.seed)
    mixes = [m for m in mixes if m.held_out == held_out][: config.n_mixtures]
    neurons = rules + concepts + mixes
    if config.max_neurons is not None:
        neurons = random.Random(config.seed).sample(neurons, min(config.max_neurons, len(neurons)))
    records = []
    for i, n in enumerate(tqdm(neurons, desc="synthetic records", unit="neuron", leave=False)):
        rec = n.record(windows, NeuronId(0, i), seed=config.seed + i)
        if rec.max_activation > 0:
            records.append((n, rec))

    by_family: dict[str, list] = {}
    for n, rec in records:
        by_family.setdefault(n.family, []).append((n, rec))
    families = [f for f in FAMILY_WEIGHTS if f in by_family]
    weights = [FAMILY_WEIGHTS[f] for f in families]

    def sample(rng: random.Random) -> Example:
        # families first, then a neuron: there are thousands of concept neurons and a few dozen rules, and
        # drawing neurons uniformly taught a first model to ignore the explanation
        n, rec = rng.choice(by_family[rng.choices(families, weights)[0]])
        pool = rec.most_positive_activation_records if rng.random() < 0.5 else rec.random_sample
        w = rng.choice(pool)
        tokens, acts = prompts.crop_window(w.tokens, w.activations, config.window_tokens)
        return Example(rng.choice(n.explanations), list(tokens), normalize_activations(acts, rec.max_activation))

    return records, sample


# --- training ---------------------------------------------------------------------------------------


def train_simulator(config: SimTrainConfig, progress: bool = True) -> Path:
    """Train (or resume training) nxkit-sim; returns the folder with its weights."""
    out = Path(config.out_dir)
    torch.manual_seed(config.seed)
    model = build_model(config.lora_r, config.lora_layers)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / config.steps))),
    )
    step, ckpt = 0, out / "checkpoint.pt"
    out.mkdir(parents=True, exist_ok=True)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != asdict(config):
            raise TrainError(f"{ckpt} was made with other settings; delete it to start over, or use the same ones")
        model.load_trainable(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        log.info("resuming training at step %d of %d", step, config.steps)
    windows = corpus_token_windows(model.tokenizer, config.corpus_windows, config.seed)
    records, sample = synthetic_examples(windows, config)
    log.info("%d synthetic training neurons", len(records))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    pieces: dict[str, list[int]] = {}
    bar = tqdm(total=config.steps, initial=step, desc="train nxkit-sim", unit="step", disable=not progress)
    t0, seen_tokens = time.perf_counter(), 0
    while step < config.steps:
        rng = random.Random(config.seed * 1_000_003 + step)  # the batch depends on the step only: resumable
        batch = [sample(rng) for _ in range(config.batch_size)]
        encoded = [encode_example(model.tokenizer, ex.explanation, ex.tokens, pieces) for ex in batch]
        input_ids, mask = collate(encoded, pad)
        logits = model(input_ids, mask)
        rows = torch.tensor([i for i, (_, ends) in enumerate(encoded) for _ in ends])
        cols = torch.tensor([e for _, ends in encoded for e in ends])
        target = torch.tensor([b for ex in batch for b in ex.bins])
        loss = nn.functional.cross_entropy(logits[rows, cols], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        seen_tokens += int(mask.sum())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{seen_tokens / (time.perf_counter() - t0):.0f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            state = {"config": asdict(config), "model": model.trainable_state(), "opt": opt.state_dict(),
                     "sched": sched.state_dict(), "step": step}  # fmt: skip
            atomic_write(ckpt, lambda f, state=state: torch.save(state, f))
    bar.close()
    settings = {**asdict(config), "n_training_neurons": len(records), "base": "SmolLM2-135M-Instruct"}
    save_weights(model, out, settings)
    ckpt.unlink(missing_ok=True)
    return out


def predict(
    model: SimModel, explanation: str, windows: Sequence[Sequence[str]], batch_size: int = 16
) -> list[np.ndarray]:
    """Per window, a [tokens, N_BINS] array of bin probabilities."""
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    pieces: dict[str, list[int]] = {}
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            encoded = [
                encode_example(model.tokenizer, explanation, w, pieces) for w in windows[start : start + batch_size]
            ]
            input_ids, mask = collate(encoded, pad)
            probs = torch.softmax(model(input_ids, mask).float(), dim=-1)
            for i, (_, ends) in enumerate(encoded):
                out.append(probs[i, ends].numpy())
    return out
