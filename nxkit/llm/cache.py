"""The on-disk response cache (one SQLite file, compressed, bounded, least recently used first)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from ..offline import cache_dir

log = logging.getLogger(__name__)


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
