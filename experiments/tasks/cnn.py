"""Tasks for the architectures in `experiments.models`, all on scikit-learn's digits at 16x16."""

from __future__ import annotations

from autocompress.task import SupervisedTask
from experiments.models import DenseNetLike, MobileNetV2Like, ResNetLike
from experiments.tasks.digits import load_digits_splits

_DATA = load_digits_splits()

resnet = SupervisedTask(name="resnet", model_factory=ResNetLike, data=_DATA, train_epochs=25)
mobilenet = SupervisedTask(name="mobilenet", model_factory=MobileNetV2Like, data=_DATA, train_epochs=30)
densenet = SupervisedTask(name="densenet", model_factory=DenseNetLike, data=_DATA, train_epochs=25)
