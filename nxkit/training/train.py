"""Training nxkit-sim: the frozen SmolLM2 reads an explanation as "words for E" (`nxkit.simulators.reader`), and a small
trained head turns each window token's reading features into a distribution over the activation bins 0-10.

The head sees numbers (how much the explanation raises the model's probability of the token's word, its own
piece and its neighbours, a frequency prior, surface flags), never the words themselves, so what it learns on
training concepts carries to subtrees of WordNet it never saw. Training uses counterfactual pairing: a neuron's
explanation is shown with its own top and random windows and with other neurons' top windows, each labelled with
this neuron's rule on it; half of those other neurons are near ones (hard negatives: a concept near in WordNet, a
rule of the same family), which only reading the explanation tells apart. Seeded and resumable (a checkpoint every `checkpoint_every` steps); the result is the
head's weights (a few KB) and the settings in `out_dir` (`data/nxkit-sim` for the shipped model).
"""

from __future__ import annotations

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

from ..files import atomic_write
from ..records import normalize_activations
from ..rules import Concept
from ..simulators.reader import READING, Reading
from ..simulators.trained import N_BINS, TrainError, build_model, save_weights

log = logging.getLogger(__name__)

FAMILY_WEIGHTS = {"concept": 0.4, "surface": 0.25, "context": 0.2, "mixture": 0.15, "real": 0.25}
"""How often each family of synthetic neuron is drawn for a training example."""


@dataclass
class SimTrainConfig:
    """Settings of `nxkit train simulator` (saved beside the weights)."""

    out_dir: str = "data/nxkit-sim"
    """Where the head and the settings go (a checkpoint is kept there while training)."""
    steps: int = 2000
    """Optimiser steps (the shipped model's: about 4 minutes after 5 minutes reading the explanations, 2-core CPU)."""
    batch_size: int = 32
    """Explanations per step, each shown with `windows_per_side` own top, own random and other neurons' windows."""
    windows_per_side: int = 2
    """Windows of each kind (own top, own random, another neuron's top) per explanation in a step."""
    lr: float = 3e-3
    """Learning rate of the head (AdamW, linear warm-up then cosine decay)."""
    hidden: int = 64
    """Width of the head's two hidden layers."""
    kind_dims: int = 8
    """Dimensions of the trained projection of the explanation's mean embedding given to the head (0: none)."""
    window_tokens: int = 32
    """Subject tokens per training window, cropped around its peak."""
    corpus_windows: int = 1500
    """Corpus windows (64 tokens) the synthetic neurons' records are built from."""
    n_mixtures: int = 60
    """Two-rule (polysemantic) neurons added to the concept, surface and context ones."""
    max_concepts: int | None = 500
    """Train on at most this many concept neurons (None: all; reading each costs a forward per phrasing)."""
    max_neurons: int | None = None
    """Train on at most this many synthetic neurons in all (None: all; tests use a few)."""
    from_public: str | None = None
    """Also train on a copy of OpenAI's GPT-2 XL release in its layout (a directory or URL): each neuron's released
    explanation with its own activation records (no counterfactual windows: other windows' activations are unknown)."""
    from_run: str | None = None
    """Also train on a run of ours made with a capable explainer: its explained neurons and their records."""
    max_real: int | None = 2000
    """Use at most this many real neurons from `from_public` and `from_run` together (None: all)."""
    hard_negatives: float = 0.5
    """How often another neuron's window is a near neuron's (a concept near in WordNet, a rule of the same family)
    rather than any neuron's: near concepts share words and topics, so only reading the explanation tells them
    apart."""
    firing_weight: float = 5.0
    """Weight of firing tokens (bin > 0) in the cross-entropy: they are about 1 token in 100."""
    reading: int = READING
    """Version of the reading features (`nxkit.simulators.reader.READING`; older ones for comparison)."""
    seed: int = 0
    """Seed of the data, the initialisation and the order."""
    checkpoint_every: int = 200
    """Steps between checkpoints."""

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.windows_per_side, self.hidden, self.window_tokens) < 1:
            raise TrainError("steps, batch_size, windows_per_side, hidden and window_tokens must be >= 1")
        if not 1 <= self.reading <= READING:
            raise TrainError(f"reading must be a version of the reading features, 1 to {READING}")


# --- the model ------------------------------------------------------------------------------------


# --- data -----------------------------------------------------------------------------------------


def corpus_token_windows(tokenizer, n_windows: int, seed: int = 0) -> list[list[str]]:
    """`n_windows` windows of 64 tokens of the default corpus, as token strings."""
    from ..collection.corpus import make_windows

    windows = make_windows(tokenizer, "default", window=64, max_tokens=64 * n_windows, seed=seed)
    strings = {}
    out = []
    for row in windows.tokens.tolist():
        out.append([strings.setdefault(i, tokenizer.decode([i])) for i in row])
    return out


