"""OpenAI's public GPT-2 XL neuron dataset: read any neuron of it over plain HTTPS, write our runs in its layout.

The release keeps one file per neuron and kind under a base URL:

    {base}/explanations/{layer}/{neuron}.jsonl          one line: NeuronSimulationResults
    {base}/collated-activations/{layer}/{neuron}.json   NeuronRecord

`PublicDataset` fetches those files with no credentials (no blob client), many neurons at once with
a bounded thread pool, and caches each file on disk so it is fetched once. The base can also be a
`file://` URL or a plain directory, such as one written by `export_run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import operator
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import __version__
from .files import atomic_write
from .heldout import scored_windows
from .offline import cache_dir
from .records import (
    NEGATIVE,
    POSITIVE,
    RANDOM,
    TOP,
    UNKNOWN,
    HeldOutWindow,
    NeuronId,
    NeuronRecord,
    NeuronSimulationResults,
    NeuronSummary,
    dump_neuron_record,
    dump_simulation_results,
    dumps,
    from_json_obj,
    registered_records,
)
from .runs import as_run

DEFAULT_BASE_URL = "https://openaipublic.blob.core.windows.net/neuron-explainer/data"
"""Root of the release (GPT-2 XL: 48 layers x 6,400 neurons; a few neurons are missing)."""
EXPLANATIONS = "explanations"
ACTIVATIONS = "collated-activations"
PARTS = (EXPLANATIONS, ACTIVATIONS)
_SUFFIX = {EXPLANATIONS: ".jsonl", ACTIVATIONS: ".json"}
# Transient server answers worth another try; 404 and other 4xx are final.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


MAX_FILE_BYTES = 64 * 2**20
"""The most one neuron's file may take (the release's largest are a few MB): a larger answer is refused."""


class PublicDataError(RuntimeError):
    """A file of the public dataset that could not be fetched or parsed; names the neuron and URL."""

    def __init__(self, message: str, neuron_id: NeuronId | None = None, url: str | None = None):
        super().__init__(message)
        self.neuron_id = neuron_id
        self.url = url


class NeuronNotFound(PublicDataError, LookupError):
    """The dataset has no such file (HTTP 404 or a missing local file): the release has gaps."""


class FetchFailed(PublicDataError, ConnectionError):
    """The network failed (no connection, a dropped connection after every retry, a server error)."""


def _neuron_id(neuron: NeuronId | tuple[int, int]) -> NeuronId:
    """A NeuronId from a NeuronId or a (layer, neuron) pair of non-negative integers."""
    try:
        layer, index = (neuron.layer_index, neuron.neuron_index) if isinstance(neuron, NeuronId) else neuron
        nid = NeuronId(operator.index(layer), operator.index(index))
    except (TypeError, ValueError):
        raise ValueError(f"a neuron is a (layer, neuron) pair of integers, got {neuron!r}") from None
    if nid.layer_index < 0 or nid.neuron_index < 0:
        raise ValueError(f"layer and neuron indices start at 0, got {neuron!r}")
    return nid


def _name(nid: NeuronId) -> str:
    return f"layer {nid.layer_index} neuron {nid.neuron_index}"


# --- parsing -------------------------------------------------------------------------------------


def _tag(obj: Any, fields: dict[str, frozenset[str]] | None = None) -> Any:
    """Add `dataclass_name` to objects that lack it, by their field names (older files of the release).

    An exact match of the key set wins; otherwise the one dataclass whose fields contain every key.
    """
    if fields is None:
        fields = {
            name: frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("json", True))
            for name, cls in registered_records().items()
        }
    if isinstance(obj, list):
        return [_tag(v, fields) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _tag(v, fields) for k, v in obj.items()}
    if "dataclass_name" not in out and out:
        keys = frozenset(out)
        exact = [n for n, f in fields.items() if f == keys]
        cover = exact or [n for n, f in fields.items() if keys <= f]
        if len(cover) == 1:
            out = {"dataclass_name": cover[0], **out}
    return out


def parse_neuron_record(data: str | bytes, url: str = "<memory>", neuron_id: NeuronId | None = None) -> NeuronRecord:
    """Parse a `collated-activations` file; PublicDataError names the URL when it holds something else."""
    obj = _parse(data, url, neuron_id)
    if not isinstance(obj, NeuronRecord):
        raise PublicDataError(f"{url} holds a {type(obj).__name__}, not a NeuronRecord", neuron_id, url)
    _check_id(obj.neuron_id, neuron_id, url)
    return obj


def parse_simulation_results(
    data: str | bytes, url: str = "<memory>", neuron_id: NeuronId | None = None
) -> NeuronSimulationResults:
    """Parse an `explanations` file (its first non-empty line); PublicDataError names the URL when it is not one."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    line = next((ln for ln in text.splitlines() if ln.strip()), None)
    if line is None:
        raise PublicDataError(f"{url} is empty; expected one JSON line of NeuronSimulationResults", neuron_id, url)
    obj = _parse(line, url, neuron_id)
    if not isinstance(obj, NeuronSimulationResults):
        raise PublicDataError(f"{url} holds a {type(obj).__name__}, not NeuronSimulationResults", neuron_id, url)
    _check_id(obj.neuron_id, neuron_id, url)
    return obj


