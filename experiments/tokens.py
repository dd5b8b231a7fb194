"""A synthetic token classification task for the transformer encoder (no text data ships offline here).

Each sequence's tokens fall, 40% of the time, in the band of ids of its class and are uniform otherwise,
so the class is learnable from pooled token embeddings in a few epochs. It stands in for a real text task
where quantizers and benchmarks need a trained transformer.
"""

from __future__ import annotations

import torch

from autocompress.task import SupervisedTask
from experiments.models import TransformerEncoderClassifier

VOCAB, SEQ, CLASSES = 64, 16, 4


def token_splits(n: int = 1200, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(CLASSES, (n,), generator=gen)
    tokens = torch.randint(VOCAB, (n, SEQ), generator=gen)
    band = labels[:, None] * (VOCAB // CLASSES) + torch.randint(VOCAB // CLASSES, (n, SEQ), generator=gen)
    tokens = torch.where(torch.rand(n, SEQ, generator=gen) < 0.4, band, tokens)
    train, val = int(n * 2 / 3), int(n * 5 / 6)
    return {"train": (tokens[:train], labels[:train]), "val": (tokens[train:val], labels[train:val]),
            "test": (tokens[val:], labels[val:])}


def token_transformer() -> TransformerEncoderClassifier:
    return TransformerEncoderClassifier(vocab=VOCAB, dim=64, heads=4, ffn=128, layers=2, classes=CLASSES,
                                        max_len=SEQ)


transformer = SupervisedTask(name="tokens-transformer", model_factory=token_transformer, data=token_splits(),
                             train_epochs=8)
