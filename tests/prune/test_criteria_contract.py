"""The contract every pruning criterion keeps, on every model: one line in CRITERIA adds a criterion to it.

Real trained models (ResNet, MobileNetV2, DenseNet, transformer), real torch-pruning removal, the task's own
fine-tuning and TorchScript; nothing of ours is mocked. Criteria that need the task run their `prepare` phase
exactly as `run_trial` runs it.
"""

from __future__ import annotations

import copy
import math
from functools import cache

import pytest
import torch
from torch import nn

from autocompress.compress import CRITERIA, kept_channels, make_criterion, prepare_criterion, prune
from autocompress.measure import count_macs, count_params, to_torchscript
from autocompress.space import LayerInfo, LayerSetting, Policy, discover_layers
from tests.prune.conftest import TASKS

SPARSITY = 0.5
#: the trial fine-tune budget handed to `prepare` (slim's sparsity phase trains max(half of it, 0.5 epochs))
PREPARE_EPOCHS = 0.25
FINETUNE_EPOCHS = 0.1


def uniform(layers: list[LayerInfo], criterion: str, sparsity: float = SPARSITY) -> Policy:
    return Policy.from_mapping({i.name: LayerSetting(sparsity if i.prunable else 0.0) for i in layers}, criterion)


@cache
def pruned(criterion: str, model: str) -> tuple[nn.Module, Policy, list[LayerInfo]]:
    """The task's trained model pruned uniformly by `criterion` (cached: each test takes a deep copy)."""
    task = TASKS[model]
    net, x1 = task.baseline_model(), task.example_input(1)
    layers = discover_layers(net, x1)
    policy = uniform(layers, criterion)
    prune(net, policy, x1, importance=prepare_criterion(criterion, net, task, PREPARE_EPOCHS))
    return net, policy, layers


def expected_width(info: LayerInfo, by_name: dict[str, LayerInfo], sparsity: float, round_to: int | None = None) -> int:
    """Output width the contract promises: whole heads for attention, `kept_channels` otherwise."""
    if not info.out_root:
        return info.out_channels
    root = by_name[info.out_root]
    if root.heads:
        head_dim = root.out_channels // root.heads
        return (root.heads - math.ceil(sparsity * root.heads)) * head_dim
    return kept_channels(root.out_channels, sparsity, round_to)


def out_width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


@pytest.mark.parametrize("model", sorted(TASKS))
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_pruned_model_keeps_its_output_and_shrinks_as_asked(criterion: str, model: str) -> None:
    task = TASKS[model]
    base, x = task.baseline_model(), task.example_input(4)
    net, _, layers = pruned(criterion, model)
    assert net(x).shape == base(x).shape
    modules, by_name = dict(net.named_modules()), {i.name: i for i in layers}
    widths = {i.name: out_width(modules[i.name]) for i in layers}
    assert widths == {i.name: expected_width(i, by_name, SPARSITY) for i in layers}
    assert any(w < by_name[n].out_channels for n, w in widths.items())
    assert count_params(net) < 0.6 * count_params(base)
    assert sum(count_macs(net, x).values()) < 0.6 * sum(count_macs(base, x).values())


@pytest.mark.parametrize("model", sorted(TASKS))
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_pruned_model_finetunes_and_traces(criterion: str, model: str) -> None:
    task = TASKS[model]
    net = copy.deepcopy(pruned(criterion, model)[0])
    before = [p.detach().clone() for p in net.parameters()]
    steps = []
    task.finetune(net, FINETUNE_EPOCHS, on_step=lambda: steps.append(1))
    assert steps and all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    x = task.example_input(8)
    script = to_torchscript(net, task.example_input(1))
    torch.testing.assert_close(script(x), net.eval()(x))


@pytest.mark.parametrize("criterion", ["apoz", "mean_activation"])
def test_activation_criteria_keep_the_channels_their_statistic_ranks_highest(criterion: str) -> None:
    """In a ResNet block, conv1's channels are judged at conv2's input (after BN and ReLU)."""
    task = TASKS["resnet"]
    net, x1 = task.baseline_model(), task.example_input(1)
    block = net.layer1[0]
    seen = []
    hook = block.conv2.register_forward_pre_hook(lambda m, i: seen.append(i[0].transpose(0, 1).flatten(1)))
    with torch.no_grad():
        for batch in task.calibration_batches():
            net(batch)
    hook.remove()
    acts = torch.cat(seen, dim=1)
    stat = (acts != 0).float().mean(1) if criterion == "apoz" else acts.abs().mean(1)
    original = block.conv1.weight.detach().clone()
    policy = Policy.from_mapping({"layer1.0.conv1": LayerSetting(SPARSITY)}, criterion)
    prune(net, policy, x1, importance=prepare_criterion(criterion, net, task, PREPARE_EPOCHS))
    kept = {next(i for i in range(len(original)) if torch.equal(original[i], w)) for w in block.conv1.weight}
    ranked = stat.argsort(descending=True, stable=True).tolist()
    if criterion == "apoz":  # ties in the zero fraction are broken by magnitude: compare the untied part
        cut = sorted(stat.tolist(), reverse=True)[len(kept) - 1]
        assert {i for i in range(len(stat)) if stat[i] > cut} <= kept
        assert all(stat[i] >= cut for i in kept)
    else:
        assert kept == set(ranked[: len(kept)])


