"""A run directory's guard and its readers: the lock a process holds for a whole command, and reading a file that a
crash or another tool may have damaged as a one-line error naming the file and the fix."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .records import loads


class RunFileError(ValueError):
    """A file in a run directory that cannot be read (damaged, or written by something else)."""


def read_json(path: Path) -> Any:
    """A JSON file of a run directory; a damaged one raises `RunFileError` naming it and what to do."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); move it away (or delete it) and run again: the work it "
            "recorded is redone"
        ) from exc


def read_typed(path: Path, cls: type) -> Any:
    """A record file of a run directory as the record `cls` (None when absent); a damaged or foreign one raises
    `RunFileError` naming it and the fix."""
    if not path.exists():
        return None
    try:
        obj = loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise RunFileError(
            f"{path} is damaged or not an nxkit file ({type(exc).__name__}: {exc}); move it away (or delete it) and "
            "run again: the neuron is redone"
        ) from exc
    if not isinstance(obj, cls):
        raise RunFileError(
            f"{path} holds a {type(obj).__name__}, not a {cls.__name__}; it was written by another tool: move it away"
        )
    return obj


class RunLockedError(RuntimeError):
    """Another process is working on the same run directory."""


_HELD: dict[str, list] = {}
"""Run directories this process holds the lock of: path -> [open lock file, depth]."""
_HELD_LOCK = threading.Lock()


@contextmanager
def hold_directory(root: Path) -> Iterator[bool]:
    """Hold `root` for this process (an `fcntl` lock on `root/.lock`; the kernel releases it when the process ends,
    however it ends); another process gets `RunLockedError` naming the holder at once. Re-entrant within a process:
    yields True for the outermost hold."""
    import fcntl

    key = str(Path(root).resolve())
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is None:
        Path(root).mkdir(parents=True, exist_ok=True)
        f = open(Path(root) / ".lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLockedError(
                f"{root} is in use by {holder}; wait for it to finish, stop it, or use another run directory "
                "(a killed process releases the lock by itself)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        with _HELD_LOCK:
            _HELD[key] = [f, 1]
    try:
        yield held is None
    finally:
        with _HELD_LOCK:
            entry = _HELD[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                entry[0].close()
