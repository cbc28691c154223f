"""Reading a finished collection, one neuron at a time, with numpy alone (no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..records import NEGATIVE, POSITIVE, ActivationRecord, CollectionManifest, NeuronId, NeuronRecord, check_sign

FORMAT_VERSION = 1


class CollectError(ValueError):
    """A collection that cannot run or cannot be read."""


@dataclass(frozen=True)
class SignShares:
    """How a neuron's activation is split between its two signs."""

    negative_mass_share: float | None
    """Share of the neuron's summed |activation| over every token of the corpus that is negative."""
    negative_tail_share: float | None
    """The same over the tokens whose |activation| is above the top-k threshold (the larger of the two sides' k-th
    strongest window peak): exact, since every such token lies in a kept window. None when no token is above it."""
    threshold: float | None
    """That threshold."""


@dataclass
class NeuronWrites:
    """The tokens a neuron side's direct path to the logits raises and lowers most, with their logit weights."""

    raised: list[tuple[str, float]]
    """Raised most first."""
    lowered: list[tuple[str, float]]
    """Lowered most first (negative weights)."""

    def line(self, n: int = 6) -> str:
        """One line: `raises 'Monday' 'Friday' ...; lowers ...`."""
        show = lambda items: " ".join(repr(t) for t, _ in items[:n])  # noqa: E731
        return f"raises {show(self.raised)}; lowers {show(self.lowered)}"


