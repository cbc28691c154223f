"""A loopback OpenAI-compatible server with a fixed latency per request (and no capacity limit unless `capacity=`), for measuring how
busy the pipeline keeps a server (`bench/throughput.py`) and testing many neurons in flight, rate limits, budgets
and faults over real HTTP.

Not a language model: its answers have the right shape and follow a fixed rule (the explainer names the
strongest token it is shown; the simulator predicts 9 on tokens that are words of the explanation; detection and
fuzzing say 1 where the explanation's last word appears, inside the marks for fuzzing), so a run
against it is deterministic whatever the order requests arrive in.

Two kinds of answers (`answers=`):
- `realistic` (the default): as a real server sends them. `/completions` with `echo=True` returns every prompt
  token with its offset, its own log-probability and its top alternatives (the top `logprobs` plus the token
  itself, as llama.cpp's server does; OpenAI's semantics, each entry predicting its own token), and chat with
  `logprobs` returns every generated token with its top alternatives and their UTF-8 bytes. For the kit's
  all-at-once simulation prompt of a 64-token window that is about 130 KB at `logprobs=5` and 390 KB at 20 (the
  real llama.cpp server answers 129 KB and 393 KB for the same prompt).
- `short`: chat completions only, no log-probabilities (the kit's chat simulators).

Faults (`fault=`, on every request, or with `fault_every=N` on the first attempt of every N-th distinct request, so
that a retry gets through; `fault_limit` of them at most): `malformed_json`,
`truncated` (the body ends early), `wrong_shape` (valid JSON, no choices), `http_500`, `http_429` (a storm with
`Retry-After`), `trickle` (the body sent a few bytes at a time, slower than any timeout). Also `storm=(start, end)`:
every request in that window of seconds answers 429.

In process: `with LoopbackServer(latency=0.2) as server: server.base_url`. In a process of its own (so that its
work does not share the measuring process's interpreter): `with LoopbackProcess(latency=0.2) as server: ...`, or
`python -m nxkit.llm.loopback --latency 0.2`. Both report `stats()`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

MODEL = "loopback"
ANSWERS = ("realistic", "short")
FAULTS = ("malformed_json", "truncated", "wrong_shape", "http_500", "http_429", "trickle")
_TOKEN = re.compile(r" ?[A-Za-z]+| ?\d| ?[^\sA-Za-z\d]|\s")
_FILLER = [" the", " a", " of", " and", " to", " in", " is", " that", " it", " for", " on", " with", " as", " was",
           " he", " by", " at", " from", " his", " an"]  # fmt: skip
_FILLER_LP = [-1.3119990825653076 - 0.4134631156921387 * i for i in range(len(_FILLER))]
_DIGITS = [str(d) for d in range(10)]


def tokenize(text: str) -> tuple[list[str], list[int]]:
    """The loopback's own tokenisation (words with their leading space, digits, single marks): tokens, offsets."""
    tokens, offsets = [], []
    for m in _TOKEN.finditer(text):
        tokens.append(m.group())
        offsets.append(m.start())
    return tokens, offsets


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


def _explanation_words(head: str) -> set[str]:
    return set(re.findall(r"\w+", head.lower().removeprefix("description: it fires on")))


def _simulate_answer(text: str) -> str:
    head, _, body = text.partition("\nTokens:\n")
    words = _explanation_words(head)
    return "\n".join(f"{t}\t{9 if t.strip().lower() in words else 0}" for t in body.split("\n"))


def _digit_top(digit: int, k: int) -> dict[str, float]:
    """The digits' log-probabilities at a placeholder where `digit` is the likely one, filled up to `k` entries."""
    top = {str(digit): -0.05}
    for j, d in enumerate(_DIGITS):
        if d not in top:
            top[d] = -3.2 - 0.37 * j
    for tok, lp in zip(_FILLER, _FILLER_LP, strict=True):
        if len(top) >= k:
            break
        top[tok] = lp - 6.0
    return dict(list(top.items())[:k]) if k >= 10 else {str(digit): -0.05}


