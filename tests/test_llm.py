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
    b.cache.flush()
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


def test_response_cache_is_one_bounded_store_that_counts_a_replaced_entry_once(tmp_path):
    from nxkit.llm.cache import ResponseCache

    answer = {"text": "fires on cats " * 20, "finish_reason": "stop", "tokens": None}
    cache = ResponseCache(tmp_path, max_bytes=20_000)
    for i in range(2_000):
        if cache.put(cache.key({"i": i}), {**answer, "i": i}):
            cache.flush()
    assert cache.get(cache.key({"i": 1999}))["i"] == 1999  # still pending or written: read either way
    cache.flush()
    assert cache.get(cache.key({"i": 0})) is None  # the oldest went first
    assert 0 < cache.size_bytes() <= 20_000 and len(cache) < 2_000
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".sqlite"] == ["responses.sqlite"]  # one file
    # the same key written again replaces its entry: the size is counted once
    roomy = ResponseCache(tmp_path / "roomy")
    for _ in range(50):
        roomy.put("k", answer)
        roomy.flush()
    assert roomy._size == roomy.size_bytes() and len(roomy) == 1
    roomy.discard("k")
    assert roomy.get("k") is None and roomy._size == roomy.size_bytes() == 0


class BodyServer:
    """A loopback server whose chat answers are scripted bodies (bytes), to check how the client reads them."""

    def __init__(self, bodies: list[bytes]):
        self.bodies, self.calls = list(bodies), 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, data: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "t"}]}).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.calls += 1
                self._send(owner.bodies.pop(0) if owner.bodies else json.dumps(_chat_body("hello")).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"choices": []}', b'{"choices": [{"message": 3}]}', b"[1, 2]", b'{"choices": [{"text": "x"}]}'],
    ids=["not-json", "no-choices", "message-not-object", "a-list", "completion-shape"],
)
def test_a_malformed_200_is_retried_never_cached_and_named(tmp_path, body):
    server = BodyServer([body] * 3)
    b = backend(server.url, tmp_path, max_retries=2)
    with pytest.raises(LLMError, match="giving up after 3 attempts.*cannot read"):
        run_sync(b.chat(MSG))
    assert server.calls == 3 and b.usage.malformed == 3
    b.cache.flush()
    assert len(b.cache) == 0  # nothing cached: the next run asks again
    fresh = backend(server.url, tmp_path)
    assert run_sync(fresh.chat(MSG)).text == "hello" and server.calls == 4
    # one bad answer among good ones: retried, and the run goes on
    server.bodies = [body]
    assert run_sync(fresh.chat(MSG + [{"role": "user", "content": "again"}])).text == "hello"
    assert fresh.usage.retries == 1


def test_an_unparsable_answer_is_dropped_from_the_cache(scripted, tmp_path):
    from nxkit.llm.base import unusable

    server = scripted([])
    b = backend(server.url, tmp_path)
    answer = run_sync(b.chat(MSG))
    assert run_sync(b.chat(MSG)).text == "hello" and server.calls == 1  # cached
    unusable(answer)
    assert run_sync(b.chat(MSG)).text == "hello" and server.calls == 2  # asked again


def test_credentials_in_base_url_never_reach_the_manifest_or_the_cache_key(scripted, tmp_path):
    from nxkit.llm.base import redact_url

    assert redact_url("https://user:sk-abc@host.example/v1") == "https://user:***@host.example/v1"
    assert redact_url("https://sk-abc@host/v1?api_key=sk-abc&x=1") == "https://***@host/v1?api_key=***&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    b = OpenAIBackend("m", base_url="https://user:sk-abc@host.example/v1", api_key="k", cache=False)
    assert "sk-abc" not in repr(b.describe()) and b.describe().base_url == "https://user:***@host.example/v1"
    assert "sk-abc" not in repr(b) and "sk-abc" not in b.url


def test_the_cache_never_answers_for_another_model_under_the_same_name(tmp_path):
    a = BodyServer([])
    first = backend(a.url, tmp_path)
    run_sync(first.chat(MSG))
    first.cache.flush()  # answers are written in batches (and at exit)
    assert a.calls == 1
    again = backend(a.url, tmp_path)
    run_sync(again.chat(MSG))
    assert a.calls == 1  # the same model: served from the cache
    a.server.RequestHandlerClass.do_GET = lambda self: self._send(
        json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "t", "root": "/models/other.gguf"}]}).encode()
    )
    other = backend(a.url, tmp_path)
    run_sync(other.chat(MSG))
    assert a.calls == 2  # the server now lists another model under the name: asked again


