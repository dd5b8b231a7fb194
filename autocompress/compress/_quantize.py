"""Post-training static int8 quantization that really runs in int8 on the CPU (FX graph mode, x86 backend).

Layers the policy keeps at 32 bits stay float (their qconfig is None); everything else, including the
activations and residual adds between quantized layers, is lowered to quantized kernels, so int8 regions
stay int8 instead of bouncing through dequantize/quantize at every op.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from autocompress.space import Policy

BACKEND = "x86"


def quantized_layers(policy: Policy) -> list[str]:
    return [name for name, s in policy if s.weight_bits <= 8]


@torch.no_grad()
def quantize(
    model: nn.Module, policy: Policy, example_input: torch.Tensor, calibration: Iterable[torch.Tensor]
) -> nn.Module:
    """Return an int8 model for the layers at 8 bits, calibrated on `calibration`; `model` is not changed.

    A policy with no layer at 8 bits returns `model` itself.
    """
    if not quantized_layers(policy):
        return model
    torch.backends.quantized.engine = BACKEND
    mapping = get_default_qconfig_mapping(BACKEND)
    for name, setting in policy:
        if setting.weight_bits > 8:
            mapping.set_module_name(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, (example_input,))
        for batch in calibration:
            prepared(batch)
        return convert_fx(prepared)
