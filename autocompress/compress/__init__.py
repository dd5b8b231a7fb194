"""Compression: pure, in-memory transforms of a model under a `Policy` (no I/O).

`apply` = `prune` (physical channel removal) then `quantize` (real int8). Fine-tuning between the two is the
trial's job (`autocompress.runtime.run_trial`), since it needs the task's data; a policy whose quantizer
trains (`needs_training`) is prepared with `prepare_quantization` before that fine-tuning.

Pruning criteria (`CRITERIA`, by `Policy.criterion` name): l1, l2, fpgm, and the ones that see the task
first (`Criterion.prepare`, run by `prepare_criterion`): apoz, mean_activation (calibration activations),
slim (BN-scale sparsity training), taylor (gradients of a short fine-tune).

Quantizers (one private module each, all behind `Quantizer`, by `Policy.quantizer` name in `QUANTIZERS`):
naive, PTQ observers (minmax, ema, histogram, percentile), qat, dorefa, bnn, lsq, dynamic (int8 Linear with
per-call activation ranges, for transformers).
"""

from collections.abc import Iterable

import torch
from torch import nn

from autocompress.compress._bnn import BNNQuantizer, SignActivation
from autocompress.compress._criteria import (
    CRITERIA,
    APoZCriterion,
    Criterion,
    MeanActivationCriterion,
    SlimCriterion,
    TaylorCriterion,
    make_criterion,
    prepare_criterion,
    register_criterion,
)
from autocompress.compress._dorefa import DoReFaQuantizer
from autocompress.compress._dynamic import DynamicQuantizer
from autocompress.compress._lowering import (
    BACKEND,
    QUANTIZERS,
    get_quantizer,
    latency_basis,
    layer_specs,
    lowered_layers,
    needs_training,
    prepare_quantization,
    quantize,
    quantized_layers,
    register_quantizer,
)
from autocompress.compress._lsq import LSQQuantizer
from autocompress.compress._prune import kept_channels, prune
from autocompress.compress._ptq import NaiveQuantizer, ObserverQuantizer, PercentileObserver
from autocompress.compress._qat import QATQuantizer
from autocompress.compress._quant_base import SUPPORTED_BITS, Quantizer, QuantSpec
from autocompress.space import Policy


def apply(
    model: nn.Module, policy: Policy, example_input: torch.Tensor, calibration: Iterable[torch.Tensor]
) -> nn.Module:
    """Prune `model` in place, then return its quantized form (without fine-tuning in between)."""
    return quantize(prune(model, policy, example_input), policy, example_input, calibration)


__all__ = [
    "APoZCriterion",
    "BACKEND",
    "BNNQuantizer",
    "CRITERIA",
    "Criterion",
    "DoReFaQuantizer",
    "DynamicQuantizer",
    "LSQQuantizer",
    "MeanActivationCriterion",
    "NaiveQuantizer",
    "ObserverQuantizer",
    "PercentileObserver",
    "QATQuantizer",
    "QUANTIZERS",
    "QuantSpec",
    "Quantizer",
    "SUPPORTED_BITS",
    "SignActivation",
    "SlimCriterion",
    "TaylorCriterion",
    "apply",
    "get_quantizer",
    "latency_basis",
    "kept_channels",
    "layer_specs",
    "lowered_layers",
    "make_criterion",
    "needs_training",
    "prepare_criterion",
    "prepare_quantization",
    "prune",
    "quantize",
    "quantized_layers",
    "register_criterion",
    "register_quantizer",
]
