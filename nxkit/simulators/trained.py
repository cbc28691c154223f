"""nxkit-sim at run time: the model, its shipped weights, prediction."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import atomic_write
from ..llm.base import count
from ..records import MAX_NORMALIZED, SIMULATED_NORMALIZED_ACTIVATIONS, Candidate, Component, SequenceSimulation, Usage
from .base import SimulateError, simulate_sync
from .reader import READING, TEMPLATES, Reader, Reading, WindowIds, features, n_features


class TrainedSimulator:
    """nxkit-sim: the frozen SmolLM2 reads the explanation once (three short forward passes) and a small trained
    head predicts a distribution over the bins 0-10 at every token of the windows by look-ups (no LLM traffic)."""

    mode = "trained"

    def __init__(self, path: str | None = None):
        import hashlib

        self.path = path
        self.model = load_model(path)
        weights = Path(path or shipped_dir()) / "weights.safetensors"
        self.weights_hash = hashlib.sha256(weights.read_bytes()).hexdigest()
        self.usage = Usage()

    def __repr__(self) -> str:
        return f"TrainedSimulator({self.path or 'nxkit-sim'})"

    def describe(self) -> Component:
        return Component("trained", model="nxkit-sim", path=self.path, weights_hash=self.weights_hash)

    @property
    def llm(self) -> None:
        return None

    async def simulate_many(self, explanation: Candidate, windows: list[list[str]]) -> list[SequenceSimulation]:

        if any(not w for w in windows):
            raise SimulateError("cannot simulate an empty window")
        values = [float(v) for v in range(N_BINS)]
        out = []
        text = Candidate.of(explanation).text
        for w, probs in zip(windows, predict(self.model, text, windows), strict=True):
            dists = probs.tolist()
            out.append(
                SequenceSimulation(
                    tokens=list(w),
                    expected_activations=[float(sum(v * p for v, p in zip(values, d, strict=True))) for d in dists],
                    activation_scale=SIMULATED_NORMALIZED_ACTIVATIONS,
                    distribution_values=[values for _ in dists],
                    distribution_probabilities=dists,
                )
            )
        count(self.usage, requests=1)
        return out

    def simulate_sync(self, explanation: str | Candidate, windows: list[list[str]]) -> list[SequenceSimulation]:
        return simulate_sync(self, explanation, windows)


N_BINS = MAX_NORMALIZED + 1
"""Activation bins 0-10, the release's normalised scale."""


DATA_DIR = Path(__file__).resolve().parents[2] / "data"
"""The shipped models (a source checkout's `data/`)."""


def shipped_dir() -> Path:
    """Where the shipped nxkit-sim lives: a source checkout's `data/nxkit-sim`, else the copy a wheel installs under
    `<data>/share/nxkit/nxkit-sim` (pip install of a wheel, a folder or a git URL, as on Colab; `<data>` is the
    install scheme's data folder: the prefix, /usr/local on Debian's pip, or the user base)."""
    import site
    import sysconfig

    roots = [sysconfig.get_path("data"), sys.prefix, site.USER_BASE]
    for place in [DATA_DIR / "nxkit-sim", *(Path(r) / "share" / "nxkit" / "nxkit-sim" for r in roots if r)]:
        if (place / "weights.safetensors").exists():
            return place
    return DATA_DIR / "nxkit-sim"


class TrainError(ValueError):
    """Training that cannot run as configured, or weights that cannot be loaded."""