def windows_apart(windows: list[list[str]], training: list[list[str]], span: int = 16) -> list[list[str]]:
    """The windows of `windows` that share no run of `span` tokens with any window of `training`: new text, not the
    same passage cut at another place (the corpus is the same whatever the seed)."""
    seen = {tuple(w[i : i + span]) for w in training for i in range(len(w) - span + 1)}
    return [w for w in windows if not any(tuple(w[i : i + span]) in seen for i in range(len(w) - span + 1))]


def synthetic_records(windows: list[list[str]], config: SimTrainConfig, held_out: bool = False) -> list[tuple]:
    """(neuron, record) of the synthetic neurons on one side of the held-out split, over `windows`: every surface
    and context kind, at most `config.max_concepts` concepts and `config.n_mixtures` mixtures (seeded)."""
    from ..records import NeuronId
    from . import synthetic

    rng = random.Random(config.seed)
    rules = [n for n in synthetic.rule_neurons() if n.held_out == held_out]
    try:
        concepts = [
            n for n in synthetic.concept_neurons(synthetic.corpus_vocabulary(windows)) if n.held_out == held_out
        ]
    except synthetic.SyntheticError as exc:
        log.warning("%s; training without concept neurons", exc)
        concepts = []
    if config.max_concepts is not None and len(concepts) > config.max_concepts:
        concepts = rng.sample(concepts, config.max_concepts)
    mixes = synthetic.mixtures(rules + concepts, config.n_mixtures * 2, seed=config.seed)
    mixes = [m for m in mixes if m.held_out == held_out][: config.n_mixtures]
    neurons = rules + concepts + mixes
    if config.max_neurons is not None:
        neurons = rng.sample(neurons, min(config.max_neurons, len(neurons)))
    records = []
    for i, n in enumerate(tqdm(neurons, desc="synthetic records", unit="neuron", leave=False)):
        rec = n.record(windows, NeuronId(0, i), seed=config.seed + i)
        if rec.max_activation > 0:
            records.append((n, rec))
    return records


class RealNeuron:
    """A real model's neuron with an explanation a capable explainer wrote. Its activations are known on its own
    windows only, so it trains without counterfactual windows."""

    family = "real"
    held_out = False

    def __init__(self, name: str, explanation: str, record):
        self.name, self.explanations = name, (explanation,)
        self._known = {
            tuple(r.tokens): np.asarray(r.activations, dtype=float)
            for r in (*record.most_positive_activation_records, *record.random_sample)
        }

    def activations(self, tokens: Sequence[str]) -> np.ndarray:
        got = self._known.get(tuple(tokens))
        if got is None:
            raise TrainError(f"{self.name}: activations are known on its own windows only")
        return got


def train_split_only(record):
    """`record` with only the windows the held-out protocol gives the explainer (the top windows' `train` split; no
    random window, all of which are held out): what a simulator may train on without seeing a window that scores
    this neuron later (`heldout.py`)."""
    from dataclasses import replace

    from ..heldout import top_splits

    return replace(
        record, most_positive_activation_records=top_splits(record)["train"], random_sample=[],
        random_sample_by_quantile=None,
    )  # fmt: skip


def real_records(from_public: str | None = None, from_run: str | None = None, limit: int | None = None) -> list:
    """(RealNeuron, record) of every neuron with an explanation and activation records in a copy of OpenAI's
    release (`from_public`: its `explanations/` and `collated-activations/` folders) and in a run of ours
    (`from_run`), at most `limit` (the first ones, public first). Each record keeps its `train` windows only
    (`train_split_only`): re-scoring these neurons with the trained simulator reads windows it never saw."""
    out = []
    if from_public:
        from ..public import PublicDataset

        data = PublicDataset(from_public)
        if data.local is None or not (data.local / "explanations").is_dir():
            raise TrainError(f"--from-public {from_public}: no explanations/ folder there (the release's layout)")
        files = sorted(data.local.glob("explanations/*/*.jsonl"), key=lambda f: (int(f.parent.name), int(f.stem)))
        for f in files:
            neuron = data.neuron(int(f.parent.name), int(f.stem))
            record = train_split_only(neuron.record) if neuron.record is not None else None
            if record is not None and neuron.explanation and record.max_activation > 0:
                out.append((RealNeuron(f"public:{f.parent.name}/{f.stem}", neuron.explanation, record), record))
    if from_run:
        from ..runs import Run

        run = Run(from_run)
        if not run.has_collection():
            raise TrainError(f"--from-run {from_run}: no collection there; run `nxkit run` first")
        acts = run.activations()
        for summary in run.summaries(("done",)):
            nid = summary.neuron_id
            record = train_split_only(acts.neuron_record(nid.layer_index, nid.neuron_index))
            if summary.explanation and record.max_activation > 0:
                out.append(
                    (RealNeuron(f"run:{nid.layer_index}/{nid.neuron_index}", summary.explanation, record), record)
                )
    return out[:limit] if limit is not None else out


