"""ReLU6 after a quantized conv/linear is absorbed into the layer's int8 kernel: ReLU fused, range capped at 6."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from autocompress.compress import quantize
from autocompress.measure import to_torchscript
from autocompress.space import LayerSetting, Policy
from autocompress.task import SupervisedTask


def int8_ops(model: nn.Module, example: torch.Tensor) -> collections.Counter:
    graph = to_torchscript(model, example).graph
    return collections.Counter(n.kind() for n in graph.nodes() if not n.kind().startswith("prim::"))


def int8(names: list[str], quantizer: str = "histogram") -> Policy:
    return Policy.from_mapping({n: LayerSetting(weight_bits=8) for n in names}, quantizer=quantizer)


class ConvBnRelu6(nn.Module):
    """Activations well above 6 after the first conv, so a missing clamp would show in the output."""

    def __init__(self, shared_activation: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.shared_activation = shared_activation
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.bn(self.conv1(x))))
        return self.act(out) if self.shared_activation else out


def inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [12 * torch.randn(8, 3, 8, 8, generator=generator) for _ in range(4)]


def test_relu6_after_a_quantized_conv_runs_inside_the_conv_kernel_and_still_clamps_at_6() -> None:
    model = ConvBnRelu6()
    batches = inputs()
    hidden = model.bn(model.conv1(batches[0]))
    assert hidden.max() > 18  # without the clamp the second conv would see values far past 6
    deployed = quantize(model, int8(["conv1", "conv2"]), batches[0], batches)
    ops = int8_ops(deployed, batches[0])
    assert ops["quantized::conv2d_relu"] == 1 and ops["aten::hardtanh"] == 0
    with torch.no_grad():
        reference, got = model(batches[0]), deployed(batches[0])
    spread = (reference.max() - reference.min()).item()
    assert (got - reference).abs().max().item() < 0.05 * spread


def test_a_relu6_module_called_twice_stays_an_op() -> None:
    model = ConvBnRelu6(shared_activation=True)
    batches = inputs()
    deployed = quantize(model, int8(["conv1", "conv2"]), batches[0], batches)
    assert int8_ops(deployed, batches[0])["aten::hardtanh"] == 2
    with torch.no_grad():
        assert deployed(batches[0]).max().item() <= 6.0 + 1e-6


def test_trained_quantizers_keep_relu6_as_an_op() -> None:
    # fake-quant training has no capped range to lean on: the clamp stays where the model put it
    model = ConvBnRelu6()
    batches = inputs()
    deployed = quantize(model, int8(["conv1", "conv2"], quantizer="qat"), batches[0], batches)
    assert int8_ops(deployed, batches[0])["aten::hardtanh"] == 1


@pytest.mark.slow
def test_mobilenet_int8_has_no_separate_relu6_and_keeps_its_accuracy() -> None:
    from tests.quantize.conftest import TASKS

    task: SupervisedTask = TASKS["mobilenet"]
    model = task.baseline_model()
    relu6 = sum(isinstance(m, nn.ReLU6) for m in model.modules())
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    deployed = quantize(model, int8(names), task.example_input(1), task.calibration_batches())
    ops = int8_ops(deployed, task.example_input(1))
    assert ops["aten::hardtanh"] == 0 and ops["quantized::conv2d_relu"] == relu6 > 0
    assert task.evaluate(deployed) >= task.evaluate(model) - 0.03
