"""Torchvision models as they ship: imported beside the CPU torch, compressed end to end or refused up front."""

from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest

pytest.importorskip("torchvision")  # installed by make (--no-deps, the 'vision' extra)

import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
from torch import nn  # noqa: E402

import autocompress  # noqa: E402
from autocompress.compress import prune  # noqa: E402
from autocompress.errors import UserError  # noqa: E402
from autocompress.measure import count_params  # noqa: E402
from autocompress.space import (  # noqa: E402
    LayerSetting,
    Policy,
    build_graph,
    discover_layers,
    endless_group,
    output_layers,
    parse_space,
    resolve_space,
)
from experiments.bench_zoo import bench_one  # noqa: E402
from experiments.tasks import zoo  # noqa: E402


@pytest.mark.slow
def test_torchvision_and_transformers_import_beside_the_cpu_torch() -> None:
    code = (
        "import autocompress, torch\n"
        "tv = autocompress.import_torchvision()\n"
        "assert torch.version.cuda is None\n"
        "print(tv.models.resnet18(num_classes=3).eval()(torch.randn(1, 3, 32, 32)).shape)\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('transformers'):\n"
        "    from transformers import BertConfig, BertModel\n"
        "    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "torch.Size([1, 3])"


def test_every_classification_builder_is_listed() -> None:
    archs = zoo.classification_models()
    assert len(archs) >= 80 and {"resnet18", "shufflenet_v2_x1_0", "vit_b_16", "maxvit_t"} <= set(archs)


def _shufflenet() -> tuple[nn.Module, torch.Tensor]:
    """The real torchvision ShuffleNetV2 x0.5 (random init, 10 classes) and a small input (3x32x32: 1x1 at stage 4)."""
    torch.manual_seed(0)
    model = autocompress.import_torchvision().models.shufflenet_v2_x0_5(num_classes=10).eval()
    return model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_shufflenet_inner_branch_channels_are_prunable_and_the_shuffled_ones_stay() -> None:
    """torch-pruning raises ZeroDivisionError mapping channels through the channel shuffle's view; with reshapes
    opaque, the channels inside each branch (1x1 -> depthwise -> 1x1), the stem and the last conv are
    prunable, and every conv whose output crosses a shuffle says why it is not, which the space checks quote."""
    model, x = _shufflenet()
    layers = {info.name: info for info in discover_layers(model, x[:1])}
    blocks = [f"stage{s}.{b}" for s, n in ((2, 4), (3, 8), (4, 4)) for b in range(n)]
    assert {name for name, info in layers.items() if info.prunable} == {
        "conv1.0",
        "conv5.0",
        *(f"{block}.branch2.3" for block in blocks),
    }
    crossing = [f"{block}.branch2.5" for block in blocks] + [f"stage{s}.0.branch1.2" for s in (2, 3, 4)]
    for name in crossing:
        assert "cross a reshape" in layers[name].reason and "ZeroDivisionError" in layers[name].reason, name
    assert layers["stage2.1.branch2.0"].out_root == "stage2.1.branch2.3"
    assert layers["stage2.1.branch2.5"].in_roots == (("stage2.1.branch2.3", 24),)
    spec = parse_space(
        "task: experiments.tasks.zoo:shufflenet_v2_x0_5\nlayers: {'stage2.1.branch2.5': {channel_sparsity: [0.5]}}"
    )
    with pytest.raises(UserError, match="stage2.1.branch2.5.*cannot be pruned.*channel shuffle"):
        resolve_space(spec, list(layers.values()))


def test_shufflenet_branch_pruning_removes_the_chosen_channels_and_keeps_the_function() -> None:
    """Every odd inner channel of every branch is zeroed (1x1 rows, batch norms, depthwise filters, the last
    1x1's columns), so it adds nothing and is the least important: pruning half of each branch must remove
    exactly those, leave a physically smaller model and the same logits."""
    model, x = _shufflenet()
    expected = model(x)
    blocks = [module for module in model.modules() if type(module).__name__ == "InvertedResidual"]
    with torch.no_grad():
        for block in blocks:
            first, bn1, _, depthwise, bn2, last = list(block.branch2)[:6]
            odd = torch.arange(1, first.out_channels, 2)
            for tensor in (first.weight, bn1.weight, bn1.bias, depthwise.weight, bn2.weight, bn2.bias):
                tensor[odd] = 0
            last.weight[:, odd] = 0
    params = sum(p.numel() for p in model.parameters())
    names = [name for name, module in model.named_modules() if module in {b.branch2[3] for b in blocks}]
    prune(model, Policy.from_mapping({name: LayerSetting(0.5, 32) for name in names}, "l1"), x[:1])
    assert [b.branch2[0].out_channels for b in blocks] == [12] * 4 + [24] * 8 + [48] * 4
    assert all(b.branch2[3].groups == b.branch2[5].in_channels == b.branch2[0].out_channels for b in blocks)
    assert sum(p.numel() for p in model.parameters()) < params
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_mobilenet_v3_squeeze_excitation_pruning_removes_the_chosen_channels_and_keeps_the_function() -> None:
    """MobileNetV3-Small at 32x32: in each expand-SE block every fourth inner channel is made dead by hand
    (expand conv rows, batch norms, depthwise filters, SE fc1's columns, fc2's rows and bias, the projection's
    columns), so it adds nothing and is the least important: pruning a quarter of each depthwise conv's group
    must remove exactly those through the SE block (fc1's inputs, the gate fc2's outputs), keep the others'
    batch-norm statistics, and leave the same logits."""
    torch.manual_seed(0)
    model = autocompress.import_torchvision().models.mobilenet_v3_small(num_classes=10).eval()
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32)
    blocks = [m.block for m in model.features if hasattr(m, "block") and len(m.block) == 4]
    widths, dead = [b[1][0].out_channels for b in blocks], []
    with torch.no_grad():
        for block in blocks:
            (expand, bn1, _), (depthwise, bn2, _), se, (project, _) = block[0], block[1], block[2], block[3]
            channels = torch.arange(1, depthwise.out_channels, 4)
            for tensor in (expand.weight, bn1.weight, bn1.bias, depthwise.weight, bn2.weight, bn2.bias):
                tensor[channels] = 0
            se.fc1.weight[:, channels] = 0
            se.fc2.weight[channels] = 0
            se.fc2.bias[channels] = 0
            project.weight[:, channels] = 0
            dead.append(channels)
    expected = model(x)
    kept = [torch.ones(w, dtype=torch.bool).index_fill_(0, d, False) for w, d in zip(widths, dead, strict=True)]
    before = [(b[1][0].weight.clone(), b[1][1].running_mean.clone(), b[1][1].running_var.clone()) for b in blocks]
    names = [n for n, m in model.named_modules() if m in {b[1][0] for b in blocks}]
    prune(model, Policy.from_mapping({name: LayerSetting(0.25, 32) for name in names}, "l1"), x[:1])
    assert [b[1][0].out_channels for b in blocks] == [w - w // 4 for w in widths]
    for block, mask, (weight, mean, var) in zip(blocks, kept, before, strict=True):
        assert block[0][0].out_channels == block[2].fc1.in_channels == block[2].fc2.out_channels
        assert block[2].fc2.out_channels == block[3][0].in_channels == block[1][0].out_channels
        torch.testing.assert_close(block[1][0].weight, weight[mask])
        torch.testing.assert_close(block[1][1].running_mean, mean[mask])
        torch.testing.assert_close(block[1][1].running_var, var[mask])
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_pruning_a_shuffled_layer_is_refused_before_anything_changes() -> None:
    model, x = _shufflenet()
    before = {name: p.shape for name, p in model.named_parameters()}
    policy = Policy.from_mapping({"stage2.1.branch2.5": LayerSetting(0.5, 32)}, "l1")
    with pytest.raises(ValueError, match="'stage2.1.branch2.5' cannot be pruned: its channels cross a reshape"):
        prune(model, policy, x[:1])
    assert {name: p.shape for name, p in model.named_parameters()} == before


def test_squeezenet_output_conv_behind_pooling_is_the_output_layer() -> None:
    task = zoo.task_for("squeezenet1_1")
    assert output_layers(task.baseline_model(), task.example_input(1)) == {"classifier.1"}


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param("mobilenet_v3_small", marks=pytest.mark.slow),
        pytest.param("shufflenet_v2_x0_5", marks=pytest.mark.slow),
        "squeezenet1_1",
        pytest.param("resnet18", marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", marks=pytest.mark.slow),
        pytest.param("vit_b_32", marks=pytest.mark.slow),
    ],
)
def test_model_is_pruned_quantized_exported_and_reloads(arch: str) -> None:
    row = bench_one(arch)
    assert row["status"] == "compressed" and row["reloads"], row
    assert row["prunable"] > 0 and row["macs_ratio"] < 0.6 and row["params_after"] < row["params"]
    assert row["latency_ms"] > 0 and row["speedup"] > 0


