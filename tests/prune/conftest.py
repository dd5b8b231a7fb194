"""Small, really trained models for the pruning contract suite: the quantizer suite's ResNet-like,
MobileNetV2-like and transformer tasks, plus a DenseNet-like CNN (channel concatenation) on digits.

Torch runs one thread (set by the quantizer suite's conftest): the suite shares two cores with other work.
"""

from __future__ import annotations

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
