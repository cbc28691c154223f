"""A run directory: the only module that knows its layout.

Layout of `runs/<name>/`:
    manifest.json                        every stage's settings, library versions, token usage
    activations/                         the collection (`nxkit.collection` owns what is inside)
    explanations/{layer}/{neuron}.jsonl  one line: `NeuronSimulationResults` (kept explanation first, valid split)
    neurons/{layer}/{neuron}.json        `NeuronSummary`: candidates, scores, control, failures, status
    revisions/{layer}/{neuron}.json      `NeuronRevision`: every revision round
    table.parquet, table.journal.jsonl   the run table: one row per neuron
    negative/                            the neurons' negative sides, laid out as above (a run of its own that
                                         reads the same collection with every activation negated)
    report.html                          the run report
Files are written atomically, summary last, so a neuron is finished exactly when its summary says so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import scorers
from .files import append_line, atomic_write, crash_point, read_lines
from .records import (
    NEGATIVE,
    POSITIVE,
    SAMPLE,
    CollectionManifest,
    NeuronId,
    NeuronRevision,
    NeuronSimulationResults,
    NeuronSummary,
    RunManifest,
    ScoredExplanation,
    ScoredSimulation,
    check_sign,
    dump_simulation_results,
    dumps,
    from_json_obj,
    load_simulation_results,
    to_json_obj,
)
from .rundir import RunFileError, hold_directory, read_json, read_typed

FINISHED = ("done", "dead", "failed")
INTERVAL_COLUMNS = [f"{k}_{end}" for k in ("top_and_random", "random_only", "shuffled_control", "shuffled_gap")
                    for end in ("lo", "hi")]  # fmt: skip
"""The 95% bootstrap interval of each score, its low and high end."""
TABLE_COLUMNS = [
    "run", "layer", "neuron", "sign", "status", "reason", "explanation", "kept", "top_and_random", "random_only",
    "top_and_random_flag", "random_only_flag", "shuffled_control", "shuffled_gap", "max_activation",
    "original_explanation", "original_top_and_random", "revision_status", "score_before", "score_after",
    "n_windows", "n_failed", "requests", "prompt_tokens", "completion_tokens", "simulator", "formula",
    "negative_mass_share", "negative_tail_share", "test_top_and_random", *INTERVAL_COLUMNS,
]  # fmt: skip
"""Columns of the run table that every run has, one row per neuron and side; each registered scorer adds its own
(`table_columns`)."""
NUMERIC_COLUMNS = [
    "top_and_random", "random_only", "shuffled_control", "shuffled_gap", "max_activation", "original_top_and_random",
    "score_before", "score_after", "n_windows", "n_failed", "requests", "prompt_tokens", "completion_tokens",
    "negative_mass_share", "negative_tail_share", "test_top_and_random", *INTERVAL_COLUMNS,
]  # fmt: skip


def table_columns() -> list[str]:
    """Every column of the run table: the common ones and each registered scorer's (`{scorer}_{field}`)."""
    return TABLE_COLUMNS + scorers.table_columns()


JOURNAL_ROWS = 2000
"""Rows appended to the table's journal before it is folded into the Parquet file."""
_TABLE_LOCK = threading.RLock()
"""The table's journal and Parquet file are written by one thread at a time (revision runs in threads)."""


log = logging.getLogger(__name__)


