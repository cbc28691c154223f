"""Collection past one process: `torchrun --nproc-per-node N -m nxkit collect ...` (or `nxkit run`'s collection).

torchrun starts N ranks and describes them in the environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...); each rank
joins the process group (`init_from_env`: gloo on CPU, NCCL on GPU, one GPU per rank by `LOCAL_RANK`). Many nodes
are torchrun's own rendezvous (`--nnodes`, `--rdzv-endpoint`), nothing of ours. The corpus windows are the same on
every rank (seeded); their batches are dealt round-robin (rank r runs batches r, r+N, ...), so every batch holds the
same windows as in one process. Each rank runs the pass over its batches for every chosen neuron and checkpoints on
its own (`checkpoint.rankRR-of-NN.pt`); at the end the per-neuron states are merged through collectives and rank 0
writes the collection in the one-process layout:

- top-k and bottom-k windows: the best k of every rank's k by value, equal values by window id (the order one
  process writes too): exact;
- the random sample: each planned window's activations from the rank that ran it: exact;
- quantile bands: the boundaries come from the calibration windows of every rank (reduced before any window is
  banded), and each band keeps its k lowest window ids, as one process keeps the first k it meets: exact;
- moments and negative mass: power sums moved to rank 0's shift (binomial expansion) and summed: within float
  tolerance (the sums are added in another order).

A rank that dies stops the whole job: torchrun ends the others and exits non-zero; running the same command again
resumes every rank from its own checkpoint. A rank never waits in a collective for a rank that stopped early by
`max_batches`: before each merge point the ranks agree that all of them are there, else each saves and stops.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from dataclasses import asdict, replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a rank before the job fails (torchrun's own failure handling is faster)."""


def world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes, once (nothing to do when `WORLD_SIZE` is unset or 1); returns this
    process's rank and the number of ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return world()


