"""Whole attention heads and FFN width removed physically from models as they ship.

Two attention layouts are handled, each through its own modules:

- Hugging Face BERT-style self-attention (BERT, MiniLM, RoBERTa, ...): a module with ``query``/``key``/
  ``value`` linears and ``num_attention_heads``, ``attention_head_size`` and ``all_head_size``, whose output
  projection is the sibling ``output.dense`` (``BertAttention.self`` / ``BertAttention.output.dense``). A
  removed head loses its rows of q, k and v and its columns of the output projection; the module's head
  count and width are updated (its forward splits heads with ``view(..., -1, head_size)``, so it runs with
  fewer). transformers 5 has no ``prune_heads``; this is it.
- ``torch.nn.MultiheadAttention``: its fused forward assumes the projections are ``embed_dim`` wide, so it
  cannot lose heads in place (torch-pruning removes none, silently). It is replaced by
  `PrunedMultiheadAttention`, the same function with separate q/k/v projections for the kept heads.

FFN width of a BERT-style layer (``intermediate.dense`` rows, ``output.dense`` columns) is removed the same
way; ``config.intermediate_size`` (of every Hugging Face config in the model) follows when every layer keeps the
same width (transformers validates it).
Heads and FFN channels are ranked by the L2 norm of their weights (rows and columns together). In a trial,
`autocompress.compress.prune` calls these for the layers `autocompress.space.shipped_heads` and `ffn_layers`
name, whatever the policy's criterion (which ranks the channels torch-pruning removes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autocompress.space._discover import hf_attention_modules


def attention_head_counts(model: nn.Module) -> dict[str, int]:
    """Heads of every attention module `remove_heads` handles (BERT-style and `nn.MultiheadAttention`), by name."""
    counts: dict[str, int] = {name: m.num_attention_heads for name, m in hf_attention_modules(model).items()}  # type: ignore[misc]
    for name, module in model.named_modules():
        if isinstance(module, (nn.MultiheadAttention, PrunedMultiheadAttention)):
            counts[name] = module.num_heads
    return counts


def remove_heads(model: nn.Module, removals: dict[str, int]) -> nn.Module:
    """Remove `removals[name]` heads (the lowest-norm ones, at least one head is kept) from each named
    attention module, physically, in place; `nn.MultiheadAttention` modules are replaced. Returns `model`."""
    hf = hf_attention_modules(model)
    modules = dict(model.named_modules())
    for name, count in removals.items():
        if count <= 0:
            continue
        module = modules.get(name)
        if name in hf:
            _remove_hf_heads(module, modules[name.rpartition(".")[0]].output, count)
        elif isinstance(module, nn.MultiheadAttention):
            module = PrunedMultiheadAttention.from_mha(module)
            model.set_submodule(name, module)
            _remove_mha_heads(module, count)
        elif isinstance(module, PrunedMultiheadAttention):
            _remove_mha_heads(module, count)
        else:
            known = ", ".join(sorted(attention_head_counts(model))) or "none"
            raise ValueError(f"{name!r} is not an attention module whose heads can be removed (known: {known})")
    return model


def shrink_ffn(model: nn.Module, sparsity: dict[str, float]) -> nn.Module:
    """Remove the fraction `sparsity[name]` of FFN width from each named BERT-style layer (a module with
    ``intermediate.dense`` and ``output.dense``): the lowest-norm channels, physically, in place."""
    modules = dict(model.named_modules())
    for name, fraction in sparsity.items():
        layer = modules[name]
        w_in, w_out = layer.intermediate.dense, layer.output.dense  # type: ignore[union-attr]
        width = w_in.out_features
        kept = max(1, int(width * (1 - fraction)))
        score = w_in.weight.detach().pow(2).sum(1) + w_out.weight.detach().pow(2).sum(0)
        keep = score.topk(kept).indices.sort().values
        layer.intermediate.dense = _rows(w_in, keep)  # type: ignore[union-attr]
        layer.output.dense = _cols(w_out, keep)  # type: ignore[union-attr]
    widths = {model.get_submodule(name).out_features for name in ffn_layers(model)}  # type: ignore[union-attr]
    configs: dict[int, Any] = {
        id(c): c for m in model.modules() if hasattr(c := getattr(m, "config", None), "intermediate_size")
    }
    if len(widths) == 1:  # the Hugging Face config (shared by the model's modules) holds one width for all
        for config in configs.values():
            config.intermediate_size = next(iter(widths))
    return model


def ffn_layers(model: nn.Module) -> dict[str, str]:
    """The FFN input Linear (``...intermediate.dense``) of every BERT-style layer, mapped to the layer's name
    (what `shrink_ffn` takes): a module with ``intermediate.dense`` and ``output.dense`` linears."""
    found = {}
    for name, module in model.named_modules():
        dense_in = getattr(getattr(module, "intermediate", None), "dense", None)
        if isinstance(dense_in, nn.Linear) and isinstance(
            getattr(getattr(module, "output", None), "dense", None), nn.Linear
        ):
            found[f"{name}.intermediate.dense" if name else "intermediate.dense"] = name
    return found


class PrunedMultiheadAttention(nn.Module):
    """`nn.MultiheadAttention`'s function with any number of heads of the original head width: separate
    q/k/v projections from ``embed_dim`` to ``num_heads * head_dim`` and the output projection back.

    Same call as `nn.MultiheadAttention` (query, key, value, key_padding_mask, need_weights, attn_mask,
    average_attn_weights, is_causal); attention weights are returned when asked for (averaged over heads
    by default), else None.
    """

    #: read by `nn.TransformerEncoderLayer` to choose its fused fast path, which needs the packed projection:
    #: separate projections take its regular path, which calls this module
    _qkv_same_embed_dim = False
    in_proj_bias = None

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, batch_first: bool, dropout: float = 0.0):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> PrunedMultiheadAttention:
        """The same function as `mha` (self-attention layout: q, k and v all ``embed_dim`` wide)."""
        if mha.kdim != mha.embed_dim or mha.vdim != mha.embed_dim or mha.bias_k is not None:
            raise ValueError("only MultiheadAttention with kdim = vdim = embed_dim and no add_bias_kv is handled")
        new = cls(mha.embed_dim, mha.num_heads, mha.head_dim, mha.batch_first, mha.dropout)
        weight = mha.in_proj_weight.detach()
        bias = mha.in_proj_bias.detach() if mha.in_proj_bias is not None else torch.zeros(3 * mha.embed_dim)
        with torch.no_grad():
            for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
                proj.weight.copy_(weight[i * mha.embed_dim : (i + 1) * mha.embed_dim])
                proj.bias.copy_(bias[i * mha.embed_dim : (i + 1) * mha.embed_dim])
            new.out_proj.weight.copy_(mha.out_proj.weight)
            new.out_proj.bias.copy_(mha.out_proj.bias if mha.out_proj.bias is not None else 0)
        return new.train(mha.training)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, tq = query.size(0), query.size(1)  # not unpacked from .shape: torch.fx traces this (FX int8)
        q, k, v = (
            proj(t).view(b, t.size(1), -1, self.head_dim).transpose(1, 2)
            for proj, t in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value))
        )
        mask = _merge_masks(attn_mask, key_padding_mask, b, q.dtype)
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if is_causal and mask is None:
                mask = torch.full((tq, k.shape[2]), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
            weights = (scores + mask if mask is not None else scores).softmax(-1)
            weights = F.dropout(weights, self.dropout, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, mask, self.dropout if self.training else 0.0, is_causal=is_causal and mask is None
            )
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(b, tq, -1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return out, weights


def _merge_masks(
    attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, batch: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """One additive float mask from MultiheadAttention's boolean or float masks (True = not attended)."""
    mask = None
    for m, shape in ((attn_mask, None), (key_padding_mask, (batch, 1, 1, -1))):
        if m is None:
            continue
        m = torch.zeros(m.shape, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m
        m = m.view(shape) if shape is not None else m
        mask = m if mask is None else mask + m
    return mask


def _remove_hf_heads(attention: Any, output: Any, count: int) -> None:
    """`attention` is the BERT-style self-attention, `output` its sibling holding the projection ``dense``."""
    heads, size = attention.num_attention_heads, attention.attention_head_size
    kept = _kept_heads([attention.query, attention.key, attention.value], output.dense, heads, size, count)
    rows = (kept[:, None] * size + torch.arange(size)).flatten()
    attention.query, attention.key, attention.value = (
        _rows(p, rows) for p in (attention.query, attention.key, attention.value)
    )
    output.dense = _cols(output.dense, rows)
    attention.num_attention_heads = len(kept)
    attention.all_head_size = len(kept) * size


def _remove_mha_heads(mha: PrunedMultiheadAttention, count: int) -> None:
    kept = _kept_heads([mha.q_proj, mha.k_proj, mha.v_proj], mha.out_proj, mha.num_heads, mha.head_dim, count)
    rows = (kept[:, None] * mha.head_dim + torch.arange(mha.head_dim)).flatten()
    mha.q_proj, mha.k_proj, mha.v_proj = (_rows(p, rows) for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    mha.out_proj = _cols(mha.out_proj, rows)
    mha.num_heads = len(kept)


def _kept_heads(projs: list[nn.Linear], out: nn.Linear, heads: int, size: int, count: int) -> torch.Tensor:
    """Indices of the heads to keep, ascending: all but the `count` with the smallest weight norm (>= 1 kept)."""
    score = sum(p.weight.detach().pow(2).sum(1).view(heads, size).sum(1) for p in projs)
    score = score + out.weight.detach().pow(2).sum(0).view(heads, size).sum(1)
    return score.topk(max(1, heads - count)).indices.sort().values  # type: ignore[union-attr]


def _rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[keep])
    return new.train(linear.training)


def _cols(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.train(linear.training)