def test_vit_embedding_width_through_multihead_attention_is_refused_and_mlp_width_stays_prunable() -> None:
    task = zoo.task_for("vit_b_32")
    layers = {info.name: info for info in discover_layers(task.baseline_model(), task.example_input(1))}
    assert all(layers[f"encoder.layers.encoder_layer_{i}.mlp.0"].prunable for i in range(12))
    roots = [info for info in layers.values() if "nn.MultiheadAttention" in info.reason]
    assert roots and "remove heads instead" in roots[0].reason and not any(info.prunable for info in roots)
    out_proj = roots[0].reason.split("channel_sparsity of ")[1].strip("')")
    assert layers[out_proj].prunable and layers[out_proj].heads == 12  # heads: the fraction removed, searchable
    assert not layers["conv_proj"].prunable


def test_swin_attention_is_sealed_so_discovery_ends_and_mlp_width_stays_prunable() -> None:
    """torchvision's Swin attention passes its linears' weights to F.linear: traced op by op, its score matmuls
    close a loop in torch-pruning's graph that enumerating groups goes around forever (minutes, then 16+ GB).
    Sealed, it is one op: the residual width through it stays, named; each block's MLP width prunes."""
    task = zoo.task_for("swin_t")
    start = time.perf_counter()
    layers = {info.name: info for info in discover_layers(task.baseline_model(), task.example_input(1))}
    assert time.perf_counter() - start < 120
    blocks = [name.removesuffix(".mlp.0") for name in layers if name.endswith(".mlp.0")]
    assert len(blocks) == 12 and all(layers[f"{block}.mlp.0"].prunable for block in blocks)
    assert [name for name, info in layers.items() if info.prunable] == [f"{block}.mlp.0" for block in blocks]
    qkv = layers["features.1.0.attn.qkv"]
    assert "inside 'features.1.0.attn' (ShiftedWindowAttention)" in qkv.reason
    assert qkv.macs == 21 * 21 * 96 * 288  # 16x16 tokens padded to 3x3 windows of 7x7, counted from F.linear
    assert "run through 'features.1.1.attn' (ShiftedWindowAttention)" in layers["features.1.1.mlp.3"].reason
    assert "run through" in layers["features.0.0"].reason and "run through" in layers["features.2.reduction"].reason