class Run:
    """One run directory (created on first write), on one side of its neurons.

    `Run(path)` is the positive side, whose files are the public release's layout; `Run(path, "negative")` (or
    `run.side("negative")`) is the negative side in `path/negative/`, with the same layout and record shapes,
    reading the same collection with every activation negated."""

    def __init__(self, path: str | Path, sign: str = POSITIVE):
        self.root = Path(path)
        self.sign = check_sign(sign)
        self.path = self.root if sign == POSITIVE else self.root / NEGATIVE
        self._journal_rows: int | None = None  # rows in the table's journal, counted on first append

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})" if self.sign == POSITIVE else f"Run({str(self.root)!r}, {self.sign!r})"

    def side(self, sign: str) -> Run:
        """This run on the side `sign`."""
        return self if sign == self.sign else Run(self.root, sign)

    def sides(self) -> list[Run]:
        """The sides of this run that hold neurons (the positive side always comes first)."""
        out = [self.side(POSITIVE)]
        negative = self.side(NEGATIVE)
        return out + ([negative] if (negative.path / "neurons").exists() else [])

    @property
    def label(self) -> str:
        """The run's name (its directory's), whichever side."""
        return self.root.name

    # --- paths ---

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def activations_dir(self) -> Path:
        return self.root / "activations"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    def _neuron_file(self, kind: str, nid: NeuronId, suffix: str = ".json") -> Path:
        return self.path / kind / str(nid.layer_index) / f"{nid.neuron_index}{suffix}"

    def explanation_path(self, nid: NeuronId) -> Path:
        return self._neuron_file("explanations", nid, ".jsonl")

    def summary_path(self, nid: NeuronId) -> Path:
        return self._neuron_file("neurons", nid)

    def revision_path(self, nid: NeuronId) -> Path:
        return self._neuron_file("revisions", nid)

    # --- manifest and collection ---

    def manifest(self) -> RunManifest:
        """The run's manifest (an empty one before anything was recorded); older plain-dict manifests read too."""
        if not self.manifest_path.exists():
            return RunManifest()
        obj = from_json_obj(read_json(self.manifest_path))
        return obj if isinstance(obj, RunManifest) else RunManifest.from_json_obj(obj)

    def update_manifest(self, **sections: Any) -> RunManifest:
        """Set sections of manifest.json (the others are kept); each is a field of `RunManifest`."""
        manifest = self.manifest()
        for name, value in sections.items():
            if name not in RunManifest.__dataclass_fields__:
                raise ValueError(
                    f"{name!r} is not a section of a run manifest; sections: {list(RunManifest.__dataclass_fields__)}"
                )
            setattr(manifest, name, value)
        manifest.__post_init__()  # plain dicts given for typed sections become records
        atomic_write(self.manifest_path, json.dumps(to_json_obj(manifest), indent=1, default=str))
        return manifest

    def has_collection(self) -> bool:
        """True when a finished collection is in `activations/`."""
        manifest = self.collection_manifest()
        return manifest is not None and manifest.status == "complete"

    def collection_manifest(self) -> CollectionManifest | None:
        """The collection's manifest (model, corpus, settings), None when there is none."""
        path = self.activations_dir / "manifest.json"
        return CollectionManifest.from_json_obj(read_json(path)) if path.exists() else None

    def activations(self):
        from .collection.activations import Activations

        return Activations(self.activations_dir, self.sign)

    # --- per-neuron records ---

    # --- the lock, and what a crash left half done ---

    @contextmanager
    def lock(self):
        """Hold the run directory for this process (an `fcntl` lock on `.lock`, released when the process ends,
        however it ends): a second process stops at once, naming the holder. Re-entrant within a process. On taking
        it, finishes what a killed process left half written (`recover`)."""
        with hold_directory(self.root) as first:
            if first:
                for side in self.sides_on_disk():
                    side.recover()
            yield self

    def sides_on_disk(self) -> list[Run]:
        """Both sides of this run whose folders exist."""
        return [r for r in (self.side(POSITIVE), self.side(NEGATIVE)) if r.path.exists()]

    def _pending_path(self, nid: NeuronId) -> Path:
        return self.path / "pending" / f"{nid.layer_index}.{nid.neuron_index}"

    def recover(self) -> list[NeuronId]:
        """Finish the neuron writes a killed process left half done: each neuron whose write began (a `pending/`
        marker) gets its table row from the files on disk. Returns those neurons."""
        root = self.path / "pending"
        if not root.exists():
            return []
        out = []
        for marker in sorted(root.iterdir()):
            layer, _, neuron = marker.name.partition(".")
            if not (layer.isdigit() and neuron.isdigit()):
                continue
            nid = NeuronId(int(layer), int(neuron))
            summary = self.read_neuron(nid)
            if summary is not None:
                self.append_row(summary)
            marker.unlink()
            out.append(nid)
        if out:
            log.info("%s: finished the table rows of %d neurons a stopped process was writing", self.path, len(out))
        return out

    def write_neuron(
        self,
        summary: NeuronSummary,
        results: NeuronSimulationResults | None = None,
        revision: NeuronRevision | None = None,
    ) -> None:
        """Write a neuron's explanation file (if any), its summary, its revision file (if any) and its table row.
        Each file is atomic; a marker in `pending/` spans them, so that a crash in between is finished on resume
        (`recover`): the revision file, which resume reads as "revised", is written after what it changes."""
        nid = summary.neuron_id
        marker = self._pending_path(nid)
        atomic_write(marker, "")
        if results is not None:
            atomic_write(self.explanation_path(nid), dump_simulation_results(results) + "\n")
        atomic_write(self.summary_path(nid), dumps(summary))
        if revision is not None:
            atomic_write(self.revision_path(nid), dumps(revision))
        self.append_row(summary, revision)
        marker.unlink()
        crash_point("marker-removed", marker)

    # --- the run table: Parquet, with a journal of the rows written since it was last compacted ---

    @property
    def table_path(self) -> Path:
        return self.path / "table.parquet"

    @property
    def journal_path(self) -> Path:
        return self.path / "table.journal.jsonl"

    def append_row(self, summary: NeuronSummary, revision: NeuronRevision | None = None) -> None:
        """Record a neuron's current row (a later row of the same neuron supersedes it): one appended line, so a
        killed run's table holds exactly the neurons written (a line torn by a crash is left out on reading);
        compacted into the Parquet file every `JOURNAL_ROWS` rows."""
        revision = revision if revision is not None else self.read_revision(summary.neuron_id)
        row = table_row(summary, revision, self.label, self.sign)
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with _TABLE_LOCK:
            self._end_journal_cleanly()
            append_line(self.journal_path, line)
            if self._journal_rows is None:
                self._journal_rows = sum(1 for _ in open(self.journal_path, encoding="utf-8"))
            else:
                self._journal_rows += 1
            if self._journal_rows >= JOURNAL_ROWS:
                self._compact()

    def _journal_rows_on_disk(self) -> list[dict]:
        """The journal's complete rows (a torn last line, from a crash mid-append, is left out and said)."""
        if not (self.journal_path.exists() and self.journal_path.stat().st_size):
            return []
        lines, torn = read_lines(self.journal_path)
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RunFileError(
                    f"{self.journal_path} line {i + 1} is damaged ({exc}); delete the journal and run "
                    "`nxkit run` again: its rows are rebuilt from the neurons' summaries"
                ) from exc
        if torn:
            log.warning("%s: the last line was cut off by a stopped process; it is left out", self.journal_path)
        return rows

    def _end_journal_cleanly(self) -> None:
        """Cut a torn last line off the journal before appending after it (its neuron is rewritten by `recover`)."""
        if not self.journal_path.exists():
            return
        size = self.journal_path.stat().st_size
        if not size:
            return
        with open(self.journal_path, "rb+") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())

    def compact_table(self) -> Path:
        """Fold the journal into `table.parquet` (atomic replace); returns its path."""
        with _TABLE_LOCK:
            self._compact()
        return self.table_path

    def _compact(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        df = self._table_frame()
        if df is None:
            return
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink, compression="zstd")
        atomic_write(self.table_path, sink.getvalue().to_pybytes())
        if self.journal_path.exists():
            atomic_write(self.journal_path, "")
        self._journal_rows = 0

    def _table_frame(self):
        """The Parquet rows with the journal's on top (the last row of each neuron wins); None when neither exists."""
        import pandas as pd

        parts = []
        if self.table_path.exists():
            parts.append(pd.read_parquet(self.table_path))
        rows = self._journal_rows_on_disk()
        if rows:
            parts.append(pd.DataFrame(rows))
        if not parts:
            return None
        df = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
        df = df.drop_duplicates(["layer", "neuron"], keep="last").sort_values(["layer", "neuron"], ignore_index=True)
        return _typed(df.reindex(columns=_columns_of(df)))

    def read_neuron(self, nid: NeuronId) -> NeuronSummary | None:
        return read_typed(self.summary_path(nid), NeuronSummary)

    def read_results(self, nid: NeuronId) -> NeuronSimulationResults | None:
        path = self.explanation_path(nid)
        if not path.exists():
            return None
        try:
            return load_simulation_results(path.read_text(encoding="utf-8").splitlines()[0])
        except (json.JSONDecodeError, UnicodeDecodeError, IndexError, KeyError, TypeError) as exc:
            raise RunFileError(
                f"{path} is damaged ({type(exc).__name__}: {exc}); move it away together with the neuron's summary "
                f"{self.summary_path(nid)} and run again: the neuron is redone"
            ) from exc

    def read_revision(self, nid: NeuronId) -> NeuronRevision | None:
        return read_typed(self.revision_path(nid), NeuronRevision)

    def write_revision(self, revision: NeuronRevision, kept: ScoredSimulation | None = None) -> None:
        """Write a neuron's revision file and show its outcome in the summary and the explanation file.

        When the revision beat the original (`kept` is its scored simulation), the summary's explanation
        and scores become the revision's, with the original beside them, and the explanation file lists
        the revision first and the original after it. Otherwise the original stays (or is put back).
        """
        nid = revision.neuron_id
        summary, results = self.read_neuron(nid), self.read_results(nid)
        if summary is None or summary.status != "done" or results is None:
            atomic_write(self.revision_path(nid), dumps(revision))
            return
        original = next(
            (e for e in results.scored_explanations if e.explanation == summary.original_explanation),
            results.scored_explanations[-1],
        )
        if kept is not None and revision.final_explanation != summary.original_explanation:
            summary.explanation, summary.scores, summary.kept = (
                revision.final_explanation,
                revision.scores_after,
                "revised",
            )
            explanations = [ScoredExplanation(revision.final_explanation, kept), original]
        else:
            summary.explanation, summary.scores, summary.kept = (
                summary.original_explanation,
                summary.original_scores,
                "original",
            )
            explanations = [original]
        self.write_neuron(summary, NeuronSimulationResults(nid, explanations), revision)

    def neurons(self) -> list[NeuronId]:
        """Every neuron with a summary, sorted."""
        root = self.path / "neurons"
        if not root.exists():
            return []
        out = [NeuronId(int(p.parent.name), int(p.stem)) for p in root.glob("*/*.json") if p.stem.isdigit()]
        return sorted(out)

    def summaries(self, statuses: tuple[str, ...] | None = None) -> list[NeuronSummary]:
        """Every neuron's summary, sorted by neuron (only those with one of `statuses`, when given)."""
        out = [s for n in self.neurons() if (s := self.read_neuron(n)) is not None]
        return [s for s in out if statuses is None or s.status in statuses]

    def done_neurons(self, statuses: tuple[str, ...] = FINISHED) -> list[NeuronId]:
        """Neurons whose summary has one of `statuses` (finished ones by default)."""
        return [s.neuron_id for s in self.summaries(statuses)]

    def is_finished(self, nid: NeuronId, retry_failed: bool = False) -> bool:
        """True when a re-run should skip this neuron."""
        summary = self.read_neuron(nid)
        if summary is None:
            return False
        return summary.status in (("done", "dead") if retry_failed else FINISHED)

    def todo(self, neurons: list[NeuronId], retry_failed: bool = False) -> list[NeuronId]:
        """The neurons of `neurons` not finished yet, in order."""
        return [n for n in neurons if not self.is_finished(n, retry_failed)]

    # --- the run table ---

    def table(self, label: str | None = None, neurons: list[NeuronId] | None = None):
        """One row per neuron with a summary (a pandas DataFrame with `TABLE_COLUMNS`): the one run table that the
        summary printout, the report, the inspector and the figures all read."""
        import pandas as pd

        with _TABLE_LOCK:
            df = self._table_frame()
        if df is None:  # a run written before the table existed: built from its summaries once, then kept
            rows = [table_row(s, self.read_revision(s.neuron_id), self.label, self.sign) for s in self.summaries()]
            df = _typed(pd.DataFrame(rows, columns=table_columns()))
        df = df.assign(group=self._groups_of(df))
        if neurons is not None:
            keep = {(n.layer_index, n.neuron_index) for n in neurons}
            df = df[[(int(a), int(b)) in keep for a, b in zip(df["layer"], df["neuron"], strict=True)]]
            df = df.reset_index(drop=True)
        if label is not None:
            df = df.assign(run=label)
        return df

    def _groups_of(self, df) -> list[str]:
        """Each row's group (`RunManifest.groups`, kept in the positive side's manifest): `sample` unless listed."""
        groups = Run(self.root).manifest().groups or {}
        of = {(layer, n): g for g, ns in groups.items() for layer, n in ns}
        return [of.get((int(a), int(b)), SAMPLE) for a, b in zip(df["layer"], df["neuron"], strict=True)]

    def sides_table(self, label: str | None = None, neurons: list[NeuronId] | None = None):
        """The run table of every side, one row per neuron and side (positive rows first)."""
        import pandas as pd

        return pd.concat([r.table(label, neurons) for r in self.sides()], ignore_index=True)


