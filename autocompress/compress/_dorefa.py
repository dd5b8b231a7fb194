"""DoReFa-Net weight quantization (Zhou et al., 2016), trained with straight-through gradients.

The weight is squashed with ``tanh`` and normalised by its largest magnitude before rounding, so training
sees a bounded, evenly used range whatever the raw weights do. Unlike the paper's 2**b-level grid (which
has no zero and no int8 equivalent) the grid here is the symmetric one of every quantizer, so the trained
weight lowers exactly to int8. And since the transform acts on the BN-folded weight (the one the int8 kernel
holds), the squashed weight is scaled back by that weight's own (detached) peak magnitude, which keeps the
layer's output scale. Folded weights are larger than the paper's, so ``tanh`` bends them more: DoReFa
needs more fine-tuning than QAT to recover (2 epochs where QAT needs 0.5 in the contract tests). As in
NNI, DoReFa governs the weights; activations use the QAT moving average fake-quant at the policy's
activation bits.
"""

from __future__ import annotations

import torch
from torch.ao.quantization.fake_quantize import FakeQuantize
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

from autocompress.compress._quant_base import (
    QuantFactory,
    Quantizer,
    QuantSpec,
    activation_kwargs,
    minmax_weight_observer,
)


class DoReFaWeightFakeQuantize(FakeQuantize):
    """Fake-quantizes ``max|w| * tanh(w) / max|tanh(w)|``; after `bake` the layer holds that value and
    this module is a plain min-max fake-quant (so lowering quantizes exactly what training saw)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.baked = False

    def _peak(self, tensor: torch.Tensor) -> torch.Tensor:
        """Largest magnitude per output channel (broadcastable to `tensor`), or of the whole tensor."""
        if self.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
            return tensor.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *([1] * (tensor.dim() - 1)))
        return tensor.abs().max().clamp_min(1e-12)

    def transform(self, weight: torch.Tensor) -> torch.Tensor:
        squashed = torch.tanh(weight)
        return squashed / self._peak(squashed.detach()) * self._peak(weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.baked else self.transform(x))

    @torch.no_grad()
    def bake(self, weight: torch.Tensor) -> torch.Tensor:
        self.baked = True
        return self.transform(weight)


class DoReFaQuantizer(Quantizer):
    name = "dorefa"
    trains = True

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        return DoReFaWeightFakeQuantize.with_args(observer=minmax_weight_observer(spec))

    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        return FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **activation_kwargs(spec))
