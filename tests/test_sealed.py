"""Attention written with explicit matmuls, as torchvision's MaxViT writes it, reduced to a small model: sealed so
that torch-pruning sees it as one op, and the guard that keeps its graph traced op by op from hanging discovery."""

from __future__ import annotations

import time

import torch
import torch_pruning as tp
from torch import nn

from autocompress.compress import prune
from autocompress.space import LayerSetting, Policy, build_graph, discover_layers, endless_group
from autocompress.space._sealed import MULTIPLIES, find_sealed
from experiments.models.transformer import EncoderLayer


class EinsumAttention(nn.Module):
    """MaxViT's RelativePositionalMultiHeadAttention without the position bias: its linears are called, q, k
    and v are multiplied with einsum, and the heads are reshaped back to the input's width."""

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = dim // head_dim, head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.merge = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, g, p, d = x.shape
        q, k, v = (
            t.reshape(b, g, p, self.n_heads, self.head_dim).permute(0, 1, 3, 2, 4)
            for t in torch.chunk(self.to_qkv(x), 3, dim=-1)
        )
        scores = torch.einsum("bghid,bghjd->bghij", q, k).softmax(-1)
        out = torch.einsum("bghij,bghjd->bghid", scores, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(b, g, p, d))


class Scale(nn.Module):
    """Multiplies by its own weight with a matmul: an activation times a parameter, nothing to seal."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


class WindowNet(nn.Module):
    """A conv stem, windows of 4x4 positions (MaxViT's partition), attention and an MLP over them, a head."""

    def __init__(self, dim: int = 32, window: int = 4) -> None:
        super().__init__()
        self.window = window
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)
        self.attn = EinsumAttention(dim, head_dim=8)
        self.scale = Scale(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        p = self.window
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w // p**2, p * p, c)
        x = self.scale(x + self.attn(self.norm(x)))
        x = x + self.mlp(x)
        return self.head(x.mean(dim=(1, 2)))


def test_a_module_that_multiplies_two_activations_is_sealed_and_a_weight_product_is_not() -> None:
    model, x = WindowNet().eval(), torch.randn(1, 3, 16, 16)
    sealed = find_sealed(model, x)
    assert sealed.modules == (model.attn,) and sealed.why == {EinsumAttention: MULTIPLIES}
    model.requires_grad_(False)  # a frozen model: its activations still count (the input requires gradients)
    assert find_sealed(model, x).why == {EinsumAttention: MULTIPLIES}


def test_attention_whose_heads_are_removed_whole_is_kept_out_of_sealing() -> None:
    layer, x = EncoderLayer(dim=32, heads=4, ffn=64).eval(), torch.randn(2, 5, 32)
    assert find_sealed(nn.Sequential(layer), x).why == {EncoderLayer: MULTIPLIES}
    assert find_sealed(nn.Sequential(layer), x, keep=[layer]).modules == ()


def test_sealed_attention_keeps_its_width_and_the_mlp_width_is_pruned() -> None:
    model, x = WindowNet().eval(), torch.randn(2, 3, 16, 16)
    layers = {info.name: info for info in discover_layers(model, x[:1])}
    assert [name for name, info in layers.items() if info.prunable] == ["mlp.0"]
    assert layers["attn.to_qkv"].reason.startswith(
        f"it is inside 'attn' (EinsumAttention), which torch-pruning sees as one op ({MULTIPLIES})"
    )
    assert "run through 'attn' (EinsumAttention)" in layers["stem"].reason
    expected = model(x)
    pruned = prune(model, Policy.from_mapping({"mlp.0": LayerSetting(0.5, 32)}), x[:1])
    assert pruned.mlp[0].out_features == 32 and pruned.mlp[2].in_features == 32
    assert pruned(x).shape == expected.shape


def test_endless_group_stops_the_group_that_einsum_attention_sends_past_a_layer_width() -> None:
    """Traced op by op, the group of the qkv projection comes back to it with indices past its own width."""
    model, x = WindowNet().eval(), torch.randn(1, 3, 16, 16)
    raw = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    start = time.perf_counter()
    reason = endless_group(raw)
    assert time.perf_counter() - start < 1
    assert reason.startswith("torch-pruning's channel groups through this model's graph never end: the group of ")
    assert "whose width is" in reason and reason.endswith("no channel can be pruned, quantization still applies")
    assert endless_group(build_graph(model, x)) == ""