SIDE_COLUMNS = ["status", "explanation", "top_and_random", "random_only", "shuffled_control", "shuffled_gap"]
"""Columns `side_by_side` shows for each side."""


def side_by_side(df):
    """A run table of both sides (`Run.sides_table`) as one row per neuron: each side's `SIDE_COLUMNS` with the suffix
    `_positive` or `_negative`, and the neuron's negative mass shares."""
    keys, shares = ["layer", "neuron"], ["negative_mass_share", "negative_tail_share"]
    sides = {sign: df[df["sign"] == sign].set_index(keys) for sign in (POSITIVE, NEGATIVE)}
    out = sides[POSITIVE][SIDE_COLUMNS].join(sides[NEGATIVE][SIDE_COLUMNS], how="outer", lsuffix="_positive",
                                              rsuffix="_negative")  # fmt: skip
    both = sides[POSITIVE][shares].combine_first(sides[NEGATIVE][shares])
    return out.join(both).reset_index().sort_values(keys, ignore_index=True)


def _columns_of(df) -> list[str]:
    """The run table's columns, then any other column the rows hold (a scorer not registered in this process)."""
    known = table_columns()
    return known + [c for c in df.columns if c not in known]


def _typed(df):
    """Numeric columns as numbers (undefined scores as NaN), whatever the rows were read from."""
    import pandas as pd

    numeric = NUMERIC_COLUMNS + [c for c in scorers.table_columns() if not c.endswith("flag")]
    for col in numeric:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("layer", "neuron"):
        df[col] = df[col].astype("int64")
    df["sign"] = df["sign"].fillna(POSITIVE).astype(str)  # tables written before the negative side existed
    return df


