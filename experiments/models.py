"""Hand-written architectures to prove compression on (torchvision does not import beside torch 2.13).

Each is small enough to train on scikit-learn's digits in well under a minute on 2 cores, and each has the
structure that breaks naive pruning: residual adds (ResNet), depthwise convs and inverted residuals
(MobileNetV2), channel concatenation (DenseNet) and multi-head attention (transformer encoder).
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.digits import BasicBlock, conv_bn_relu


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


class TransformerEncoderClassifier(nn.Module):
    """A small pre-norm transformer encoder over token ids (or image patches) with mean pooling.

    Attention is written out (q, k, v and out projections as separate `nn.Linear`) so that heads and FFN
    width can be physically pruned and each projection quantized on its own.
    """

    def __init__(
        self,
        vocab: int = 2048,
        dim: int = 64,
        heads: int = 4,
        ffn: int = 128,
        layers: int = 2,
        classes: int = 10,
        max_len: int = 64,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.fc(self.norm(x).mean(dim=1))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, ffn)
        self.act = nn.GELU()
        self.ffn_out = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.norm1(x)
        q, k, v = (proj(h).view(b, t, -1, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1)
        x = x + self.out((attn @ v).transpose(1, 2).reshape(b, t, -1))
        return x + self.ffn_out(self.act(self.ffn_in(self.norm2(x))))
