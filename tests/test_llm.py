"""The LLM seam: errors users see, retries, the response cache, and the local backend's prefix reuse.

Transport behaviour (429, 400, 5xx) is checked against a scripted HTTP server on loopback, since a
real server cannot be made to rate-limit on demand; the real llama.cpp server is in test_server.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from nxkit.llm.base import LLMError, run_sync
from nxkit.llm.local import LocalBackend
from nxkit.llm.server import OpenAIBackend


def _chat_body(text: str) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


class ScriptedServer:
    """A loopback server answering /v1/models and /v1/chat/completions with scripted status codes."""

    def __init__(self, statuses: list[int]):
        self.statuses, self.calls, self.auth = list(statuses), 0, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(
                    200, {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "t"}]}
                )

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.calls += 1
                owner.auth.append(self.headers.get("Authorization"))
                code = owner.statuses.pop(0) if owner.statuses else 200
                if code == 200:
                    self._send(200, _chat_body("hello"))
                else:
                    self._send(code, {"error": {"message": f"scripted {code}", "type": "x", "code": code}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def scripted():
    servers = []

    def make(statuses):
        servers.append(ScriptedServer(statuses))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def backend(url, tmp_path, **kw):
    return OpenAIBackend(
        "m", base_url=url, api_key="sk-secret-test-key", cache_root=tmp_path / "cache", backoff=0.01, **kw
    )


MSG = [{"role": "user", "content": "hi"}]


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMError, match="set OPENAI_API_KEY or pass api_key="):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")


def test_unreachable_server_names_the_url(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = backend(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=0)
    with pytest.raises(LLMError, match=rf"127\.0\.0\.1:{port}.*base_url="):
        run_sync(b.chat(MSG))


def test_unknown_model_lists_served_models(scripted, tmp_path):
    server = scripted([])
    b = OpenAIBackend("no-such-model", base_url=server.url, api_key="k", cache_root=tmp_path)
    with pytest.raises(LLMError, match=r"does not serve model 'no-such-model'.*\['m'\]"):
        run_sync(b.chat(MSG))


def test_retries_rate_limits_and_server_errors_then_caches(scripted, tmp_path):
    server = scripted([429, 503, 200])
    b = backend(server.url, tmp_path)
    assert run_sync(b.chat(MSG)).text == "hello"
    assert server.calls == 3
    assert b.usage.requests == 1 and b.usage.prompt_tokens == 3 and b.usage.completion_tokens == 1
    # the same request again is served from disk: nothing is sent
    assert run_sync(b.chat(MSG)).text == "hello"
    assert server.calls == 3 and b.usage.cache_hits == 1
    # the key went to the server, never to disk
    assert server.auth[0] == "Bearer sk-secret-test-key"
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            assert b"sk-secret-test-key" not in f.read_bytes()
    import sqlite3
    import zlib

    with sqlite3.connect(tmp_path / "cache" / "responses.sqlite") as db:  # the entries themselves, decompressed
        entries = [zlib.decompress(v) for (v,) in db.execute("SELECT value FROM responses")]
    assert entries and all(b"sk-secret-test-key" not in e for e in entries)


def test_bad_request_is_never_retried(scripted, tmp_path):
    server = scripted([400, 200])
    b = backend(server.url, tmp_path)
    with pytest.raises(LLMError, match="400"):
        run_sync(b.chat(MSG))
    assert server.calls == 1


def test_gives_up_after_max_retries(scripted, tmp_path):
    server = scripted([500] * 10)
    b = backend(server.url, tmp_path, max_retries=2)
    with pytest.raises(LLMError, match="giving up after 3 attempts"):
        run_sync(b.chat(MSG))
    assert server.calls == 3


def test_run_sync_works_inside_a_running_loop(scripted, tmp_path):
    server = scripted([])
    b = backend(server.url, tmp_path)

    async def notebook_cell():  # Jupyter runs cells inside a running event loop
        return run_sync(b.chat(MSG))

    assert asyncio.run(notebook_cell()).text == "hello"


@pytest.mark.slow
def test_local_prefix_reuse_matches_full_prompt(local_backend: LocalBackend):
    tok = local_backend.tokenizer
    prefix = tok("A shared prefix of a few words, used twice.", add_special_tokens=False)["input_ids"]
    windows = [tok(t, add_special_tokens=False)["input_ids"] for t in (" one two three four", " five six seven")]
    local_backend.reuse_prefix = True
    try:
        reused = [local_backend.next_token_logprobs(prefix, w, [1, len(w) - 1]) for w in windows]
        before = local_backend.usage.reused_prompt_tokens
        again = local_backend.next_token_logprobs(prefix, windows[0], [1, len(windows[0]) - 1])
        assert local_backend.usage.reused_prompt_tokens - before == len(prefix)
        local_backend.reuse_prefix = False
        full = [local_backend.next_token_logprobs(prefix, w, [1, len(w) - 1]) for w in windows]
    finally:
        local_backend.reuse_prefix = True
    for a, b in zip(reused, full, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(again, full[0], atol=1e-4)


@pytest.mark.slow
def test_local_chat_is_seeded_and_returns_logprobs(local_backend: LocalBackend):
    a = run_sync(local_backend.chat(MSG, max_tokens=8, temperature=1.0, seed=3, top_logprobs=3))
    b = run_sync(local_backend.chat(MSG, max_tokens=8, temperature=1.0, seed=3))
    assert a.text == b.text and a.text
    assert a.tokens and all(len(t.top) == 3 and t.logprob <= 0 for t in a.tokens)
    assert "".join(t.token for t in a.tokens).strip() == a.text.strip()


def test_response_cache_keeps_what_is_read_back_compressed_in_one_bounded_store(tmp_path):
    from nxkit.llm.cache import ResponseCache, slim_response

    big = {
        "id": "x", "model": "m", "system_fingerprint": "fp" * 500,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fires on cats"},
                     "logprobs": {"content": [{"token": "fires", "logprob": -0.1, "bytes": [1] * 50,
                                               "top_logprobs": [{"token": "fires", "logprob": -0.1, "bytes": [1]}]}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "prompt_tokens_details": {"x": 1}},
    }  # fmt: skip
    slim = slim_response(big)
    assert slim["choices"][0]["message"]["content"] == "fires on cats" and "system_fingerprint" not in slim
    assert slim["choices"][0]["logprobs"]["content"][0] == {
        "token": "fires", "logprob": -0.1, "top_logprobs": [{"token": "fires", "logprob": -0.1}]
    }  # fmt: skip
    cache = ResponseCache(tmp_path, max_bytes=20_000)
    for i in range(2_000):
        cache.put(cache.key({"i": i}), big)
    assert cache.get(cache.key({"i": 1999}))["choices"][0]["message"]["content"] == "fires on cats"
    assert cache.get(cache.key({"i": 0})) is None  # the oldest went first
    assert 0 < cache.size_bytes() <= 20_000 and len(cache) < 2_000
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".sqlite"] == ["responses.sqlite"]  # one file
