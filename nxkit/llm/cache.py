"""The on-disk response cache (one SQLite file, compressed, bounded, least recently used first)."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import threading
import time
import weakref
import zlib
from pathlib import Path
from typing import Any

import orjson

from ..offline import cache_dir
from .base import LLMError

log = logging.getLogger(__name__)

FORMAT = 2
"""The cache file's format: 2 = answers in the kit's small form (`llm.answers`), keyed with the served model."""
FLUSH_EVERY = 32
"""Answers kept in memory before they are written in one transaction (also written after `FLUSH_SECONDS`)."""
FLUSH_SECONDS = 0.5


class ResponseCache:
    """Answers on disk (under `root`, else `$NXKIT_LLM_CACHE`, else the kit's cache folder's `llm/`), keyed by a hash of the request (which never holds the API key): one SQLite file holding
    millions of entries, each only the small form the kit reads back, zlib-compressed; the least recently used
    entries go first when the store outgrows `max_bytes`. Writes are batched (`put` says when a batch is due and
    `flush` writes it; the batch is also written at exit). Safe across threads and processes (WAL)."""

    def __init__(self, root: str | Path | None = None, max_bytes: int = 4 * 1024**3):
        default = os.environ.get("NXKIT_LLM_CACHE") or cache_dir() / "llm"
        self.root = Path(root) if root is not None else Path(default)
        self.max_bytes = max_bytes
        self.path = self.root / "responses.sqlite"
        self._db = None
        self._lock = threading.Lock()
        self._size: int | None = None
        self._pending: dict[str, bytes] = {}
        self._oldest_pending = 0.0
        _OPEN.add(self)

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
            db.execute("CREATE INDEX IF NOT EXISTS responses_used ON responses (used)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, custom_id TEXT, reader TEXT)")
            row = db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
            if row is None:
                old = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                if old:
                    log.warning(
                        "the response cache %s holds %d answers written by an older nxkit (whole responses, keyed "
                        "without the model the server lists): they are not reused, and go first when the cache is "
                        "trimmed; delete the file to reclaim the space now",
                        self.path,
                        old,
                    )
                db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(FORMAT),))
            elif row[0] != str(FORMAT):
                raise LLMError(
                    f"the response cache {self.path} has format {row[0]}, which this nxkit (format {FORMAT}) does not "
                    "read: point cache_root= elsewhere, or delete the file"
                )
            self._db = db
        return self._db

    def get(self, key: str) -> Any | None:
        with self._lock:
            blob = self._pending.get(key)
            if blob is None:
                db = self._conn()
                row = db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
                if row is None:
                    return None
                blob = row[0]
                db.execute("UPDATE responses SET used = ? WHERE key = ?", (time.time(), key))
        try:
            return orjson.loads(zlib.decompress(blob))
        except (zlib.error, orjson.JSONDecodeError):  # a damaged entry: treat as missing
            return None

    def put(self, key: str, value: Any) -> bool:
        """Keep `value` under `key`; True when a batch is due (call `flush`, off the event loop)."""
        blob = zlib.compress(orjson.dumps(value), 1)
        with self._lock:
            if not self._pending:
                self._oldest_pending = time.monotonic()
            self._pending[key] = blob
            return len(self._pending) >= FLUSH_EVERY or time.monotonic() - self._oldest_pending > FLUSH_SECONDS

    def flush(self) -> None:
        """Write the pending answers in one transaction, then trim the store to `max_bytes` if it outgrew it."""
        with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            db = self._conn()
            if self._size is None:
                self._size = db.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM responses").fetchone()[0]
            keys = list(batch)
            replaced = 0
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT COALESCE(SUM(LENGTH(value)), 0) FROM responses WHERE key IN ({marks})"
                replaced += db.execute(sql, chunk).fetchone()[0]
            now = time.time()
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", [(k, b, now) for k, b in batch.items()])
            db.execute("COMMIT")
            self._size += sum(len(b) for b in batch.values()) - replaced
            if self._size > self.max_bytes:
                self._trim(db)

    def discard(self, key: str) -> None:
        """Forget the answer under `key` (one that turned out unusable), so that the next run asks again."""
        with self._lock:
            self._pending.pop(key, None)
            db = self._conn()
            row = db.execute("SELECT LENGTH(value) FROM responses WHERE key = ?", (key,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM responses WHERE key = ?", (key,))
                if self._size is not None:
                    self._size -= row[0]

    def add_pending(self, rows: list[tuple[str, str, str]]) -> int:
        """Note requests written to a batch file: (cache key, custom_id, reader as JSON). Returns how many were noted
        already (written to an earlier file whose answers were not imported)."""
        with self._lock:
            db = self._conn()
            keys = list(dict.fromkeys(k for k, _, _ in rows))
            before = 0
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                sql = f"SELECT COUNT(*) FROM pending WHERE key IN ({','.join('?' * len(chunk))})"
                before += db.execute(sql, chunk).fetchone()[0]
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?)", rows)
            db.execute("COMMIT")
            return before

    def pending_rows(self) -> dict[str, list[tuple[str, list]]]:
        """The requests waiting for batch answers: custom_id -> [(cache key, reader)]."""
        out: dict[str, list[tuple[str, list]]] = {}
        with self._lock:
            for key, cid, reader in self._conn().execute("SELECT key, custom_id, reader FROM pending"):
                out.setdefault(cid, []).append((key, orjson.loads(reader)))
        return out

    def drop_pending(self, keys: list[str]) -> None:
        """Forget requests whose answers were imported."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            db.executemany("DELETE FROM pending WHERE key = ?", [(k,) for k in keys])
            db.execute("COMMIT")

    def _trim(self, db) -> None:
        """Drop the least recently used entries down to 90% of `max_bytes` (walking the `used` index)."""
        target, freed = self._size - int(0.9 * self.max_bytes), 0
        old = []
        for key, size in db.execute("SELECT key, LENGTH(value) FROM responses ORDER BY used"):
            if freed >= target:
                break
            old.append((key,))
            freed += size
        db.execute("BEGIN")
        db.executemany("DELETE FROM responses WHERE key = ?", old)
        db.execute("COMMIT")
        self._size -= freed
        log.info("response cache over %d bytes: dropped %d least recently used entries", self.max_bytes, len(old))

    def size_bytes(self) -> int:
        """Bytes the entries take (compressed)."""
        self.flush()
        with self._lock:
            return self._conn().execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM responses").fetchone()[0]

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]


_OPEN: weakref.WeakSet[ResponseCache] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for cache in list(_OPEN):
        try:
            cache.flush()
        except Exception as exc:  # the interpreter is going away: say so, keep going
            log.warning("could not write the response cache %s at exit: %s", cache.path, exc)