def _echo_logprobs(prompt: str, k: int) -> dict[str, Any]:
    """Every prompt token with its offset and top `k` alternatives (and itself), as a real server echoes them; at
    each placeholder of the simulation prompt's last window, digits by the fixed rule."""
    tokens, offsets = tokenize(prompt)
    digits: dict[int, int] = {}
    start = prompt.rfind("<start>\n")
    if start >= 0:
        head = prompt[prompt.rfind("Description:", 0, start) : start]
        words = _explanation_words(head.strip().rstrip("."))
        pos = start + len("<start>\n")
        for line in prompt[pos:].split("\n"):
            token, tab, rest = line.partition("\t")
            if tab and rest == "?":
                digits[pos + len(token) + 1] = 9 if token.strip().lower() in words else 0
            pos += len(line) + 1
    filler = dict(zip(_FILLER[:k], _FILLER_LP[:k], strict=True))
    tops: list[dict[str, float] | None] = [None]
    own: list[float | None] = [None]
    for token, offset in zip(tokens[1:], offsets[1:], strict=True):
        if offset in digits:
            top = _digit_top(digits[offset], k)
        else:
            top = dict(filler)
        top.setdefault(token, -0.5)
        tops.append(top)
        own.append(top[token])
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": own, "top_logprobs": tops}


def _chat_logprobs(answer: str, k: int) -> dict[str, Any]:
    """Every generated token with its top `k` alternatives and their UTF-8 bytes, as OpenAI's chat API sends them."""
    content = []
    for token in tokenize(answer)[0]:
        alts = [(token, -0.05)]
        if token.strip() in _DIGITS:
            alts += [(d, -3.2 - 0.37 * j) for j, d in enumerate(_DIGITS) if d != token.strip()]
        alts += list(zip(_FILLER, _FILLER_LP, strict=True))
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alts[:k]]
        content.append({"token": token, "logprob": -0.05, "bytes": list(token.encode()), "top_logprobs": top})
    return {"content": content, "refusal": None}


