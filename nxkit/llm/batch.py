"""Batch files for the LLM stages: the requests a stage would send, written as OpenAI Batch API JSONL, and the
answers read back into the response cache.

`nxkit run ... --batch-out DIR` attaches a `BatchOut` to every server backend. A request the response cache does
not hold is then not sent: it is noted (in the cache's `pending` table, with how to read its answer) and the neuron
that asked for it waits (`Deferred`); at the end of the stage the noted requests are written to `DIR` as one line
each (`custom_id`, `method`, `url`, `body`), the files OpenAI's batch service and vLLM's `run-batch` read, and the
run stops. `nxkit cache import FILE...` reads their output files (the same format from both: `custom_id`,
`response.status_code`, `response.body`, `error`), checks each answer's shape with the readers the online client
uses (`llm.answers`), and stores it under the request's cache key. The same `nxkit run` then finds those answers
and goes on to the next stage: explanations, then calibration and valid simulation, then the control, then
revision, each a round of files.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .answers import CACHE_FORMAT, CACHE_FORMAT_KEY, MalformedResponse, read_answer
from .base import Deferred, LLMError  # noqa: F401 (Deferred: where batch mode's callers look)

log = logging.getLogger(__name__)

MAX_LINES = 50_000
"""Requests per file: OpenAI's batch service takes at most 50,000 per file."""
MAX_BYTES = 190 * 1024**2
"""Bytes per file (OpenAI's limit is 200 MB)."""


def custom_id(path: str, body: dict[str, Any]) -> str:
    """The line's `custom_id`: a hash of the endpoint and body, so that one request asked for by several readers (or
    several neurons) is one line."""
    blob = orjson.dumps({"url": path, "body": body}, option=orjson.OPT_SORT_KEYS)
    return "nx-" + hashlib.sha256(blob).hexdigest()[:40]


