"""A trivial task (a linear classifier on 8x8 digits) whose trials cost almost nothing: used to measure the
runtime's own overhead per trial (`experiments/bench_overhead.py`)."""

from __future__ import annotations

from torch import nn

from autocompress.task import SupervisedTask
from experiments.tasks.digits import load_digits_splits


def linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


task = SupervisedTask(name="trivial", model_factory=linear, data=load_digits_splits(size=8), train_epochs=5)
