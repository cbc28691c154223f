"""The streaming collection pass against a brute-force pass that keeps every activation."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from nxkit.collection.activations import Activations, CollectError
from nxkit.collection.collect import CollectConfig, collect
from nxkit.collection.corpus import Windows
from nxkit.collection.subject import hook_name

LAYERS = [0, 4]
CFG = dict(layers=LAYERS, top_k=8, n_random=6, per_quantile=2, quantile_levels=[0.5, 0.9],
           quantile_calibration_windows=32, batch_size=16)  # fmt: skip


def brute_force(model, windows, layers):
    """Every activation of the chosen layers, [layer] -> float64 [n_windows, window, d_mlp]."""
    out = {layer: [] for layer in layers}
    with torch.inference_mode():
        for start in range(0, windows.n_windows, 16):
            _, cache = model.run_with_cache(
                windows.tokens[start : start + 16], names_filter=lambda n: n.endswith("mlp.hook_post")
            )
            for layer in layers:
                out[layer].append(cache[hook_name(layer)].double())
    return {layer: torch.cat(v).numpy() for layer, v in out.items()}


@pytest.fixture(scope="module")
def collected(subject, small_windows, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "activations"
    collect(subject, small_windows, path, CollectConfig(**CFG), progress=False)  # compiled reductions
    return Activations(path), brute_force(subject, small_windows, LAYERS)


@pytest.mark.slow
def test_top_windows_match_brute_force(collected, small_windows):
    acts, full = collected
    for layer in LAYERS:
        window_max = full[layer].max(axis=1)  # [n_windows, d_mlp]
        top_windows = np.asarray(acts._array(layer, "top_windows"))
        top_acts = np.asarray(acts._array(layer, "top_acts"))
        expected = -np.sort(-window_max, axis=0)[:8].T  # [d_mlp, 8], strongest first
        got = window_max[top_windows, np.arange(window_max.shape[1])[:, None]]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        # the stored per-token activations are the real ones for that window
        real = full[layer][top_windows, :, np.arange(window_max.shape[1])[:, None]]
        np.testing.assert_allclose(top_acts, real, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bottom_windows_match_brute_force(collected):
    """SmolLM2's MLPs are gated, so the pass keeps each neuron's most negative windows too (bottom_k = top_k)."""
    acts, full = collected
    assert acts.manifest.gated_mlp is True and acts.manifest.config["bottom_k"] == 8 and acts.has_negative
    for layer in LAYERS:
        window_min = full[layer].min(axis=1)  # [n_windows, d_mlp]
        bottom_windows = np.asarray(acts._array(layer, "bottom_windows"))
        expected = np.sort(window_min, axis=0)[:8].T  # most negative first
        got = window_min[bottom_windows, np.arange(window_min.shape[1])[:, None]]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        real = full[layer][bottom_windows, :, np.arange(window_min.shape[1])[:, None]]
        np.testing.assert_allclose(np.asarray(acts._array(layer, "bottom_acts")), real, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_negative_side_record_and_shares(collected):
    acts, full = collected
    x = full[4][:, :, 100]  # [n_windows, window]
    pos, neg = acts.neuron_record(4, 100), acts.side("negative").neuron_record(4, 100)
    assert neg.neuron_id == pos.neuron_id and neg.random_sample_by_quantile is None
    # the negative side is the negated activation: its top windows peak at minus the most negative values
    peaks = [r.max_activation for r in neg.most_positive_activation_records]
    np.testing.assert_allclose(peaks, -np.sort(x.min(axis=1))[:8], rtol=1e-5)
    for a, b in zip(pos.random_sample, neg.random_sample, strict=True):
        assert a.tokens == b.tokens and np.allclose(a.activations, -np.asarray(b.activations))
    assert neg.mean == pytest.approx(-pos.mean) and neg.variance == pytest.approx(pos.variance)
    assert neg.skewness == pytest.approx(-pos.skewness)
    shares = acts.sign_shares(4, 100)
    assert shares.negative_mass_share == pytest.approx(-x[x < 0].sum() / np.abs(x).sum(), rel=1e-4)
    # above the threshold, every token of the corpus counts (not only those of kept windows)
    t = max(np.sort(x.max(axis=1))[-8], -np.sort(x.min(axis=1))[7])
    assert shares.threshold == pytest.approx(t, rel=1e-5)
    above_pos, above_neg = x[x > t].sum(), -x[x < -t].sum()
    if above_pos + above_neg > 0:
        assert shares.negative_tail_share == pytest.approx(above_neg / (above_pos + above_neg), rel=1e-4)
    else:
        assert shares.negative_tail_share is None
    # across the layer both sides carry mass: gated neurons fire both ways
    tails = [acts.sign_shares(4, n).negative_tail_share for n in range(0, 1536, 64)]
    assert 0 < np.mean([t for t in tails if t is not None]) < 1


def test_negative_side_needs_bottom_windows(subject, small_windows, tmp_path):
    path = tmp_path / "activations"
    collect(subject, small_windows, path, CollectConfig(layers=[0], top_k=4, bottom_k=0, n_random=2), progress=False)
    acts = Activations(path)
    assert not acts.has_negative and acts.sign_shares(0, 3).negative_tail_share is None
    with pytest.raises(CollectError, match="kept no most-negative windows.*--sign positive"):
        acts.neuron_record(0, 3, "negative")


@pytest.mark.slow
def test_random_samples_are_real_distinct_and_per_neuron(collected):
    acts, full = collected
    windows = np.asarray(acts._array(4, "random_windows"))
    assert windows.min() >= 0 and all(len(set(row)) == 6 for row in windows)
    real = full[4][windows, :, np.arange(windows.shape[0])[:, None]]
    np.testing.assert_allclose(np.asarray(acts._array(4, "random_acts")), real, rtol=1e-4, atol=1e-4)
    assert len({tuple(sorted(row)) for row in windows}) > windows.shape[0] // 2  # independent per neuron


@pytest.mark.slow
def test_moments_match_numpy(collected):
    acts, full = collected
    for layer in LAYERS:
        x = full[layer].reshape(-1, full[layer].shape[-1])
        mean, var = x.mean(0), x.var(0)
        c = x - mean
        skew = (c**3).mean(0) / var**1.5
        kurt = (c**4).mean(0) / var**2 - 3
        m = np.asarray(acts._array(layer, "moments"))
        np.testing.assert_allclose(m[:, 0], mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(m[:, 1], var, rtol=1e-3, atol=1e-8)
        np.testing.assert_allclose(m[:, 2], skew, rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(m[:, 3], kurt, rtol=1e-2, atol=1e-1)


@pytest.mark.slow
def test_quantile_bands(collected):
    acts, full = collected
    window_max = full[0].max(axis=1)
    bounds = np.asarray(acts._array(0, "quantile_boundaries"))  # [d_mlp, 2]
    expected = np.quantile(window_max[:32], [0.5, 0.9], axis=0).T
    np.testing.assert_allclose(bounds, expected, rtol=1e-4, atol=1e-5)
    band_windows = np.asarray(acts._array(0, "band_windows"))  # [d_mlp, 3, 2]
    edges = np.concatenate([np.full((bounds.shape[0], 1), -np.inf), bounds, np.full((bounds.shape[0], 1), np.inf)], 1)
    filled = 0
    for n in range(0, bounds.shape[0], 97):
        for b in range(3):
            for w in band_windows[n, b]:
                if w < 0:
                    continue
                filled += 1
                assert w >= 32  # bands sample after the calibration windows
                assert edges[n, b] < window_max[w, n] <= edges[n, b + 1] + 1e-6
    assert filled > 0


@pytest.mark.slow
def test_records_read_one_neuron(collected, subject, small_windows):
    acts, full = collected
    rec = acts.neuron_record(4, 100)
    assert rec.neuron_id.layer_index == 4 and rec.neuron_id.neuron_index == 100
    drawn = [int(w) for w in acts._array(4, "random_windows")[100] if w >= 0]
    own = acts.own_windows(4, 100)  # a random window that is also a top or bottom window is left out
    assert len(drawn) == 6 and len(rec.most_positive_activation_records) == 8
    assert len(rec.random_sample) == sum(w not in own for w in drawn)
    maxes = [r.max_activation for r in rec.most_positive_activation_records]
    assert maxes == sorted(maxes, reverse=True)
    first = rec.most_positive_activation_records[0]
    w = int(acts._array(4, "top_windows")[100][0])
    assert first.tokens == [subject.tokenizer.decode([t]) for t in small_windows.tokens[w]]
    assert len(rec.random_sample_by_quantile) == 3 and len(rec.quantile_boundaries) == 2
    with pytest.raises(CollectError, match="layer 7 was not collected"):
        acts.neuron_record(7, 0)
    with pytest.raises(CollectError, match="neuron 1536 is out of range"):
        acts.neuron_record(4, 1536)


def test_bad_settings(subject, small_windows, tmp_path):
    with pytest.raises(CollectError, match="layer 31 is out of range"):
        collect(subject, small_windows, tmp_path / "a", CollectConfig(layers=[31]))
    too_long = Windows(tokens=torch.zeros((1, 9000), dtype=torch.int64), source="x", n_documents=1, n_tokens=9000)
    with pytest.raises(CollectError, match="longer than the model's context of 8192"):
        collect(subject, too_long, tmp_path / "b", CollectConfig(layers=[0]))
    with pytest.raises(CollectError, match="quantile_levels"):
        CollectConfig(quantile_levels=[0.9, 0.5])


# The child is the real `nxkit collect`; it stops itself (SIGSTOP) in the middle of its fifth batch, after
# layer 0 has taken the batch in and before layer 3 has, and the test kills it there: a kill mid-pass at
# a known point, with no polling or sleeping.
_STOPPING_CHILD = """
import os, signal, sys
from nxkit import cli
from nxkit.collection import collect
update = collect._Pass.update
def update_then_stop(self, layer, x):
    update(self, layer, x)
    if self.start == 64 and layer == 0:
        os.kill(os.getpid(), signal.SIGSTOP)