def test_slim_drives_bn_scales_towards_zero_and_prunes_the_smallest() -> None:
    task = TASKS["resnet"]
    net, x1 = task.baseline_model(), task.example_input(1)
    bn = net.layer1[0].bn1
    gamma_before = bn.weight.detach().abs().sum()
    criterion = prepare_criterion("slim", net, task, PREPARE_EPOCHS)
    gamma = bn.weight.detach().clone()
    assert gamma.abs().sum() < 0.95 * gamma_before  # the L1 proximal steps really ran
    original = net.layer1[0].conv1.weight.detach().clone()
    prune(net, Policy.from_mapping({"layer1.0.conv1": LayerSetting(SPARSITY)}, "slim"), x1, importance=criterion)
    kept = {next(i for i in range(len(original)) if torch.equal(original[i], w)) for w in net.layer1[0].conv1.weight}
    assert kept == set(gamma.abs().argsort(descending=True)[: len(kept)].tolist())


@pytest.mark.parametrize("criterion", ["apoz", "mean_activation", "slim", "taylor"])
def test_data_criteria_refuse_to_prune_unprepared(criterion: str) -> None:
    task = TASKS["resnet"]
    net, x1 = task.baseline_model(), task.example_input(1)
    policy = uniform(discover_layers(net, x1), criterion)
    with pytest.raises(ValueError, match=f"criterion '{criterion}'.*prepare"):
        prune(net, policy, x1, importance=make_criterion(criterion))


def test_head_and_ffn_pruning_removes_whole_heads_and_keeps_the_rest_of_the_function() -> None:
    """Pruned heads/FFN units are gone; the result equals the original with their outputs zeroed."""
    task = TASKS["transformer"]
    net, x = task.baseline_model(), task.example_input(8)
    reference = copy.deepcopy(net)
    layer, ref = net.layers[0], reference.layers[0]
    heads, head_dim = layer.heads, layer.head_dim
    policy = Policy.from_mapping({"layers.0.v": LayerSetting(0.5), "layers.0.ffn_in": LayerSetting(0.5)})
    prune(net, policy, task.example_input(1))
    assert layer.heads == heads // 2 and layer.q.out_features == layer.heads * head_dim

    def kept_rows(new: torch.Tensor, old: torch.Tensor) -> list[int]:
        return [next(i for i in range(len(old)) if torch.equal(old[i], row)) for row in new]

    rows = kept_rows(layer.q.weight, ref.q.weight)
    assert rows == kept_rows(layer.k.weight, ref.k.weight) == kept_rows(layer.v.weight, ref.v.weight)
    kept_heads = sorted({r // head_dim for r in rows})
    assert rows == [h * head_dim + d for h in kept_heads for d in range(head_dim)]  # whole heads, in order
    units = kept_rows(layer.ffn_in.weight, ref.ffn_in.weight)
    assert len(units) == ref.ffn_in.out_features // 2
    with torch.no_grad():
        dropped = [c for c in range(ref.out.in_features) if c not in rows]
        ref.out.weight[:, dropped] = 0
        idle = [u for u in range(ref.ffn_in.out_features) if u not in units]
        ref.ffn_out.weight[:, idle] = 0
    torch.testing.assert_close(net(x), reference(x))


def test_discovery_names_the_attention_root_with_its_heads_and_why_the_others_cannot_be_pruned() -> None:
    task = TASKS["transformer"]
    layers = {i.name: i for i in discover_layers(task.baseline_model(), task.example_input(1))}
    assert layers["layers.0.v"].prunable and layers["layers.0.v"].heads == 4
    for name in ("layers.0.q", "layers.0.k"):
        assert not layers[name].prunable and "heads are removed together with 'layers.0.v'" in layers[name].reason
    assert layers["layers.0.ffn_in"].prunable and layers["layers.0.ffn_in"].heads == 0
    assert not layers["fc"].prunable and "model's output" in layers["fc"].reason


@pytest.mark.parametrize(
    ("width", "sparsity", "round_to", "kept"),
    [(64, 0.5, None, 32), (64, 0.3, None, 44), (64, 0.3, 8, 40), (12, 0.9, 8, 8), (4, 0.5, 8, 4)],
)
def test_kept_channels_round_down_to_the_multiple_but_never_to_nothing(width, sparsity, round_to, kept) -> None:
    assert kept_channels(width, sparsity, round_to) == kept


@pytest.mark.parametrize("model", sorted(TASKS))
def test_round_to_from_the_policy_holds_on_every_model(model: str) -> None:
    task = TASKS[model]
    net, x1 = task.baseline_model(), task.example_input(1)
    layers = discover_layers(net, x1)
    policy = Policy.from_mapping({i.name: LayerSetting(0.3 if i.prunable else 0.0) for i in layers}, round_to=4)
    assert Policy.from_dict(policy.to_dict()) == policy
    prune(net, policy, x1)
    modules, by_name = dict(net.named_modules()), {i.name: i for i in layers}
    widths = {i.name: out_width(modules[i.name]) for i in layers}
    assert widths == {i.name: expected_width(i, by_name, 0.3, round_to=4) for i in layers}
    assert all(widths[i.name] % 4 == 0 for i in layers if i.prunable and not i.heads)
