"""Which neurons a run explains: the listed ones, a seeded uniform sample per layer, and each layer's most selective
(highest excess kurtosis), kept apart as their own group."""

from __future__ import annotations

import random

import numpy as np

from .records import NeuronId
from .seeds import mix_seed


class PipelineError(ValueError):
    """A run that cannot start as configured (a neuron list that cannot be read included)."""


def parse_neurons(items: list[str], layers: list[int]) -> list[NeuronId]:
    """`N` means neuron N of every layer in `layers`; `L:N` one neuron of layer L."""
    out = []
    for item in items:
        try:
            if ":" in str(item):
                layer, neuron = (int(x) for x in str(item).split(":"))
                out.append(NeuronId(layer, neuron))
            else:
                out.extend(NeuronId(layer, int(item)) for layer in layers)
        except ValueError as exc:
            raise PipelineError(
                f"cannot read neuron {item!r}: write N (every chosen layer) or LAYER:N, e.g. 5:123"
            ) from exc
    return sorted(set(out))


def select_neurons(
    layers: list[int], d_mlp: int, neurons: list[str] | None = None, sample: int = 2, seed: int = 0
) -> list[NeuronId]:
    """The listed neurons, or `sample` per layer drawn uniformly (the same seed gives the same neurons)."""
    if neurons:
        chosen = parse_neurons(neurons, layers)
        bad = [n for n in chosen if n.layer_index not in layers or not 0 <= n.neuron_index < d_mlp]
        if bad:
            raise PipelineError(
                f"neuron {bad[0].layer_index}:{bad[0].neuron_index} is not in the collection "
                f"(layers {layers}, neurons 0 to {d_mlp - 1}); add its layer with --collect.layers or pick another"
            )
        return chosen
    if sample > d_mlp:
        raise PipelineError(f"cannot sample {sample} neurons from a layer of {d_mlp}")
    return sorted(
        NeuronId(layer, n)
        for layer in layers
        for n in random.Random(mix_seed(seed, layer)).sample(range(d_mlp), sample)
    )


def most_selective(acts, layers: list[int], per_layer: int, exclude: list[NeuronId] = ()) -> list[NeuronId]:
    """Each layer's `per_layer` neurons of highest excess kurtosis over the corpus (the collection's own moments: a
    neuron silent on most tokens and strong on a few), leaving out `exclude` (the sample)."""
    if per_layer <= 0:
        return []
    skip = {(n.layer_index, n.neuron_index) for n in exclude}
    out = []
    for layer in layers:
        kurt = np.nan_to_num(acts.moments(layer)[:, 3], nan=-np.inf)
        ranked = [int(i) for i in np.argsort(-kurt, kind="stable") if (layer, int(i)) not in skip]
        out += [NeuronId(layer, i) for i in ranked[:per_layer]]
    return sorted(out)
