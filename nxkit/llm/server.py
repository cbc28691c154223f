"""The LLM seam: an OpenAI-compatible backend (any `base_url`) and a local in-process backend.

Both follow the `Backend` protocol (`chat`, prompt log-probabilities, `describe`, `check`) and
declare what they can do in `Capabilities`, so the simulator picks its mode from them and no caller
branches on a backend's class. The remote
backend retries with backoff, bounds concurrency and caches every response on disk; the local one
scores whole prompts in one forward pass and reuses the keys and values of the longest shared prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..records import Component, Usage
from .answers import (  # noqa: F401 (parse_workers_cpu: read by bench/throughput.py from here)
    CACHE_FORMAT,
    CACHE_FORMAT_KEY,
    POOL_MIN_BYTES,
    MalformedResponse,
    as_int,
    parse,
    parse_pool,
    parse_workers_cpu,
)
from .base import (
    Capabilities,
    Completion,
    Deferred,
    LLMError,
    PromptLogprobs,
    TokenLogprob,
    count,
    redact_url,
)
from .cache import ResponseCache

log = logging.getLogger(__name__)


@dataclass
class OpenAIConfig:
    """Settings of an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama)."""

    model: str
    """Model name as the server knows it."""
    base_url: str | None = None
    """Server URL, e.g. http://127.0.0.1:8000/v1; None means $OPENAI_BASE_URL or OpenAI's API."""
    max_concurrency: int = 8
    """Requests in flight at once."""
    max_retries: int = 6
    """Retries of one request on rate limits, 5xx, timeouts and connection errors."""
    timeout: float = 120.0
    """Seconds before one request times out."""
    backoff: float = 1.0
    """First retry delay in seconds; doubles each retry, with jitter."""
    deadline: float = 600.0
    """Seconds one request may take in all, its retries and waits included, before it fails with a named error (each
    attempt also stops after `timeout`, however slowly the server sends its bytes)."""
    cache: bool = True
    """Keep responses on disk so a re-run sends nothing it already sent."""
    cache_max_bytes: int = 4 * 1024**3
    """Bound on the response cache (compressed); the least recently used entries go first."""
    prompt_logprobs: bool | None = None
    """Whether /completions with echo=True returns prompt log-probabilities (vLLM, llama.cpp: yes; OpenAI: no).
    None guesses from base_url: True for any server that is not api.openai.com."""
    parse_workers: int | None = None
    """Processes that decode long answers (echoed prompts), so that the event loop's process is not the limit; None:
    one per core beyond the first (at most 4); 0: decode in this process (less CPU in all, fewer answers a second:
    bench/throughput.py measured 3.9 ms and 207 requests/s against 4.3 ms and 232 with workers, on 2 cores)."""
    transport: str = "auto"
    """The HTTP layer under the `openai` client: `aiohttp` (its C parser reads a long echoed answer in a fraction of
    the CPU time), `httpx` (the client's own), or `auto` (aiohttp when the openai client can use it)."""
    prompt_logprobs_shift: int | None = None
    """0 when the server's echoed top log-probabilities at token i predict token i (OpenAI, vLLM); 1 when they
    predict token i+1 (llama-cpp-python 0.3). None detects it once with a counting probe."""

    def __post_init__(self):
        if not self.model:
            raise LLMError("model must be a non-empty model name")
        if self.transport not in ("auto", "aiohttp", "httpx"):
            raise LLMError(f"transport must be auto, aiohttp or httpx, not {self.transport!r}")
        if self.prompt_logprobs_shift not in (None, 0, 1):
            raise LLMError("prompt_logprobs_shift must be None, 0 or 1")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise LLMError("max_concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0 are required")


VOLATILE_MODEL_FIELDS = ("created", "object", "permission", "permissions")
"""Fields of a /models entry that change when the same model is served again (vLLM's `created` is the start time)."""


