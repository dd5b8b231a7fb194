"""Hand-written CNNs to prove compression on, each with the structure that breaks naive pruning: residual adds
(`DigitsNet`, `ResNetLike`), depthwise convs and inverted residuals (`MobileNetV2Like`) and channel concatenation
(`DenseNetLike`). Each trains on scikit-learn's digits in well under a minute on 2 cores.
"""

from __future__ import annotations

import torch
from torch import nn


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


class ResNetLike(nn.Module):
    """Two stages of basic blocks with a strided projection block between them."""

    def __init__(self, width: int = 32, classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        self.layer1 = nn.Sequential(BasicBlock(width), BasicBlock(width))
        self.down = conv_bn_relu(width, 2 * width, stride=2)
        self.layer2 = nn.Sequential(BasicBlock(2 * width), BasicBlock(2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.down(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project; identity add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.use_residual else out


class MobileNetV2Like(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(width, width, 1, 4),
            InvertedResidual(width, 2 * width, 2, 4),
            InvertedResidual(2 * width, 2 * width, 1, 4),
            InvertedResidual(2 * width, 4 * width, 2, 4),
            InvertedResidual(4 * width, 4 * width, 1, 4),
        )
        self.head = nn.Sequential(nn.Conv2d(4 * width, 8 * width, 1, bias=False), nn.BatchNorm2d(8 * width), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


class DenseLayer(nn.Module):
    """BN-ReLU-conv producing `growth` channels, concatenated to its input (DenseNet)."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


class DenseNetLike(nn.Module):
    def __init__(self, width: int = 24, growth: int = 12, classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        channels = width
        layers: list[nn.Module] = []
        for _ in range(3):
            layers.append(DenseLayer(channels, growth))
            channels += growth
        self.block1 = nn.Sequential(*layers)
        self.transition = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2)
        )
        channels //= 2
        layers = []
        for _ in range(3):
            layers.append(DenseLayer(channels, growth))
            channels += growth
        self.block2 = nn.Sequential(*layers)
        self.norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(self.norm(x)), 1))
