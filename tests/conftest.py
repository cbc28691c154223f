"""Shared fixtures: the real offline subject model and small real collections, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def subject():
    """The offline default subject model (SmolLM2-135M-Instruct) as a TransformerLens bridge."""
    from nxkit.subject import load_subject

    return load_subject(device="cpu")


@pytest.fixture(scope="session")
def small_windows(subject):
    """96 windows of 64 tokens from the default corpus (deterministic)."""
    from nxkit.corpus import make_windows

    return make_windows(subject.tokenizer, "default", window=64, max_tokens=64 * 96, seed=1)


# --- explain / simulate / score (issue 3) ---------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_collection(subject, tmp_path_factory):
    """A finished collection of layers 0 and 5 on 256 fortune windows (~30 s on CPU); returns its directory."""
    from nxkit.collect import CollectConfig, collect
    from nxkit.corpus import make_windows

    windows = make_windows(subject.tokenizer, "fortunes", max_tokens=64 * 256)
    out = tmp_path_factory.mktemp("tiny_run") / "activations"
    collect(subject, windows, out, CollectConfig(layers=[0, 5], quantile_calibration_windows=64), progress=False)
    return out


@pytest.fixture(scope="session")
def local_backend():
    """The offline SmolLM2 as an in-process LLM backend (loads in about a second once converted)."""
    from nxkit.llm import LocalBackend

    return LocalBackend()
