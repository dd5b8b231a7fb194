"""Learned step size quantization (Esser et al., 2020): the quantizer's scale is a trained parameter.

Scales start at ``2 * mean|x| / sqrt(q_max)`` (the paper's initialisation) from the first batch seen,
then train with the task loss through torch's learnable fake-quant ops, with the paper's gradient scale
``1 / sqrt(numel * q_max)``. Activations also learn their zero point (LSQ+), since inputs and residual sums
are not all non-negative. What lowering uses is the learned scale itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.ao.quantization.fake_quantize import FakeQuantizeBase
from torch.ao.quantization.observer import MinMaxObserver

from autocompress.compress._quant_base import (
    QuantFactory,
    Quantizer,
    QuantSpec,
    activation_range,
    weight_qscheme,
    weight_range,
)


class LsqFakeQuantize(FakeQuantizeBase):
    """Fake-quant with a learned scale (per tensor or per channel along axis 0) and, optionally, a learned
    zero point. Exposes the attributes `torch.ao` lowering reads (dtype, qscheme, range, ch_axis)."""

    def __init__(
        self,
        quant_min: int,
        quant_max: int,
        dtype: torch.dtype,
        qscheme: torch.qscheme,
        learn_zero_point: bool = False,
        factory_kwargs: dict[str, object] | None = None,
    ) -> None:
        super().__init__()  # factory_kwargs (parameter device/dtype) is accepted for torch.ao; CPU only
        self.quant_min, self.quant_max, self.dtype, self.qscheme = quant_min, quant_max, dtype, qscheme
        self.ch_axis = 0
        # torch.ao's backend checks read the integer range from an observer; this one only describes it
        symmetric = qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
        self.activation_post_process = MinMaxObserver(
            dtype=dtype,
            quant_min=quant_min,
            quant_max=quant_max,
            qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine,
        )
        self.is_dynamic = False
        self.learn_zero_point = learn_zero_point
        self.scale = nn.Parameter(torch.ones(1))
        self.zero_point = nn.Parameter(torch.zeros(1), requires_grad=learn_zero_point)
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def per_channel(self) -> bool:
        return self.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """A fresh quantizer takes the stored scale's and zero point's shapes (per channel once initialised, as
        torch.ao's `FakeQuantize` does), so the state of a fine-tuned model loads into a newly prepared one."""
        for name in ("scale", "zero_point"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                getattr(self, name).data = torch.empty_like(stored)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        magnitude = x.abs().flatten(1).mean(dim=1) if self.per_channel else x.abs().mean().view(1)
        scale = (2 * magnitude / math.sqrt(self.quant_max)).clamp_min(1e-8)
        zero_point = torch.zeros_like(scale)
        if self.learn_zero_point:
            low, high = float(x.min()), float(x.max())
            scale = torch.full_like(scale, max((high - low) / (self.quant_max - self.quant_min), 1e-8))
            zero_point = torch.full_like(scale, float(self.quant_min - round(low / float(scale[0]))))
            zero_point.clamp_(self.quant_min, self.quant_max)
        self.scale.data = scale
        self.zero_point.data = zero_point
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self._initialise(x.detach())
        if not bool(self.fake_quant_enabled[0]):
            return x
        per_unit = x.numel() / (x.shape[0] if self.per_channel else 1)
        grad_factor = 1.0 / math.sqrt(per_unit * self.quant_max)
        if self.per_channel:
            return torch._fake_quantize_learnable_per_channel_affine(
                x, self.scale, self.zero_point, self.ch_axis, self.quant_min, self.quant_max, grad_factor
            )
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, self.scale, self.zero_point, self.quant_min, self.quant_max, grad_factor
        )

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        scale = self.scale.detach().abs().clamp_min(1e-8)
        zero_point = self.zero_point.detach().round().clamp(self.quant_min, self.quant_max).to(torch.int32)
        if not self.per_channel:
            return scale.view(()).clone().reshape(1), zero_point.reshape(1)
        return scale, zero_point


class LSQQuantizer(Quantizer):
    name = "lsq"
    trains = True

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        low, high = weight_range(spec.weight_bits)
        return LsqFakeQuantize.with_args(
            quant_min=low, quant_max=high, dtype=torch.qint8, qscheme=weight_qscheme(spec.per_channel)
        )

    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        low, high = activation_range(spec.activation_bits)
        return LsqFakeQuantize.with_args(
            quant_min=low, quant_max=high, dtype=torch.quint8, qscheme=torch.per_tensor_affine, learn_zero_point=True
        )
