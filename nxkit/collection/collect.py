"""One streaming pass over the corpus that keeps, for every neuron of the chosen layers, its top
windows, a uniform random sample, random samples per band of activation, and running moments.

Memory is bounded by neurons x (kept windows), whatever the corpus length: the reductions run
inside the TransformerLens hooks, on the device the model runs on, and the forward pass stops
after the last chosen layer. State is checkpointed, so an interrupted pass resumes where it was.

On disk (`runs/<name>/activations/`):
    manifest.json           every setting, the corpus, model, library versions, progress
    windows.npy             int32 [n_windows, window] token ids
    layer_XX/bottom_*.npy   the most negative windows (gated MLPs fire both ways; see `Activations.neuron_record`)
    token_strings.json      each vocabulary id decoded on its own (what a reader sees)
    layer_XX/*.npy          per-layer arrays, read with memory mapping one neuron at a time
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..files import atomic_write, release_free_memory
from ..offline import SubjectError
from ..records import CollectionManifest
from ..seeds import mix_seed
from .activations import FORMAT_VERSION, CollectError
from .corpus import Windows
from .subject import check_layers, info, run_capture

log = logging.getLogger(__name__)


@dataclass
class CollectConfig:
    """Settings of one collection pass (saved in the manifest)."""

    layers: list[int] | None = None
    """Layers to collect; None means every layer."""
    top_k: int = 40
    """Top windows kept per neuron (dealt into 4 splits of 10)."""
    bottom_k: int | None = None
    """Most negative windows kept per neuron, for explaining its negative side (None: `top_k` for models with gated
    MLPs, whose neurons fire as strongly negative as positive, and 0 for the others)."""
    n_random: int = 30
    """Uniform random windows kept per neuron (dealt into 3 splits of 10)."""
    quantile_levels: list[float] = field(default_factory=lambda: [0.5, 0.9, 0.99])
    """Quantiles of the window maximum that separate the activation bands."""
    per_quantile: int = 5
    """Random windows kept per band."""
    quantile_calibration_windows: int = 512
    """Leading (already shuffled) windows whose maxima set the band boundaries."""
    batch_size: int = 32
    """Windows per forward pass."""
    seed: int = 0
    """Seed of every random choice (each neuron's random sample is its own)."""
    checkpoint_seconds: float = 300.0
    """Seconds between checkpoints (0 checkpoints after every batch)."""
    compile: bool = True
    """Fuse the per-batch reductions with torch.compile (falls back to eager if it fails)."""

    def __post_init__(self):
        if self.top_k < 1 or self.n_random < 0 or self.per_quantile < 0 or self.batch_size < 1:
            raise CollectError("top_k and batch_size must be >= 1; n_random and per_quantile >= 0")
        if self.bottom_k is not None and self.bottom_k < 0:
            raise CollectError(f"bottom_k must be None (automatic) or >= 0, got {self.bottom_k}")
        levels = list(self.quantile_levels)
        if any(not 0 < q < 1 for q in levels) or levels != sorted(levels):
            raise CollectError(f"quantile_levels must be increasing values in (0, 1), got {levels}")


# --- the per-batch reduction -----------------------------------------------------------------


def _reduce(x: Float[Tensor, "batch pos d_mlp"], shift: Float[Tensor, " d_mlp"]):
    """Window maxima and minima, the negative activations' sum, and the first four power sums of (x - shift)."""
    mx, mn = x.amax(1), x.amin(1)
    neg = x.clamp(max=0).sum((0, 1))
    d = (x - shift).reshape(-1, x.shape[-1])
    d2 = d * d
    return mx, mn, neg, d.sum(0), d2.sum(0), (d2 * d).sum(0), (d2 * d2).sum(0)


class _Reducer:
    """`_reduce`, compiled for the full batch shape when possible, eager otherwise."""

    def __init__(self, use_compile: bool):
        self.compiled = None
        if use_compile:
            try:
                self.compiled = torch.compile(_reduce, dynamic=False)
            except Exception as exc:  # no compiler backend on this platform
                log.warning("torch.compile unavailable (%s); using eager reductions", exc)

    def __call__(self, x, shift, full_batch: bool):
        if self.compiled is not None and full_batch:
            try:
                return self.compiled(x, shift)
            except Exception as exc:  # e.g. no C++ compiler: fall back once, for good
                log.warning("compiled reduction failed (%s: %s); using eager reductions", type(exc).__name__, exc)
                self.compiled = None
        return _reduce(x, shift)


def best_first(scores: Tensor, windows: Tensor, acts: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per row, the `k` best (score descending, then window id ascending) of the candidates, with their activations."""
    by_id = windows.argsort(dim=1, stable=True)
    by_score = scores.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
    order = by_id.gather(1, by_score)[:, :k]
    picked = acts.gather(1, order.unsqueeze(-1).expand(-1, -1, acts.shape[-1]))
    return scores.gather(1, order), windows.gather(1, order), picked


class KeepBest:
    """For each of `n` neurons, the `k` windows with the highest score seen so far, with the
    neuron's per-token activations on them. Updates touch only neurons whose threshold was beaten."""

    def __init__(self, n: int, k: int, window: int, device, dtype=torch.float32):
        self.scores = torch.full((n, k), -math.inf, device=device)
        self.windows = torch.full((n, k), -1, dtype=torch.int64, device=device)
        self.acts = torch.zeros((n, k, window), device=device, dtype=dtype)

    def update(
        self,
        scores: Float[Tensor, "batch n"],
        acts: Float[Tensor, "batch pos n"],
        window_ids: Int[Tensor, " batch"],
    ) -> None:
        if self.scores.shape[1] == 0:
            return
        threshold = self.scores.min(dim=1).values
        beats = (scores > threshold).sum(0)  # per row, the new windows above its threshold
        c = int(beats.max())  # only these can enter, and they are each row's best new ones: c per row suffice
        if c == 0:
            return
        k = self.scores.shape[1]
        if bool((beats > 0).all()):  # the common case: every row takes something, no row subset to gather
            rows_of, new, kept = None, scores.T, self.scores
        else:
            rows_of = beats.nonzero().squeeze(1)
            new, kept = scores[:, rows_of].T, self.scores[rows_of]
        # equal scores go to the lower window id, so the windows kept never depend on the order they came in (one
        # process and the merged shards of several keep the same): a stable sort where a top k would pick any
        if c < new.shape[1]:
            new, order = new.sort(dim=1, descending=True, stable=True)
            new, order = new[:, :c], order[:, :c]
        else:
            order = torch.arange(new.shape[1], device=new.device).expand(new.shape[0], -1)
        # each row keeps the best k of its k kept and c new windows
        cand = torch.cat([kept, new], dim=1)
        ids = window_ids.to(self.windows.device)
        cand_ids = torch.cat([self.windows if rows_of is None else self.windows[rows_of], ids[order]], dim=1)
        by_id = cand_ids.argsort(dim=1, stable=True)
        best = by_id.gather(1, cand.gather(1, by_id).argsort(dim=1, descending=True, stable=True))[:, :k]
        chosen = torch.zeros_like(cand, dtype=torch.bool).scatter_(1, best, True)
        # Slots stay unordered: each new window that made the cut overwrites one evicted slot, so
        # the cost is proportional to the windows that enter, not to everything kept. Every row
        # chose exactly k, so it evicts as many slots as it admits windows: the row-major lists of
        # evicted slots and of entering windows pair up one to one.
        local, slot = (~chosen[:, :k]).nonzero(as_tuple=True)
        _, pick = chosen[:, k:].nonzero(as_tuple=True)
        rows, cand_idx = (local if rows_of is None else rows_of[local]), order[local, pick]
        self.scores[rows, slot] = new[local, pick]
        self.windows[rows, slot] = ids[cand_idx]
        self.acts[rows, slot] = acts[cand_idx, :, rows].to(self.acts.dtype)

    def ordered(self) -> tuple[Tensor, Tensor, Tensor]:
        """Scores, window ids and activations sorted by score, best first, equal scores by window id (empty slots
        last): the same order however the windows arrived (`distributed` merges shards with it)."""
        return best_first(self.scores, self.windows, self.acts, self.scores.shape[1])

    def state(self) -> dict:
        return {"scores": self.scores, "windows": self.windows, "acts": self.acts}

    def load(self, state: dict) -> None:
        self.scores, self.windows, self.acts = state["scores"], state["windows"], state["acts"]


class PlannedSample:
    """Each neuron's own uniform random sample of windows, drawn up front from the seed.

    The window ids are known before the pass, so a batch only writes the (window, neuron) pairs
    that fall inside it: exact, independent per neuron, and nearly free.
    """

    def __init__(self, d_mlp: int, k: int, n_windows: int, window: int, seed: int, layer: int, device):
        k_eff = min(k, n_windows)
        gen = torch.Generator(device="cpu").manual_seed(mix_seed(seed, layer))
        chosen = torch.rand((d_mlp, n_windows), generator=gen).topk(k_eff, dim=1).indices.sort(dim=1).values
        flat_windows = chosen.reshape(-1)
        order = flat_windows.argsort(stable=True)
        self.plan_windows = flat_windows[order].to(device)
        self.plan_neurons = torch.arange(d_mlp).repeat_interleave(k_eff)[order].to(device)
        self.plan_slots = torch.arange(k_eff).repeat(d_mlp)[order].to(device)
        self.windows = torch.full((d_mlp, k), -1, dtype=torch.int64, device=device)
        self.windows[:, :k_eff] = chosen.to(device)
        self.acts = torch.zeros((d_mlp, k, window), device=device)

    def update(self, acts: Float[Tensor, "batch pos n"], start: int) -> None:
        lo, hi = torch.searchsorted(
            self.plan_windows, torch.tensor([start, start + acts.shape[0]], device=acts.device)
        ).tolist()
        if hi > lo:
            n, slot = self.plan_neurons[lo:hi], self.plan_slots[lo:hi]
            self.acts[n, slot] = acts[self.plan_windows[lo:hi] - start, :, n].to(self.acts.dtype)

    def state(self) -> dict:
        return {"acts": self.acts}

    def load(self, state: dict) -> None:
        self.acts = state["acts"]


class BandSample:
    """For each neuron and band of window-maximum activation, the first `k` windows that land in
    the band. The windows arrive in a uniformly random order, so these are a uniform sample of the
    band's windows."""

    def __init__(self, d_mlp: int, n_bands: int, k: int, window: int, device):
        self.k = k
        self.count = torch.zeros((d_mlp, n_bands), dtype=torch.int64, device=device)
        self.windows = torch.full((d_mlp, n_bands, k), -1, dtype=torch.int64, device=device)
        self.acts = torch.zeros((d_mlp, n_bands, k, window), device=device)

    def update(self, band: Int[Tensor, "batch n"], acts: Float[Tensor, "batch pos n"], start: int) -> None:
        if self.k == 0 or bool((self.count >= self.k).all()):
            return
        # only the neurons with a window in a band that still has room do any work (most bands fill early)
        room = (self.count < self.k).gather(1, band.T).T  # [batch, n]
        cols = room.any(0).nonzero().squeeze(1)
        if cols.numel():
            onehot = torch.nn.functional.one_hot(band[:, cols], self.count.shape[1]) * room[:, cols].unsqueeze(-1)
            pos = self.count[cols].unsqueeze(0) + onehot.cumsum(0) - 1  # [batch, m, bands]
            j, c, b = (onehot.bool() & (pos < self.k)).nonzero(as_tuple=True)
            if j.numel():
                slot, n = pos[j, c, b], cols[c]
                self.acts[n, b, slot] = acts[j, :, n].to(self.acts.dtype)
                self.windows[n, b, slot] = j + start
        self.count.scatter_add_(1, band.T, torch.ones_like(band.T))

    def state(self) -> dict:
        return {"count": self.count, "windows": self.windows, "acts": self.acts}

    def load(self, state: dict) -> None:
        self.count, self.windows, self.acts = state["count"], state["windows"], state["acts"]


class LayerState:
    """Everything kept for one layer during the pass."""

    def __init__(self, d_mlp: int, cfg: CollectConfig, window: int, n_windows: int, n_calib: int, layer: int, device):
        self.top = KeepBest(d_mlp, cfg.top_k, window, device)
        self.bottom = KeepBest(d_mlp, cfg.bottom_k or 0, window, device)
        self.random = PlannedSample(d_mlp, cfg.n_random, n_windows, window, cfg.seed, layer, device)
        self.bands = BandSample(d_mlp, len(cfg.quantile_levels) + 1, cfg.per_quantile, window, device)
        self.calib_max = torch.zeros((n_calib, d_mlp), device=device)
        self.boundaries: Tensor | None = None
        self.shift: Tensor | None = None
        self.count = 0
        self.sums = torch.zeros((4, d_mlp), dtype=torch.float64, device=device)
        self.negative_sum = torch.zeros(d_mlp, dtype=torch.float64, device=device)

    def state(self) -> dict:
        return {
            "top": self.top.state(),
            "bottom": self.bottom.state(),
            "negative_sum": self.negative_sum,
            "random": self.random.state(),
            "bands": self.bands.state(),
            "calib_max": self.calib_max,
            "boundaries": self.boundaries,
            "shift": self.shift,
            "count": self.count,
            "sums": self.sums,
        }

    def load(self, s: dict) -> None:
        self.top.load(s["top"])
        self.bottom.load(s["bottom"])
        self.negative_sum = s["negative_sum"]
        self.random.load(s["random"])
        self.bands.load(s["bands"])
        self.calib_max, self.boundaries, self.shift = s["calib_max"], s["boundaries"], s["shift"]
        self.count, self.sums = s["count"], s["sums"]

    def moments(self) -> Float[Tensor, "4 d_mlp"]:
        """Mean, variance, skewness and excess kurtosis from the shifted power sums."""
        n = max(self.count, 1)
        s1, s2, s3, s4 = (self.sums[i] / n for i in range(4))
        mean_d = s1
        m2 = (s2 - mean_d**2).clamp(min=0)
        m3 = s3 - 3 * mean_d * s2 + 2 * mean_d**3
        m4 = s4 - 4 * mean_d * s3 + 6 * mean_d**2 * s2 - 3 * mean_d**4
        mean = self.shift.double() + mean_d
        safe = torch.where(m2 > 0, m2, torch.ones_like(m2))
        skew = torch.where(m2 > 0, m3 / safe**1.5, torch.zeros_like(m2))
        kurt = torch.where(m2 > 0, m4 / safe**2 - 3, torch.zeros_like(m2))
        return torch.stack([mean, m2, skew, kurt])

    def mass(self) -> Float[Tensor, "d_mlp 2"]:
        """Per neuron, the sum of its positive activations and of its negative ones' magnitudes over every token."""
        total = self.sums[0] + self.shift.double() * self.count
        return torch.stack([(total - self.negative_sum).clamp(min=0), -self.negative_sum], dim=1)


# --- the pass --------------------------------------------------------------------------------


def _versions() -> dict:
    import transformer_lens
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def _write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def _manifest_of(model, windows: Windows, cfg: CollectConfig) -> CollectionManifest:
    """What identifies a pass: model, layers, settings and corpus (a resumed pass must match them)."""
    shape = info(model)
    try:
        layers = check_layers(model, cfg.layers)
    except SubjectError as exc:
        raise CollectError(str(exc)) from exc
    if windows.n_windows == 0:
        raise CollectError("the corpus gave no windows; use a larger corpus")
    if windows.window > shape.n_ctx:
        raise CollectError(
            f"windows of {windows.window} tokens are longer than the model's context of {shape.n_ctx}; "
            f"use window <= {shape.n_ctx}"
        )
    n_calib = min(cfg.quantile_calibration_windows, windows.n_windows // 2) // cfg.batch_size * cfg.batch_size
    bottom_k = cfg.bottom_k if cfg.bottom_k is not None else (cfg.top_k if shape.gated_mlp else 0)
    return CollectionManifest(
        format_version=FORMAT_VERSION,
        model=shape.name,
        n_layers=shape.n_layers,
        d_mlp=shape.d_mlp,
        gated_mlp=shape.gated_mlp,
        subject_init=shape.init,
        layers=layers,
        config={**asdict(cfg), "layers": layers, "bottom_k": bottom_k},
        corpus={
            "source": windows.source,
            "n_windows": windows.n_windows,
            "window": windows.window,
            "n_tokens": windows.n_tokens,
            "n_documents": windows.n_documents,
        },
        quantile_calibration_windows_used=n_calib,
        versions=_versions(),
    )


def _previous_status(out: Path, new: CollectionManifest) -> tuple[str | None, CollectionManifest]:
    """The status of a pass already in `out` ("partial", "complete"; None if none) and the manifest to go on with;
    other settings are an error. A pass written before the negative side was kept goes on without it."""
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        return None, new
    old = CollectionManifest.from_json_obj(json.loads(manifest_path.read_text()))
    if "bottom_k" not in old.config:
        new = replace(new, gated_mlp=old.gated_mlp, config={**new.config, "bottom_k": 0})
        old = replace(old, config={**old.config, "bottom_k": 0})
    if old.identity() != new.identity():
        raise CollectError(
            f"{out} holds a collection with other settings ({old.model}, corpus {old.corpus_source}); "
            "choose another run name, or delete that directory to start over"
        )
    return old.status, new


def _write_inputs(out: Path, model, windows: Windows) -> None:
    """The windows' token ids and the vocabulary's strings, written once (a resumed pass checks the windows)."""
    out.mkdir(parents=True, exist_ok=True)
    tokens_np = windows.tokens.numpy().astype(np.int32)
    windows_path = out / "windows.npy"
    if windows_path.exists():
        if not np.array_equal(np.load(windows_path, mmap_mode="r"), tokens_np):
            raise CollectError(f"{windows_path} holds other windows; delete {out} to start over")
    else:
        atomic_write(windows_path, lambda f: np.save(f, tokens_np))
    strings_path = out / "token_strings.json"
    if not strings_path.exists():
        tok = model.tokenizer
        _write_json(strings_path, [tok.decode([i]) for i in range(len(tok))])


class _Pass:
    """The per-layer states of a pass and what one batch does to them."""

    def __init__(self, manifest: CollectionManifest, cfg: CollectConfig, windows: Windows, device):
        cfg = replace(cfg, bottom_k=manifest.config["bottom_k"])  # resolved
        self.cfg, self.layers, self.d_mlp = cfg, manifest.layers, manifest.d_mlp
        self.n_calib = manifest.quantile_calibration_windows_used
        self.states = {
            layer: LayerState(manifest.d_mlp, cfg, windows.window, windows.n_windows, self.n_calib, layer, device)
            for layer in self.layers
        }
        self.reducer = _Reducer(cfg.compile)
        self.start = 0
        self.ids: Tensor | None = None

    def update(self, layer: int, x: Float[Tensor, "batch pos d_mlp"]) -> None:
        """Fold one layer's activations on the current batch into its state (runs inside the hook)."""
        st, cfg = self.states[layer], self.cfg
        x = x.detach().float()
        if st.shift is None:
            st.shift = x.mean(dim=(0, 1)).contiguous()
        mx, mn, neg, *sums = self.reducer(x, st.shift, full_batch=x.shape[0] == cfg.batch_size)
        st.count += x.shape[0] * x.shape[1]
        st.sums += torch.stack(sums).double()
        st.negative_sum += neg.double()
        st.top.update(mx, x, self.ids)
        st.bottom.update(-mn, x, self.ids)
        st.random.update(x, self.start)
        if self.start < self.n_calib:
            st.calib_max[self.start : self.start + x.shape[0]] = mx
        elif self.n_calib and cfg.per_quantile:
            if st.boundaries is None:
                q = torch.tensor(cfg.quantile_levels, device=mx.device)
                st.boundaries = torch.quantile(st.calib_max, q, dim=0).T.contiguous()
            st.bands.update((mx.unsqueeze(-1) > st.boundaries.unsqueeze(0)).sum(-1), x, self.start)

    def save(self, path: Path, done_windows: int) -> None:
        state = {"done_windows": done_windows, "layers": {k: s.state() for k, s in self.states.items()}}
        atomic_write(path, lambda f: torch.save(state, f))

    def load(self, path: Path, device) -> int:
        """Restore a checkpoint; returns the windows it had done."""
        import pickle

        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)  # plain tensors: no code runs on load
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise CollectError(
                f"{path} is not a checkpoint of plain tensors (damaged, or it holds objects that would run code when "
                f"loaded: {str(exc).splitlines()[0][:160]}); delete it to start the pass over"
            ) from exc
        for layer in self.layers:
            self.states[layer].load(ckpt["layers"][layer])
        return ckpt["done_windows"]


def collect(
    model,
    windows: Windows,
    out_dir: str | Path,
    config: CollectConfig | None = None,
    progress: bool = True,
    max_batches: int | None = None,
) -> Path:
    """Run the pass and write `out_dir` (normally `runs/<name>/activations`); returns it.

    If `out_dir` holds a finished pass with the same settings it is returned as is; a partial one
    is resumed from its checkpoint. `max_batches` stops early (the pass stays resumable).
    """
    cfg = config or CollectConfig()
    out = Path(out_dir)
    status, manifest = _previous_status(out, _manifest_of(model, windows, cfg))
    if status == "complete":
        log.info("collection in %s is complete; nothing to do", out)
        return out
    from .distributed import world

    if world()[0] == 0:  # under torchrun, rank 0 writes what every rank shares
        _write_inputs(out, model, windows)
    release_free_memory()  # what an earlier pass in this process freed goes back before this one allocates
    try:
        _pass(model, windows, out, manifest, cfg, progress, max_batches)
    finally:
        release_free_memory()  # the pass's state and scratch, freed on return
    return out


def _pass(
    model, windows: Windows, out: Path, manifest: CollectionManifest, cfg: CollectConfig, progress, max_batches
) -> None:
    """The pass itself, from its checkpoint if there is one; writes the layers when every batch is done. Under
    `torchrun` (a process group of several ranks) each rank runs its share (`distributed.shard_pass`)."""
    from .distributed import shard_pass, world

    rank, size = world()
    if size > 1:
        return shard_pass(model, windows, out, manifest, cfg, progress, max_batches, rank, size)
    device = next(model.parameters()).device
    state = _Pass(manifest, cfg, windows, device)
    ckpt_path, manifest_path = out / "checkpoint.pt", out / "manifest.json"
    done_windows = state.load(ckpt_path, device) if ckpt_path.exists() else 0
    if done_windows:
        log.info("resuming %s at window %d of %d", out, done_windows, windows.n_windows)
    manifest = replace(manifest, status="partial", done_windows=done_windows)
    _write_json(manifest_path, asdict(manifest))
    bs = cfg.batch_size

    def checkpoint(done_batches: int) -> None:
        done = min(done_batches * bs, windows.n_windows)
        state.save(ckpt_path, done)
        _write_json(manifest_path, asdict(replace(manifest, done_windows=done)))

    batches = list(range(math.ceil(windows.n_windows / bs)))
    if _run_batches(model, windows, state, batches, -(-done_windows // bs), checkpoint, progress, max_batches) < len(
        batches
    ):
        return
    for layer in state.layers:
        _write_layer(out / f"layer_{layer:02d}", state.states[layer])
    _write_json(manifest_path, asdict(replace(manifest, status="complete", done_windows=windows.n_windows)))
    ckpt_path.unlink(missing_ok=True)


def _run_batches(
    model, windows: Windows, state: _Pass, batches: list[int], done: int, checkpoint, progress, max_batches, desc=""
) -> bool:
    """The batches `batches[done:]` (batch indices) through the model, checkpointing (`checkpoint(batches done)`) on a
    timer, on Ctrl-C and when `max_batches` stops it; returns how many of `batches` are done."""
    bs = state.cfg.batch_size
    device = next(model.parameters()).device
    bar = tqdm(
        total=len(batches) * bs * windows.window,
        initial=done * bs * windows.window,
        unit="tok",
        unit_scale=True,
        desc=f"collect {len(state.layers)} layers x {state.d_mlp:,} neurons{desc}",
        disable=not progress,
    )
    last_ckpt, ran = time.monotonic(), 0
    try:
        with torch.inference_mode():
            while done < len(batches) and (max_batches is None or ran < max_batches):
                state.start = batches[done] * bs
                batch = windows.tokens[state.start : state.start + bs].to(device)
                state.ids = torch.arange(state.start, state.start + batch.shape[0], device=device)
                run_capture(model, batch, state.layers, state.update)
                done, ran = done + 1, ran + 1
                bar.update(batch.shape[0] * windows.window)
                if time.monotonic() - last_ckpt >= state.cfg.checkpoint_seconds and done < len(batches):
                    checkpoint(done)
                    last_ckpt = time.monotonic()
    except KeyboardInterrupt:
        checkpoint(done)
        bar.close()
        log.warning("interrupted: checkpoint saved after %d of %d batches; run again to resume", done, len(batches))
        raise
    bar.close()
    if done < len(batches):
        checkpoint(done)
    return done


def _write_layer(path: Path, st: LayerState) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _, top_windows, top_acts = st.top.ordered()
    arrays = {
        "top_acts": top_acts,
        "top_windows": top_windows,
        "random_acts": st.random.acts,
        "random_windows": st.random.windows,
        "band_acts": st.bands.acts,
        "band_windows": st.bands.windows,
        "moments": st.moments().T,
        "mass": st.mass(),
    }
    if st.bottom.scores.shape[1]:
        _, arrays["bottom_windows"], arrays["bottom_acts"] = st.bottom.ordered()
    if st.boundaries is not None:
        arrays["quantile_boundaries"] = st.boundaries
    for name, tensor in arrays.items():
        array = tensor.cpu().numpy()
        atomic_write(path / f"{name}.npy", lambda f, a=array: np.save(f, a))


# --- reading ---------------------------------------------------------------------------------