def _parse(data: str | bytes, url: str, neuron_id: NeuronId | None) -> Any:
    try:
        return from_json_obj(_tag(json.loads(data)))
    except (ValueError, TypeError) as exc:
        raise PublicDataError(f"{url} is not a file of the release's schema: {exc}", neuron_id, url) from exc


def _check_id(found: Any, expected: NeuronId | None, url: str) -> None:
    if isinstance(found, dict):  # a NeuronId written without its dataclass_name in an untagged file
        found = NeuronId(**found)
    if expected is not None and found != expected:
        raise PublicDataError(f"{url} holds {_name(found)}, not {_name(expected)}", expected, url)


# --- one neuron, a batch -------------------------------------------------------------------------


@dataclass
class PublicNeuron:
    """One neuron of the release: its activation records and its scored explanations (None if not fetched)."""

    neuron_id: NeuronId
    """The neuron."""
    record: NeuronRecord | None = None
    """Its `collated-activations` file."""
    results: NeuronSimulationResults | None = None
    """Its `explanations` file."""

    @property
    def explanation(self) -> str | None:
        """The first (chosen) explanation, as released."""
        return (
            self.results.scored_explanations[0].explanation
            if self.results and self.results.scored_explanations
            else None
        )

    @property
    def score(self) -> float | None:
        """The released correlation score of that explanation (None where undefined)."""
        if not (self.results and self.results.scored_explanations):
            return None
        return self.results.scored_explanations[0].scored_simulation.ev_correlation_score


@dataclass
class BatchResult:
    """What a batch fetch got: complete neurons, neurons with some parts, and one error per failed neuron."""

    neurons: dict[NeuronId, PublicNeuron] = field(default_factory=dict)
    """Neurons whose every requested part arrived, in (layer, neuron) order."""
    partial: dict[NeuronId, PublicNeuron] = field(default_factory=dict)
    """Failed neurons that still got some part (the other is None)."""
    errors: dict[NeuronId, PublicDataError] = field(default_factory=dict)
    """The first error of each failed neuron."""

    @property
    def failed(self) -> list[NeuronId]:
        """Neurons to try again (fetching them again sends requests only for what is still missing)."""
        return sorted(self.errors)

    def raise_errors(self) -> None:
        """Raise a PublicDataError listing the failures, if there were any."""
        if self.errors:
            shown = "; ".join(str(e) for e in list(self.errors.values())[:5])
            more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
            raise PublicDataError(
                f"{len(self.errors)} of {len(self.errors) + len(self.neurons)} neurons failed: {shown}{more}"
            )

    def __repr__(self) -> str:
        return f"BatchResult({len(self.neurons)} neurons, {len(self.partial)} partial, {len(self.errors)} errors)"


