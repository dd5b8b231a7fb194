"""Policies and space files carry bit-widths 1..8 and 32, activation bits, the quantizer and granularity;
older policy JSON still loads; bad combinations are named at the boundary."""

from __future__ import annotations

import pytest

from autocompress.compress import latency_basis
from autocompress.errors import UserError
from autocompress.measure import count_bops
from autocompress.space import LayerInfo, LayerSetting, Policy, parse_space, resolve_space

LAYERS = [LayerInfo("conv", "Conv2d", 1, 8, True), LayerInfo("fc", "Linear", 8, 10, False, "output")]


def test_policy_json_written_before_quantizers_existed_still_loads() -> None:
    old = {"criterion": "l1", "layers": {"conv": {"channel_sparsity": 0.5, "weight_bits": 8}}}
    policy = Policy.from_dict(old)
    assert policy.quantizer == "histogram" and policy.per_channel and policy["conv"].activation_bits is None
    assert policy.to_dict() == old  # defaults are not written, so stored policies keep their JSON


def test_quantization_fields_round_trip_through_json() -> None:
    policy = Policy.from_mapping({"conv": LayerSetting(0.0, 4, activation_bits=8)}, quantizer="lsq", per_channel=False)
    assert Policy.from_dict(policy.to_dict()) == policy


def test_space_accepts_sub_8_bit_choices_and_the_quantizer() -> None:
    spec = parse_space("task: x:y\ndefaults: {weight_bits: [2, 4, 8, 32], quantizer: qat, per_channel: no}")
    space = resolve_space(spec, LAYERS)
    policy = space.policy_from_params({"conv/weight_bits": 4})
    assert (policy.quantizer, policy.per_channel, policy["conv"].weight_bits) == ("qat", False, 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: x:y\ndefaults: {weight_bits: [16]}", "16 bits is not supported"),
    ],
)
def test_bad_quantization_settings_are_named(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_space(text)


def test_1bit_weights_without_the_binary_quantizer_are_named_before_any_trial() -> None:
    spec = parse_space("task: x:y\nlayers: {conv: {weight_bits: [1, 8]}}")
    with pytest.raises(UserError, match=r"layers\.conv\.weight_bits.*quantizer 'bnn'"):
        resolve_space(spec, LAYERS)


def test_bops_count_weight_times_activation_bits_and_basis_labels_sub_8_bit() -> None:
    macs = {"conv": 1000, "fc": 10}
    mixed = Policy.from_mapping({"conv": LayerSetting(0.0, 4, activation_bits=8), "fc": LayerSetting(0.0, 32)})
    assert count_bops(macs, mixed) == 1000 * 4 * 8 + 10 * 32 * 32
    assert latency_basis(mixed) == "int8-kernel"
    assert latency_basis(Policy.from_mapping({"conv": LayerSetting(0.0, 8)})) == "int8"
    assert latency_basis(Policy.from_mapping({"conv": LayerSetting(0.0, 32)})) == "float"


def test_bops_of_dynamic_int8_count_the_8_bit_activations_it_runs_whatever_the_policy_asks() -> None:
    macs = {"fc": 1000}
    asked_4 = Policy.from_mapping({"fc": LayerSetting(0.0, 8, activation_bits=4)}, quantizer="dynamic")
    assert count_bops(macs, asked_4) == 1000 * 8 * 8
    assert (
        count_bops(macs, Policy.from_mapping({"fc": LayerSetting(0.0, 8, activation_bits=4)})) == 1000 * 8 * 4
    )  # static: as asked
