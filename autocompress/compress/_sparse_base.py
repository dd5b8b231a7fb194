"""The `UnstructuredPruner` interface and what every pruner shares: magnitude masks held as plain tensors and
the `Trainer` through which a pruner spends the trial's fine-tuning budget.

Masks live only during fine-tuning: a pruner zeroes the weights it prunes and re-zeroes them after every
optimiser step (`Masks.apply` as the trainer's ``on_step``), so when it returns the model holds real zeros in
ordinary weight tensors, with no mask buffers, hooks or reparametrisation left to remove.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

#: called after every optimiser step of a fine-tune
OnStep = Callable[[], None]


@dataclass(frozen=True)
class RewindPoint:
    """Where a pruner that rewinds (``lottery``) takes the model's weights back to.

    `state`: a state dict that fits the model the pruner is given (the same names and shapes: channels removed
    and quantization prepared as they were for it), or None for the model as it was given (its weights at the
    start of the pruner's run). `label` names the point, and when `state` is None why there is no earlier one;
    the trial records it as ``rewound_to``.
    """

    state: Mapping[str, torch.Tensor] | None
    label: str


class Trainer(Protocol):
    """How a pruner fine-tunes (the runtime adapts the task's ``finetune``).

    `train` trains `model` in place for `epochs` (fractional allowed; nothing happens at 0 or below) and calls
    `on_step` after every optimiser step. `steps` is the number of optimiser steps `train` takes for `epochs`,
    or None when the task does not say (schedules over steps then cannot run). `rewind_point` is the
    `RewindPoint` of the model the pruner is given: the task's early checkpoint made to fit it, or why not; it
    is built when asked (only pruners that rewind ask).
    """

    def train(self, model: nn.Module, epochs: float, on_step: OnStep) -> None: ...

    def steps(self, epochs: float) -> int | None: ...

    def rewind_point(self) -> RewindPoint: ...


class UnstructuredPruner(ABC):
    """Realises per-layer unstructured weight sparsity while spending the trial's fine-tuning budget.

    Life cycle: a trial builds one instance (constructors take only knobs, all with defaults) and calls
    `run` once, after physical channel pruning and quantization preparation, with `targets` = {layer name:
    fraction of that layer's weight to zero} (non-empty, each in (0, 1)). `run` must:

    - fine-tune through `trainer` for at most `epochs` in total (a pruner decides how to split them);
    - leave exactly ``round(fraction * numel)`` zeros in each target layer's weight (ties in magnitude are
      broken by position), as real zeros in the ordinary weight tensor, masks gone;
    - change no shape and no layer outside `targets` beyond what fine-tuning does.

    Diagnostics a pruner keeps on itself (schedules, residuals) are for tests and reports only; what the trial
    should record of how it ran (the ``lottery`` pruner's rewind point) it returns from `metrics`.
    """

    name: ClassVar[str]

    @abstractmethod
    def run(self, model: nn.Module, targets: Mapping[str, float], trainer: Trainer, epochs: float) -> None:
        """Prune `model` in place to `targets` within the fine-tuning budget `epochs`."""

    def metrics(self) -> dict[str, Any]:
        """Trial metrics about the last `run` (JSON values, by name); none by default."""
        return {}


def layer_weights(model: nn.Module, names: Mapping[str, float] | list[str]) -> dict[str, nn.Parameter]:
    """The weight parameter of each named layer (conv or linear, fused QAT forms included)."""
    weights = {}
    for name in names:
        weight = getattr(model.get_submodule(name), "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise ValueError(f"layer {name!r} has no weight parameter to sparsify")
        weights[name] = weight
    return weights


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask of `weight`'s shape with the ``round(sparsity * numel)`` smallest magnitudes at 0."""
    flat = weight.detach().abs().flatten()
    mask = torch.ones_like(flat)
    count = round(sparsity * flat.numel())
    if count:
        mask[torch.topk(flat, count, largest=False).indices] = 0
    return mask.view_as(weight)


class Masks:
    """Magnitude masks over some layers' weights: `prune` sets a layer's mask from its current magnitudes,
    `apply` re-zeroes every masked weight (pass it as ``on_step`` to keep pruned weights at zero)."""

    def __init__(self, weights: Mapping[str, nn.Parameter]) -> None:
        self.weights = dict(weights)
        self.masks: dict[str, torch.Tensor] = {}

    def prune(self, sparsity: Mapping[str, float]) -> None:
        for name, fraction in sparsity.items():
            self.masks[name] = magnitude_mask(self.weights[name], fraction)
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for name, mask in self.masks.items():
            self.weights[name].mul_(mask)

    def sparsity(self) -> dict[str, float]:
        """The measured fraction of zeros of each layer's weight."""
        return {name: float((w == 0).sum()) / w.numel() for name, w in self.weights.items()}
