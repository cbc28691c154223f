"""A run directory: the manifest, the collection, and one explanation file and summary per neuron.

Layout of `runs/<name>/`:
    manifest.json                        every stage's settings, library versions, token usage
    activations/                         the collection (`nxkit.collect`)
    explanations/{layer}/{neuron}.jsonl  one line: `NeuronSimulationResults` (chosen explanation, valid split)
    neurons/{layer}/{neuron}.json        nxkit's summary: candidates, scores, control, failures, status
Files are written atomically, summary last, so a neuron is finished exactly when its summary says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .records import NeuronId, NeuronSimulationResults, dump_simulation_results, load_simulation_results

FINISHED = ("done", "dead", "failed")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Run:
    """One run directory (created on first write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def activations_dir(self) -> Path:
        return self.path / "activations"

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}

    def update_manifest(self, **sections: Any) -> dict[str, Any]:
        """Merge top-level sections into manifest.json (other sections are kept)."""
        manifest = {**self.manifest(), **sections}
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=1, default=str))
        return manifest

    def activations(self):
        from .collect import Activations

        return Activations(self.activations_dir)

    def explanation_path(self, layer: int, neuron: int) -> Path:
        return self.path / "explanations" / str(layer) / f"{neuron}.jsonl"

    def neuron_path(self, layer: int, neuron: int) -> Path:
        return self.path / "neurons" / str(layer) / f"{neuron}.json"

    def write_neuron(self, nid: NeuronId, summary: dict, results: NeuronSimulationResults | None = None) -> None:
        """Write the explanation file (if any) and then the summary, each atomically."""
        if results is not None:
            _atomic_write(
                self.explanation_path(nid.layer_index, nid.neuron_index), dump_simulation_results(results) + "\n"
            )
        _atomic_write(self.neuron_path(nid.layer_index, nid.neuron_index), json.dumps(summary, indent=1))

    def read_neuron(self, nid: NeuronId) -> dict | None:
        path = self.neuron_path(nid.layer_index, nid.neuron_index)
        return json.loads(path.read_text()) if path.exists() else None

    def read_results(self, nid: NeuronId) -> NeuronSimulationResults | None:
        path = self.explanation_path(nid.layer_index, nid.neuron_index)
        return load_simulation_results(path.read_text().splitlines()[0]) if path.exists() else None

    def neurons(self) -> list[NeuronId]:
        """Every neuron with a summary, sorted."""
        root = self.path / "neurons"
        if not root.exists():
            return []
        out = [NeuronId(int(p.parent.name), int(p.stem)) for p in root.glob("*/*.json") if p.stem.isdigit()]
        return sorted(out)

    def done_neurons(self, statuses: tuple[str, ...] = FINISHED) -> list[NeuronId]:
        """Neurons whose summary has one of `statuses` (finished ones by default)."""
        return [n for n in self.neurons() if (s := self.read_neuron(n)) and s.get("status") in statuses]

    def is_finished(self, nid: NeuronId, retry_failed: bool = False) -> bool:
        """True when a re-run should skip this neuron."""
        summary = self.read_neuron(nid)
        if summary is None:
            return False
        return summary.get("status") in (("done", "dead") if retry_failed else FINISHED)

    def todo(self, neurons: list[NeuronId], retry_failed: bool = False) -> list[NeuronId]:
        """The neurons of `neurons` not finished yet, in order."""
        return [n for n in neurons if not self.is_finished(n, retry_failed)]

    def score_rows(self) -> list[dict]:
        """One row per finished neuron with its scores (the input of `score.mean_scores`)."""
        rows = []
        for nid in self.done_neurons(("done",)):
            s = self.read_neuron(nid)
            rows.append(
                {
                    "layer": nid.layer_index,
                    "neuron": nid.neuron_index,
                    "explanation": s.get("explanation"),
                    **{k: s.get(k) for k in ("top_and_random", "random_only", "shuffled_control", "shuffled_gap")},
                }
            )
        return rows


def ensure_collection(
    run_dir: str | Path,
    layers: list[int],
    max_tokens: int = 64 * 256,
    source: str = "default",
    model=None,
    **config,
) -> Run:
    """The run at `run_dir`, collecting a small activation set first if it has none (notebooks use this)."""
    from .collect import CollectConfig, collect
    from .corpus import make_windows
    from .subject import load_subject

    run = Run(run_dir)
    manifest = run.activations_dir / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("status") == "complete":
        return run
    model = model or load_subject()
    windows = make_windows(model.tokenizer, source, max_tokens=max_tokens)
    config.setdefault("quantile_calibration_windows", 64)
    collect(model, windows, run.activations_dir, CollectConfig(layers=layers, **config))
    return run
