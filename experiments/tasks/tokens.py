"""Synthetic token sequences for the quantizer contract suite (tests/quantize), which needs a transformer it
can train in seconds; the real text task for the transformer is `experiments.tasks.text`.

Each sequence's tokens fall, 40% of the time, in the band of ids of its class and are uniform otherwise,
so the class is learnable from pooled token embeddings in a few epochs.
"""

from __future__ import annotations

import torch

VOCAB, SEQ, CLASSES = 64, 16, 4


def token_splits(n: int = 1200, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(CLASSES, (n,), generator=gen)
    tokens = torch.randint(VOCAB, (n, SEQ), generator=gen)
    band = labels[:, None] * (VOCAB // CLASSES) + torch.randint(VOCAB // CLASSES, (n, SEQ), generator=gen)
    tokens = torch.where(torch.rand(n, SEQ, generator=gen) < 0.4, band, tokens)
    train, val = int(n * 2 / 3), int(n * 5 / 6)
    return {
        "train": (tokens[:train], labels[:train]),
        "val": (tokens[train:val], labels[train:val]),
        "test": (tokens[val:], labels[val:]),
    }
