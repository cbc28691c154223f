"""Records: JSON in the public release's shape, splits and 0-10 scaling (pure, no model)."""

import json
import math

import pytest

from nxkit.heldout import interleaved_split, random_splits, split_records, top_splits
from nxkit.records import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    dump_neuron_record,
    load_neuron_record,
    normalize_activations,
)


def _record(n_top=8, n_random=6):
    top = [ActivationRecord(tokens=["a", " b", "\n"], activations=[0.0, 5.0 - i * 0.5, -0.25]) for i in range(n_top)]
    rnd = [ActivationRecord(tokens=["x", "<script>"], activations=[0.1 * i, 0.0]) for i in range(n_random)]
    return NeuronRecord(
        neuron_id=NeuronId(3, 17),
        random_sample=rnd,
        random_sample_by_quantile=[rnd[:2], rnd[2:4]],
        quantile_boundaries=[0.3],
        mean=0.125,
        variance=1.5,
        skewness=-0.75,
        kurtosis=3.0000000000000004,
        most_positive_activation_records=top,
    )


def test_round_trip_is_exact():
    rec = _record()
    text = dump_neuron_record(rec)
    back = load_neuron_record(text)
    assert back == rec
    assert dump_neuron_record(back) == text


def test_json_has_release_shape():
    obj = json.loads(dump_neuron_record(_record()))
    assert obj["dataclass_name"] == "NeuronRecord"
    assert obj["neuron_id"] == {"dataclass_name": "NeuronId", "layer_index": 3, "neuron_index": 17}
    assert set(obj) == {
        "dataclass_name", "neuron_id", "random_sample", "random_sample_by_quantile", "quantile_boundaries",
        "mean", "variance", "skewness", "kurtosis", "most_positive_activation_records",
    }  # fmt: skip
    first = obj["most_positive_activation_records"][0]
    assert first == {
        "dataclass_name": "ActivationRecord",
        "tokens": ["a", " b", "\n"],
        "activations": [0.0, 5.0, -0.25],
    }


def test_nan_moments_become_null_and_load_as_none():
    rec = NeuronRecord(neuron_id=NeuronId(0, 0))
    obj = json.loads(dump_neuron_record(rec))
    assert obj["mean"] is None
    assert load_neuron_record(dump_neuron_record(rec)).mean is None


def test_load_rejects_other_objects():
    with pytest.raises(ValueError, match="expected a NeuronRecord"):
        load_neuron_record('{"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 1}')
    with pytest.raises(ValueError, match="unknown dataclass_name"):
        load_neuron_record('{"dataclass_name": "Nope"}')


def test_interleaved_splits_deal_round_robin():
    rec = _record(n_top=8, n_random=6)
    tops = top_splits(rec)
    assert [r.activations[1] for r in tops["train"]] == [5.0, 3.0]
    assert [r.activations[1] for r in tops["calibration"]] == [4.5, 2.5]
    assert [r.activations[1] for r in tops["test"]] == [3.5, 1.5]
    rnd = random_splits(rec)
    assert [r.activations[0] for r in rnd["valid"]] == [pytest.approx(0.1), pytest.approx(0.4)]
    valid = split_records(rec, "valid")
    assert valid == tops["valid"] + rnd["valid"]
    assert split_records(rec, "train") == tops["train"]


def test_split_errors():
    with pytest.raises(ValueError, match="cannot fill"):
        interleaved_split([1, 2, 3], ("a", "b"), per_split=2)
    with pytest.raises(ValueError, match="unknown split"):
        split_records(_record(), "holdout")


def test_normalize_to_0_10():
    assert normalize_activations([0.0, 1.0, 2.0, -1.0, 0.94, 0.96], 2.0) == [0, 5, 10, 0, 5, 5]
    assert normalize_activations([0.05, 0.049], 1.0) == [1, 0]
    assert normalize_activations([3.0, 1.0], 0.0) == [0, 0]
    assert normalize_activations([3.0], 1.0) == [10]


def test_max_activation():
    assert _record().max_activation == 5.0
    assert NeuronRecord(neuron_id=NeuronId(0, 0)).max_activation == 0.0
    assert math.isnan(NeuronRecord(neuron_id=NeuronId(0, 0)).mean)
