"""Structured channel pruning with physical removal through torch-pruning's dependency graph.

Channels are really removed (new, smaller weight tensors), and every layer coupled to a pruned one (the
other convs feeding a residual add, the next layer's input, batch norms) shrinks with it, so the result is
an ordinary, smaller `nn.Module`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch_pruning as tp
from torch import nn

from autocompress.space import Policy, output_layers

#: importance criteria by policy name; a criterion scores channels, the lowest are removed.
CRITERIA: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
}


def register_criterion(name: str, factory: Callable[[], tp.importance.Importance]) -> None:
    """Make a channel-importance criterion available as ``criterion: NAME`` in space files.

    `factory` returns a torch-pruning ``Importance``: called on a dependency group, it returns one score per
    channel, and the lowest-scoring channels are removed. Register it in the module that defines your task,
    which every worker imports before it prunes.
    """
    CRITERIA[name] = factory


def prune(model: nn.Module, policy: Policy, example_input: torch.Tensor, round_to: int | None = None) -> nn.Module:
    """Remove the fraction ``channel_sparsity`` of output channels of each layer in `policy`, in place.

    Returns the same module object, now smaller. Layers whose output is the model's output are never pruned.
    """
    modules = dict(model.named_modules())
    ratios = {modules[name]: s.channel_sparsity for name, s in policy if s.channel_sparsity > 0}
    if not ratios:
        return model
    if policy.criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {policy.criterion!r}; known: {sorted(CRITERIA)}")
    model.eval()
    fixed = [modules[name] for name in output_layers(model, example_input)]
    pruner = tp.pruner.BasePruner(
        model,
        example_input,
        importance=CRITERIA[policy.criterion](),
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        ignored_layers=fixed,
        round_to=round_to,
        global_pruning=False,
    )
    pruner.step()
    return model