class SimModel(nn.Module):
    """The frozen reader and the trained head: reading features of a token -> N_BINS logits."""

    def __init__(self, reader: Reader, hidden: int, kind_dims: int = 0, reading: int = READING):
        super().__init__()
        self.reader, self.reading = reader, reading
        self.kind = nn.Linear(reader.lm.config.hidden_size, kind_dims) if kind_dims else None
        self.head = nn.Sequential(
            nn.Linear(n_features(len(reader.templates), reading) + kind_dims, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, N_BINS),
        )
        self._prior = reader.prior()
        self._ids: dict[tuple[str, ...], WindowIds] = {}

    @property
    def tokenizer(self):
        return self.reader.tok

    def forward(self, feats: torch.Tensor, kinds: torch.Tensor | None = None) -> torch.Tensor:
        """[tokens, n_features] reading features and [tokens, hidden] explanation vectors -> [tokens, N_BINS]
        logits."""
        if self.kind is not None:
            feats = torch.cat([feats, torch.tanh(self.kind(kinds))], dim=-1)
        return self.head(feats)

    def features(self, reading: Reading, window: WindowIds) -> torch.Tensor:
        return features(reading, self._prior, window, self.reading)

    def window_ids(self, tokens: Sequence[str]) -> WindowIds:
        """The reader's ids of a window, kept for the windows seen last (best-of-k simulates the same windows under
        many explanations; training sees each corpus window many times)."""
        key = tuple(tokens)
        got = self._ids.get(key)
        if got is None:
            if len(self._ids) >= 50_000:
                self._ids.clear()
            got = self._ids[key] = self.reader.window_ids(key)
        return got

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The head's weights (all that training changes)."""
        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        if self.kind is not None:
            state |= {f"kind.{k}": v for k, v in self.kind.state_dict().items()}
        return state

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})
        if self.kind is not None:
            self.kind.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("kind.")})


def build_model(
    hidden: int, kind_dims: int = 0, templates: Sequence[tuple[str, str]] = TEMPLATES, reading: int = READING
) -> SimModel:
    """The offline SmolLM2 (frozen) as reader, and a fresh head reading features of version `reading`."""
    from ..offline import load_offline_hf

    lm, tok = load_offline_hf(attn_implementation="sdpa")
    for p in lm.parameters():
        p.requires_grad_(False)
    return SimModel(Reader(lm, tok, templates), hidden, kind_dims, reading)


def save_weights(model: SimModel, out_dir: Path, settings: dict) -> None:
    """The head in fp32 safetensors, and the settings (with the templates), in `out_dir`."""
    from safetensors.torch import save

    state = {k: v.detach().float().contiguous() for k, v in model.trainable_state().items()}
    atomic_write(out_dir / "weights.safetensors", save(state))
    settings = {**settings, "templates": model.reader.templates, "reading": model.reading}
    atomic_write(out_dir / "config.json", json.dumps(settings, indent=1))


def load_model(path: str | Path | None = None) -> SimModel:
    """nxkit-sim from `path` (default: the shipped `data/nxkit-sim`), ready for inference."""
    from safetensors.torch import load_file

    path = Path(path) if path else shipped_dir()
    if not (path / "weights.safetensors").exists():
        raise TrainError(
            f"no nxkit-sim weights in {path}; train them with `nxkit train simulator --out-dir {path}` (or `make train`)"
        )
    settings = json.loads((path / "config.json").read_text())
    if "hidden" not in settings or "templates" not in settings:
        raise TrainError(f"{path} holds weights of an older nxkit-sim; retrain with `nxkit train simulator`")
    reading = settings.get("reading", 1)
    if reading > READING:
        raise TrainError(f"{path} holds nxkit-sim weights of a newer reading (version {reading}); upgrade nxkit")
    templates = [tuple(t) for t in settings["templates"]]
    model = build_model(settings["hidden"], settings.get("kind_dims", 0), templates, reading)
    model.load_trainable(load_file(str(path / "weights.safetensors")))
    model.eval()
    return model


def predict(model: SimModel, explanation: str, windows: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per window, a [tokens, N_BINS] array of bin probabilities: one read of the explanation, then look-ups."""
    with torch.inference_mode():
        reading = model.reader.read([explanation])[0]
        out = []
        for w in windows:
            feats = model.features(reading, model.window_ids(w))
            out.append(torch.softmax(model(feats, reading.kind.expand(len(feats), -1)), dim=-1).numpy())
    return out
