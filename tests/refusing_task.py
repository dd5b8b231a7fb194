"""Digits tasks whose model a runtime refuses to compile, for the "a runtime that cannot compile it" tests.

OpenVINO 2026 has no conversion rule for ONNX ``Det`` (``torch.linalg.det``); ONNX Runtime runs it. In
`det_task` the float model itself computes a determinant, so OpenVINO refuses it before any trial. In
`narrow_det_task` the forward takes another path once its first conv is narrower than built (a shape-dependent
branch, which the ONNX exporter traces as taken): only pruned candidates carry the ``Det`` node, so only their
trials hit OpenVINO's refusal.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autocompress.task import SupervisedTask
from experiments.tasks.digits import load_digits_splits

WIDTH = 8


class DetNet(nn.Module):
    """Two convs and a classifier; the determinant of each image's 2x2 corner of the second conv's first channel
    is added to every class score (always, or, when ``always`` is false, only once the first conv is pruned)."""

    def __init__(self, always: bool = True) -> None:
        super().__init__()
        self.always = always
        self.conv1 = nn.Conv2d(1, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv2d(WIDTH, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        z = F.relu(self.conv2(y))
        out = self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))
        if self.always or y.shape[1] < WIDTH:
            out = out + 1e-3 * torch.linalg.det(z[:, 0, :2, :2]).unsqueeze(1)
        return out


_DATA = load_digits_splits()
det_task = SupervisedTask(name="det", model_factory=DetNet, data=_DATA, train_epochs=2)
narrow_det_task = SupervisedTask(
    name="narrow-det", model_factory=lambda: DetNet(always=False), data=_DATA, train_epochs=2
)