def counterfactual_bins(neuron, record, tokens: Sequence[str]) -> list[int]:
    """The bins 0-10 that `neuron` (whose record is `record`) gives `tokens`: its own rule on them, on its own
    scale, whichever neuron's window they come from (counterfactual pairing)."""
    return normalize_activations([float(a) for a in neuron.activations(list(tokens))], record.max_activation)


@dataclass
class Example:
    """One explanation with windows: the tokens and this neuron's bins on each (its own and other neurons')."""

    explanation: str
    windows: list[list[str]]
    bins: list[list[int]]


def _near_synsets(name: str, up: int = 2) -> frozenset[str]:
    """A synset and its hypernyms up to `up` steps above it."""
    from ..wordnet import wordnet

    level = {wordnet().synset(name)}
    out = set(level)
    for _ in range(up):
        level = {h for s in level for h in s.hypernyms()}
        out |= level
    return frozenset(s.name() for s in out)


@dataclass
class Pools:
    """Which neurons a training example's counterfactual windows come from, worked out once per run."""

    by_family: dict[str, list[int]]
    """Record indices per family."""
    near: list[list[int]]
    """Per record, its hard negatives: the concepts near it in WordNet (siblings, cousins, parent and grandparent:
    a hypernym in common within two steps of each), and for the other synthetic families the neurons of the same
    family; empty for real neurons."""


def negative_pools(records: list[tuple]) -> Pools:
    """The families and hard negatives of `records` ((neuron, record) pairs)."""
    by_family: dict[str, list[int]] = {}
    for i, (n, _) in enumerate(records):
        by_family.setdefault(n.family, []).append(i)
    concepts = [i for i in by_family.get("concept", []) if isinstance(getattr(records[i][0], "rule", None), Concept)]
    up = {i: _near_synsets(records[i][0].rule.synset) for i in concepts}
    near: list[list[int]] = [[] for _ in records]
    for i in concepts:
        near[i] = [j for j in concepts if j != i and up[i] & up[j]]
    for family in ("surface", "context", "mixture"):
        members = by_family.get(family, [])
        for i in members:
            near[i] = [j for j in members if j != i]
    return Pools(by_family, near)


def sample_example(
    records: list[tuple],
    rng: random.Random,
    per_side: int,
    crop: int,
    hard_negatives: float = 0.0,
    pools: Pools | None = None,
) -> tuple[int, Example]:
    """A neuron (family first, then a neuron of it), one of its phrasings, and `per_side` of each: its top windows,
    its random windows, and (synthetic neurons only) another neuron's top windows, all labelled by this neuron.
    With probability `hard_negatives` each other neuron is a near one (`Pools.near`), else any neuron; `pools`
    (from `negative_pools(records)`) saves working them out on every call."""
    from ..prompts import crop_window

    pools = pools or negative_pools(records)
    families = [f for f in FAMILY_WEIGHTS if f in pools.by_family]
    # families first: there are hundreds of concept neurons and a few dozen of each other kind
    i = rng.choice(pools.by_family[rng.choices(families, [FAMILY_WEIGHTS[f] for f in families])[0]])
    neuron, rec = records[i]
    # a real neuron keeps no random window (all are held out): its quiet side comes from its train windows too
    quiet = rec.random_sample or rec.most_positive_activation_records
    pools_w = [rec.most_positive_activation_records] * per_side + [quiet] * per_side
    if not isinstance(neuron, RealNeuron):  # a rule labels any window; a real neuron only its own
        for _ in range(per_side):
            if pools.near[i] and rng.random() < hard_negatives:
                j = rng.choice(pools.near[i])
            else:
                j = rng.randrange(len(records) - 1) if len(records) > 1 else i
                j += j >= i and len(records) > 1  # any neuron but this one
            pools_w.append(records[j][1].most_positive_activation_records)
    windows, bins = [], []
    for pool in pools_w:
        tokens = rng.choice(pool).tokens
        acts = [float(a) for a in neuron.activations(tokens)]
        tokens, acts = crop_window(list(tokens), acts, crop)
        windows.append(list(tokens))
        bins.append(normalize_activations(acts, rec.max_activation))
    return i, Example(rng.choice(neuron.explanations), windows, bins)


# --- training ---------------------------------------------------------------------------------------


