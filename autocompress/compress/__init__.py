"""Compression: pure, in-memory transforms of a model under a `Policy` (no I/O).

`apply` = `prune` (physical channel removal) then `quantize` (real int8). Fine-tuning between the two is the
trial's job (`autocompress.runtime.run_trial`), since it needs the task's data.
"""

from collections.abc import Iterable

import torch
from torch import nn

from autocompress.compress._prune import CRITERIA, prune, register_criterion
from autocompress.compress._quantize import quantize, quantized_layers
from autocompress.space import Policy


def apply(
    model: nn.Module, policy: Policy, example_input: torch.Tensor, calibration: Iterable[torch.Tensor]
) -> nn.Module:
    """Prune `model` in place, then return its quantized form (without fine-tuning in between)."""
    return quantize(prune(model, policy, example_input), policy, example_input, calibration)


__all__ = ["CRITERIA", "apply", "prune", "quantize", "quantized_layers", "register_criterion"]
