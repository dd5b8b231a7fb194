"""Dynamic int8: int8 weights, activations quantized on the fly per call (no calibrated activation range).

For transformers: static int8 needs a fixed activation range at every layer border and leaves attention
(matmuls, softmax) and GELU in float with a quantize/dequantize around each int8 Linear, which made a small
ViT slower (STACK.md). Dynamic int8 picks each input's range at run time, so inputs with large outliers
(MiniLM's FFN outputs reach |x| ~ 25) lose less, and only the Linear layers change; everything between them
stays float with no extra steps. Only `nn.Linear` has a dynamic int8 kernel on x86, and only at 8 bits.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.ao.quantization.observer import PlaceholderObserver

from autocompress.compress._quant_base import QuantFactory, Quantizer, QuantSpec, minmax_weight_observer


class DynamicQuantizer(Quantizer):
    """Dynamic int8 for Linear layers (``quantizer: dynamic``): symmetric min-max weights (per channel unless
    the policy says per-tensor), activation ranges computed per call; calibration batches are not needed."""

    name: ClassVar[str] = "dynamic"
    dynamic: ClassVar[bool] = True
    min_weight_bits: ClassVar[int] = 8

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        return minmax_weight_observer(spec)

    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        return PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True)

    def bits_run(self, spec: QuantSpec) -> tuple[int, int]:
        """Activations are quantized to 8 bits on every call, whatever ``activation_bits`` the policy asks."""
        return spec.weight_bits, 8

    def check(self, specs: dict[str, QuantSpec]) -> None:
        for name, spec in specs.items():
            if spec.weight_bits != 8:
                raise ValueError(
                    f"quantizer 'dynamic' supports 8-bit weights only; layer {name!r} asks for {spec.weight_bits}"
                )
