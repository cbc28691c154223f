"""Collection benchmark: the full pass over every neuron against the bare forward pass, and peak
memory at two corpus sizes. Prints ratios measured in this one run (not a timed test).

    python bench/collect.py                      # offline default on CPU: 50k and 200k tokens
    python bench/collect.py --gpt2xl-shape       # GPU: GPT-2-XL-shaped random model, fp16, 1M tokens

Targets: collection >= 0.85 x the bare pass on CPU (>= 0.7 on the GPU run); memory ratio <= 1.15.
Each size runs in a child process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def bare_tokens_per_s(model, tokens, batch_size: int, last_layer: int) -> float:
    """Hugging Face body only (no hooks, no unembedding), truncated after `last_layer`."""
    # Both baselines run over the same windows before and after the collection, and are averaged,
    # so a change in machine load during the run affects both sides of the ratio.
    body = model.original_model.model
    all_layers = body.layers
    body.layers = all_layers[: last_layer + 1]
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, tokens.shape[0], batch_size):
                body(tokens[i : i + batch_size].to(next(body.parameters()).device))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return tokens.numel() / (time.perf_counter() - start)
    finally:
        body.layers = all_layers


class _Stop(Exception):
    pass


def bridge_tokens_per_s(model, tokens, batch_size: int, last_layer: int) -> float:
    """The same TransformerLens bridge with no reduction: one hook on the last layer that only stops."""
    from nxkit.collection.subject import hook_name

    def stop(x, hook):
        raise _Stop

    device = next(model.parameters()).device
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, tokens.shape[0], batch_size):
            try:
                model.run_with_hooks(
                    tokens[i : i + batch_size].to(device), fwd_hooks=[(hook_name(last_layer), stop)], return_type=None
                )
            except _Stop:
                pass
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tokens.numel() / (time.perf_counter() - start)


def child(args) -> dict:
    from nxkit.collection.collect import CollectConfig, collect
    from nxkit.collection.corpus import make_windows
    from nxkit.collection.subject import info, load_subject

    if args.gpt2xl_shape:
        model = gpt2xl_shaped(args.device)
        n = args.tokens // 64
        windows_tokens = torch.randint(0, model.cfg.d_vocab, (n, 64), generator=torch.Generator().manual_seed(0))
        from nxkit.collection.corpus import Windows

        windows = Windows(tokens=windows_tokens, source="random tokens", n_documents=n, n_tokens=n * 64)
    else:
        model = load_subject(device=args.device)
        windows = make_windows(model.tokenizer, "default", window=64, max_tokens=args.tokens, seed=0)
    shape = info(model)
    cfg = CollectConfig(batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: compile the reductions (torch.compile caches them for the timed pass)
        collect(model, windows, Path(tmp) / "warm", cfg, progress=False, max_batches=2)
        probe = windows.tokens[: min(windows.n_windows, max(args.batch_size * 8, windows.n_windows // 8))]
        last = shape.n_layers - 1
        bare_before = bare_tokens_per_s(model, probe, args.batch_size, last)
        bridge_before = bridge_tokens_per_s(model, probe, args.batch_size, last)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        collect(model, windows, Path(tmp) / "run", cfg, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        collect_s = time.perf_counter() - start
        bare_after = bare_tokens_per_s(model, probe, args.batch_size, last)
        bridge_after = bridge_tokens_per_s(model, probe, args.batch_size, last)
    return {
        "tokens": windows.n_tokens,
        "neurons": shape.n_neurons,
        "hf_tok_s": (bare_before + bare_after) / 2,
        "bridge_tok_s": (bridge_before + bridge_after) / 2,
        "collect_tok_s": windows.n_tokens / collect_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
    }


def gpt2xl_shaped(device):
    """A GPT-2-XL-shaped model (48 layers x 6,400 neurons) with random weights, fp16, no hub."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    from nxkit.offline import load_offline_hf

    cfg = GPT2Config(n_layer=48, n_embd=1600, n_head=25, n_positions=1024, vocab_size=50257)
    hf = GPT2LMHeadModel(cfg).to(torch.float16).eval()
    _, tok = load_offline_hf()  # any tokenizer: the bridge wants one; tokens are random ids
    bridge = TransformerBridge.boot_transformers(
        "gpt2-xl", hf_model=hf, tokenizer=tok, device=device, dtype=torch.float16
    )
    bridge.nxkit_name = "gpt2-xl-shaped-random"
    return bridge


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs=2, default=[50_000, 200_000], help="two corpus sizes in tokens")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--gpt2xl-shape", action="store_true", help="GPT-2-XL-shaped random model in fp16 (GPU)")
    p.add_argument("--child-tokens", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_tokens:
        args.tokens = args.child_tokens
        print(json.dumps(child(args)))
        return
    if args.gpt2xl_shape and args.sizes == [50_000, 200_000]:
        args.sizes = [250_000, 1_000_000]
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child-tokens", str(size), "--batch-size", str(args.batch_size)]
        cmd += (["--device", args.device] if args.device else []) + (["--gpt2xl-shape"] if args.gpt2xl_shape else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        # the bare pass: the faster of the two hook-free baselines (the stricter comparison)
        r["bare_tok_s"] = max(r["hf_tok_s"], r["bridge_tok_s"])
        results.append(r)
        print(
            f"{r['tokens']:>9,} tokens, {r['neurons']:,} neurons: bare pass {r['bare_tok_s']:,.0f} tok/s "
            f"(Hugging Face body {r['hf_tok_s']:,.0f}, bridge stopped at the last layer {r['bridge_tok_s']:,.0f}), "
            f"collection {r['collect_tok_s']:,.0f} tok/s, ratio {r['collect_tok_s'] / r['bare_tok_s']:.3f}, "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB"
            + (f", peak GPU {r['peak_gpu_mb']:,.0f} MB" if r["peak_gpu_mb"] else "")
        )
    small, large = results
    mem_key = "peak_gpu_mb" if large["peak_gpu_mb"] else "peak_rss_mb"
    print(f"collection / bare pass (largest size): {large['collect_tok_s'] / large['bare_tok_s']:.3f}")
    print(
        f"peak memory {large['tokens']:,} vs {small['tokens']:,} tokens: "
        f"{large[mem_key]:,.0f} / {small[mem_key]:,.0f} MB = {large[mem_key] / small[mem_key]:.3f}"
    )


if __name__ == "__main__":
    main()
