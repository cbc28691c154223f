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