def test_swin_mlp_width_is_removed_physically_and_the_residual_width_is_refused() -> None:
    task = zoo.task_for("swin_t")
    model, x = task.baseline_model(), task.example_input(2)
    residual = Policy.from_mapping({"features.1.1.mlp.3": LayerSetting(0.5, 32)})
    with pytest.raises(ValueError, match="'features.1.1.mlp.3' cannot be pruned: its output channels run through"):
        prune(model, residual, x[:1])
    blocks = [name.removesuffix(".mlp.0") for name, _ in model.named_modules() if name.endswith(".mlp.0")]
    policy = Policy.from_mapping({f"{block}.mlp.0": LayerSetting(0.5, 32) for block in blocks}, round_to=8)
    pruned = prune(copy.deepcopy(model), policy, task.example_input(1))
    assert pruned.get_submodule("features.1.0.mlp.0").out_features == 192
    assert pruned.get_submodule("features.7.1.mlp.3").in_features == 1536
    assert count_params(pruned) < 0.7 * count_params(model)
    assert pruned(x).shape == model(x).shape == (2, zoo.CLASSES)


def test_endless_group_names_the_loop_of_swin_attention_traced_op_by_op() -> None:
    """The guard that keeps a model like unsealed Swin from hanging discovery: the indices its loop multiplies by
    the head width pass all the model's channels within a few laps."""
    task = zoo.task_for("swin_t")
    model, x = task.baseline_model(), task.example_input(1)
    raw = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    start = time.perf_counter()
    reason = endless_group(raw)
    assert time.perf_counter() - start < 5
    assert "never end: the group of 'features.7.1.mlp.3' maps a channel index to 65535" in reason
    assert "past all 49069 channels of the model" in reason
    assert endless_group(build_graph(model, x)) == ""


