"""A loopback OpenAI-compatible server with a fixed latency per request and no capacity limit, for measuring how
busy the pipeline keeps a server (`bench/throughput.py`) and testing many neurons in flight, rate limits and
budgets over real HTTP.

Not a language model: its answers have the right shape and follow a fixed rule (the explainer names the
strongest token it is shown; the simulator predicts 9 on tokens that are words of the explanation; detection and
fuzzing say 1 where the explanation's last word appears, inside the marks for fuzzing), so a run
against it is deterministic whatever the order requests arrive in. It can answer 429 with `Retry-After` during
a storm window. Use as a context manager: `with LoopbackServer(latency=0.2) as server: server.base_url`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "loopback"


def _explain_answer(text: str) -> str:
    pairs = [line.rsplit("\t", 1) for line in text.splitlines() if "\t" in line]
    pairs = [(t, int(a)) for t, a in pairs if a.strip().isdigit()]
    token = max(pairs, key=lambda p: p[1])[0].strip() if pairs else "nothing"
    return f"It fires on the word {token or 'space'}."


def _classify_answer(text: str, marked_only: bool) -> str:
    """1 for each numbered text holding the explanation's last word (inside the << >> marks, for fuzzing)."""
    head, _, body = text.partition("\nTexts:\n")
    words = re.findall(r"\w+", head.lower())
    key = words[-1] if words else ""
    lines = []
    for line in body.split("\n"):
        number, _, item = line.partition(". ")
        where = " ".join(re.findall(r"<<(.*?)>>", item)) if marked_only else item
        hit = key in re.findall(r"\w+", where.lower())
        lines.append(f"{number}: {int(hit)}")
    return "\n".join(lines)


def _propose_answer(text: str) -> str:
    """Texts that use the explanation's last word (to fire) or avoid it (to stay silent)."""
    words = re.findall(r"\w+", text.partition("\n")[0].lower())
    key = words[-1] if words else "word"
    if "silent" in text:
        return "1. The river flows slowly to the sea.\n2. She painted the fence green."
    return f"1. Here is {key} again.\n2. We spoke of {key} and {key}."


def _simulate_answer(text: str) -> str:
    head, _, body = text.partition("\nTokens:\n")
    words = set(re.findall(r"\w+", head.lower().removeprefix("description: it fires on")))
    return "\n".join(f"{t}\t{9 if t.strip().lower() in words else 0}" for t in body.split("\n"))


class LoopbackServer:
    """`/v1/models` and `/v1/chat/completions` on 127.0.0.1, each request answered after `latency` seconds."""

    def __init__(self, latency: float = 0.2, storm: tuple[float, float] | None = None, retry_after: float = 1.0):
        self.latency = latency
        self.storm = storm
        """(start, end) seconds after the first completion request during which every request is answered 429."""
        self.retry_after = retry_after
        self.requests = 0
        """Completion requests answered (429s included)."""
        self.rate_limited = 0
        """Requests answered 429."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_chars = 0
        self.by_kind: dict[str, list[int]] = {}
        """Per kind of prompt (`explain`, `simulate`, `detection`, `fuzzing`): [requests, prompt tokens, completion
        tokens] answered (the tokens as this server counts them: characters / 4)."""
        self._t0: float | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "nxkit"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                status, body, headers = server._answer(self.path, request)
                self._send(status, body, headers)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # the listen backlog: many clients connect at once
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def _answer(self, path: str, request: dict) -> tuple[int, dict, dict | None]:
        if not path.rstrip("/").endswith("/chat/completions"):
            return 404, {"error": {"message": f"this loopback server serves chat completions only, not {path}"}}, None
        with self._lock:
            now = time.monotonic()
            self._t0 = self._t0 if self._t0 is not None else now
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            storming = self.storm is not None and self.storm[0] <= now - self._t0 < self.storm[1]
        try:
            time.sleep(self.latency)
            if storming:
                with self._lock:
                    self.rate_limited += 1
                return (
                    429,
                    {"error": {"message": "rate limited (loopback storm)"}},
                    {"Retry-After": f"{self.retry_after:g}"},
                )
            text, system = request["messages"][-1]["content"], request["messages"][0]["content"]
            if "What does this neuron respond to?" in text:
                kind, answer = "explain", _explain_answer(text)
            elif "Write the better explanation." in text:
                kind, answer = "revise", _explain_answer(text.partition("Test texts")[2] or text)
            elif "texts that, by this explanation" in text:
                kind, answer = "propose", _propose_answer(text)
            elif "\nTexts:\n" in text:
                fuzzing = "<<this>>" in system
                kind, answer = ("fuzzing" if fuzzing else "detection"), _classify_answer(text, marked_only=fuzzing)
            else:
                kind, answer = "simulate", _simulate_answer(text)
            prompt = sum(len(m["content"]) for m in request["messages"])
            with self._lock:
                self.prompt_chars += prompt
                counts = self.by_kind.setdefault(kind, [0, 0, 0])
                counts[0] += 1
                counts[1] += prompt // 4
                counts[2] += len(answer) // 4 + 1
            body = {
                "id": "loopback",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                "usage": {
                    "prompt_tokens": prompt // 4,
                    "completion_tokens": len(answer) // 4 + 1,
                    "total_tokens": prompt // 4 + len(answer) // 4 + 1,
                },
            }
            return 200, body, None
        finally:
            with self._lock:
                self.in_flight -= 1
