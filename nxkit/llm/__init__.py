"""LLM backends: `make_backend` (the offline model in process, or an OpenAI-compatible server)."""

from __future__ import annotations

import logging

from .base import Backend

log = logging.getLogger(__name__)


def make_backend(spec: str = "local", base_url: str | None = None, api_key: str | None = None, **kwargs) -> Backend:
    """`local` for the in-process SmolLM2, else a model name on an OpenAI-compatible server.

    Every spec takes the same arguments; `base_url` and `api_key` mean nothing to `local` and are ignored there.
    """
    if spec == "local":
        from .local import LocalBackend  # torch and transformers load only when the local model is asked for

        ignored = {k: kwargs.pop(k) for k in ("max_concurrency",) if k in kwargs}
        if base_url or ignored:
            log.info("base_url %s and %s are ignored: the local backend runs in this process", base_url, ignored)
        return LocalBackend(**kwargs)
    from .server import OpenAIBackend

    return OpenAIBackend(spec, base_url=base_url, api_key=api_key, **kwargs)
