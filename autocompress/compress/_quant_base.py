"""The `Quantizer` interface: what every quantizer (PTQ observers, QAT, DoReFa, BNN, LSQ) must provide.

A quantizer decides *how* a layer's weights and output activations are rounded (which observer or
fake-quant module, whether it is trained); `autocompress.compress._lowering` owns *where* (the per-layer
map built from the policy) and the one lowering path to real x86 int8 kernels, so every quantizer's result
runs the same way and is measured the same way.

Bit-width conventions (all quantizers):
- weights are signed and symmetric: ``b`` bits use the integer range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``
  (zero is exact, so a ``b``-bit weight is exactly an int8 weight with a coarser scale), except 8 bits on an
  x86 CPU without VNNI, which uses 7 bits' range (see `int8_kernels_saturate`); 1 bit is the binary
  ``{-a, +a}`` of BNN only.
- activations are unsigned and affine: ``b`` bits use ``[0, 2**b - 1]`` with a zero point.
- 32 means float: the layer is left out of quantization.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

#: the bit-widths a policy may ask for; 32 is float
SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)
FLOAT_BITS = 32

#: a zero-argument constructor of an observer or fake-quant module (what `torch.ao` QConfig fields hold)
QuantFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class QuantSpec:
    """How one layer is quantized: weight bits, output-activation bits, per-channel or per-tensor weights."""

    weight_bits: int
    activation_bits: int
    per_channel: bool = True

    @property
    def simulated(self) -> bool:
        """True when some part runs below 8 bits: it is simulated on int8 kernels (no CPU kernel exists)."""
        return self.weight_bits < 8 or self.activation_bits < 8


def weight_range(bits: int) -> tuple[int, int]:
    """Signed symmetric integer range of a ``bits``-bit weight; 1 bit is ``[-1, 1]`` holding only ``+-1``."""
    if bits == 1:
        return -1, 1
    if bits == 8 and int8_kernels_saturate():
        bits = 7
    top = 2 ** (bits - 1) - 1
    return -top, top


@functools.cache
def int8_kernels_saturate() -> bool:
    """True on an x86 CPU without VNNI. Its int8 kernels multiply u8 activations by s8 weights in pairs summed
    into int16 with saturation (``vpmaddubsw``): ``2 * 255 * 127`` overflows, ``2 * 255 * 63`` does not. Torch's
    x86 default keeps activations to 7 bits (``reduce_range``) instead; here the weights give up the bit,
    because the kernels clamp outputs to 0..255 whatever the observer's range, and an absorbed ReLU6 (see
    `_lowering`) relies on that clamp meeting the cap at 6. Measured on an AVX2-only EPYC: the MobileNetV2-like
    model at full-range int8 kept 0.87 accuracy of its 0.97 float."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown CPU: the safe range
    return re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo) is None


def activation_range(bits: int) -> tuple[int, int]:
    """Unsigned integer range of a ``bits``-bit activation."""
    return 0, 2**bits - 1


def weight_qscheme(per_channel: bool) -> torch.qscheme:
    return torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric


class Quantizer(ABC):
    """A way to round weights and activations, plugged into the shared int8 lowering.

    Life cycle, driven by `autocompress.compress.quantize` and `prepare_quantization` (never by the
    quantizer itself):

    1. `rewrite(model, specs)` may replace modules before tracing (BNN inserts its sign activations);
       it receives a private copy and returns it. Default: unchanged.
    2. The model is traced once (`torch.ao` FX) and every layer in ``specs`` gets a `QConfig` built from
       `weight_quant(spec)` and `activation_quant(spec)`; layers at 32 bits get none and stay float.
       With ``trains`` the model is prepared for training (fake-quant in the forward pass, straight-through
       gradients; conv + batch norm become torch's Conv-BN QAT modules, which fold the normalisation into
       the weight before the fake-quant) and the caller fine-tunes it; otherwise the modules are observers
       fed calibration batches and batch norm is folded into the weights before observing.
    3. Before lowering, every weight fake-quant with a ``bake(weight) -> weight`` method has its layer's
       (BN-folded) weight replaced by the baked value (DoReFa's and BNN's weight transforms), so the int8
       weight is exactly what training saw.
    4. The model is lowered to x86 int8 kernels; the qparams come from each module's `calculate_qparams`.

    A quantizer must return modules whose ``dtype`` is ``torch.qint8`` for weights and ``torch.quint8`` for
    activations and whose integer range is the one of `weight_range` / `activation_range` for the bits
    asked, so that the lowered model holds exactly ``spec.weight_bits`` worth of levels per weight.
    Quantizers hold configuration only; they are cheap, stateless and safe to share between trials.
    """

    #: registry name (``Policy.quantizer``)
    name: ClassVar[str]
    #: whether the quantizer needs fine-tuning through fake-quant (QAT-style) rather than calibration only
    trains: ClassVar[bool] = False
    #: whether activations are quantized per call at run time (dynamic int8): only the policy's layers get a
    #: QConfig, with no int8 glue ops between them, and lowering gives dynamic int8 Linear modules
    dynamic: ClassVar[bool] = False
    #: smallest weight bit-width it supports (1 needs a binary scheme)
    min_weight_bits: ClassVar[int] = 2

    @abstractmethod
    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        """Observer or fake-quant constructor for the layer's weight."""

    @abstractmethod
    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        """Observer or fake-quant constructor for the layer's output activation (and its input at a
        float-to-int8 boundary)."""

    def clamped_activation_quant(self, spec: QuantSpec, high: float) -> QuantFactory | None:
        """Like `activation_quant`, but the range it calibrates never reaches above `high`, so that a clamp
        at `high` right after the layer (ReLU6) is the int8 rounding's own saturation and need not run as
        an op. None (the default) when the quantizer cannot promise that; the clamp then stays an op."""
        return None

    def rewrite(self, model: nn.Module, specs: dict[str, QuantSpec]) -> nn.Module:
        """Replace modules before tracing; receives a private copy. Default: no change."""
        return model

    def bits_run(self, spec: QuantSpec) -> tuple[int, int]:
        """(weight bits, activation bits) the lowered layer computes at, which BOPs count: those asked."""
        return spec.weight_bits, spec.activation_bits

    def check(self, specs: dict[str, QuantSpec]) -> None:
        """Raise `ValueError` naming the layer when a bit-width is outside what this quantizer supports."""
        for name, spec in specs.items():
            if spec.weight_bits < self.min_weight_bits:
                raise ValueError(
                    f"quantizer {self.name!r} supports weight bits >= {self.min_weight_bits}; layer {name!r} "
                    f"asks for {spec.weight_bits} (1-bit weights need quantizer 'bnn')"
                )


def minmax_weight_observer(spec: QuantSpec) -> QuantFactory:
    """Symmetric min-max observer for a weight at ``spec.weight_bits`` (exact for a fixed weight tensor)."""
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    low, high = weight_range(spec.weight_bits)
    observer = PerChannelMinMaxObserver if spec.per_channel else MinMaxObserver
    return observer.with_args(
        dtype=torch.qint8, qscheme=weight_qscheme(spec.per_channel), quant_min=low, quant_max=high
    )


def activation_kwargs(spec: QuantSpec) -> dict[str, object]:
    """Keyword arguments every activation observer shares: unsigned affine at ``spec.activation_bits``."""
    low, high = activation_range(spec.activation_bits)
    return {"dtype": torch.quint8, "qscheme": torch.per_tensor_affine, "quant_min": low, "quant_max": high}
