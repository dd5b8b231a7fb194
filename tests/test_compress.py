"""Pruning physically removes channels and int8 layers really run quantized kernels, on the real digits CNN."""

from __future__ import annotations

import pytest
import torch
from torch.ao.nn import quantized as nnq

from autocompress.compress import prune, quantize
from autocompress.measure import count_macs, count_params
from autocompress.space import LayerSetting, Policy, discover_layers
from experiments.tasks.digits import task


def uniform_policy(sparsity: float, bits: int) -> Policy:
    model = task.baseline_model()
    layers = discover_layers(model, task.example_input(1))
    return Policy.from_mapping(
        {layer.name: LayerSetting(sparsity if layer.prunable else 0.0, bits) for layer in layers}
    )


def test_pruning_removes_channels_across_the_residual_group() -> None:
    model = task.baseline_model()
    before_params, x = count_params(model), task.example_input(4)
    before_macs = sum(count_macs(model, x).values())
    prune(model, uniform_policy(0.5, 32), task.example_input(1))
    assert model.stem[0].out_channels == 16
    assert model.block1.conv2.out_channels == 16  # coupled to stem through the residual add
    assert model.block1.conv1.out_channels == 16 and model.fc.out_features == 10
    assert model(x).shape == (4, 10)
    assert count_params(model) < 0.35 * before_params
    assert sum(count_macs(model, x).values()) < 0.35 * before_macs


def test_int8_policy_lowers_to_quantized_kernels_and_keeps_accuracy() -> None:
    model = task.baseline_model()
    baseline = task.evaluate(model)
    quantized = quantize(model, uniform_policy(0.0, 8), task.example_input(1), task.calibration_batches())
    kinds = {type(m) for m in quantized.modules()}
    assert any(issubclass(k, nnq.Conv2d) for k in kinds), kinds
    assert abs(task.evaluate(quantized) - baseline) <= 0.01


def test_layers_kept_at_32_bits_stay_float() -> None:
    model = task.baseline_model()
    policy = uniform_policy(0.0, 8)
    mixed = Policy.from_mapping({n: LayerSetting(0.0, 32 if n == "fc" else 8) for n, _ in policy})
    quantized = quantize(model, mixed, task.example_input(1), task.calibration_batches())
    assert isinstance(dict(quantized.named_modules())["fc"], torch.nn.Linear)


def test_identity_policy_returns_the_model_unchanged() -> None:
    model = task.baseline_model()
    assert (
        quantize(
            prune(model, uniform_policy(0.0, 32), task.example_input(1)),
            uniform_policy(0.0, 32),
            task.example_input(1),
            [],
        )
        is model
    )


@pytest.mark.parametrize("batch", [1, 32])
def test_macs_match_a_hand_count(batch: int) -> None:
    layer = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 5 * 5, 4))
    macs = count_macs(layer, torch.randn(batch, 3, 5, 5))
    assert macs == {"0": 5 * 5 * 8 * 3 * 9, "2": 4 * 200}