def endpoint_urls(base_url: str | list[str] | None) -> list[str | None]:
    """The server URLs of one model: one URL, several replicas (a list, or one string of URLs separated by commas or
    spaces), or `@FILE` (a file of URLs, one per line, `#` comments); [None] for OpenAI's own API."""
    if base_url is None:
        return [None]
    items = [base_url] if isinstance(base_url, str) else list(base_url)
    urls: list[str] = []
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:]).expanduser()
            if not path.is_file():
                raise LLMError(f"no file of server URLs at {path} (from {item!r}); give one URL per line")
            lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
            urls += [ln for ln in lines if ln]
        else:
            urls += [u for u in item.replace(",", " ").split() if u]
    if not urls:
        raise LLMError(f"no server URL in {base_url!r}")
    return list(dict.fromkeys(urls))


@dataclass
class Replica:
    """One server of a model served by several: its URL, what it is doing and what it has answered."""

    url: str | None
    in_flight: int = 0
    """Requests sent to it or waiting for one of its slots."""
    rest_until: float = 0.0
    """time.monotonic() before which no request goes to it (it failed)."""
    fails: int = 0
    """Failures in a row (the rest doubles with each)."""
    usage: Usage = field(default_factory=Usage)
    """Its requests, tokens and retries."""


REST_UNREACHABLE = 30.0
"""Seconds a replica that did not answer the first check rests before it is tried again."""


def _close_clients(loop, clients) -> None:
    """Close a backend's clients on their event loop once the backend is gone or the interpreter exits (aiohttp warns
    of an unclosed pool); waits for it, except on the loop's own thread."""
    import threading

    async def close() -> None:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    if loop.is_closed() or not loop.is_running():
        return
    with contextlib.suppress(Exception):
        if getattr(loop, "_thread_id", None) == threading.get_ident():
            loop.create_task(close())
        else:
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)


