"""The searchable settings of unstructured pruning and activation bits: resolution, backward-compatible JSON, and
a real search that stores what it searched (their bad values are cases of tests/test_space.py's one-line-error
test)."""

from __future__ import annotations

import json

import pytest

import autocompress
from autocompress.errors import UserError
from autocompress.measure import count_bops
from autocompress.space import LayerSetting, Policy, Space, discover_layers, parse_space, resolve_space
from autocompress.store import StudyStore
from experiments.tasks.digits import DigitsNet, task
from tests.conftest import FAST_SPACE


@pytest.fixture(scope="module")
def layers():
    return discover_layers(DigitsNet().eval(), task.example_input(1))


def test_one_bit_activations_need_the_bnn_quantizer(layers) -> None:
    with pytest.raises(UserError, match=r"layers.fc.activation_bits: 1 bit needs defaults.quantizer 'bnn'"):
        resolve_space(parse_space("task: x:y\nlayers: {fc: {activation_bits: [1, 8]}}"), layers)
    space = resolve_space(parse_space("task: x:y\ndefaults: {quantizer: bnn, activation_bits: [1, 8]}"), layers)
    assert space.layers["fc"].activation_bits == (1, 8)


def test_new_settings_resolve_into_dimensions_and_policies(layers) -> None:
    spec = parse_space(
        "task: x:y\ndefaults: {channel_sparsity: [0.0], weight_bits: [8], weight_sparsity: [0.0, 0.5],"
        " activation_bits: [8, 4], pruner: agp}\nlayers: {fc: {weight_sparsity: [0.0]}}"
    )
    space = resolve_space(spec, layers)
    dims = {(layer, setting): choices for layer, setting, choices in space.dimensions()}
    assert dims[("stem.0", "weight_sparsity")] == (0.0, 0.5) and dims[("stem.0", "activation_bits")] == (4, 8)
    assert ("fc", "weight_sparsity") not in dims and ("fc", "weight_bits") not in dims
    policy = space.policy_from_params({"stem.0/weight_sparsity": 0.5, "stem.0/activation_bits": 4})
    assert policy["stem.0"] == LayerSetting(0.0, 8, activation_bits=4, weight_sparsity=0.5)
    assert policy["fc"] == LayerSetting(0.0, 8, activation_bits=4, weight_sparsity=0.0)  # first choices
    assert policy.pruner == "agp" and space.contains(policy)
    assert not space.contains(
        Policy.from_mapping({n: LayerSetting(0.0, 8, activation_bits=8, weight_sparsity=0.25) for n in space.layers})
    )
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space


def test_policies_and_spaces_without_the_new_settings_keep_their_json(layers) -> None:
    old_policy = {"criterion": "l1", "layers": {"a": {"channel_sparsity": 0.5, "weight_bits": 8}}}
    policy = Policy.from_dict(old_policy)
    assert policy.pruner == "level" and policy["a"].weight_sparsity == 0.0 and policy["a"].activation_bits is None
    assert policy.to_dict() == old_policy  # nothing new is written when nothing new is set
    space = resolve_space(parse_space("task: x:y"), layers)
    stored = space.to_dict()
    assert "pruner" not in stored and all(
        set(c) == {"channel_sparsity", "weight_bits"} for c in stored["layers"].values()
    )
    assert Space.from_dict(stored) == space
    sparse = Policy.from_mapping({"a": LayerSetting(0.0, 8, activation_bits=4, weight_sparsity=0.75)}, pruner="lottery")
    assert sparse.to_dict()["pruner"] == "lottery" and sparse.to_dict()["layers"]["a"]["weight_sparsity"] == 0.75
    assert Policy.from_dict(json.loads(sparse.to_json())) == sparse
    assert sparse.weight_sparsity == {"a": 0.75} and not sparse.is_identity


@pytest.mark.slow
def test_a_search_stores_the_activation_bits_and_weight_sparsity_it_searched(tmp_path) -> None:
    text = (
        FAST_SPACE.replace(
            "defaults: {channel_sparsity: [0.0, 0.25, 0.5], weight_bits: [8, 32]}",
            "defaults: {channel_sparsity: [0.0], weight_bits: [8], activation_bits: [4, 6, 8], "
            "weight_sparsity: [0.0, 0.5], pruner: level}",
        )
        .replace("min_speedup: 1.2", "min_speedup: 0.1")
        .replace("[0.5]", "[0.2]")
    )
    (tmp_path / "space.yaml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    autocompress.search(
        tmp_path / "space.yaml", study="s", storage=storage, trials=3, executor="inline", strategy="random", seed=1
    )
    store = StudyStore(storage)
    try:
        trials = store.trials("s")
    finally:
        store.close()
    assert len(trials) == 3 and all(t.state == "complete" for t in trials)
    bits = {s["activation_bits"] for t in trials for s in t.policy["layers"].values()}
    assert bits <= {4, 6, 8} and len(bits) > 1
    for trial in trials:
        asked = sum(s.get("weight_sparsity", 0.0) > 0 for s in trial.policy["layers"].values())
        assert (trial.metrics["weight_sparsity"] > 0.05) == (asked > 0)
        assert trial.metrics["sparse_bytes"] <= trial.metrics["packed_bytes"]


def test_activation_bits_count_in_bops_only_where_the_weights_are_quantized() -> None:
    macs = {"a": 100, "b": 100}
    policy = Policy.from_mapping(
        {"a": LayerSetting(0.0, 8, activation_bits=4), "b": LayerSetting(0.0, 32, activation_bits=4)}
    )
    assert count_bops(macs, policy) == 100 * 8 * 4 + 100 * 32 * 32  # a float layer keeps float activations
