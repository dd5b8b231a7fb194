"""Quantization-aware training: fake-quant in the forward pass, straight-through gradients, BN folding.

Weights are fake-quantized with min-max on every step (the range follows the weights as they train);
activations with a moving-average min-max. Batch norm stays a separate statistic while training and is
folded into the conv weight inside the fake-quant (torch's Conv-BN QAT modules), so the rounding the
network learns to tolerate is the rounding of the folded weight that the int8 kernel will hold.
"""

from __future__ import annotations

from torch.ao.quantization.fake_quantize import FakeQuantize
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

from autocompress.compress._quant_base import (
    QuantFactory,
    Quantizer,
    QuantSpec,
    activation_kwargs,
    minmax_weight_observer,
)


class QATQuantizer(Quantizer):
    name = "qat"
    trains = True

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        observer = minmax_weight_observer(spec)
        return FakeQuantize.with_args(observer=observer)

    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        return FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **activation_kwargs(spec))
