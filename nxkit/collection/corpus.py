"""Text sources packed into fixed-length token windows, deterministically for a seed."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

FORTUNES_DIR = Path("/usr/share/games/fortunes")
SOURCES = ("default", "fortunes", "pydoc", "hf:<dataset>[:<config>][:<split>]", "<path>.txt", "<path>.jsonl")


class CorpusError(ValueError):
    """A corpus that cannot be read or is empty."""


def fortunes_available() -> bool:
    return any(_fortune_files())


def _fortune_files() -> list[Path]:
    if not FORTUNES_DIR.is_dir():
        return []
    return sorted(p for p in FORTUNES_DIR.iterdir() if p.is_file() and p.suffix not in (".dat", ".u8"))


def fortunes_documents() -> list[str]:
    """Debian's `fortunes` quotes, one document each (files separate quotes with a `%` line)."""
    files = _fortune_files()
    if not files:
        raise CorpusError(
            f"no fortunes files under {FORTUNES_DIR}; install them with `apt-get install fortunes` "
            "or use the `pydoc` corpus, which is always present"
        )
    docs: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.extend(q.strip() for q in text.split("\n%\n") if q.strip() and q.strip() != "%")
    return docs


def pydoc_documents() -> list[str]:
    """Python's own help topics (`pydoc_data`), one document per paragraph block of each topic."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    for name in sorted(topics):
        docs.extend(p.strip() for p in topics[name].split("\n\n\n") if p.strip())
    return docs


def hf_documents(spec: str, text_column: str = "text", max_documents: int | None = None) -> list[str]:
    """A Hugging Face dataset, `hf:name[:config][:split]` (needs a reachable hub)."""
    parts = spec.split(":")[1:]
    name, config, split = (
        parts[0],
        (parts[1] if len(parts) > 1 and parts[1] else None),
        (parts[2] if len(parts) > 2 else "train"),
    )
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # the hub client raises many types for "unreachable"
        raise CorpusError(
            f"could not load Hugging Face dataset {name!r} ({type(exc).__name__}: {exc}); it needs a reachable hub. "
            "Offline, use corpus 'fortunes', 'pydoc' or a local .txt/.jsonl file"
        ) from exc
    docs = []
    for row in ds:
        docs.append(str(row[text_column]))
        if max_documents is not None and len(docs) >= max_documents:
            break
    return docs


def file_documents(path: Path, text_column: str = "text") -> list[str]:
    """A local `.txt` (documents separated by blank lines) or `.jsonl` (one object per line) file."""
    if not path.exists():
        raise CorpusError(f"corpus file {path} does not exist")
    if path.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(str(json.loads(line)[text_column]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(f"{path}:{i}: expected a JSON object with a {text_column!r} field ({exc})") from exc
        return docs
    return [d.strip() for d in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if d.strip()]


def load_documents(source: str = "default", text_column: str = "text", max_documents: int | None = None) -> list[str]:
    """Documents of a named source: `default` (fortunes if installed, else pydoc), `fortunes`,
    `pydoc`, `hf:dataset[:config][:split]`, or a path to a `.txt` / `.jsonl` file."""
    if source == "default":
        source = "fortunes" if fortunes_available() else "pydoc"
    if source == "fortunes":
        docs = fortunes_documents()
    elif source == "pydoc":
        docs = pydoc_documents()
    elif source.startswith("hf:"):
        docs = hf_documents(source, text_column, max_documents)
    elif source.endswith((".txt", ".jsonl")):
        docs = file_documents(Path(source), text_column)
    else:
        raise CorpusError(f"unknown corpus {source!r}; choose one of: {', '.join(SOURCES)}")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise CorpusError(f"corpus {source!r} holds no text; point it at a source with documents in it")
    return docs[:max_documents] if max_documents else docs


@dataclass
class Windows:
    """Token windows ready for the subject model."""

    tokens: Int[Tensor, "n_windows window"]
    """Token ids, one row per window."""
    source: str
    """The corpus name they came from."""
    n_documents: int
    """Documents read (after shuffling, up to the token budget)."""
    n_tokens: int
    """Tokens in the windows (n_windows x window)."""

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def window(self) -> int:
        return int(self.tokens.shape[1])

    def summary(self) -> str:
        return f"{self.n_windows:,} windows of {self.window} tokens ({self.n_tokens:,} tokens) from {self.n_documents:,} documents of '{self.source}'"


def make_windows(
    tokenizer,
    source: str = "default",
    window: int = 64,
    max_tokens: int | None = None,
    seed: int = 0,
    documents: list[str] | None = None,
) -> Windows:
    """Tokenise documents (shuffled by `seed`), join them with the end-of-text token and cut the
    stream into windows of `window` tokens, shuffled by `seed` too.

    The same tokenizer, source, window, budget and seed always give the same windows. The window
    order is random, so any prefix of the windows is a uniform sample of the corpus.
    """
    if window < 2:
        raise CorpusError(f"window must be at least 2 tokens, got {window}")
    docs = list(documents) if documents is not None else load_documents(source)
    if not any(d.strip() for d in docs):
        raise CorpusError("the corpus is empty; give it documents with text in them")
    rng = random.Random(seed)
    rng.shuffle(docs)
    sep = tokenizer.eos_token_id
    stream: list[int] = []
    used = 0
    budget = None if max_tokens is None else max_tokens + window
    for doc in docs:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        stream.extend(ids)
        if sep is not None:
            stream.append(sep)
        used += 1
        if budget is not None and len(stream) >= budget:
            break
    n = len(stream) // window
    if max_tokens is not None:
        n = min(n, max_tokens // window)
    if n == 0:
        raise CorpusError(
            f"corpus {source!r} gave {len(stream)} tokens, fewer than one window of {window}; "
            "use a larger corpus or a smaller window"
        )
    tokens = torch.tensor(stream[: n * window], dtype=torch.int64).view(n, window)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return Windows(tokens=tokens[order].contiguous(), source=source, n_documents=used, n_tokens=n * window)
