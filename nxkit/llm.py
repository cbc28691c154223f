"""The LLM seam: an OpenAI-compatible backend (any `base_url`) and a local in-process backend.

Both follow the `Backend` protocol (`chat`, prompt log-probabilities, `describe`, `check`) and
declare what they can do in `Capabilities`, so the simulator picks its mode from them and no caller
branches on a backend's class. The remote
backend retries with backoff, bounds concurrency and caches every response on disk; the local one
scores whole prompts in one forward pass and reuses the keys and values of the longest shared prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import threading
import time
import zlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .offline import cache_dir
from .records import Component, Usage

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """An LLM backend that cannot be reached, configured or understood."""


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


def count(usage: Usage, **amounts: int) -> None:
    """Add `amounts` to a backend's counters and to the current neuron's, when a task is working for one."""
    for target in {id(u): u for u in (usage, NEURON_USAGE.get()) if u is not None}.values():
        for k, v in amounts.items():
            setattr(target, k, getattr(target, k) + v)


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


# --- on-disk response cache --------------------------------------------------------------------


class ResponseCache:
    """Responses on disk, keyed by a hash of the request (which never holds the API key): one SQLite file holding
    millions of entries, each only what the kit reads back (the answer text, its token log-probabilities, the
    echoed prompt log-probabilities, usage), zlib-compressed; the least recently used entries go first when the
    store outgrows `max_bytes`. Safe across threads and processes (WAL)."""

    def __init__(self, root: str | Path | None = None, max_bytes: int = 4 * 1024**3):
        self.root = Path(root) if root is not None else cache_dir() / "llm"
        self.max_bytes = max_bytes
        self.path = self.root / "responses.sqlite"
        self._db = None
        self._lock = threading.Lock()
        self._size: int | None = None

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _conn(self):
        import sqlite3

        if self._db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB, used REAL)")
            self._db = db
        return self._db

    def get(self, key: str) -> dict | None:
        with self._lock:
            db = self._conn()
            row = db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE responses SET used = ? WHERE key = ?", (time.time(), key))
        try:
            return json.loads(zlib.decompress(row[0]))
        except (zlib.error, json.JSONDecodeError):  # a damaged entry: treat as missing
            return None

    def put(self, key: str, value: dict) -> None:
        blob = zlib.compress(json.dumps(slim_response(value), ensure_ascii=False, separators=(",", ":")).encode(), 6)
        with self._lock:
            db = self._conn()
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, blob, time.time()))
            if self._size is None:
                self._size = db.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM responses").fetchone()[0]
            else:
                self._size += len(blob)
            if self._size > self.max_bytes:
                self._trim(db)

    def _trim(self, db) -> None:
        """Drop the least recently used entries down to 90% of `max_bytes`."""
        target, freed = self._size - int(0.9 * self.max_bytes), 0
        old = []
        for key, size in db.execute("SELECT key, LENGTH(value) FROM responses ORDER BY used"):
            if freed >= target:
                break
            old.append((key,))
            freed += size
        db.executemany("DELETE FROM responses WHERE key = ?", old)
        self._size -= freed
        log.info("response cache over %d bytes: dropped %d least recently used entries", self.max_bytes, len(old))

    def size_bytes(self) -> int:
        """Bytes the entries take (compressed)."""
        with self._lock:
            return self._conn().execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM responses").fetchone()[0]

    def __len__(self) -> int:
        with self._lock:
            return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def slim_response(data: dict) -> dict:
    """What the kit reads back from a chat or completions response: the first choice's text, finish reason and
    log-probabilities (token, log-probability, top alternatives; echoed prompt log-probabilities), and usage."""
    choice = (data.get("choices") or [{}])[0]
    out_choice: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
    if "message" in choice:
        out_choice["message"] = {"content": (choice.get("message") or {}).get("content")}
    if "text" in choice:
        out_choice["text"] = choice.get("text")
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and lp.get("content") is not None:  # chat: per generated token
        out_choice["logprobs"] = {
            "content": [
                {
                    "token": t.get("token"),
                    "logprob": t.get("logprob"),
                    "top_logprobs": [
                        {"token": a.get("token"), "logprob": a.get("logprob")} for a in t.get("top_logprobs") or []
                    ],
                }
                for t in lp["content"]
            ]
        }
    elif isinstance(lp, dict):  # completions with echo: the prompt's tokens
        out_choice["logprobs"] = {k: lp.get(k) for k in ("tokens", "text_offset", "top_logprobs", "token_logprobs")}
    usage = data.get("usage") or {}
    return {
        "choices": [out_choice],
        "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage},
    }


# --- OpenAI-compatible servers -----------------------------------------------------------------


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
    cache: bool = True
    """Keep responses on disk so a re-run sends nothing it already sent."""
    cache_max_bytes: int = 4 * 1024**3
    """Bound on the response cache (compressed); the least recently used entries go first."""
    prompt_logprobs: bool | None = None
    """Whether /completions with echo=True returns prompt log-probabilities (vLLM, llama.cpp: yes; OpenAI: no).
    None guesses from base_url: True for any server that is not api.openai.com."""
    prompt_logprobs_shift: int | None = None
    """0 when the server's echoed top log-probabilities at token i predict token i (OpenAI, vLLM); 1 when they
    predict token i+1 (llama-cpp-python 0.3). None detects it once with a counting probe."""

    def __post_init__(self):
        if not self.model:
            raise LLMError("model must be a non-empty model name")
        if self.prompt_logprobs_shift not in (None, 0, 1):
            raise LLMError("prompt_logprobs_shift must be None, 0 or 1")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise LLMError("max_concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0 are required")


class OpenAIBackend:
    """Any OpenAI-compatible endpoint through the `openai` async client."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        cache_root: str | Path | None = None,
        **settings,
    ):
        self.config = OpenAIConfig(model=model, base_url=base_url or os.environ.get("OPENAI_BASE_URL"), **settings)
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
        self._pause_until = 0.0  # time.monotonic() before which no request is sent (shared backoff)
        self._shift: int | None = self.config.prompt_logprobs_shift
        url = self.config.base_url or "https://api.openai.com/v1"
        guess = "api.openai.com" not in url
        self.capabilities = Capabilities(
            chat=True,
            generated_logprobs=True,
            prompt_logprobs=guess if self.config.prompt_logprobs is None else self.config.prompt_logprobs,
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.config.model!r}, base_url={self.config.base_url!r})"

    @property
    def url(self) -> str:
        return self.config.base_url or "https://api.openai.com/v1"

    def _client(self):
        """One client and semaphore per event loop (an httpx pool cannot cross loops)."""
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        entry = self._per_loop.get(id(loop))
        if entry is None or entry[0] is not loop:
            client = AsyncOpenAI(
                api_key=self._api_key, base_url=self.config.base_url, max_retries=0, timeout=self.config.timeout
            )
            entry = (loop, client, asyncio.Semaphore(self.config.max_concurrency))
            self._per_loop = {id(loop): entry}
        return entry[1], entry[2]

    def _unreachable(self, exc: Exception) -> LLMError:
        return LLMError(
            f"cannot reach the LLM server at {self.url} ({type(exc).__name__}: {exc}). Start the server, or point "
            "nxkit at another one with base_url= (or $OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1"
        )

    async def models(self) -> list[str]:
        """Model names the server lists at /models."""
        import openai

        client, _ = self._client()
        try:
            page = await client.models.list()
        except openai.APIConnectionError as exc:
            raise self._unreachable(exc) from exc
        except openai.AuthenticationError as exc:
            raise LLMError(
                f"the server at {self.url} refused the API key (401): check OPENAI_API_KEY or api_key="
            ) from exc
        return [m.id for m in page.data]

    async def check(self) -> None:
        """Fail early with a clear message when the server is down or does not serve this model."""
        if self._checked:
            return
        names = await self.models()
        if names and self.config.model not in names:
            raise LLMError(f"the server at {self.url} does not serve model {self.config.model!r}; it lists: {names}")
        self._checked = True

    async def _call(self, endpoint: str, params: dict[str, Any]) -> dict:
        """Send one request (or serve it from the cache) with retries; returns the response as a dict."""
        request = {"endpoint": endpoint, "base_url": self.url, "model": self.config.model, **params}
        key = ResponseCache.key(request)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            count(self.usage, cache_hits=1)
            return hit
        await self.check()
        data = await self._send(endpoint, params)
        usage = data.get("usage") or {}
        count(
            self.usage,
            requests=1,
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
        )
        if self.cache is not None:
            self.cache.put(key, data)
        return data

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

    async def _send(self, endpoint: str, params: dict[str, Any]) -> dict:
        """The request itself, retried on what a retry can fix. Backoff is shared: a 429 (its `Retry-After`, else
        exponential backoff with jitter) pauses every request of this backend, not just the one that got it."""
        client, sem = self._client()
        create = client.chat.completions.create if endpoint == "chat" else client.completions.create
        for attempt in range(self.config.max_retries + 1):
            await self._wait_out_pause()
            try:
                async with sem:
                    await self._wait_out_pause()  # a pause that began while this request waited for a slot
                    resp = await create(model=self.config.model, **params)
                return resp.model_dump()
            except Exception as exc:
                error = self._fatal(exc, last=attempt == self.config.max_retries, attempts=attempt + 1)
                if error is not None:
                    raise error from exc
                delay = self._retry_after(exc)
                if delay is None:
                    delay = self.config.backoff * 2**attempt * (0.5 + random.random())
                self._pause_until = max(self._pause_until, time.monotonic() + delay)
                count(self.usage, retries=1)
                log.warning("%s from %s; every request waits %.1f s", type(exc).__name__, self.url, delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

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
        data = await self._call("chat", params)
        choice = data["choices"][0]
        tokens = None
        if top_logprobs and (lp := choice.get("logprobs")) and lp.get("content"):
            tokens = [
                TokenLogprob(
                    t["token"], t.get("logprob"), {a["token"]: a["logprob"] for a in t.get("top_logprobs") or []}
                )
                for t in lp["content"]
            ]
        return Completion(
            text=choice["message"].get("content") or "", tokens=tokens, finish_reason=choice.get("finish_reason")
        )

    async def _echo(self, prompt: str, top: int) -> dict:
        data = await self._call(
            "completions", {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top}
        )
        lp = data["choices"][0].get("logprobs") or {}
        if not lp.get("tokens") or lp.get("text_offset") is None or lp.get("top_logprobs") is None:
            raise LLMError(
                f"the server at {self.url} returned no prompt log-probabilities with echo=True; pass "
                "prompt_logprobs=False to OpenAIBackend, or use SimulateConfig(mode='chat_logprobs')"
            )
        return lp

    async def prompt_shift(self) -> int:
        """Detect (once) whether echoed log-probabilities at token i predict token i (0) or token i+1 (1).

        A counting prompt is easy to predict: each token's own log-probability is high when aligned,
        and very low when it is really the chance of the token repeating.
        """
        if self._shift is None:
            lp = await self._echo(" ".join(str(i) for i in range(1, 40)), 1)
            own = [v for v in lp.get("token_logprobs") or [] if v is not None][4:]
            if not own:
                raise LLMError(f"the server at {self.url} returned no token log-probabilities with echo=True")
            self._shift = 0 if sum(own) / len(own) > -4.0 else 1
            log.info("prompt log-probabilities at %s: shift %d", self.url, self._shift)
        return self._shift

    async def prompt_logprobs(self, prompt: str, top: int = 5) -> PromptLogprobs:
        """Top log-probabilities predicting every prompt token (OpenAI semantics), via /completions with echo=True."""
        if not self.capabilities.prompt_logprobs:
            raise LLMError(f"{self} does not return prompt log-probabilities; use a chat simulator mode")
        shift = await self.prompt_shift()
        lp = await self._echo(prompt, top)
        tops = list(lp["top_logprobs"])
        if shift:
            tops = [None, *tops[:-1]]
        return PromptLogprobs(tokens=list(lp["tokens"]), offsets=list(lp["text_offset"]), top=tops)

    async def placeholder_logprobs(
        self, prefix: str, text: str, offsets: list[int], candidates: list[str], top: int = 20
    ) -> list[dict[str, float] | None]:
        """Log-probabilities of `candidates` as the next token at each character offset of `text` (after `prefix`).

        Per offset: the candidates among the server's top `top` alternatives there (possibly none), or
        None when no prompt token starts at that offset.
        """
        lp = await self.prompt_logprobs(prefix + text, top=top)
        return logprobs_at(lp, [len(prefix) + o for o in offsets], candidates)

    def describe(self) -> Component:
        """What the manifest records of this backend (never the key)."""
        return Component("llm", model=self.config.model, backend=self.name, base_url=self.url)


def logprobs_at(lp: PromptLogprobs, offsets: list[int], candidates: list[str]) -> list[dict[str, float] | None]:
    """From a prompt's top log-probabilities: per character offset, those of `candidates` (None off a token start)."""
    index = {o: j for j, o in enumerate(lp.offsets)}
    out: list[dict[str, float] | None] = []
    for o in offsets:
        j = index.get(o)
        top = lp.top[j] if j is not None else None
        out.append(None if top is None else {c: top[c] for c in candidates if c in top})
    return out


# --- a transformers model in this process ------------------------------------------------------


class LocalBackend:
    """A Hugging Face causal LM in process: full next-token distributions, prefix key/value reuse.

    Default: the offline SmolLM2-135M-Instruct, a smoke-level explainer and simulator.
    """

    name = "local"
    capabilities = Capabilities(chat=True, generated_logprobs=True, prompt_logprobs=True, concurrent=False)

    def __init__(self, model=None, tokenizer=None, reuse_prefix: bool = True):
        self.default_model = model is None
        if model is None:
            from .offline import load_offline_hf

            model, tokenizer = load_offline_hf()
        self.model, self.tokenizer = model, tokenizer
        self.model.eval()
        self.reuse_prefix = reuse_prefix
        self.usage = Usage()
        self._kv = None
        self._kv_ids: list[int] = []
        self._prefix: tuple[str, list[int]] = ("", [])

    def __repr__(self) -> str:
        return f"LocalBackend({type(self.model).__name__}, reuse_prefix={self.reuse_prefix})"

    @property
    def device(self):
        return next(self.model.parameters()).device

    def ids_and_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids and each token's start offset in `text` (no special tokens added)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [a for a, _ in enc["offset_mapping"]]

    @torch.no_grad()
    def next_token_logprobs(self, prefix: list[int], continuation: list[int], positions: list[int]) -> torch.Tensor:
        """Log-probabilities of the token at each position of `continuation`, given all before it.

        The keys and values of the longest prefix shared with the previous call are reused
        (when `reuse_prefix`), so windows scored after the same few-shot prefix and explanation
        only pay for their own tokens. Returns a [len(positions), vocab] tensor.
        """
        from transformers import DynamicCache

        if not continuation or any(not 1 <= p < len(continuation) for p in positions):
            raise ValueError("positions must index the continuation after its first token")
        if not self.reuse_prefix:
            ids = torch.tensor([prefix + continuation], device=self.device)
            logits = self.model(ids).logits[0, len(prefix) :]
            count(self.usage, requests=1, prompt_tokens=ids.shape[1])
            return torch.log_softmax(logits[[p - 1 for p in positions]].float(), dim=-1)
        shared = 0
        for a, b in zip(self._kv_ids, prefix, strict=False):
            if a != b:
                break
            shared += 1
        if self._kv is None or shared == 0:
            self._kv, self._kv_ids, shared = DynamicCache(config=self.model.config), [], 0
        if len(self._kv_ids) > shared:
            self._kv.crop(-(len(self._kv_ids) - shared))  # negative: drop that many (old and new transformers)
            self._kv_ids = self._kv_ids[:shared]
        rest = prefix[shared:]
        if rest:
            self.model(torch.tensor([rest], device=self.device), past_key_values=self._kv, use_cache=True)
            self._kv_ids = list(prefix)
        out = self.model(torch.tensor([continuation], device=self.device), past_key_values=self._kv, use_cache=True)
        self._kv.crop(-len(continuation))  # back to the prefix, ready for the next window
        count(self.usage, requests=1, prompt_tokens=len(rest) + len(continuation), reused_prompt_tokens=shared)
        return torch.log_softmax(out.logits[0, [p - 1 for p in positions]].float(), dim=-1)

    async def check(self) -> None:
        """Nothing to reach: the model is in this process."""

    def describe(self) -> Component:
        """What the manifest records of this backend."""
        model = "SmolLM2-135M-Instruct (offline default)" if self.default_model else type(self.model).__name__
        return Component("llm", model=model, backend=self.name, smoke_level=self.default_model)

    async def placeholder_logprobs(
        self, prefix: str, text: str, offsets: list[int], candidates: list[str], top: int = 20
    ) -> list[dict[str, float] | None]:
        """Exact log-probabilities of every candidate as the next token at each offset of `text` (after `prefix`).

        One forward pass over `text`, reusing the keys and values of `prefix`; None at every offset when a
        placeholder merged with its neighbour in tokenisation (`top` is not needed: nothing is truncated).
        """
        if self._prefix[0] != prefix:
            self._prefix = (prefix, self.ids_and_offsets(prefix)[0])
        ids, starts = self.ids_and_offsets(text)
        index = {o: j for j, o in enumerate(starts)}
        if any(o not in index for o in offsets):
            return [None] * len(offsets)
        cand_ids = []
        for c in candidates:
            piece = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if len(piece) != 1:
                raise LLMError(
                    f"the local model's tokenizer splits {c!r} into {len(piece)} tokens; candidates must be one"
                )
            cand_ids.append(piece[0])
        logprobs = self.next_token_logprobs(self._prefix[1], ids, [index[o] for o in offsets])[:, cand_ids]
        return [dict(zip(candidates, row, strict=True)) for row in logprobs.tolist()]

    async def prompt_logprobs(self, prompt: str, top: int = 5) -> PromptLogprobs:
        """Top log-probabilities at every prompt position (the same shape the server path returns)."""
        ids, offsets = self.ids_and_offsets(prompt)
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0].float()
        count(self.usage, requests=1, prompt_tokens=len(ids))
        lp = torch.log_softmax(logits, dim=-1)
        vals, idx = lp.topk(top, dim=-1)
        tops: list[dict[str, float] | None] = [None]
        for i in range(len(ids) - 1):
            tops.append({self.tokenizer.decode([int(t)]): float(v) for v, t in zip(vals[i], idx[i], strict=True)})
        return PromptLogprobs(tokens=[self.tokenizer.decode([i]) for i in ids], offsets=offsets, top=tops)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        top_logprobs: int = 0,
    ) -> Completion:
        """Generate with the chat template; sampling is seeded so the same call gives the same text."""
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        input_ids = ids["input_ids"].to(self.device)
        if seed is not None:
            torch.manual_seed(seed)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
        with torch.no_grad():
            out = self.model.generate(
                input_ids,
                attention_mask=ids["attention_mask"].to(self.device),
                max_new_tokens=max_tokens,
                return_dict_in_generate=True,
                output_logits=bool(top_logprobs),
                pad_token_id=self.tokenizer.eos_token_id,
                **kwargs,
            )
        new = out.sequences[0, input_ids.shape[1] :].tolist()
        eos = self.tokenizer.eos_token_id
        finish = "length"
        if eos in new:
            new, finish = new[: new.index(eos)], "stop"
        count(self.usage, requests=1, prompt_tokens=input_ids.shape[1], completion_tokens=len(new))
        tokens = None
        if top_logprobs:
            tokens = []
            for step, tok in enumerate(new):
                lp = torch.log_softmax(out.logits[step][0].float(), dim=-1)
                vals, idx = lp.topk(top_logprobs)
                top = {self.tokenizer.decode([int(t)]): float(v) for v, t in zip(vals, idx, strict=True)}
                tokens.append(TokenLogprob(self.tokenizer.decode([tok]), float(lp[tok]), top))
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True), tokens=tokens, finish_reason=finish
        )


@runtime_checkable
class Backend(Protocol):
    """An LLM the explainer and the simulators talk to. Implementations: `OpenAIBackend`, `LocalBackend`."""

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


def make_backend(spec: str = "local", base_url: str | None = None, api_key: str | None = None, **kwargs) -> Backend:
    """`local` for the in-process SmolLM2, else a model name on an OpenAI-compatible server.

    Every spec takes the same arguments; `base_url` and `api_key` mean nothing to `local` and are ignored there.
    """
    if spec == "local":
        if base_url:
            log.info("base_url %s is ignored: the local backend runs in this process", base_url)
        return LocalBackend(**kwargs)
    return OpenAIBackend(spec, base_url=base_url, api_key=api_key, **kwargs)
