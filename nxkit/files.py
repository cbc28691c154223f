"""The one way nxkit writes a file or a folder: through a temporary one beside it, flushed to disk (fsync) and renamed
into place, the folder's entry flushed too, so that a reader (or a resumed run) never sees half of it, a crash or a
power cut leaves the old version or the new one, and concurrent writers (threads, processes) never share a temporary
name.

Crash points: every write passes `crash_point(what, path)`. With `NXKIT_CRASH_AT=N` in the environment the process
kills itself (SIGKILL, no clean-up) at the N-th point; with `NXKIT_CRASH_CENSUS=FILE` it lists every point it
passes. The crash harness (`tests/test_crash.py`, `bench/crash.py`) uses both to kill a run at chosen writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import: the permissions a plain write would give

_CRASH_AT = int(os.environ.get("NXKIT_CRASH_AT") or 0)
_CENSUS = os.environ.get("NXKIT_CRASH_CENSUS")
_points = 0
STAGE = ""
"""The pipeline stage under way (set by `run_pipeline`), written in the census."""


def crash_point(what: str, path: str | Path = "") -> None:
    """One point a crash may come at (`what`: `before-rename`, `after-rename`, `append-half`, ...)."""
    global _points
    if not (_CRASH_AT or _CENSUS):
        return
    _points += 1
    if _CENSUS:
        with open(_CENSUS, "a", encoding="utf-8") as f:
            f.write(f"{_points}\t{STAGE}\t{what}\t{path}\n")
    if _points == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object]) -> Path:
    """Write `data` (text as UTF-8, bytes, or a function that writes into the open binary file, e.g.
    `lambda f: torch.save(state, f)`) to `path` through a uniquely named temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes the file private; the kit's files are ordinary ones
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        crash_point("before-rename", path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    crash_point("after-rename", path)
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append one line (ending in a newline) to `path` and flush it to disk. A crash can leave the last line torn;
    readers skip a torn last line (`read_lines`)."""
    data = line.encode("utf-8")
    with open(path, "ab") as f:
        if _CRASH_AT or _CENSUS:
            f.write(data[: len(data) // 2])
            f.flush()
            crash_point("append-half", path)
            data = data[len(data) // 2 :]
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    crash_point("append", path)


def read_lines(path: str | Path) -> tuple[list[str], bool]:
    """The complete lines of an appended file, and whether a torn last line (a crash mid-append) was left out."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines[-1] != ""
    return [ln for ln in lines[:-1] if ln], torn


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A folder filled inside the `with` block and moved into place at its end (replacing any folder there: the old
    one is renamed aside first and removed only once the new one is in place); on an error nothing is left behind
    and an existing `path` stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.rmdir(old)
            path.rename(old)
        try:
            tmp.rename(path)
        except BaseException:
            if old is not None:
                old.rename(path)  # the old folder goes back
            raise
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- memory ---------------------------------------------------------------------------------------


def _load_libc():
    name = ctypes.util.find_library("c") if platform.system() == "Linux" else None
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc on Linux; elsewhere nothing to do).

    A pass frees tens of megabytes of scratch tensors per layer and batch; glibc keeps most of them in its
    heap once its mmap threshold has risen, so without this the resident memory of a long pass, or of a
    second pass in the same process, grows with the heap's garbage rather than with what is kept.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
