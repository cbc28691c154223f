"""The subject model, the corpus windows, the streaming pass and probing."""

from __future__ import annotations