collect._Pass.update = update_then_stop
sys.exit(cli.main(["collect", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_killed_pass_resumes_to_the_same_result(subject, tmp_path):
    """Kill a real `nxkit collect` process mid-batch, resume it, compare with an uninterrupted pass."""
    from nxkit.collection.corpus import make_windows

    run = tmp_path / "killed"
    args = ["--run-dir", str(run), "--corpus", "pydoc", "--max-tokens", str(64 * 160), "--seed", "5",
            "--collect.layers", "0", "3", "--collect.top-k", "8", "--collect.n-random", "6", "--collect.batch-size", "16",
            "--collect.seed", "5", "--collect.checkpoint-seconds", "0", "--collect.no-compile"]  # fmt: skip
    log = tmp_path / "child.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", _STOPPING_CHILD, *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns when the child stops itself (or exits)
        if not os.WIFSTOPPED(status):
            pytest.fail(f"the child exited before its fifth batch: {log.read_text()[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    manifest = run / "activations" / "manifest.json"
    partial = json.loads(manifest.read_text())
    assert partial["status"] == "partial" and partial["done_windows"] == 64  # the last checkpoint, 4 batches

    windows = make_windows(subject.tokenizer, "pydoc", window=64, max_tokens=64 * 160, seed=5)
    cfg = CollectConfig(layers=[0, 3], top_k=8, n_random=6, batch_size=16, seed=5, checkpoint_seconds=0, compile=False)
    collect(subject, windows, run / "activations", cfg, progress=False)
    collect(subject, windows, tmp_path / "straight" / "activations", cfg, progress=False)
    resumed, straight = Activations(run / "activations"), Activations(tmp_path / "straight" / "activations")
    assert resumed.manifest.status == "complete"
    assert not (run / "activations" / "checkpoint.pt").exists()
    for layer in (0, 3):
        for name in ("random_windows", "random_acts", "moments", "mass"):
            np.testing.assert_allclose(
                np.asarray(resumed._array(layer, name)), np.asarray(straight._array(layer, name)), rtol=1e-4, atol=1e-5
            )
        # the same strongest windows on each side: their peaks agree slot by slot (windows whose peaks tie to float
        # precision may come in either order, as the child process and this one round differently)
        for name in ("top_acts", "bottom_acts"):
            peak = (lambda a: a.max(-1)) if name == "top_acts" else (lambda a: a.min(-1))
            np.testing.assert_allclose(
                peak(np.asarray(resumed._array(layer, name))), peak(np.asarray(straight._array(layer, name))),
                rtol=1e-4, atol=1e-5,
            )  # fmt: skip


def test_equal_scores_go_to_the_lower_window_id():
    """KeepBest fed batches in window order keeps the windows of a brute-force sort by (score descending, id
    ascending), with many equal maxima; two of them fed alternate batches (as two ranks are) merge by `best_first` to
    the same."""
    from nxkit.collection.collect import KeepBest, best_first

    gen = torch.Generator().manual_seed(0)
    n_windows, pos, neurons, k = 64, 4, 30, 5
    acts = torch.randint(0, 3, (n_windows, pos, neurons), generator=gen).float()  # many windows share a maximum
    one, ranks = KeepBest(neurons, k, pos, "cpu"), [KeepBest(neurons, k, pos, "cpu") for _ in range(2)]
    for b, start in enumerate(range(0, n_windows, 8)):
        w = torch.arange(start, start + 8)
        for keep in (one, ranks[b % 2]):
            keep.update(acts[w].amax(1), acts[w], w)
    scores, windows, kept_acts = one.ordered()
    for n in range(neurons):
        want = sorted(range(n_windows), key=lambda w: (-acts[w, :, n].max().item(), w))[:k]
        assert windows[n].tolist() == want
    merged = best_first(*(torch.cat([getattr(r, a) for r in ranks], dim=1) for a in ("scores", "windows", "acts")), k)
    for a, b in zip((scores, windows, kept_acts), merged, strict=True):
        assert torch.equal(a, b)
