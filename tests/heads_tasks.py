"""Tiny attention models as they ship, at random init (nothing downloaded), as tasks for real trials: a Hugging
Face ``BertModel`` built from a small ``BertConfig`` inside the MiniLM task's `SentenceEncoder` (token ids in,
mean-pooled embeddings out), and a `torch.nn.TransformerEncoder` (``nn.MultiheadAttention``) with a linear head.
The metric is the mean cosine of the model's outputs to the float model's (1.0 for the baseline); neither task
fine-tunes (spaces use ``finetune_epochs: [0]``), so a trial's output is exactly that of the pruned model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import nn

from autocompress.tasks import FunctionTask
from experiments.tasks.minilm import PAD_ID, SentenceEncoder

VOCAB, SEQ = 100, 12
BERT = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "initializer_range": 0.2,
}
FFN = 128


def tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(**BERT, intermediate_size=FFN)
    return SentenceEncoder(BertModel(config, add_pooling_layer=False)).eval()


def tiny_mha() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(32, 8)).eval()


@cache
def token_ids(split: str) -> torch.Tensor:
    """16 sentences of random tokens, the later ones padded (so the attention mask matters)."""
    generator = torch.Generator().manual_seed({"val": 1, "test": 2}[split])
    ids = torch.randint(1, VOCAB, (16, SEQ), generator=generator)
    for row in range(8, 16):
        ids[row, SEQ - (row - 6) :] = PAD_ID
    return ids


@cache
def vectors(split: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed({"val": 3, "test": 4}[split])
    return torch.randn(16, 5, 32, generator=generator)


def cosine_to_float(build: Callable[[], nn.Module], inputs: Callable[[str], torch.Tensor]) -> Callable[..., float]:
    with torch.no_grad():
        reference = {split: build()(inputs(split)).flatten(1) for split in ("val", "test")}

    def evaluate(model: Callable[..., Any], split: str) -> float:
        out = model(inputs(split)).flatten(1)
        return float(nn.functional.cosine_similarity(out, reference[split]).mean())

    return evaluate


def bert() -> FunctionTask:
    return FunctionTask(
        tiny_bert, cosine_to_float(tiny_bert, token_ids), token_ids("val")[8:12], [token_ids("val")], name="bert"
    )


def mha() -> FunctionTask:
    return FunctionTask(tiny_mha, cosine_to_float(tiny_mha, vectors), vectors("val")[:4], [vectors("val")], name="mha")