def test_the_small_cached_form_gives_the_same_simulation_as_the_whole_echo(tmp_path):
    """The all-at-once simulator keeps a few hundred numbers of a 100 KB echo; what it computes from them (fresh, and
    again from the cache) equals what the whole echoed prompt gives."""
    from nxkit import prompts
    from nxkit.llm.base import logprobs_at
    from nxkit.llm.loopback import MODEL, LoopbackServer
    from nxkit.simulators import make_simulator
    from nxkit.simulators.prompted import DIGITS, SimulateConfig

    tokens = [" The", " cat", " sat", " on", " the", " mat", ".", "\n", " A", " dog"]
    with LoopbackServer(latency=0.0) as server:
        b = OpenAIBackend(MODEL, base_url=server.base_url, api_key="local", cache_root=tmp_path / "c")
        sim = make_simulator(b, SimulateConfig())
        assert sim.mode == "all_at_once"
        small = run_sync(sim.simulate_many("the word cat", [tokens]))[0]
        prefix = prompts.simulate_prefix("the word cat")
        text, places = prompts.simulate_window_text(tokens)
        full = run_sync(b.prompt_logprobs(prefix + text, top=20))  # the whole echo, read the long way
        assert len(full.tokens) > 300
        whole = logprobs_at(full, [len(prefix) + o for o in places], DIGITS)
        kept = run_sync(b.placeholder_logprobs(prefix, text, places, DIGITS, top=20))
        assert kept == whole
        sent = server.requests
        again = OpenAIBackend(MODEL, base_url=server.base_url, api_key="local", cache_root=tmp_path / "c")
        b.cache.flush()
        cached = run_sync(make_simulator(again, SimulateConfig()).simulate_many("the word cat", [tokens]))[0]
        assert server.requests == sent and again.usage.cache_hits == 2  # the shift probe and the window
    assert cached == small
    assert small.expected_activations[1] > 8 and small.expected_activations[8] < 1  # " cat" fires, " A" does not
    store = b.cache
    assert store.size_bytes() / len(store) < 4_000  # bytes per answer: the small form, not the echo


def test_both_http_layers_read_the_same_answers():
    """The aiohttp layer (the default where httpx-aiohttp is installed) and the openai client's own httpx give the same
    simulation numbers and chat text, and a wrong transport name is refused."""
    from nxkit import prompts
    from nxkit.llm.loopback import MODEL, LoopbackServer
    from nxkit.simulators.prompted import DIGITS

    tokens = [" The", " cat", " sat", " on", " the", " mat"]
    got = {}
    with LoopbackServer(latency=0.0) as server:
        for transport in ("httpx", "aiohttp"):
            b = OpenAIBackend(MODEL, base_url=server.base_url, api_key="local", cache=False, transport=transport)
            prefix, (text, places) = prompts.simulate_prefix("the word cat"), prompts.simulate_window_text(tokens)
            kept = run_sync(b.placeholder_logprobs(prefix, text, places, DIGITS, top=20))
            chat = run_sync(b.chat([{"role": "user", "content": "What does this neuron respond to? cat"}])).text
            got[transport] = (kept, chat)
            client, _ = run_sync(_client_of(b))
            assert ("AioHttp" in type(client._client).__name__) == (transport == "aiohttp")
    assert got["httpx"] == got["aiohttp"] and any(got["httpx"][0])
    with pytest.raises(LLMError, match="transport must be"):
        OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1", api_key="local", transport="curl")


async def _client_of(backend):
    return backend._client(0)


def test_a_cache_from_an_older_nxkit_is_named_and_not_read(tmp_path, caplog):
    import sqlite3

    from nxkit.llm.cache import ResponseCache

    (tmp_path / "old").mkdir()
    with sqlite3.connect(tmp_path / "old" / "responses.sqlite") as db:
        db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, value BLOB, used REAL)")
        db.execute("INSERT INTO responses VALUES ('k', x'00', 0)")
    with caplog.at_level("WARNING"):
        assert ResponseCache(tmp_path / "old").get("other") is None
    assert "written by an older nxkit" in caplog.text and "responses.sqlite" in caplog.text


def test_one_request_has_a_deadline_over_all_its_retries(scripted, tmp_path):
    import time

    server = scripted([500] * 50)
    b = backend(server.url, tmp_path, max_retries=40, deadline=0.4)
    b.config.backoff = 0.1
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match=r"took over 0.4 s in all .*deadline="):
        run_sync(b.chat(MSG))
    assert time.perf_counter() - t0 < 5 and server.calls < 40
