"""Small, really trained models for the pruning contract suite: the quantizer suite's ResNet-like,
MobileNetV2-like and transformer tasks, plus a DenseNet-like CNN (channel concatenation) on digits.

Torch runs one thread (set by the quantizer suite's conftest): the suite shares two cores with other work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from autocompress.compress import RewindPoint
from autocompress.runtime._trial import Gate, TaskTrainer
from autocompress.task import SupervisedTask
from experiments.models import DenseNetLike
from experiments.tasks.digits import load_digits_splits
from tests.quantize.conftest import TASKS as QUANTIZER_TASKS


def small_densenet() -> DenseNetLike:
    return DenseNetLike(width=8, growth=4)


TASKS: dict[str, SupervisedTask] = {
    **QUANTIZER_TASKS,
    "densenet": SupervisedTask("p-densenet", small_densenet, load_digits_splits(), train_epochs=8),
}
#: by import path, for run_trial
resnet = TASKS["resnet"]


class RecordingTrainer:
    """The task's trainer, remembering the model's state (weights and buffers) at the start of every training
    call; `rewind`, when given, is the rewind point it offers (default: the trainer's own)."""

    def __init__(self, task: SupervisedTask, rewind: RewindPoint | None = None) -> None:
        self.inner = TaskTrainer(task, 0, Gate())
        if rewind is not None:
            self.inner.rewind = lambda: rewind
        self.starts: list[dict[str, torch.Tensor]] = []

    def train(self, model: nn.Module, epochs: float, on_step: Callable[[], None]) -> None:
        self.starts.append({n: t.detach().clone() for n, t in model.state_dict().items()})
        self.inner.train(model, epochs, on_step)

    def steps(self, epochs: float) -> int | None:
        return self.inner.steps(epochs)

    def rewind_point(self) -> RewindPoint:
        return self.inner.rewind_point()
