"""Post-training quantization with calibration observers: min-max, moving average, histogram, percentile.

Weights always use exact symmetric min-max (a weight tensor is fixed, so its range is known); the
observers differ in how they pick the activation range from calibration batches, which is where PTQ
loses accuracy: min-max keeps every outlier, the moving average smooths batch to batch, the histogram
observer minimises the quantization error of the observed distribution (torch's default for x86), and
percentile clips the tails.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

import torch
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

from autocompress.compress._quant_base import (
    QuantFactory,
    Quantizer,
    QuantSpec,
    activation_kwargs,
    minmax_weight_observer,
)

#: elements sampled per batch to estimate the percentiles (torch.quantile is exact but costly on large inputs)
_PERCENTILE_SAMPLE = 1 << 16


class PercentileObserver(MinMaxObserver):
    """Range = the running mean over batches of the ``(1 - p, p)`` quantiles, so rare outliers are clipped."""

    def __init__(self, percentile: float = 0.9999, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.percentile = percentile
        self.register_buffer("batches", torch.tensor(0))

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float().flatten()
        if x.numel() > _PERCENTILE_SAMPLE:
            generator = torch.Generator().manual_seed(int(self.batches))
            x = x[torch.randint(x.numel(), (_PERCENTILE_SAMPLE,), generator=generator)]
        low, high = torch.quantile(x, torch.tensor([1 - self.percentile, self.percentile]))
        n = int(self.batches)
        if n == 0:
            self.min_val.resize_(()).copy_(low)
            self.max_val.resize_(()).copy_(high)
        else:
            self.min_val.copy_((self.min_val * n + low) / (n + 1))
            self.max_val.copy_((self.max_val * n + high) / (n + 1))
        self.batches += 1
        return x_orig


@cache
def _capped(observer: type[MinMaxObserver] | type[HistogramObserver], high: float) -> Any:
    """`observer` with its range's upper end cut at `high` when qparams are computed (every observer here
    ends in ``_calculate_qparams(min_val, max_val)``)."""

    def _calculate_qparams(self: MinMaxObserver, min_val: torch.Tensor, max_val: torch.Tensor) -> tuple:
        return observer._calculate_qparams(self, min_val, torch.clamp(max_val, max=high))

    return type(f"Capped{observer.__name__}", (observer,), {"_calculate_qparams": _calculate_qparams})


class ObserverQuantizer(Quantizer):
    """PTQ: calibrate activation ranges with one observer kind, lower to int8. No training."""

    OBSERVERS: ClassVar[dict[str, type[MinMaxObserver] | type[HistogramObserver]]] = {
        "minmax": MinMaxObserver,
        "ema": MovingAverageMinMaxObserver,
        "histogram": HistogramObserver,
        "percentile": PercentileObserver,
    }

    def __init__(self, observer: str) -> None:
        if observer not in self.OBSERVERS:
            raise ValueError(f"unknown observer {observer!r}; known: {sorted(self.OBSERVERS)}")
        self.observer = observer
        self.name = observer  # type: ignore[misc]

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        return minmax_weight_observer(spec)

    def activation_quant(self, spec: QuantSpec) -> QuantFactory:
        return self.OBSERVERS[self.observer].with_args(**activation_kwargs(spec))

    def clamped_activation_quant(self, spec: QuantSpec, high: float) -> QuantFactory:
        return _capped(self.OBSERVERS[self.observer], high).with_args(**activation_kwargs(spec))


class NaiveQuantizer(ObserverQuantizer):
    """The simplest scheme: per-tensor min-max for weights and activations, whatever ``per_channel`` says.

    NNI's naive quantizer only rounds weights to 8 bits; a weight-only int8 conv has no faster CPU kernel,
    so here activations are rounded too (plain min-max) and the layer really runs in int8.
    """

    def __init__(self) -> None:
        super().__init__("minmax")
        self.name = "naive"  # type: ignore[misc]

    def weight_quant(self, spec: QuantSpec) -> QuantFactory:
        return minmax_weight_observer(QuantSpec(spec.weight_bits, spec.activation_bits, per_channel=False))