class PublicDataset:
    """The release (or a copy in its layout) at `base`: an https:// or http:// URL, a file:// URL or a directory.

    Remote files are cached under `cache` (default `cache_dir()/"public"`, mirroring the URL path), so each
    file is fetched once; local bases are read in place. `workers` bounds the parallel requests and
    `retries` the extra tries after a dropped connection, a timeout or a transient server error.
    """

    def __init__(
        self,
        base: str | Path = DEFAULT_BASE_URL,
        cache: str | Path | None = None,
        workers: int = 8,
        retries: int = 3,
        timeout: float = 30.0,
        backoff: float = 0.5,
    ):
        if workers < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("workers must be >= 1, retries >= 0, timeout > 0 and backoff >= 0")
        base = str(base).rstrip("/")
        if base.startswith("az://openaipublic/"):  # the blob-client spelling of the same files
            base = "https://openaipublic.blob.core.windows.net/" + base.removeprefix("az://openaipublic/")
        self.local: Path | None = None
        if base.startswith("file://"):
            self.local = Path(urllib.request.url2pathname(urllib.parse.urlparse(base).path))
        elif not base.startswith(("http://", "https://")):
            if "://" in base:
                raise ValueError(f"unsupported base {base!r}: use an https:// or file:// URL, or a directory")
            self.local = Path(base).expanduser().resolve()
        self.base = self.local.as_uri() if self.local else base
        self.cache = Path(cache) if cache is not None else cache_dir() / "public"
        self.workers, self.retries, self.timeout, self.backoff = workers, retries, timeout, backoff

    def __repr__(self) -> str:
        return f"PublicDataset({self.base!r})"

    def url(self, part: str, neuron: NeuronId | tuple[int, int]) -> str:
        """The URL of one neuron's file; `part` is EXPLANATIONS or ACTIVATIONS."""
        if part not in _SUFFIX:
            raise ValueError(f"unknown part {part!r}; choose one of {PARTS}")
        nid = _neuron_id(neuron)
        return f"{self.base}/{part}/{nid.layer_index}/{nid.neuron_index}{_SUFFIX[part]}"

    def cache_path(self, url: str) -> Path:
        """Where a remote file is cached: host, then the URL's path."""
        parsed = urllib.parse.urlparse(url)
        return self.cache / parsed.netloc.replace(":", "_") / parsed.path.lstrip("/")

    def reachable(self, timeout: float = 5.0) -> bool:
        """Whether the base answers at all (any HTTP status counts); a local base must be a directory."""
        if self.local is not None:
            return self.local.is_dir()
        try:
            with urllib.request.urlopen(self.base + "/", timeout=timeout):
                return True
        except urllib.error.HTTPError:
            return True  # the server answered, even if the root is not a file
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return False

    def fetch(self, part: str, neuron: NeuronId | tuple[int, int]) -> bytes:
        """The raw bytes of one neuron's file, from the cache when it is there."""
        nid = _neuron_id(neuron)
        url = self.url(part, nid)
        if self.local is not None:
            path = self.local / part / str(nid.layer_index) / f"{nid.neuron_index}{_SUFFIX[part]}"
            if not path.is_file():
                raise NeuronNotFound(f"{_name(nid)} has no {part} file: {url} does not exist", nid, url)
            return path.read_bytes()
        cached = self.cache_path(url)
        if cached.is_file():
            return cached.read_bytes()
        data = self._download(url, nid, part)
        atomic_write(cached, data)
        return data

    def _download(self, url: str, nid: NeuronId, part: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": f"nxkit/{__version__}"})
        what = f"the {part} file of {_name(nid)} from {url}"
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    data = response.read(MAX_FILE_BYTES + 1)
                if len(data) > MAX_FILE_BYTES:
                    raise FetchFailed(
                        f"could not fetch {what}: it is over {MAX_FILE_BYTES // 2**20} MB, far larger than any file of "
                        "the release; check base= (it points at something else)",
                        nid,
                        url,
                    )
                _check_complete(part, data)
                return data
            except FetchFailed:
                raise
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise NeuronNotFound(
                        f"{_name(nid)} is not in the dataset: {url} answered 404 (the release has gaps; skip this "
                        "neuron, or check the layer and neuron indices)",
                        nid,
                        url,
                    ) from exc
                if exc.code not in _RETRY_STATUS:
                    raise FetchFailed(f"could not fetch {what}: HTTP {exc.code} {exc.reason}", nid, url) from exc
                last = exc
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, socket.gaierror):
                    raise FetchFailed(
                        f"could not fetch {what}: the host name does not resolve ({exc.reason}); there is no network "
                        "here, so pass base= a local copy of the files (a directory or file:// URL)",
                        nid,
                        url,
                    ) from exc
                last = exc
            except (http.client.HTTPException, OSError, ValueError) as exc:
                # dropped or reset connection, truncated body, timeout, or a body cut short into bad JSON
                last = exc
        raise FetchFailed(
            f"could not fetch {what} after {self.retries + 1} tries: {last!r}; check the network (or pass base= "
            "a local copy), then fetch again: files already fetched are cached",
            nid,
            url,
        ) from last

    def neuron_record(self, layer: int, neuron: int) -> NeuronRecord:
        """One neuron's activation records (`collated-activations`)."""
        nid = _neuron_id((layer, neuron))
        return parse_neuron_record(self.fetch(ACTIVATIONS, nid), self.url(ACTIVATIONS, nid), nid)

    def simulation_results(self, layer: int, neuron: int) -> NeuronSimulationResults:
        """One neuron's scored explanations (`explanations`)."""
        nid = _neuron_id((layer, neuron))
        return parse_simulation_results(self.fetch(EXPLANATIONS, nid), self.url(EXPLANATIONS, nid), nid)

    def neuron(self, layer: int, neuron: int, parts: Iterable[str] = PARTS) -> PublicNeuron:
        """One neuron with the requested parts; raises the first PublicDataError."""
        got, errors = self._get(_neuron_id((layer, neuron)), tuple(parts))
        if errors:
            raise errors[0]
        return got

    def _get(self, nid: NeuronId, parts: tuple[str, ...]) -> tuple[PublicNeuron, list[PublicDataError]]:
        got, errors = PublicNeuron(nid), []
        for part in parts:
            try:
                if part == ACTIVATIONS:
                    got.record = self.neuron_record(nid.layer_index, nid.neuron_index)
                elif part == EXPLANATIONS:
                    got.results = self.simulation_results(nid.layer_index, nid.neuron_index)
                else:
                    raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
            except PublicDataError as exc:
                errors.append(exc)
        return got, errors

    def fetch_many(
        self, neurons: Iterable[NeuronId | tuple[int, int]], parts: Iterable[str] = PARTS, progress: bool = True
    ) -> BatchResult:
        """Fetch many neurons in parallel (at most `workers` at a time); failures are collected, never raised.

        Everything that arrived is in the result and in the cache, so calling again with `result.failed`
        requests only the files that are still missing.
        """
        ids = sorted({_neuron_id(n) for n in neurons})
        parts = tuple(parts)
        for part in parts:
            if part not in _SUFFIX:
                raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
        result = BatchResult()
        with (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="nxkit-public") as pool,
            tqdm(total=len(ids), desc="public neurons", unit="neuron", disable=not progress) as bar,
        ):
            futures = {pool.submit(self._get, nid, parts): nid for nid in ids}
            for future in as_completed(futures):
                got, errors = future.result()
                if errors:
                    result.errors[got.neuron_id] = errors[0]
                    if got.record is not None or got.results is not None:
                        result.partial[got.neuron_id] = got
                    bar.set_postfix(errors=len(result.errors))
                else:
                    result.neurons[got.neuron_id] = got
                bar.update()
        result.neurons = dict(sorted(result.neurons.items()))
        result.partial = dict(sorted(result.partial.items()))
        result.errors = dict(sorted(result.errors.items()))
        return result


