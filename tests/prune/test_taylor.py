"""`taylor` is Molchanov et al. 2019's TaylorFO: per minibatch, the square of each channel's summed
``w * dL/dw``, averaged over minibatches, scored at the batch norm when the group has one.

The exact checks run the criterion through the real `SupervisedTask` fine-tuning at learning rate 0 and one
example per batch, so every step's gradient is taken at the starting weights and the test can recompute each
batch's gradient itself with autograd; the real trained ResNet then checks the same arithmetic while the
phase really trains.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autocompress.compress import TaylorCriterion, prepare_criterion
from autocompress.task import SupervisedTask
from experiments.tasks.digits import load_digits_splits
from tests.prune.conftest import TASKS

PREPARE_EPOCHS = 0.25


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
    return model


def conv_bn_net() -> nn.Module:
    """conv -> BN -> ReLU -> pool -> linear -> tanh -> linear: one group with a BN gate, one without."""
    layers = [nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return seeded(nn.Sequential(*layers, nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 10)))


def frozen_task(name: str, factory, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> SupervisedTask:
    """The factory's model as the baseline; fine-tuning at lr 0, one example per step, so an epoch is one step
    per training example whatever the shuffle and every gradient is taken at the starting weights."""
    return SupervisedTask(name, factory, data, train_epochs=0, finetune_lr=0.0, batch_size=1, weight_decay=0.0)


def per_example_contributions(net: nn.Module, data: tuple[torch.Tensor, torch.Tensor], layer: int) -> torch.Tensor:
    """Rows: training examples; columns: the output channels of ``net[layer]``, each its ``sum w * dL/dw``
    (weight and bias) on that example alone, by autograd, in training mode as the fine-tuning runs."""
    net = copy.deepcopy(net).train()
    weight, bias = net[layer].weight, net[layer].bias
    x, y = data
    rows = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
        gw, gb = torch.autograd.grad(loss, [weight, bias])
        rows.append((weight * gw).reshape(len(gw), -1).sum(1) + bias * gb)
    return torch.stack(rows).detach()


def out_group(net: nn.Module, x: torch.Tensor, layer: nn.Module) -> tp.Group:
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=x)
    handler = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
    width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    return graph.get_pruning_group(layer, handler, idxs=list(range(width)))


@pytest.mark.parametrize(("root", "gate"), [(0, 1), (5, 5)], ids=["conv-scored-at-its-bn", "linear-without-bn"])
def test_taylor_scores_the_mean_over_batches_of_each_batchs_squared_channel_contribution(root: int, gate: int) -> None:
    digits = load_digits_splits()
    data = {split: (x[:3], y[:3]) for split, (x, y) in digits.items()}
    task = frozen_task("taylor-exact", conv_bn_net, data)
    net = task.baseline_model()
    contributions = per_example_contributions(net, data["train"], gate)
    criterion = TaylorCriterion(epochs=1.0)
    criterion.prepare(net, task, epochs=1.0)
    score = criterion(out_group(net, task.example_input(1), net[root]))
    assert score is not None
    torch.testing.assert_close(score, contributions.square().mean(0), rtol=1e-4, atol=1e-12)
    assert bool((contributions.square().mean(0) > 1e-6).all())  # no channel scores zero: the test can tell them apart


def cancelling_net() -> nn.Module:
    """An MLP whose logits are equal on the all-ones input: two examples of it labelled 0 and 1 give exactly
    opposite gradients (``softmax - onehot`` is (-1/2, 1/2) for one and (1/2, -1/2) for the other)."""
    net = seeded(nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)), seed=1)
    with torch.no_grad():
        net[2].bias.copy_(-net[2].weight @ net[1](net[0](torch.ones(2))))
    return net


def test_taylor_keeps_channels_whose_batch_contributions_cancel_where_the_averaged_gradient_scores_zero() -> None:
    x, y = torch.ones(2, 2), torch.tensor([0, 1])
    task = frozen_task("taylor-cancel", cancelling_net, {"train": (x, y), "test": (x, y)})
    net = task.baseline_model()
    contributions = per_example_contributions(net, (x, y), 0)
    torch.testing.assert_close(contributions[0], -contributions[1])  # the two batches cancel
    averaged_gradient = contributions.mean(0).square()  # Sum w * mean(dL/dw), squared: what the mean .grad scores
    criterion = TaylorCriterion(epochs=1.0)
    criterion.prepare(net, task, epochs=1.0)
    score = criterion(out_group(net, x[:1], net[0]))
    assert score is not None
    torch.testing.assert_close(score, contributions.square().mean(0), rtol=1e-4, atol=1e-12)
    assert bool((averaged_gradient < 1e-12).all()) and bool((score > 1e-6).all())


def test_taylor_observes_every_step_of_a_real_phase_at_the_weights_it_prunes_and_restores_them() -> None:
    """The trained ResNet really trains in the phase (AdamW, lr > 0); the score of a block's first conv is the
    mean over the steps, seen by the runtime's ``on_step``, of its BN gate's squared contribution at the
    starting weights; afterwards the weights and buffers are the ones it started from and ``.grad`` is gone."""
    task = TASKS["resnet"]
    net = task.baseline_model()
    start = copy.deepcopy(net.state_dict())
    bn = net.layer1[0].bn1
    gamma, beta = bn.weight.detach().clone(), bn.bias.detach().clone()
    seen = []
    criterion = prepare_criterion(
        "taylor", net, task, PREPARE_EPOCHS, on_step=lambda: seen.append(gamma * bn.weight.grad + beta * bn.bias.grad)
    )
    assert len(seen) == task.finetune_steps(TaylorCriterion().epochs) > 1
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    score = criterion(out_group(net, task.example_input(1), net.layer1[0].conv1))
    assert score is not None
    torch.testing.assert_close(score, torch.stack(seen).square().mean(0), rtol=1e-4, atol=1e-12)
