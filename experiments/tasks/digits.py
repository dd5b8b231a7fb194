"""Digits: a small residual CNN on scikit-learn's handwritten digits (ships with sklearn, no download).

The 8x8 images are upsampled to 16x16 so that the convolutions do enough work for pruning and int8 to show
in measured latency. Split 60/20/20, stratified, fixed seed.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from autocompress.task import SupervisedTask
from experiments.models import DigitsNet


def load_digits_splits(size: int = 16, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    train, rest = train_test_split(idx, test_size=0.4, random_state=seed, stratify=y.numpy())
    val, test = train_test_split(rest, test_size=0.5, random_state=seed, stratify=y.numpy()[rest])
    splits = (("train", train), ("val", val), ("test", test))
    return {name: (x[i].contiguous(), y[i].contiguous()) for name, i in splits}


task = SupervisedTask(name="digits", model_factory=DigitsNet, data=load_digits_splits(), train_epochs=30)