def _check_complete(part: str, data: bytes) -> None:
    """Raise ValueError unless `data` parses as JSON (an explanations file: its first line), so a body cut short
    without a Content-Length is retried rather than cached."""
    text = data.decode("utf-8")
    json.loads(text.splitlines()[0] if part == EXPLANATIONS and text else text)


# --- writing in the release's layout -------------------------------------------------------------


def write_neuron(
    out_dir: str | Path, record: NeuronRecord | None = None, results: NeuronSimulationResults | None = None
) -> list[Path]:
    """Write one neuron's files in the release's layout under `out_dir`; returns the paths written."""
    out, written = Path(out_dir), []
    if record is not None:
        nid = _neuron_id(record.neuron_id)
        path = out / ACTIVATIONS / str(nid.layer_index) / f"{nid.neuron_index}.json"
        atomic_write(path, dump_neuron_record(record).encode("utf-8"))
        written.append(path)
    if results is not None:
        nid = _neuron_id(results.neuron_id)
        if record is not None and nid != record.neuron_id:
            raise ValueError(f"record is {_name(record.neuron_id)} but results are {_name(nid)}")
        path = out / EXPLANATIONS / str(nid.layer_index) / f"{nid.neuron_index}.jsonl"
        atomic_write(path, (dump_simulation_results(results) + "\n").encode("utf-8"))
        written.append(path)
    return written


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    neurons: Iterable[NeuronId | tuple[int, int]] | None = None,
    progress: bool = True,
) -> list[NeuronId]:
    """Export a run of ours (`runs/<name>/`) in the release's layout, so tools built for the release read it.

    Exports `neurons` (default: every neuron the run explained): its activation records, and its
    explanations file when the run has one (the kept explanation first, as the run shows it). A run that explained
    its neurons' negative sides exports them in the same layout under `out_dir/negative/` (records of the negated
    activations). Returns the neurons written (of the side given).
    """
    run = as_run(run_dir)
    ids = sorted({_neuron_id(n) for n in neurons}) if neurons is not None else run.done_neurons(("done",))
    if not ids:
        raise ValueError(
            f"{run.path} has no explanations; explain some neurons first, or pass neurons= to export "
            "activation records alone"
        )
    acts = run.activations()
    for nid in tqdm(ids, desc="export", unit="neuron", disable=not progress):
        write_neuron(out_dir, acts.neuron_record(nid.layer_index, nid.neuron_index), run.read_results(nid))
        if (summary := run.read_neuron(nid)) is not None:
            atomic_write(sidecar_path(out_dir, nid), dumps(sidecar(summary)))
    if run.sign == POSITIVE and len(run.sides()) > 1:
        negative = run.side(NEGATIVE)
        done = set(negative.done_neurons(("done",)))
        if todo := [n for n in ids if n in done]:
            export_run(negative, Path(out_dir) / NEGATIVE, todo, progress)
    return ids