class OpenAIBackend:
    """Any OpenAI-compatible endpoint through the `openai` async client; one model on several replicas when
    `base_url` names several (each request goes to the least busy replica that is not resting; one that fails rests,
    and the request goes elsewhere)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        cache_root: str | Path | None = None,
        **settings,
    ):
        urls = endpoint_urls(base_url or os.environ.get("OPENAI_BASE_URL"))
        self.replicas = [Replica(u) for u in urls]
        self.config = OpenAIConfig(model=model, base_url=urls[0], **settings)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self._api_key:
            raise LLMError(
                "no API key: set OPENAI_API_KEY or pass api_key= (a local server such as llama.cpp or vLLM "
                "accepts any dummy key, e.g. api_key='local')"
            )
        self.cache = ResponseCache(cache_root, self.config.cache_max_bytes) if self.config.cache else None
        self.usage = Usage()
        self._per_loop: dict[int, tuple[Any, Any, asyncio.Semaphore]] = {}
        self._checked = False
        self._served: dict[str, Any] = {}
        self._in_flight: dict[str, asyncio.Future] = {}  # requests on their way, by cache key (one event loop)
        self._pause_until = 0.0  # time.monotonic() before which no request is sent (shared backoff)
        self._shift: int | None = self.config.prompt_logprobs_shift
        self._url = redact_url(self.config.base_url or "https://api.openai.com/v1")  # read for every request's key
        self.batch = None
        """A `batch.BatchOut` in batch mode: requests the cache does not hold are written to files, not sent."""
        url = self.config.base_url or "https://api.openai.com/v1"
        guess = "api.openai.com" not in url
        self.capabilities = Capabilities(
            chat=True,
            generated_logprobs=True,
            prompt_logprobs=guess if self.config.prompt_logprobs is None else self.config.prompt_logprobs,
        )

    def __repr__(self) -> str:
        more = f" and {len(self.replicas) - 1} more replicas" if len(self.replicas) > 1 else ""
        return f"OpenAIBackend(model={self.config.model!r}, base_url={self.url!r}{more})"

    @property
    def url(self) -> str:
        """The (first) server's URL as nxkit writes and prints it: any credentials in it (`user:key@`, a `key=`
        query) are replaced by `***`. The cache keys hold it: replicas of one model share their answers."""
        return self._url

    def endpoint_usage(self) -> dict[str, Usage]:
        """Requests, tokens and retries per server (credentials redacted)."""
        return {redact_url(r.url or "https://api.openai.com/v1"): r.usage for r in self.replicas}

    def _client(self, replica: int = 0):
        """One client and semaphore per replica and event loop (an httpx pool cannot cross loops)."""
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        entry = self._per_loop.get(id(loop))
        if entry is None or entry[0] is not loop:
            clients = [
                AsyncOpenAI(
                    api_key=self._api_key,
                    base_url=r.url,
                    max_retries=0,
                    timeout=self.config.timeout,
                    http_client=self._http_client(),
                )  # fmt: skip
                for r in self.replicas
            ]
            entry = (loop, clients, [asyncio.Semaphore(self.config.max_concurrency) for _ in self.replicas])
            self._per_loop = {id(loop): entry}
            weakref.finalize(self, _close_clients, loop, clients)  # when the backend goes, or at exit
        return entry[1][replica], entry[2][replica]

    def _http_client(self):
        """The HTTP client under the `openai` client (None: its own httpx), as `transport` says."""
        if self.config.transport == "httpx":
            return None
        try:
            from openai import DefaultAioHttpClient

            return DefaultAioHttpClient(timeout=self.config.timeout)
        except (ImportError, RuntimeError) as exc:  # an openai without it, or aiohttp missing
            if self.config.transport == "aiohttp":
                raise LLMError(f"transport='aiohttp' needs `pip install aiohttp` and openai >= 1.9x ({exc})") from exc
            return None

    async def _pick(self) -> int:
        """The least busy replica that is not resting (waiting for the first to wake when all are)."""
        while True:
            now = time.monotonic()
            ready = [i for i, r in enumerate(self.replicas) if r.rest_until <= now]
            if ready:
                return min(ready, key=lambda i: self.replicas[i].in_flight)
            await asyncio.sleep(min(r.rest_until for r in self.replicas) - now)

    def _unreachable(self, exc: Exception) -> LLMError:
        return LLMError(
            f"cannot reach the LLM server at {self.url} ({type(exc).__name__}: {exc}). Start the server, or point "
            "nxkit at another one with base_url= (or $OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1"
        )

    async def _models(self, replica: int = 0) -> list[dict]:
        import httpx
        import openai

        client, _ = self._client(replica)
        try:
            response = await client.get("/models", cast_to=httpx.Response)
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc) from exc
        except openai.AuthenticationError as exc:
            raise LLMError(
                f"the server at {self.url} refused the API key (401): check OPENAI_API_KEY or api_key="
            ) from exc
        try:
            data = orjson.loads(response.content)["data"]
            assert isinstance(data, list) and all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data)
        except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
            raise LLMError(
                f"the server at {self.url} answered /models with something that is not a model list "
                f"({response.content[:80]!r}); is base_url an OpenAI-compatible /v1 endpoint?"
            ) from exc
        return data

    async def models(self) -> list[str]:
        """Model names the server lists at /models."""
        return [m["id"] for m in await self._models()]

    async def check(self) -> None:
        """Fail early with a clear message when the server is down or does not serve this model; note what the
        server says of the model (its listing minus the start time) so that the cache never answers for another
        model served under the same name."""
        if self._checked:
            return
        if self.batch is not None:  # nothing is sent: a batch service answers; the shift probe goes in the first file
            self._checked = True
            if self.capabilities.prompt_logprobs and self._shift is None:
                with contextlib.suppress(Deferred):
                    await self.prompt_shift()
            return
        listed, first_error = None, None
        for i, replica in enumerate(self.replicas):
            try:
                got = await self._models(i)
            except LLMError as exc:
                if len(self.replicas) == 1:
                    raise
                first_error = first_error or exc
                replica.rest_until = time.monotonic() + REST_UNREACHABLE
                log.warning("replica %s did not answer (%s); it rests %g s", redact_url(replica.url or ""), exc,
                            REST_UNREACHABLE)  # fmt: skip
                continue
            listed = got if listed is None else listed
        if listed is None:
            raise first_error
        names = [m["id"] for m in listed]
        if names and self.config.model not in names:
            raise LLMError(f"the server at {self.url} does not serve model {self.config.model!r}; it lists: {names}")
        entry = next((m for m in listed if m["id"] == self.config.model), {})
        self._served = {k: v for k, v in entry.items() if k not in VOLATILE_MODEL_FIELDS}
        self._checked = True

    def _request(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        """What the cache key is made of: the endpoint, the server (credentials removed), the model as the server
        lists it, and the request's parameters."""
        request = {"endpoint": endpoint, "base_url": self.url, "model": self.config.model, **params}
        if self._served:
            request["served"] = self._served
        return request

    def _forget(self, endpoint: str, params: dict[str, Any]) -> Callable[[], None] | None:
        if self.cache is None:
            return None
        cache, key = self.cache, ResponseCache.key(self._request(endpoint, params))
        return lambda: cache.discard(key)

    async def _call(self, endpoint: str, params: dict[str, Any], read: tuple, view: dict | None = None):
        """One request's answer as the reader `read` (a name in `answers.READERS` and its arguments) makes it from
        the server's JSON (the small form the kit keeps), from the cache or from the server. `view` names what `read` keeps when it is only part of the answer (the cache key
        then holds it). A response `read` cannot read is retried and never cached; a cache written by an older nxkit
        is not read (`ResponseCache` says so once)."""
        await self.check()
        request = self._request(endpoint, params)
        key = ResponseCache.key(request if view is None else {**request, "view": view})
        if self.cache is not None:
            hit = self.cache.get(key)
            if isinstance(hit, dict) and hit.get(CACHE_FORMAT_KEY) == CACHE_FORMAT:
                count(self.usage, cache_hits=1)
                return hit["value"]
        if self.batch is not None:
            self.batch.add(self.cache, key, read, *self._wire(endpoint, params))
            raise Deferred(f"{endpoint} request {key[:12]} waits for its batch answer")
        waiting = self._in_flight.get(key)
        if waiting is not None:  # the same request is already on its way: share its answer, send nothing
            count(self.usage, cache_hits=1)
            return await asyncio.shield(waiting)
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            value = await self._send(endpoint, params, read)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._in_flight.pop(key, None)
        future.set_result(value)
        if self.cache is not None and self.cache.put(key, {CACHE_FORMAT_KEY: CACHE_FORMAT, "value": value}):
            await asyncio.to_thread(self.cache.flush)
        return value

    def _wire(self, endpoint: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of a request as the server (or a batch file) gets it."""
        return ("/chat/completions" if endpoint == "chat" else "/completions"), {"model": self.config.model, **params}

    async def _wait_out_pause(self) -> None:
        while (wait := self._pause_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    @staticmethod
    def _retry_after(exc: Exception) -> float | None:
        """The server's `Retry-After` (seconds) on an error response, when it sent one."""
        response = getattr(exc, "response", None)
        value = response.headers.get("retry-after") if response is not None else None
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None

    async def _send(self, endpoint: str, params: dict[str, Any], read: tuple):
        """The request itself, retried on what a retry can fix, read into its small form. Backoff is shared: a 429
        (its `Retry-After`, else exponential backoff with jitter) pauses every request of this backend, not just the
        one that got it. The body is read as raw JSON (no client-side model objects); one attempt, waiting for a
        slot excluded, takes at most `timeout` seconds however slowly the server sends its bytes."""
        import httpx

        path, body = self._wire(endpoint, params)
        give_up_at = time.monotonic() + self.config.deadline
        for attempt in range(self.config.max_retries + 1):
            await self._wait_out_pause()
            if time.monotonic() > give_up_at:
                raise LLMError(
                    f"one request to {self.url} took over {self.config.deadline:g} s in all ({attempt} attempts, "
                    "retries and waits included; deadline=): the server is overloaded or stalled"
                )
            i = await self._pick()
            replica = self.replicas[i]
            client, sem = self._client(i)
            try:
                replica.in_flight += 1
                try:
                    async with sem:
                        await self._wait_out_pause()  # a pause that began while this request waited for a slot
                        raw = await asyncio.wait_for(self._post(client, path, body, httpx), self.config.timeout)
                finally:
                    replica.in_flight -= 1
                try:
                    if len(raw) >= POOL_MIN_BYTES and (pool := parse_pool(self.config.parse_workers)) is not None:
                        value, usage = await asyncio.get_running_loop().run_in_executor(pool, parse, read, raw)
                    else:
                        value, usage = parse(read, raw)
                except MalformedResponse:
                    count(self.usage, requests=1, malformed=1)
                    raise
                amounts = {
                    "requests": 1,
                    "prompt_tokens": as_int(usage.get("prompt_tokens")),
                    "completion_tokens": as_int(usage.get("completion_tokens")),
                }
                count(self.usage, **amounts)
                replica.usage.add(**amounts)
                replica.fails = 0
                return value
            except Exception as exc:
                error = self._fatal(exc, last=attempt == self.config.max_retries, attempts=attempt + 1)
                if error is not None:
                    raise error from exc
                delay = self._retry_after(exc)
                count(self.usage, retries=1)
                replica.usage.retries += 1
                if len(self.replicas) > 1:  # this replica rests; the request goes to another at once
                    replica.fails += 1
                    rest = delay if delay is not None else self.config.backoff * 2 ** min(replica.fails - 1, 6)
                    replica.rest_until = time.monotonic() + rest
                    where = redact_url(replica.url or "")
                    log.warning("%s from replica %s; it rests %.1f s", type(exc).__name__, where, rest)
                    continue
                if delay is None:
                    delay = self.config.backoff * 2**attempt * (0.5 + random.random())
                self._pause_until = max(self._pause_until, time.monotonic() + delay)
                log.warning("%s from %s; every request waits %.1f s", type(exc).__name__, self.url, delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    @staticmethod
    async def _post(client, path: str, body: dict, httpx) -> bytes:
        response = await client.post(path, body=body, cast_to=httpx.Response)
        return response.content

    def _fatal(self, exc: Exception, last: bool, attempts: int) -> Exception | None:
        """The error to raise for `exc`, or None when the request should be retried."""
        import openai

        if isinstance(exc, openai.BadRequestError):
            return LLMError(f"the server at {self.url} rejected the request (400): {exc}")
        if isinstance(exc, openai.NotFoundError):
            return LLMError(
                f"the server at {self.url} answered 404 for model {self.config.model!r} ({exc}); "
                f"check the model name and base_url"
            )
        if isinstance(exc, openai.AuthenticationError):
            return LLMError(f"the server at {self.url} refused the API key (401): check OPENAI_API_KEY or api_key=")
        if isinstance(exc, MalformedResponse | asyncio.TimeoutError):
            if not last:
                return None
            what = (
                "answered in a form nxkit cannot read"
                if isinstance(exc, MalformedResponse)
                else (f"did not finish answering within {self.config.timeout:g} s (timeout=)")
            )
            return LLMError(f"giving up after {attempts} attempts: the server at {self.url} {what}: {exc}")
        retryable = (
            openai.RateLimitError,
            openai.InternalServerError,
            openai.APITimeoutError,
            openai.APIConnectionError,
        )
        if isinstance(exc, openai.APIStatusError) and not isinstance(exc, retryable):
            if exc.status_code < 500 or last:
                return LLMError(f"the server at {self.url} answered {exc.status_code}: {exc}")
            return None
        if not isinstance(exc, retryable):
            return exc
        if not last:
            return None
        if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
            return self._unreachable(exc)
        return LLMError(f"giving up after {attempts} attempts at {self.url}: {exc}")

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        top_logprobs: int = 0,
    ) -> Completion:
        """One chat completion; `top_logprobs > 0` also returns per-token top log-probabilities."""
        params: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            params["seed"] = seed
        if top_logprobs:
            params.update(logprobs=True, top_logprobs=top_logprobs)
        answer = await self._call("chat", params, ("chat",))
        tokens = None
        if top_logprobs and answer["tokens"]:
            tokens = [TokenLogprob(t, lp, top) for t, lp, top in answer["tokens"]]
        return Completion(
            text=answer["text"],
            tokens=tokens,
            finish_reason=answer["finish_reason"],
            forget=self._forget("chat", params),
        )

    def _echo_params(self, prompt: str, top: int) -> dict[str, Any]:
        return {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top}

    def _no_echo(self) -> LLMError:
        return LLMError(
            f"the server at {self.url} returned no prompt log-probabilities with echo=True; pass "
            "prompt_logprobs=False to OpenAIBackend, or use SimulateConfig(mode='chat_logprobs')"
        )

    async def prompt_shift(self) -> int:
        """Detect (once) whether echoed log-probabilities at token i predict token i (0) or token i+1 (1).

        A counting prompt is easy to predict: each token's own log-probability is high when aligned,
        and very low when it is really the chance of the token repeating.
        """
        if self._shift is None:
            own = await self._call(
                "completions", self._echo_params(" ".join(str(i) for i in range(1, 40)), 1), ("own",)
            )
            own = [v for v in own if v is not None][4:]
            if not own:
                raise LLMError(f"the server at {self.url} returned no token log-probabilities with echo=True")
            self._shift = 0 if sum(own) / len(own) > -4.0 else 1
            log.info("prompt log-probabilities at %s: shift %d", self.url, self._shift)
        return self._shift

    async def prompt_logprobs(self, prompt: str, top: int = 5) -> PromptLogprobs:
        """Top log-probabilities predicting every prompt token (OpenAI semantics), via /completions with echo=True.
        The whole echo is kept (and cached): for the simulator's hot path use `placeholder_logprobs`."""
        if not self.capabilities.prompt_logprobs:
            raise LLMError(f"{self} does not return prompt log-probabilities; use a chat simulator mode")
        shift = await self.prompt_shift()
        tokens, offsets, tops = await self._call("completions", self._echo_params(prompt, top), ("echo",))
        if shift:
            tops = [None, *tops[:-1]]
        return PromptLogprobs(tokens=list(tokens), offsets=list(offsets), top=tops)

    async def placeholder_logprobs(
        self, prefix: str, text: str, offsets: list[int], candidates: list[str], top: int = 20
    ) -> list[dict[str, float] | None]:
        """Log-probabilities of `candidates` as the next token at each character offset of `text` (after `prefix`).

        Per offset: the candidates among the server's top `top` alternatives there (possibly none), or
        None when no prompt token starts at that offset. Only these few hundred numbers are kept of the
        echoed prompt (and cached, keyed by the request and the offsets and candidates asked for).
        """
        if not self.capabilities.prompt_logprobs:
            raise LLMError(f"{self} does not return prompt log-probabilities; use a chat simulator mode")
        shift = await self.prompt_shift()
        at = [len(prefix) + o for o in offsets]
        view = {"placeholders": at, "candidates": list(candidates), "shift": shift}
        read = ("placeholders", at, list(candidates), shift)
        return await self._call("completions", self._echo_params(prefix + text, top), read, view=view)

    def describe(self) -> Component:
        """What the manifest records of this backend (never the key)."""
        return Component("llm", model=self.config.model, backend=self.name, base_url=self.url)  # replicas: one model


# --- a transformers model in this process ------------------------------------------------------
