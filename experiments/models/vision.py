"""`TorchvisionClassifier`: a zero-argument factory of one of torchvision's classification architectures.

A module of its own because `autocompress.task.SupervisedTask` keys its cached baseline by the source of the
factory's module: kept apart from the task modules (``experiments/tasks/mnist.py``), an edit there does not
retrain baselines whose factory, initial weights, data and recipe are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autocompress import import_torchvision


@dataclass(frozen=True)
class TorchvisionClassifier:
    """Builds torchvision's `arch` as its builder makes it (``weights=None``: random init, nothing downloaded)
    with `num_classes` outputs; torchvision is imported with `autocompress.import_torchvision`."""

    arch: str
    num_classes: int = 10

    def __call__(self) -> nn.Module:
        return import_torchvision().models.get_model(self.arch, weights=None, num_classes=self.num_classes)