class Activations:
    """A finished collection on disk; records are read one neuron at a time with memory mapping.

    `sign` chooses the side that `neuron_record` reads by default: `positive` (the windows with the highest
    peaks) or `negative` (the most negative windows, with every activation negated)."""

    def __init__(self, path: str | Path, sign: str = POSITIVE):
        self.path = Path(path)
        self.sign = check_sign(sign)
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            raise CollectError(f"{self.path} holds no collection (no manifest.json); run collection first")
        self.manifest = CollectionManifest.from_json_obj(json.loads(manifest.read_text()))
        if self.manifest.status != "complete":
            raise CollectError(
                f"the collection in {self.path} is not finished ({self.manifest.done_windows} of "
                f"{self.manifest.corpus.get('n_windows')} windows); run it again to resume"
            )
        self.windows = np.load(self.path / "windows.npy", mmap_mode="r")
        self._strings: list[str] | None = None
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    @property
    def layers(self) -> list[int]:
        return list(self.manifest.layers)

    @property
    def d_mlp(self) -> int:
        return int(self.manifest.d_mlp)

    @property
    def token_strings(self) -> list[str]:
        if self._strings is None:
            self._strings = json.loads((self.path / "token_strings.json").read_text())
        return self._strings

    def _array(self, layer: int, name: str) -> np.ndarray | None:
        key = (layer, name)
        if key not in self._arrays:
            file = self.path / f"layer_{layer:02d}" / f"{name}.npy"
            self._arrays[key] = np.load(file, mmap_mode="r") if file.exists() else None
        return self._arrays[key]

    def moments(self, layer: int) -> np.ndarray:
        """[d_mlp, 4] mean, variance, skewness and excess kurtosis of every neuron of `layer`."""
        return np.asarray(self._array(layer, "moments"))

    def own_windows(self, layer: int, neuron: int) -> set[int]:
        """The ids of the windows kept as the neuron's top or most negative windows (on either side)."""
        ids = set(self._array(layer, "top_windows")[neuron].tolist())
        if (bottom := self._array(layer, "bottom_windows")) is not None:
            ids |= set(bottom[neuron].tolist())
        return ids - {-1}

    def _random_records(self, layer: int, neuron: int, factor: float = 1.0) -> list[ActivationRecord]:
        """The neuron's random sample without any window that is one of its own top or most negative windows (by
        window id), so a held-out random window is never a window the explainer may have been shown."""
        ids = np.array(self._array(layer, "random_windows")[neuron])
        ids[np.isin(ids, list(self.own_windows(layer, neuron)))] = -1
        return self._records(self._array(layer, "random_acts")[neuron], ids, factor)

    def _records(self, acts: np.ndarray, window_ids: np.ndarray, factor: float = 1.0) -> list[ActivationRecord]:
        strings = self.token_strings
        out = []
        for a, w in zip(acts, window_ids, strict=True):
            if w < 0:
                continue
            out.append(
                ActivationRecord(
                    tokens=[strings[t] for t in self.windows[w]],
                    activations=[factor * float(v) + 0.0 for v in a],
                    token_ids=[int(t) for t in self.windows[w]],
                )
            )
        return out

    @property
    def has_negative(self) -> bool:
        """True when the collection kept each neuron's most negative windows (so its negative side can be read)."""
        return all(self._array(layer, "bottom_windows") is not None for layer in self.layers)

    def side(self, sign: str) -> Activations:
        """The same collection, read from the side `sign`."""
        if sign == self.sign:
            return self
        other = Activations(self.path, sign)
        other._strings, other._arrays = self._strings, self._arrays
        return other

    def neuron_record(self, layer: int, neuron: int, sign: str | None = None) -> NeuronRecord:
        """One neuron's record, on the side `sign` (None: this reader's side). The negative side's record has the
        same shape as the positive one's: its most negative windows as `most_positive_activation_records` and its
        random sample, all with negated activations, and the moments of the negated activation; it has no
        quantile bands (they are bands of the window maximum)."""
        sign = check_sign(sign or self.sign)
        self._check(layer, neuron)
        record = self._negative_record(layer, neuron) if sign == NEGATIVE else self._positive_record(layer, neuron)
        record.writes = self.writes(layer, neuron, sign)
        return record

    def _positive_record(self, layer: int, neuron: int) -> NeuronRecord:
        mean, var, skew, kurt = (float(v) for v in self._array(layer, "moments")[neuron])
        bounds = self._array(layer, "quantile_boundaries")
        band_acts, band_windows = self._array(layer, "band_acts")[neuron], self._array(layer, "band_windows")[neuron]
        return NeuronRecord(
            neuron_id=NeuronId(layer, neuron),
            random_sample=self._random_records(layer, neuron),
            random_sample_by_quantile=None
            if bounds is None
            else [self._records(a, w) for a, w in zip(band_acts, band_windows, strict=True)],
            quantile_boundaries=None if bounds is None else [float(v) for v in bounds[neuron]],
            mean=mean,
            variance=var,
            skewness=skew,
            kurtosis=kurt,
            most_positive_activation_records=self._records(
                self._array(layer, "top_acts")[neuron], self._array(layer, "top_windows")[neuron]
            ),
        )

    def _negative_record(self, layer: int, neuron: int) -> NeuronRecord:
        bottom = self._array(layer, "bottom_windows")
        if bottom is None:
            raise CollectError(
                f"the collection in {self.path} kept no most-negative windows (collected with bottom_k 0, or before "
                "nxkit kept them), so the negative side cannot be explained; explain the positive side (--sign "
                "positive) or collect again under another run name (--collect.bottom-k 40)"
            )
        mean, var, skew, kurt = (float(v) for v in self._array(layer, "moments")[neuron])
        return NeuronRecord(
            neuron_id=NeuronId(layer, neuron),
            random_sample=self._random_records(layer, neuron, -1.0),
            mean=-mean,
            variance=var,
            skewness=-skew,
            kurtosis=kurt,
            most_positive_activation_records=self._records(
                self._array(layer, "bottom_acts")[neuron], bottom[neuron], -1.0
            ),
        )

    def sign_shares(self, layer: int, neuron: int) -> SignShares:
        """How much of the neuron's activation is negative: over every token, and above the top-k threshold."""
        self._check(layer, neuron)
        mass = self._array(layer, "mass")
        total = float(mass[neuron].sum()) if mass is not None else 0.0
        share = float(mass[neuron, 1]) / total if total > 0 else None
        top, bottom = self._array(layer, "top_acts"), self._array(layer, "bottom_acts")
        if bottom is None:
            return SignShares(share, None, None)
        pos, neg = np.asarray(top[neuron], dtype=np.float64), -np.asarray(bottom[neuron], dtype=np.float64)
        top_w, bottom_w = self._array(layer, "top_windows")[neuron], self._array(layer, "bottom_windows")[neuron]
        pos, neg = pos[top_w >= 0], neg[bottom_w >= 0]
        if not len(pos) or not len(neg):
            return SignShares(share, None, None)
        threshold = max(float(pos.max(axis=1).min()), float(neg.max(axis=1).min()), 0.0)
        above_pos, above_neg = pos[pos > threshold].sum(), neg[neg > threshold].sum()
        tail = float(above_neg / (above_pos + above_neg)) if above_pos + above_neg > 0 else None
        return SignShares(share, tail, threshold)

    def writes(self, layer: int, neuron: int, sign: str | None = None, k: int = 10) -> NeuronWrites | None:
        """What the neuron writes to the logits through its direct path (`collection.output`): the `k` tokens it
        raises and lowers most on the side `sign` (swapped on the negative side, whose activation is negative);
        None when the collection has no projection stored."""
        self._check(layer, neuron)
        arrays = [self._array(layer, name) for name in ("writes_up_ids", "writes_up", "writes_down_ids", "writes_down")]
        if any(a is None for a in arrays):
            return None
        strings = self.token_strings
        up_ids, up, down_ids, down = (np.asarray(a[neuron]) for a in arrays)
        raised = [(strings[int(i)], float(v)) for i, v in zip(up_ids[:k], up[:k], strict=True)]
        lowered = [(strings[int(i)], float(v)) for i, v in zip(down_ids[:k], down[:k], strict=True)]
        if (sign or self.sign) == NEGATIVE:
            raised, lowered = [(t, -v) for t, v in lowered], [(t, -v) for t, v in raised]
        return NeuronWrites(raised, lowered)

    def _check(self, layer: int, neuron: int) -> None:
        if layer not in self.layers:
            raise CollectError(f"layer {layer} was not collected; this collection has layers {self.layers}")
        if not 0 <= neuron < self.d_mlp:
            raise CollectError(f"neuron {neuron} is out of range: layers have neurons 0 to {self.d_mlp - 1}")


def load_neuron(path: str | Path, layer: int, neuron: int, sign: str = POSITIVE) -> NeuronRecord:
    """One neuron's record from a finished collection directory (on the side `sign`)."""
    return Activations(path).neuron_record(layer, neuron, sign)