def estimate_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, at most completion tokens) of one request, the prompt at four characters a token."""
    if "messages" in body:
        chars = sum(len(m.get("content") or "") for m in body["messages"])
    else:
        chars = len(body.get("prompt") or "")
    return chars // 4 + 1, int(body.get("max_tokens") or 0)


@dataclass
class BatchRound:
    """What one stopped run wrote."""

    files: list[Path]
    requests: int
    prompt_tokens: int
    """Estimated (characters / 4)."""
    completion_tokens: int
    """At most (the requests' `max_tokens`)."""
    stage: str
    earlier: int = 0
    """Requests already written to an earlier file whose answers were not imported."""

    def message(self) -> str:
        where = ", ".join(str(f) for f in self.files)
        again = (
            f" ({self.earlier} of them were in an earlier file whose answers were not imported: submit one of the "
            "two, not both)"
            if self.earlier
            else ""
        )
        return (
            f"{self.stage}: {self.requests:,} requests the response cache does not hold, written to {where}{again}: "
            f"about {self.prompt_tokens:,} prompt tokens and at most {self.completion_tokens:,} completion tokens. "
            "Run them as a batch (OpenAI's batch service, or `vllm run-batch -i FILE -o OUT --model MODEL`), then "
            "`nxkit cache import OUT...` and run the same command again: it goes on to the next stage."
        )


@dataclass
class BatchOut:
    """The requests of one run that wait for batch answers (shared by the run's server backends)."""

    root: Path
    lines: dict[str, dict] = field(default_factory=dict)
    """custom_id -> the request line."""
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    """(cache key, custom_id, reader as JSON) for the cache's `pending` table."""
    cache: Any = None
    """The response cache the answers go to (the run's backends share one)."""

    def __post_init__(self):
        self.root = Path(self.root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise LLMError(f"--batch-out {self.root} is a file; name a folder for the batch files")

    def add(self, cache, key: str, reader: tuple, path: str, body: dict[str, Any]) -> None:
        """Note one request the cache does not hold (`reader` reads its answer, as `answers.parse` does)."""
        if cache is None:
            raise LLMError("batch files need the response cache (cache=True): the answers are imported into it")
        cid = custom_id(path, body)
        self.lines.setdefault(cid, {"custom_id": cid, "method": "POST", "url": "/v1" + path, "body": body})
        self.rows.append((key, cid, orjson.dumps(list(reader)).decode()))
        self.cache = cache

    @property
    def pending(self) -> int:
        return len(self.lines)

    def write(self, stage: str) -> BatchRound:
        """Write the noted requests (files of at most `MAX_LINES` lines and `MAX_BYTES` bytes) and record them in the
        cache as pending; clears the list."""
        self.root.mkdir(parents=True, exist_ok=True)
        earlier = self.cache.add_pending(self.rows)
        taken = {
            int(p.name.split("-")[1]) for p in self.root.glob("requests-*.jsonl") if p.name.split("-")[1].isdigit()
        }
        number = max(taken, default=0) + 1
        slug = "".join(c if c.isalnum() else "-" for c in stage).strip("-") or "stage"
        files, chunk, size = [], [], 0
        prompt = completion = 0

        def flush() -> None:
            part = f"-{len(files) + 1}" if files or len(self.lines) > len(chunk) else ""
            path = self.root / f"requests-{number:03d}-{slug}{part}.jsonl"
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_bytes(b"".join(chunk))
            tmp.replace(path)  # whole or absent: a batch file is never half written
            files.append(path)

        for line in self.lines.values():
            blob = orjson.dumps(line) + b"\n"
            if chunk and (len(chunk) >= MAX_LINES or size + len(blob) > MAX_BYTES):
                flush()
                chunk, size = [], 0
            chunk.append(blob)
            size += len(blob)
            p, c = estimate_tokens(line["body"])
            prompt, completion = prompt + p, completion + c
        if chunk:
            flush()
        out = BatchRound(files, len(self.lines), prompt, completion, stage, earlier)
        self.lines, self.rows = {}, []
        return out


def attach(llms, root: str | Path) -> BatchOut:
    """Put every server backend of `llms` in batch mode, writing to `root`; an error when none talks to a server."""
    out = BatchOut(Path(root))
    servers = [llm for llm in llms if llm is not None and hasattr(llm, "batch")]
    if not servers:
        raise LLMError(
            "--batch-out writes the requests of an LLM on a server, and this run has none (the search explainer and "
            "the in-process models send no requests); name a served model with --explainer or --simulator"
        )
    for llm in servers:
        if llm.cache is None:
            raise LLMError("--batch-out needs the response cache: the answers are imported into it")
        llm.batch = out
    return out


@dataclass
class ImportReport:
    """What `import_answers` did."""

    stored: int = 0
    """Answers stored in the cache (one answer may serve several requests: counted once per cache key)."""
    lines: int = 0
    errors: list[str] = field(default_factory=list)
    """Lines that hold an error, not an answer (the batch service's `error`, or a status other than 200)."""
    malformed: list[str] = field(default_factory=list)
    """Answers of the wrong shape (not stored: the next run writes their requests again)."""
    unknown: int = 0
    """Lines whose custom_id this cache is not waiting for (imported before, or from another cache)."""
    seconds: float = 0.0

    def message(self) -> str:
        parts = [f"stored {self.stored:,} answers from {self.lines:,} lines in {self.seconds:.1f} s"]
        if self.errors:
            parts.append(f"{len(self.errors)} lines held errors (first: {self.errors[0]})")
        if self.malformed:
            parts.append(f"{len(self.malformed)} answers had the wrong shape (first: {self.malformed[0]})")
        if self.unknown:
            parts.append(f"{self.unknown} lines were not waited for (imported already, or written for another cache)")
        if self.errors or self.malformed:
            parts.append("their requests are written again by the next run")
        return "; ".join(parts)


def import_answers(paths: list[str | Path], cache) -> ImportReport:
    """Read batch output files (OpenAI's format, which vLLM's `run-batch` also writes) into `cache`: each answer
    checked by the reader its request was noted with, then stored under every cache key waiting for it."""
    import time

    t0 = time.perf_counter()
    report = ImportReport()
    waiting = cache.pending_rows()  # custom_id -> [(key, reader)]
    done: list[str] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            raise LLMError(f"no batch output file at {path}")
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                report.lines += 1
                where = f"{path.name}:{number}"
                try:
                    line = orjson.loads(raw)
                    cid = line["custom_id"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    report.malformed.append(f"{where}: not a batch output line ({raw[:60]!r})")
                    continue
                targets = waiting.get(cid)
                if targets is None:
                    report.unknown += 1
                    continue
                response, error = line.get("response") or {}, line.get("error")
                status = response.get("status_code") if isinstance(response, dict) else None
                if error or status != 200:
                    report.errors.append(f"{where}: {error or f'status {status}'}"[:200])
                    continue
                body = response.get("body")
                try:
                    values = [(key, read_answer(reader, body)[0]) for key, reader in targets]
                except MalformedResponse as exc:
                    report.malformed.append(f"{where}: {exc}"[:200])
                    continue
                for key, value in values:
                    cache.put(key, {CACHE_FORMAT_KEY: CACHE_FORMAT, "value": value})
                    done.append(key)
                report.stored += len(targets)
                del waiting[cid]
    cache.flush()
    cache.drop_pending(done)
    report.seconds = time.perf_counter() - t0
    return report