@pytest.fixture(scope="module")
def maxvit() -> tuple[nn.Module, torch.Tensor]:
    task = zoo.task_for("maxvit_t")
    return task.baseline_model(), task.example_input(1)


@pytest.mark.slow
def test_maxvit_attention_is_sealed_so_discovery_ends_and_mbconv_and_mlp_widths_stay_prunable(maxvit) -> None:
    """MaxViT's attention multiplies q, k and v with einsum: traced op by op, torch-pruning's group of its qkv
    projection went around the loop the einsums close for 11+ minutes and 10 GB. Sealed, it is one op: the residual
    width through it stays, named; MBConv's inner width and each attention layer's MLP width prune."""
    model, x = maxvit
    start = time.perf_counter()
    layers = {info.name: info for info in discover_layers(model, x)}
    assert time.perf_counter() - start < 120
    prunable = {name for name, info in layers.items() if info.prunable}
    mlps = {name for name in layers if name.endswith(".mlp_layer.1")}
    assert len(mlps) == 22 and mlps <= prunable  # 11 MaxViT layers, a window and a grid attention each
    assert "blocks.0.layers.0.layers.MBconv.layers.squeeze_excitation.fc1" in prunable
    assert all(".attn_layer." not in name and not name.endswith(".mlp_layer.3") for name in prunable)
    qkv = layers["blocks.0.layers.0.layers.window_attention.attn_layer.1.to_qkv"]
    assert "inside 'blocks.0.layers.0.layers.window_attention.attn_layer.1' (RelativePositionalMultiHeadAttention)" in (
        qkv.reason
    )
    assert "multiplies two activations" in qkv.reason
    mlp_out = layers["blocks.0.layers.0.layers.grid_attention.mlp_layer.3"]
    assert "run through" in mlp_out.reason and "(RelativePositionalMultiHeadAttention)" in mlp_out.reason


@pytest.mark.slow
def test_endless_group_stops_maxvit_attention_traced_op_by_op_at_once(maxvit) -> None:
    """Without sealing, the group of MaxViT's qkv projection reaches the output projection with indices 11 times
    past its width (and then never sees the same index list twice): the guard stops it there, in about a second."""
    model, x = maxvit
    raw = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    start = time.perf_counter()
    reason = endless_group(raw)
    assert time.perf_counter() - start < 10
    assert "maps a channel index to 5471 at 'blocks.3.layers.1.layers.grid_attention.attn_layer.1.merge'" in reason
    assert reason.startswith("torch-pruning's channel groups through this model's graph never end")
    assert "whose width is 512" in reason
