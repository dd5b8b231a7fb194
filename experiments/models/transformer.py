"""A small transformer encoder classifier with attention written out, so heads and FFN width prune physically."""

from __future__ import annotations

import torch
from torch import nn


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
