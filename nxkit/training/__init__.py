"""Synthetic neurons with known behaviour, and training nxkit-sim on them."""

from __future__ import annotations