class LoopbackServer:
    """`/v1/models`, `/v1/chat/completions` and `/v1/completions` on 127.0.0.1, each answered after `latency` s."""

    def __init__(
        self,
        latency: float = 0.2,
        storm: tuple[float, float] | None = None,
        retry_after: float = 1.0,
        answers: str = "realistic",
        fault: str | None = None,
        fault_every: int = 1,
        fault_limit: int | None = None,
        port: int = 0,
        capacity: int | None = None,
    ):
        if answers not in ANSWERS:
            raise ValueError(f"answers must be one of {ANSWERS}, not {answers!r}")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS} or None, not {fault!r}")
        self.latency, self.storm, self.retry_after, self.answers = latency, storm, retry_after, answers
        """`storm`: (start, end) seconds after the first completion request during which every request is answered 429."""
        self.fault, self.fault_every, self.fault_limit, self.port = fault, max(1, fault_every), fault_limit, port
        self.requests = 0
        """Completion requests answered (429s and faults included)."""
        self.rate_limited = 0
        """Requests answered 429."""
        self.faults = 0
        """Requests answered with the fault."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_chars = 0
        self.bytes_sent = 0
        self.by_kind: dict[str, list[int]] = {}
        """Per kind of prompt (`explain`, `simulate`, `detection`, `fuzzing`, `revise`, `propose`): [requests, prompt
        tokens, completion tokens] answered (the tokens as this server counts them: characters / 4)."""
        self._t0: float | None = None
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.capacity = capacity
        """Requests served at once (the others wait their turn, as on a server with a fixed batch); None: no limit."""
        self._slots = threading.Semaphore(capacity) if capacity else None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stats(self) -> dict[str, Any]:
        """The counters, and this process's CPU seconds (meaningful for a server in a process of its own)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self._lock:
            return {
                "requests": self.requests, "rate_limited": self.rate_limited, "faults": self.faults,
                "max_in_flight": self.max_in_flight, "prompt_chars": self.prompt_chars, "bytes_sent": self.bytes_sent,
                "by_kind": {k: list(v) for k, v in self.by_kind.items()}, "cpu_s": usage.ru_utime + usage.ru_stime,
            }  # fmt: skip

    def __enter__(self) -> LoopbackServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, data: bytes, headers: dict | None = None, cut: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if cut is not None:  # a body that ends early: send part of it and hang up
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)
                with server._lock:
                    server.bytes_sent += len(data)

            def _trickle(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gives up and hangs up
                    for i in range(0, len(data), 4):
                        self.wfile.write(data[i : i + 4])
                        self.wfile.flush()
                        time.sleep(0.05)
                self.close_connection = True

            def do_GET(self):
                path = self.path.rstrip("/")
                if path.endswith("/loopback/stats"):
                    self._send(200, orjson.dumps(server.stats()))
                elif path.endswith("/models"):
                    models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "nxkit"}]}
                    self._send(200, orjson.dumps(models))
                else:
                    self._send(404, orjson.dumps({"error": {"message": f"no route {self.path}"}}))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = orjson.loads(self.rfile.read(length) or b"{}")
                status, body, headers, fault = server._answer(self.path, request)
                data = orjson.dumps(body)
                if fault == "malformed_json":
                    self._send(200, data[: len(data) // 2] + b"\x00not json")
                elif fault == "truncated":
                    self._send(200, data, cut=len(data) // 2)
                elif fault == "trickle":
                    self._trickle(data)
                else:
                    self._send(status, data, headers)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # the listen backlog: many clients connect at once
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that hung up (a timeout, a cut body)
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._httpd = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def _fault_now(self, request: dict) -> str | None:
        """The fault this request gets (called under the lock). `fault_every` 1: every request. Otherwise the first
        attempt of every `fault_every`-th distinct request, and never a request sent again: a client that retries
        gets through, whatever order requests arrive in."""
        if self.fault is None or (self.fault_limit is not None and self.faults >= self.fault_limit):
            return None
        if self.fault_every > 1:
            key = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
            if key in self._seen:
                return None
            self._seen.add(key)
            if len(self._seen) % self.fault_every:
                return None
        self.faults += 1
        return self.fault

    def _answer(self, path: str, request: dict) -> tuple[int, dict, dict | None, str | None]:
        path = path.rstrip("/")
        chat = path.endswith("/chat/completions")
        if not chat and not (path.endswith("/completions") and self.answers == "realistic"):
            served = "chat completions" + (" and completions" if self.answers == "realistic" else "")
            return 404, {"error": {"message": f"this loopback server serves {served} only, not {path}"}}, None, None
        with self._lock:
            now = time.monotonic()
            self._t0 = self._t0 if self._t0 is not None else now
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            storming = self.storm is not None and self.storm[0] <= now - self._t0 < self.storm[1]
            fault = self._fault_now(request)
        try:
            if self._slots is not None:
                with self._slots:
                    time.sleep(self.latency)
            else:
                time.sleep(self.latency)
            if storming or fault == "http_429":
                with self._lock:
                    self.rate_limited += 1
                headers = {"Retry-After": f"{self.retry_after:g}"}
                return 429, {"error": {"message": "rate limited (loopback storm)"}}, headers, None
            if fault == "http_500":
                return 500, {"error": {"message": "loopback fault: internal error"}}, None, None
            if fault == "wrong_shape":
                return 200, {"id": "loopback", "object": "error", "detail": "no choices here"}, None, None
            body = self._chat(request) if chat else self._completion(request)
            return 200, body, None, fault
        finally:
            with self._lock:
                self.in_flight -= 1

    def _count(self, kind: str, prompt: int, completion: int) -> dict[str, int]:
        with self._lock:
            self.prompt_chars += prompt
            counts = self.by_kind.setdefault(kind, [0, 0, 0])
            counts[0] += 1
            counts[1] += prompt // 4
            counts[2] += completion
        return {"prompt_tokens": prompt // 4, "completion_tokens": completion, "total_tokens": prompt // 4 + completion}

    def _completion(self, request: dict) -> dict:
        prompt = request.get("prompt") or ""
        k = int(request.get("logprobs") or 0)
        choice: dict[str, Any] = {"index": 0, "text": (prompt if request.get("echo") else "") + "0", "logprobs": None}
        if request.get("echo") and k:
            choice["logprobs"] = _echo_logprobs(prompt, k)
        choice["finish_reason"] = "length"
        kind = "simulate" if "<start>" in prompt else "probe"
        usage = self._count(kind, len(prompt), 1)
        return {"id": "loopback", "object": "text_completion", "created": 0, "model": MODEL, "choices": [choice],
                "usage": usage}  # fmt: skip

    def _chat(self, request: dict) -> dict:
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
        usage = self._count(kind, prompt, len(answer) // 4 + 1)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None}}
        if self.answers == "realistic" and request.get("logprobs"):
            choice["logprobs"] = _chat_logprobs(answer, int(request.get("top_logprobs") or 1))
        choice["finish_reason"] = "stop"
        return {"id": "loopback", "object": "chat.completion", "created": 0, "model": MODEL, "choices": [choice],
                "usage": usage, "system_fingerprint": "loopback"}  # fmt: skip


class LoopbackProcess:
    """A `LoopbackServer` in a child process (`python -m nxkit.llm.loopback`), so that a benchmark measures its own
    process's CPU apart from the server's. The same settings; `stats()` asks the server for its counters."""

    def __init__(self, **settings):
        self.settings = settings
        self._proc: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> LoopbackProcess:
        args = [sys.executable, "-m", "nxkit.llm.loopback"]
        for key, value in self.settings.items():
            if value is not None:
                value = ",".join(map(str, value)) if isinstance(value, tuple | list) else value
                args += [f"--{key.replace('_', '-')}", str(value)]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self._proc.kill()
            raise RuntimeError(f"the loopback server did not start: {line!r}")
        self.base_url = line
        return self

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.base_url + "/loopback/stats", timeout=30) as r:
            return orjson.loads(r.read())

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)


def answer_batch(requests: str | Path, output: str | Path, answers: str = "realistic") -> int:
    """Answer a batch input file (OpenAI Batch API JSONL, as `nxkit run --batch-out` writes it) the way this server
    answers over HTTP, into an output file in the batch service's format (`custom_id`, `response.status_code`,
    `response.body`, `error`); returns how many lines it answered. What a test uses in place of a batch service."""
    server = LoopbackServer(latency=0.0, answers=answers)
    lines = []
    for i, raw in enumerate(Path(requests).read_bytes().splitlines()):
        if not raw.strip():
            continue
        line = orjson.loads(raw)
        status, body, _, _ = server._answer(line["url"], line["body"])
        response = {"status_code": status, "request_id": f"loopback-{i}", "body": body}
        lines.append(orjson.dumps({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": response,
                                   "error": None}))  # fmt: skip
    Path(output).write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A loopback OpenAI-compatible server (nxkit's tests and benchmarks).")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--answers", choices=ANSWERS, default="realistic")
    ap.add_argument("--fault", choices=FAULTS)
    ap.add_argument("--fault-every", type=int, default=1)
    ap.add_argument("--fault-limit", type=int)
    ap.add_argument("--storm", help="START,END seconds during which every request answers 429")
    ap.add_argument("--retry-after", type=float, default=1.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--capacity", type=int, help="requests served at once (default: no limit)")
    ap.add_argument("--batch", nargs=2, metavar=("IN", "OUT"), help="answer a batch input file into OUT, and exit")
    args = ap.parse_args(argv)
    if args.batch:
        print(f"answered {answer_batch(*args.batch, answers=args.answers)} requests into {args.batch[1]}")
        return
    storm = tuple(float(v) for v in args.storm.split(",")) if args.storm else None
    server = LoopbackServer(
        args.latency,
        storm,
        args.retry_after,
        args.answers,
        args.fault,
        args.fault_every,
        args.fault_limit,
        args.port,
        args.capacity,
    )
    with server:
        print(server.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
