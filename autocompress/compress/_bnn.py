"""Binarized networks (Hubara et al., 2016; XNOR-Net scaling): +-1 weights and activations.

A layer at 1 weight bit holds ``sign(w) * a`` with ``a = mean|w|`` per output channel (per tensor without
per-channel), which is exactly an int8 weight in ``{-1, 0, +1}`` at scale ``a``. A layer at 1 activation
bit gets its *input* binarized by a `SignActivation` inserted before it, a real ``sign`` op that stays in
the deployed graph (there is no 1-bit kernel; the +-1 values then travel in int8). Both use the
straight-through estimator clipped to ``|x| <= 1``. Layers the policy gives 2..8 bits are quantized as by
QAT, so one policy can mix binary and multi-bit layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization.fake_quantize import FakeQuantize
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

from autocompress.compress._quant_base import (
    QuantFactory,
    Quantizer,
    QuantSpec,
    activation_kwargs,
    minmax_weight_observer,
)


def _straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` forward; gradient 1 where ``|x| <= 1`` else 0 (the clipped STE of BNN)."""
    clipped = x.clamp(-1.0, 1.0)
    return clipped + (rounded - clipped).detach()


class SignActivation(nn.Module):
    """``sign(x)`` forward, clipped straight-through gradient backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _straight_through(x, torch.sign(x))


class BinaryWeightFakeQuantize(FakeQuantize):
    """Fake-quantizes a weight to ``sign(w) * mean|w|``; its min-max observer on ``[-1, 1]`` then yields
    scale ``mean|w|`` exactly."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.baked = False

    def binarize(self, weight: torch.Tensor) -> torch.Tensor:
        if self.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
            alpha = weight.detach().abs().flatten(1).mean(dim=1).view(-1, *([1] * (weight.dim() - 1)))
        else:
            alpha = weight.detach().abs().mean()
        return torch.sign(weight.detach()) * alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.baked:
            return super().forward(x)
        binary = self.binarize(x)
        return super().forward(x + (binary - x).detach())

    @torch.no_grad()
    def bake(self, weight: torch.Tensor) -> torch.Tensor:
        self.baked = True
        return self.binarize(weight)


class BNNQuantizer(Quantizer):
    name = "bnn"
    trains = True
    min_weight_bits = 1

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        observer = minmax_weight_observer(spec)
        if spec.weight_bits == 1:
            return BinaryWeightFakeQuantize.with_args(observer=observer)
        return FakeQuantize.with_args(observer=observer)

    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        # a 1-bit activation is the sign before the layer; the layer's own output travels in 8 bits
        bits = 8 if spec.activation_bits == 1 else spec.activation_bits
        kwargs = activation_kwargs(QuantSpec(spec.weight_bits, bits, spec.per_channel))
        return FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **kwargs)

    def rewrite(self, model: nn.Module, specs: dict[str, QuantSpec]) -> nn.Module:
        for name, spec in specs.items():
            if spec.activation_bits == 1:
                model.set_submodule(name, nn.Sequential(SignActivation(), model.get_submodule(name)))
        return model
