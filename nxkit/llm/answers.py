"""Reading an OpenAI-compatible server's JSON answer into the small form the kit keeps (and caches).

Every reader takes the decoded JSON of a response and returns
plain lists and dicts, or raises `MalformedResponse` naming what is missing, so a wrong shape is never cached and
never surfaces as a `KeyError` deep in a stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .base import LLMError, PromptLogprobs, logprobs_at

CACHE_FORMAT_KEY = "nxkit_answer"
CACHE_FORMAT = 2
"""Cached entries are `{CACHE_FORMAT_KEY: CACHE_FORMAT, "value": small form}`."""


class MalformedResponse(LLMError):
    """A 200 answer that is not the response asked for (not JSON, or the wrong shape)."""


def _choice(data: Any) -> dict:
    if not isinstance(data, dict):
        raise MalformedResponse(f"the answer is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("the answer has no `choices` list with an object in it")
    return choices[0]


def _number(value: Any, what: str) -> float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise MalformedResponse(f"{what} is {value!r}, not a number")


def read_chat(data: Any) -> dict:
    """A chat completion's answer: `{"text", "finish_reason", "tokens"}`, tokens as `[token, logprob, {alt: lp}]`
    (None without log-probabilities)."""
    choice = _choice(data)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise MalformedResponse("the chat answer's first choice has no `message` object")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise MalformedResponse(f"the message content is a {type(text).__name__}, not text")
    tokens = None
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and lp.get("content"):
        content = lp["content"]
        if not isinstance(content, list):
            raise MalformedResponse("`logprobs.content` is not a list")
        tokens = []
        for t in content:
            if not isinstance(t, dict) or not isinstance(t.get("token"), str):
                raise MalformedResponse(f"a generated token's log-probabilities are {str(t)[:80]!r}")
            alts = t.get("top_logprobs") or []
            if not isinstance(alts, list) or not all(isinstance(a, dict) and "token" in a for a in alts):
                raise MalformedResponse("`top_logprobs` of a generated token is not a list of {token, logprob}")
            tokens.append(
                [t["token"], _number(t.get("logprob"), "a logprob"), {a["token"]: a.get("logprob") for a in alts}]
            )
    finish = choice.get("finish_reason")
    return {"text": text or "", "finish_reason": finish if isinstance(finish, str) else None, "tokens": tokens}


def read_echo(data: Any) -> tuple[list[str], list[int], list[dict[str, float] | None]]:
    """A completion with `echo=True`: every prompt token, its start offset, and its top log-probabilities."""
    lp = _choice(data).get("logprobs")
    if (
        not isinstance(lp, dict)
        or not lp.get("tokens")
        or lp.get("text_offset") is None
        or lp.get("top_logprobs") is None
    ):
        raise MalformedResponse(
            "the completion has no prompt log-probabilities (`logprobs.tokens`, `text_offset`, `top_logprobs`)"
        )
    tokens, offsets, tops = lp["tokens"], lp["text_offset"], lp["top_logprobs"]
    if not (isinstance(tokens, list) and isinstance(offsets, list) and isinstance(tops, list)):
        raise MalformedResponse("`logprobs.tokens`, `text_offset` and `top_logprobs` must be lists")
    if not len(tokens) == len(offsets) == len(tops):
        raise MalformedResponse(
            f"{len(tokens)} echoed tokens, {len(offsets)} offsets and {len(tops)} top log-probabilities: "
            "a truncated or inconsistent answer"
        )
    if not all(isinstance(o, int) for o in offsets) or not all(t is None or isinstance(t, dict) for t in tops):
        raise MalformedResponse("echoed offsets must be integers and top log-probabilities objects (or null)")
    return tokens, offsets, tops


def read_own_logprobs(data: Any) -> list[float | None]:
    """A completion with `echo=True`: each prompt token's own log-probability."""
    lp = _choice(data).get("logprobs")
    own = lp.get("token_logprobs") if isinstance(lp, dict) else None
    if not isinstance(own, list):
        raise MalformedResponse("the completion has no `logprobs.token_logprobs` list")
    return [_number(v, "a token's logprob") for v in own]


def as_int(value: Any) -> int:
    """A usage count as an integer (0 when the server left it out or sent something else)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_placeholders(data: Any, at: list[int], candidates: list[str], shift: int) -> list[dict[str, float] | None]:
    """A completion with `echo=True`, kept only at the prompt offsets `at`: the log-probabilities of `candidates`
    there (None where no token starts). `shift` 1: the server's entry i predicts token i+1 (llama-cpp-python)."""
    tokens, starts, tops = read_echo(data)
    if shift:
        tops = [None, *tops[:-1]]
    return logprobs_at(PromptLogprobs(tokens, starts, tops), at, candidates)


READERS = {"chat": read_chat, "echo": read_echo, "own": read_own_logprobs, "placeholders": read_placeholders}
"""What `parse` can read an answer into, by name (a name and plain arguments travel to a parsing worker)."""


def read_answer(reader: tuple | list, data: Any) -> tuple[Any, dict]:
    """Read one decoded answer with `READERS[reader[0]](data, *reader[1:])`: (small form, usage); raises
    `MalformedResponse` for anything it cannot read (also an answer imported from a batch file)."""
    if not reader or reader[0] not in READERS:
        raise MalformedResponse(f"no reader {reader!r}: this answer was noted by another nxkit")
    usage = data.get("usage") if isinstance(data, dict) else None
    return READERS[reader[0]](data, *reader[1:]), usage if isinstance(usage, dict) else {}


def parse(reader: tuple, raw: bytes) -> tuple[Any, dict]:
    """Decode one answer and read it with `READERS[reader[0]](data, *reader[1:])`: (small form, usage). Runs in the
    calling process or in a parsing worker; raises `MalformedResponse` for anything it cannot read."""
    try:
        value, usage = read_answer(reader, orjson.loads(raw))
    except (orjson.JSONDecodeError, MalformedResponse) as exc:
        raise MalformedResponse(
            f"{len(raw):,} bytes that are not the answer asked for ({type(exc).__name__}: {exc}); they begin "
            f"{raw[:60]!r}"
        ) from None
    return value, usage


def watch_parent(parent: int) -> None:
    """A parsing worker's initializer: exit as soon as the process that started it is gone (killed, however), so that
    no worker outlives its run."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="nxkit-parent-watch").start()


POOL_MIN_BYTES = 32 * 1024
"""Answers at least this long (an echoed prompt with its log-probabilities) are decoded in a parsing worker."""
_POOL: tuple[int, Any] | None = None


def parse_pool(workers: int | None):
    """The parsing workers this process shares (started on first use, `spawn`ed: this process has threads); None
    when there is no core to spare or `workers` is 0. `workers` None: one per core beyond the first, at most 4."""
    global _POOL
    n = max(0, min(4, (os.cpu_count() or 1) - 1)) if workers is None else workers
    if n == 0:
        return None
    if _POOL is None or _POOL[0] != n:
        import concurrent.futures
        import multiprocessing

        if _POOL is not None:
            _POOL[1].shutdown(wait=False)
        pool = concurrent.futures.ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn"), initializer=watch_parent, initargs=(os.getpid(),)
        )
        _POOL = (n, pool)
    return _POOL[1]


def parse_workers_cpu() -> float:
    """CPU seconds the parsing workers of this process have used (read from /proc; 0 where it cannot be read)."""
    if _POOL is None:
        return 0.0
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in list(_POOL[1]._processes or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total
