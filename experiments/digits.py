"""Digits: a small residual CNN on scikit-learn's handwritten digits (ships with sklearn, no download).

The 8x8 images are upsampled to 16x16 so that the convolutions do enough work for pruning and int8 to show
in measured latency. Split 60/20/20, stratified, fixed seed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autocompress.task import SupervisedTask


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus identity, then relu (ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()  # one module per call site: graph quantizers match fusion patterns per module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + x)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsNet(nn.Module):
    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(1, width)
        self.block1 = BasicBlock(width)
        self.down = conv_bn_relu(width, 2 * width, stride=2)
        self.block2 = BasicBlock(2 * width)
        self.expand = conv_bn_relu(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(self.expand(x)), 1))


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