SIDECAR = "nxkit-sidecar"
"""The folder beside the release's layout where an export keeps what the release's schema has no field for."""


def sidecar_path(out_dir: str | Path, nid: NeuronId) -> Path:
    return Path(out_dir) / SIDECAR / str(nid.layer_index) / f"{nid.neuron_index}.json"


def sidecar(summary: NeuronSummary) -> dict[str, Any]:
    """What a neuron's export carries beside the release's files: each scored window's split (in the order of the
    explanations file), the scores with their flags, the shuffled control, the further scorers' results, and
    the simulator that scored it."""
    return {
        "window_splits": summary.window_splits,
        "scores": summary.scores,
        "shuffled_control": summary.shuffled_control,
        "shuffled_control_from": summary.shuffled_control_from,
        "scorer_results": summary.scorer_results,
        "simulator": summary.simulator,
    }


def released_rows(neurons: Iterable[PublicNeuron]) -> list[dict[str, Any]]:
    """One plain row per neuron: its released explanation and score, and the size of its records."""
    rows = []
    for n in neurons:
        rec = n.record
        rows.append(
            {
                "layer": n.neuron_id.layer_index,
                "neuron": n.neuron_id.neuron_index,
                "explanation": n.explanation,
                "score": n.score,
                "max_activation": rec.max_activation if rec else None,
                "top_windows": len(rec.most_positive_activation_records) if rec else None,
                "random_windows": len(rec.random_sample) if rec else None,
            }
        )
    return rows


# --- the windows the release scored ------------------------------------------------------------


def released_splits(neuron: PublicNeuron) -> list[str]:
    """The split of each window the release scored its explanation on, found by matching it against the neuron's
    top and random records (`unknown` when it matches neither, or the records were not fetched)."""
    if not (neuron.results and neuron.results.scored_explanations):
        raise ValueError(f"{_name(neuron.neuron_id)} has no released explanation; fetch its explanations file")
    rec = neuron.record
    top = {tuple(r.tokens) for r in rec.most_positive_activation_records} if rec else set()
    rand = {tuple(r.tokens) for r in rec.random_sample} if rec else set()
    seqs = neuron.results.scored_explanations[0].scored_simulation.scored_sequence_simulations
    out = []
    for s in seqs:
        key = tuple(s.simulation.tokens)
        out.append(TOP if key in top else RANDOM if key in rand else UNKNOWN)
    return out


def released_windows(neuron: PublicNeuron) -> list[HeldOutWindow]:
    """The windows the release scored its explanation on, with real activations and their splits."""
    return scored_windows(neuron.results, released_splits(neuron))  # released_splits says when there are none


# --- a local server, for notebooks and tests -----------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep notebook output clean
        pass


@contextlib.contextmanager
def serve_directory(path: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve a directory over HTTP on loopback (an ephemeral port by default); yields its base URL."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"cannot serve {root}: it is not a directory")
    server = ThreadingHTTPServer((host, port), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=partial(server.serve_forever, poll_interval=0.05), name="nxkit-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
