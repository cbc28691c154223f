"""Figures, the inspector and the report: views receive records, never read files."""

from __future__ import annotations