def other_rank() -> bool:
    """True in a torchrun rank above 0 (joining its process group first): it collects its share and stops, while rank
    0 holds the run and runs the other stages."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    return init_from_env()[0] > 0


def rank_device(device: str | None) -> str | None:
    """The device this rank runs on: its own GPU (`LOCAL_RANK`) when there are GPUs and none was named."""
    if device is None and world()[1] > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def checkpoint_name(rank: int, size: int) -> str:
    return f"checkpoint.rank{rank:02d}-of-{size:02d}.pt"


def _all_agree(flag: bool, device) -> bool:
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def shard_pass(model, windows, out, manifest, cfg, progress, max_batches, rank: int, size: int) -> None:
    """One rank's share of the pass (see the module's docstring); rank 0 writes the merged collection."""
    from .collect import _Pass, _run_batches, _write_json, _write_layer

    t_start = time.perf_counter()
    device = next(model.parameters()).device
    state = _Pass(manifest, cfg, windows, device)
    bs = cfg.batch_size
    mine = list(range(rank, math.ceil(windows.n_windows / bs), size))
    n_calib = sum(1 for b in mine if b * bs < manifest.quantile_calibration_windows_used)
    ckpt_path, manifest_path = out / checkpoint_name(rank, size), out / "manifest.json"
    done = state.load(ckpt_path, device) // bs if ckpt_path.exists() else 0
    if rank == 0:
        _write_json(manifest_path, asdict(replace(manifest, status="partial", done_windows=0)))

    def checkpoint(done_batches: int) -> None:
        state.save(ckpt_path, done_batches * bs)

    desc, budget = f" (rank {rank} of {size})", max_batches
    if done < n_calib:
        before = done
        done = _run_batches(model, windows, state, mine[:n_calib], done, checkpoint, progress, budget, desc)
        budget = None if budget is None else budget - (done - before)
    if not _all_agree(done >= n_calib, device):
        log.warning("rank %d: stopped before every rank had its calibration windows; run again to resume", rank)
        return
    if manifest.quantile_calibration_windows_used and cfg.per_quantile:
        _share_boundaries(state, cfg)
    if budget is None or budget > 0:
        done = _run_batches(model, windows, state, mine, done, checkpoint, progress, budget, desc)
    else:
        checkpoint(done)
    if not _all_agree(done >= len(mine), device):
        log.warning("rank %d: not every rank has finished its batches; run again to resume", rank)
        return
    t_merge = time.perf_counter()
    for layer in state.layers:
        merge_layer(state.states[layer], bs, rank, size)
        if rank == 0:
            _write_layer(out / f"layer_{layer:02d}", state.states[layer])
    dist.barrier()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    log.info("rank %d of %d: pass %.1f s, merge and write %.1f s, peak memory %.0f MiB", rank, size,
             t_merge - t_start, time.perf_counter() - t_merge, peak)  # fmt: skip
    if rank == 0:
        _write_json(manifest_path, asdict(replace(manifest, status="complete", done_windows=windows.n_windows)))
    ckpt_path.unlink(missing_ok=True)


def _share_boundaries(state, cfg) -> None:
    """Every layer's quantile boundaries from the calibration windows of all ranks (each holds its own rows, zeros
    elsewhere), computed as one process computes them."""
    for st in state.states.values():
        every = st.calib_max.clone()
        dist.all_reduce(every)
        q = torch.tensor(cfg.quantile_levels, device=every.device)
        st.boundaries = torch.quantile(every, q, dim=0).T.contiguous()


def _gather(t: Tensor) -> list[Tensor]:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def shifted_sums(sums: Tensor, count: int, old: Tensor, new: Tensor) -> Tensor:
    """Power sums of (x - old), orders 1-4 ([4, n], float64), as power sums of (x - new): sum((d + c)^p) over the
    binomial expansion, with c = old - new and the zeroth sum `count`."""
    c = (old.double() - new.double()).unsqueeze(0)
    s = torch.cat([torch.full_like(sums[:1], float(count)), sums])  # orders 0-4
    out = torch.zeros_like(sums)
    for p in range(1, 5):
        out[p - 1] = sum(math.comb(p, k) * c[0] ** (p - k) * s[k] for k in range(p + 1))
    return out


def merge_layer(st, batch_size: int, rank: int, size: int) -> None:
    """Merge one layer's state across ranks in place (every rank ends with the merged state)."""
    from .collect import best_first

    # moments and negative mass, at rank 0's shift
    shift = st.shift if st.shift is not None else torch.zeros(st.sums.shape[1], device=st.sums.device)
    shift0 = shift.clone()
    dist.broadcast(shift0, src=0)
    st.sums = shifted_sums(st.sums, st.count, shift, shift0) if st.count else torch.zeros_like(st.sums)
    count = torch.tensor([st.count], dtype=torch.int64, device=st.sums.device)
    for t in (st.sums, st.negative_sum, count):
        dist.all_reduce(t)
    st.shift, st.count = shift0, int(count.item())
    # top and bottom: the best k of every rank's k
    for keep in (st.top, st.bottom):
        k = keep.scores.shape[1]
        if k:
            scores, win, acts = (torch.cat(_gather(t), dim=1) for t in (keep.scores, keep.windows, keep.acts))
            keep.scores, keep.windows, keep.acts = best_first(scores, win, acts, k)
    # the random sample: each planned window from the rank that ran its batch
    every = torch.stack(_gather(st.random.acts))  # [size, n, k, window]
    win = st.random.windows
    owner = torch.where(win >= 0, torch.div(win, batch_size, rounding_mode="floor") % size, 0)
    st.random.acts = every.gather(0, owner[None, :, :, None].expand(1, *every.shape[1:]))[0]
    # bands: the k lowest window ids of each band over every rank's first k
    bands = st.bands
    k = bands.windows.shape[-1]
    if k:
        win = torch.cat(_gather(bands.windows), dim=-1)  # [n, bands, size*k]
        acts = torch.cat(_gather(bands.acts), dim=-2)
        key = torch.where(win >= 0, win, torch.iinfo(win.dtype).max)
        order = key.argsort(dim=-1, stable=True)[..., :k]
        bands.windows = win.gather(-1, order)
        bands.acts = acts.gather(-2, order.unsqueeze(-1).expand(*order.shape, acts.shape[-1]))
    count = bands.count.clone()
    dist.all_reduce(count)
    bands.count = count
