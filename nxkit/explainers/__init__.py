"""Explainers: `make_explainer` gives the compositional search (`search`), the offline model prompted (`local`) or
a model on an OpenAI-compatible server; each writes candidate explanations of one neuron from its record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Explainer
from .llm import LLMExplainer

if TYPE_CHECKING:
    from ..llm.base import Backend
    from .search import SearchConfig

SEARCH = "search"
"""The explainer name of the compositional search (no LLM; its formulas are simulated exactly by default)."""


def make_explainer(
    spec: str = SEARCH, search: SearchConfig | None = None, base_url: str | None = None, **backend_kwargs
) -> Explainer:
    """`search` (compositional search, settings `search`), `local` (the offline SmolLM2 prompted), or a model name on
    an OpenAI-compatible server at `base_url` (`backend_kwargs` go to `llm.make_backend`)."""
    if spec == SEARCH:
        from .search import SearchExplainer

        return SearchExplainer(search)
    from ..llm import make_backend

    return LLMExplainer(make_backend(spec, base_url=base_url, **backend_kwargs))


def as_explainer(explainer: Explainer | Backend) -> Explainer:
    """An explainer as is; a backend (it chats, it does not explain) wrapped in an `LLMExplainer`."""
    return explainer if isinstance(explainer, Explainer) else LLMExplainer(explainer)
