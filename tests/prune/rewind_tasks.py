"""Small models on 8x8 digits trained by `SupervisedTask`, so that they keep an early checkpoint for lottery
rewinding (tests/prune/test_rewind.py points ``AUTOCOMPRESS_CACHE`` at a fresh folder before they load), and
the CNN taken as it is (``train_epochs=0``), which keeps none."""

from __future__ import annotations

from torch import nn

from autocompress.task import SupervisedTask
from experiments.tasks.digits import load_digits_splits


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


DIGITS = load_digits_splits(size=8)
#: 6 epochs of 17 steps: the early checkpoint is after step round(0.05 * 102) = 5
trained = SupervisedTask("rewind-cnn", small_cnn, DIGITS, train_epochs=6)
#: the factory's model taken as the trained baseline: nothing trained here, so no early checkpoint
given = SupervisedTask("rewind-given", small_cnn, DIGITS, train_epochs=0)


def tiny_attention() -> nn.Module:
    """Each 8x8 image as 8 tokens of 8 values through one `nn.TransformerEncoderLayer` (two heads as
    `nn.MultiheadAttention` ships them)."""
    return nn.Sequential(
        nn.Flatten(1, 2),
        nn.Linear(8, 16),
        nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
        nn.Flatten(),
        nn.Linear(8 * 16, 10),
    )


#: trained here (so it keeps an early checkpoint), with heads that only their own module can remove
attention = SupervisedTask("rewind-attention", tiny_attention, DIGITS, train_epochs=2)
