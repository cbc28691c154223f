"""Collection under torchrun (issue 31, part 1): two gloo processes on this CPU keep the same windows, values, random
samples and bands as one process over the same windows, both signs; moments within float tolerance; a rank stopped
early resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nxkit.collection.distributed import shifted_sums

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = [
    "--max-tokens",
    str(64 * 256),
    "--corpus",
    "fortunes",
    "--collect.layers",
    "0",
    "5",
    "--collect.batch-size",
    "16",
]
EXACT = ["top_windows", "top_acts", "bottom_windows", "bottom_acts", "random_windows", "random_acts", "band_windows",
         "band_acts", "quantile_boundaries"]  # fmt: skip


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    return env


def _collect(run_dir: Path, ranks: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    if ranks == 1:
        cmd = [str(BIN / "nxkit"), "collect"]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={ranks}", "-m", "nxkit", "collect"]
    cmd += ["--run-dir", str(run_dir), *ARGS, *extra]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    one, two = base / "one", base / "two"
    for path, ranks in ((one, 1), (two, 2)):
        done = _collect(path, ranks)
        assert done.returncode == 0, done.stderr[-3000:]
    return one / "activations", two / "activations"


def test_two_ranks_keep_what_one_process_keeps(one_and_two):
    _assert_same(*one_and_two, layers=(0, 5))


def _assert_same(one: Path, two: Path, layers) -> None:
    for layer in layers:
        for name in EXACT:
            a, b = np.load(one / f"layer_{layer:02d}/{name}.npy"), np.load(two / f"layer_{layer:02d}/{name}.npy")
            assert a.shape == b.shape and np.array_equal(a, b), f"layer {layer} {name} differs"
        for name in ("moments", "mass"):
            a, b = np.load(one / f"layer_{layer:02d}/{name}.npy"), np.load(two / f"layer_{layer:02d}/{name}.npy")
            # each batch's power sums are float32, added in another order and moved to rank 0's shift: measured
            # differences up to 2e-4 relative, on skewness near 0
            assert np.allclose(a, b, rtol=1e-3, atol=1e-5), f"layer {layer} {name} differs beyond float tolerance"
    assert not list(two.glob("checkpoint*"))  # every rank's checkpoint is gone once the collection is written
    import json

    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (one, two))
    assert m1["status"] == m2["status"] == "complete" and m1["corpus"] == m2["corpus"]


def tiny_gpt2(path: Path) -> Path:
    """A two-layer GPT-2 (GELU MLPs of 256 neurons, random weights, SmolLM2's tokenizer) saved as a Hugging Face
    folder, which `--model PATH` loads offline: another architecture than the offline model's gated MLPs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from nxkit.offline import load_offline_hf

    _, tok = load_offline_hf()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=len(tok), n_positions=128,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_two_ranks_keep_what_one_process_keeps_on_a_tiny_model(tmp_path):
    model = tiny_gpt2(tmp_path / "tiny-gpt2")
    extra = ["--model", str(model), "--collect.layers", "0", "1", "--collect.bottom-k", "8"]
    for name, ranks in (("one", 1), ("two", 2)):
        done = _collect(tmp_path / name, ranks, extra)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "one" / "activations", tmp_path / "two" / "activations"
    assert np.load(one / "layer_01/bottom_acts.npy").size  # the negative side is kept, and compared
    _assert_same(one, two, layers=(0, 1))


def test_a_stopped_two_rank_pass_resumes_to_the_same_collection(one_and_two, tmp_path):
    """Ranks stopped after one batch each (`max_batches`, through the API) resume from their own checkpoints."""
    one, _ = one_and_two
    script = (
        "import sys; from nxkit.collection.distributed import init_from_env; init_from_env();"
        "from nxkit.collection.subject import load_subject; from nxkit.collection.corpus import make_windows;"
        "from nxkit.collection.collect import collect, CollectConfig;"
        "m = load_subject(device='cpu'); w = make_windows(m.tokenizer, 'fortunes', max_tokens=64*256);"
        "collect(m, w, sys.argv[1], CollectConfig(layers=[0, 5], batch_size=16), progress=False,"
        " max_batches=int(sys.argv[2]) or None)"
    )
    path = tmp_path / "activations"
    for budget in ("1", "3", "0"):
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-c", script, str(path), budget]
        done = subprocess.run(cmd[:3] + ["--no-python", sys.executable] + cmd[3:], env=_env(), capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        if budget != "0":
            assert sorted(p.name for p in path.glob("checkpoint*")) == [
                "checkpoint.rank00-of-02.pt", "checkpoint.rank01-of-02.pt"
            ]  # fmt: skip
    for layer in (0, 5):
        for name in EXACT:
            a, b = np.load(one / f"layer_{layer:02d}/{name}.npy"), np.load(path / f"layer_{layer:02d}/{name}.npy")
            assert np.array_equal(a, b), f"layer {layer} {name} differs after the resume"


def test_power_sums_move_to_another_shift_exactly_enough():
    x = torch.randn(1000, 3, dtype=torch.float64) * 3 + 1
    a, b = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, 0.0, -0.5])
    sums_a = torch.stack([((x - a) ** p).sum(0) for p in range(1, 5)])
    want = torch.stack([((x - b) ** p).sum(0) for p in range(1, 5)])
    assert torch.allclose(shifted_sums(sums_a, 1000, a, b), want, rtol=1e-10)
