"""Where pruning meets fine-tuning: the unstructured pruners by `Policy.pruner` name, and structured ADMM.

`sparse_finetune` spends a trial's fine-tuning budget through the policy's pruner (`PRUNERS`), which
realises every layer's ``weight_sparsity``; `structured_admm` runs first when the policy's criterion is
``admm``, so that the channels physical pruning removes were driven to zero by training beforehand.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch_pruning as tp
from torch import nn

from autocompress._inputs import ModelInputs
from autocompress.compress._admm import ADMMPruner, admm_channels
from autocompress.compress._agp import AGPPruner
from autocompress.compress._level import LevelPruner
from autocompress.compress._lottery import LotteryPruner
from autocompress.compress._sparse_base import Trainer, UnstructuredPruner
from autocompress.space import Policy

#: unstructured pruners by `Policy.pruner` name
PRUNERS: dict[str, Callable[[], UnstructuredPruner]] = {
    "level": LevelPruner,
    "agp": AGPPruner,
    "lottery": LotteryPruner,
    "lottery_trained": partial(LotteryPruner, early=False),
    "admm": ADMMPruner,
}

#: the fraction of the fine-tuning budget that structured ADMM trains before the channels are removed
STRUCTURED_ADMM_SHARE = 0.5


def register_pruner(name: str, factory: Callable[[], UnstructuredPruner]) -> None:
    """Make an `UnstructuredPruner` available as ``pruner: NAME`` in space files. Register it in the module
    that defines your task, which every worker imports before it fine-tunes."""
    PRUNERS[name] = factory


def get_pruner(name: str) -> UnstructuredPruner:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; known: {sorted(PRUNERS)}")
    return PRUNERS[name]()


def sparse_finetune(model: nn.Module, policy: Policy, trainer: Trainer, epochs: float) -> UnstructuredPruner | None:
    """Fine-tune `model` in place for `epochs`, realising the policy's weight sparsity with its pruner
    (returned, for its diagnostics); without weight sparsity it is plain fine-tuning and returns None."""
    targets = policy.weight_sparsity
    if not targets:
        trainer.train(model, epochs, lambda: None)
        return None
    pruner = get_pruner(policy.pruner)
    pruner.run(model, targets, trainer, epochs)
    return pruner


def structured_admm(
    model: nn.Module,
    policy: Policy,
    example_input: ModelInputs,
    trainer: Trainer,
    epochs: float,
    graph: tp.DependencyGraph | None = None,
) -> float:
    """When the policy's criterion is ``admm``, train `model` by ADMM towards its channel sparsity for the
    share `STRUCTURED_ADMM_SHARE` of `epochs` (before `prune` removes the channels); returns the epochs spent.
    `graph`: the model's dependency graph, when the caller has one (`ChannelPruning.graph`)."""
    sparsity = {name: s.channel_sparsity for name, s in policy if s.channel_sparsity > 0}
    if policy.criterion != "admm" or not sparsity or epochs <= 0:
        return 0.0
    spent = epochs * STRUCTURED_ADMM_SHARE
    admm_channels(model, sparsity, example_input, trainer, spent, graph=graph)
    return spent
