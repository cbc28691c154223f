"""The `Backend` protocol and what a backend answers; the one background event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..records import Component, Usage


class LLMError(RuntimeError):
    """An LLM backend that cannot be reached, configured or understood."""


class Deferred(Exception):  # noqa: N818 (not an error: a request that waits)
    """A request that waits for its answer from a batch file (`llm.batch`): the neuron asking for it waits for a later
    run. Not an `LLMError`, so that no stage records it as a failure."""


def redact_url(url: str) -> str:
    """`url` with any credentials replaced by `***`: the password (or a lone user name) of `user:key@host`, and the
    values of query parameters that look like keys (`key`, `api_key`, `token`, `secret`, `password`, `sig`)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = parts.query
    if query:
        secret = ("key", "token", "secret", "password", "sig", "auth")
        pairs = [(k, "***" if any(s in k.lower() for s in secret) else v) for k, v in parse_qsl(query, True)]
        query = urlencode(pairs, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the simulator picks its mode from this."""

    chat: bool
    """Chat completions."""
    generated_logprobs: bool
    """Top log-probabilities of generated tokens."""
    prompt_logprobs: bool
    """Log-probabilities at every prompt position (all-at-once simulation)."""
    concurrent: bool = True
    """Many requests in flight help (a server); False for a model in this process, where requests run in turn."""


NEURON_USAGE: ContextVar[Usage | None] = ContextVar("nxkit_neuron_usage", default=None)
"""The usage of the neuron the current task works for (set per neuron by the pipeline), so that traffic is
counted per neuron even with many neurons in flight on one backend."""


def endpoint_usage(*llms) -> dict[str, Usage] | None:
    """The traffic per server of `llms` (each backend counted once, servers shared by two backends summed); None when
    none of them reports one (`Backend.endpoint_usage` is optional)."""
    out: dict[str, Usage] = {}
    for llm in {id(x): x for x in llms if x is not None}.values():
        for url, usage in (getattr(llm, "endpoint_usage", dict)() or {}).items():
            out.setdefault(url, Usage()).add(**usage.as_dict())
    return out or None


def count(usage: Usage, **amounts: int) -> None:
    """Add `amounts` to a backend's counters and to the current neuron's, when a task is working for one."""
    for target in {id(u): u for u in (usage, NEURON_USAGE.get()) if u is not None}.values():
        target.add(**amounts)


@dataclass
class TokenLogprob:
    """One token with its log-probability and the top alternatives at its position."""

    token: str
    logprob: float | None
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class Completion:
    """One generated answer, with per-token log-probabilities when asked for."""

    text: str
    tokens: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    forget: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Drops this answer from the backend's cache (None when nothing cached it): a caller that cannot use the
    answer calls `unusable(answer)`, so that a rerun (`--retry-failed`) asks again instead of replaying it."""


def unusable(answer: Completion) -> None:
    """Tell the backend that `answer` could not be used (unparsable): it is not served from the cache again."""
    if answer.forget is not None:
        answer.forget()


@dataclass
class PromptLogprobs:
    """Per prompt token: its text, start offset in the prompt, and the top next-token log-probabilities there."""

    tokens: list[str]
    offsets: list[int]
    top: list[dict[str, float] | None]


_LOOP: asyncio.AbstractEventLoop | None = None


_LOOP_LOCK = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """nxkit's own event loop, running for the life of the process in a daemon thread."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, daemon=True, name="nxkit-llm").start()
        return _LOOP


def run_sync(coro):
    """Run a coroutine to completion from sync code, also inside Jupyter (whose loop is already running).

    Every call runs on one background event loop, so HTTP clients and their connections outlive a call.
    """
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_sync was called from inside nxkit's event loop; await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # e.g. a KeyboardInterrupt in a notebook: stop the work, not just the wait
        raise


def logprobs_at(lp: PromptLogprobs, offsets: list[int], candidates: list[str]) -> list[dict[str, float] | None]:
    """From a prompt's top log-probabilities: per character offset, those of `candidates` (None off a token start)."""
    index = {o: j for j, o in enumerate(lp.offsets)}
    out: list[dict[str, float] | None] = []
    for o in offsets:
        j = index.get(o)
        top = lp.top[j] if j is not None else None
        out.append(None if top is None else {c: top[c] for c in candidates if c in top})
    return out


@runtime_checkable
class Backend(Protocol):
    """An LLM the explainer and the simulators talk to. Implementations: `OpenAIBackend`, `LocalBackend`.

    Optional: `endpoint_usage() -> dict[str, Usage]`, the traffic per server (a backend on several replicas), which
    the run manifest records under `endpoints`."""

    name: str
    capabilities: Capabilities
    usage: Usage

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        top_logprobs: int = 0,
    ) -> Completion: ...

    async def placeholder_logprobs(
        self, prefix: str, text: str, offsets: list[int], candidates: list[str], top: int = 20
    ) -> list[dict[str, float] | None]: ...

    async def check(self) -> None: ...

    def describe(self) -> Component: ...