def table_row(
    summary: NeuronSummary, revision: NeuronRevision | None = None, label: str = "", sign: str = POSITIVE
) -> dict[str, Any]:
    """A neuron's row of the run table (on one side)."""
    s, orig = summary, summary.original_scores
    return {
        "run": label,
        "layer": s.neuron_id.layer_index,
        "neuron": s.neuron_id.neuron_index,
        "sign": sign,
        "status": s.status,
        "reason": s.reason,
        "explanation": s.explanation,
        "kept": s.kept,
        "top_and_random": s.top_and_random,
        "random_only": s.random_only,
        "top_and_random_flag": s.scores.top_and_random_flag,
        "random_only_flag": s.scores.random_only_flag,
        "shuffled_control": s.shuffled_control,
        "shuffled_gap": s.shuffled_gap,
        "max_activation": s.max_activation,
        "original_explanation": s.original_explanation,
        "original_top_and_random": orig.top_and_random if orig else None,
        "revision_status": revision.status if revision else None,
        "score_before": revision.score_before if revision else None,
        "score_after": revision.score_after if revision else None,
        "n_windows": s.scores.n_windows,
        "n_failed": s.scores.n_failed,
        "requests": s.usage.requests,
        "prompt_tokens": s.usage.prompt_tokens,
        "completion_tokens": s.usage.completion_tokens,
        "simulator": s.simulator.label if s.simulator else None,
        "formula": next((formula_text(c.formula) for c in s.candidates if c.formula and c.text == s.explanation), None),
        "negative_mass_share": s.negative_mass_share,
        "negative_tail_share": s.negative_tail_share,
        "test_top_and_random": s.test_scores.top_and_random if s.test_scores else None,
        **_ends("top_and_random", s.scores.top_and_random_interval),
        **_ends("random_only", s.scores.random_only_interval),
        **_ends("shuffled_control", s.shuffled_control_interval),
        **_ends("shuffled_gap", s.shuffled_gap_interval),
        **scorers.table_values(s.scorer_results),
    }


def _ends(name: str, interval: list[float] | None) -> dict[str, float | None]:
    lo, hi = interval if interval else (None, None)
    return {f"{name}_lo": lo, f"{name}_hi": hi}


def formula_text(terms: list) -> str:
    """A stored formula (`[[op, kind, arg], ...]`) as one line: `concept:fruit.n.01 OR after:of`."""
    return " ".join(f"{op.upper().replace('_', ' ')} {kind}:{arg}".strip() for op, kind, arg in terms)


def as_run(run: Run | str | Path) -> Run:
    """A `Run` from a run or its directory."""
    return run if isinstance(run, Run) else Run(run)