def _loss(logits: torch.Tensor, target: torch.Tensor, groups: list[int], firing_weight: float) -> torch.Tensor:
    """Weighted cross-entropy over the bins, plus 1 - correlation of the expected value with the target in each
    group of tokens (one explanation's windows), the score the simulator is judged by."""
    weight = 1.0 + (firing_weight - 1.0) * (target > 0).float()
    ce = (nn.functional.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()
    expected = (torch.softmax(logits, -1) * torch.arange(N_BINS, dtype=torch.float32)).sum(-1)
    corr, n, start = logits.new_zeros(()), 0, 0
    for size in groups:
        p, t = expected[start : start + size], target[start : start + size].float()
        start += size
        if t.std() > 0:
            p, t = p - p.mean(), t - t.mean()
            corr = corr + (p * t).sum() / (p.norm() * t.norm() + 1e-6)
            n += 1
    return ce + (1.0 - corr / n if n else 0.0)


def train_simulator(config: SimTrainConfig, progress: bool = True) -> Path:
    """Train (or resume training) nxkit-sim; returns the folder with its weights."""
    out = Path(config.out_dir)
    torch.manual_seed(config.seed)
    model = build_model(config.hidden, config.kind_dims, reading=config.reading)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    warmup = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / config.steps))),
    )
    step, ckpt, spent, start_time = 0, out / "checkpoint.pt", 0.0, time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if ckpt.exists():
        import pickle

        try:
            state = torch.load(ckpt, weights_only=True)  # plain tensors and settings: no code runs on load
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise TrainError(
                f"{ckpt} is not a checkpoint of plain tensors (damaged, or it holds objects that would run code when "
                f"loaded: {str(exc).splitlines()[0][:160]}); delete it to start training over"
            ) from exc
        if state["config"] != asdict(config):
            raise TrainError(f"{ckpt} was made with other settings; delete it to start over, or use the same ones")
        model.load_trainable(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, spent = state["step"], state.get("seconds", 0.0)
        log.info("resuming training at step %d of %d", step, config.steps)
    windows = corpus_token_windows(model.tokenizer, config.corpus_windows, config.seed)
    records = synthetic_records(windows, config)
    records += real_records(config.from_public, config.from_run, config.max_real)
    if not records:
        raise TrainError("no synthetic neuron fires on the training windows; use more corpus_windows")
    log.info("%d training neurons (%d real)", len(records), sum(isinstance(n, RealNeuron) for n, _ in records))
    # each phrasing is read once (a forward pass per template), and windows' ids once per distinct window
    texts = sorted({e for n, _ in records for e in n.explanations})
    index = {e: k for k, e in enumerate(texts)}
    readings: list[Reading] = []
    for a in tqdm(range(0, len(texts), 64), desc="read explanations", unit="batch", disable=not progress):
        for r in model.reader.read(texts[a : a + 64]):
            r.table, r.similarity = r.table.to(torch.float16), r.similarity.to(torch.float16)  # 2.7k x 4 x 49k
            readings.append(r)
    pools = negative_pools(records)
    bar = tqdm(total=config.steps, initial=step, desc="train nxkit-sim", unit="step", disable=not progress)
    t0 = time.perf_counter()
    model.head.train()
    while step < config.steps:
        rng = random.Random(config.seed * 1_000_003 + step)  # the batch depends on the step only: resumable
        feats, kind, target, groups = [], [], [], []
        for _ in range(config.batch_size):
            _, ex = sample_example(
                records, rng, config.windows_per_side, config.window_tokens, config.hard_negatives, pools
            )
            reading = readings[index[ex.explanation]]
            for w, b in zip(ex.windows, ex.bins, strict=True):
                feats.append(model.features(reading, model.window_ids(w)))
                kind.append(reading.kind.expand(len(w), -1))
                target.extend(b)
            groups.append(sum(len(w) for w in ex.windows))
        logits = model(torch.cat(feats), torch.cat(kind))
        loss = _loss(logits, torch.tensor(target), groups, config.firing_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", steps_s=f"{bar.n / max(1e-9, time.perf_counter() - t0):.1f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            state = {"config": asdict(config), "model": model.trainable_state(), "opt": opt.state_dict(),
                     "sched": sched.state_dict(), "step": step,
                     "seconds": spent + time.perf_counter() - start_time}  # fmt: skip
            atomic_write(ckpt, lambda f, state=state: torch.save(state, f))
    bar.close()
    real = [n.name for n, _ in records if isinstance(n, RealNeuron)]
    settings = {**asdict(config), "n_training_neurons": len(records), "base": "SmolLM2-135M-Instruct (frozen)",
                "train_seconds": round(spent + time.perf_counter() - start_time), "real_neurons": real,
                "real_windows": "train split only (top windows; no random window)"}  # fmt: skip
    save_weights(model, out, settings)
    ckpt.unlink(missing_ok=True)
    return out
