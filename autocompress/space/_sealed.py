"""Modules that torch-pruning must see as one op: those whose forward uses a child's weights without calling it.

torch-pruning follows channels through every autograd op between the modules it knows, and sees a layer only
when the layer is called. torchvision's Swin attention calls none of its linears: it passes their weights to
``F.linear(x, self.qkv.weight, ...)``. torch-pruning then reads the projection as an element-wise op (C
channels in, 3C out taken for the same channels), and the head split and the score matmuls (``q @ k.T``,
``attn @ v``, element-wise to it as well) close a loop in its graph that holds a reshape multiplying every
channel index by the head width: enumerating a channel group goes around that loop forever, each lap with a
larger index list (minutes, then tens of GB; `autocompress.space.endless_group` names such a loop).

Such a module is sealed instead (`find_sealed`): while torch-pruning traces the model (`Sealed.tracing`), its
output is re-attached to its inputs by one autograd node, so the graph holds it as a single op (a torch-pruning
customized layer, `SealedPruner`) and nothing inside it is traced. Its channels stay: every channel group that
runs through it is left out (its width is the residual width around Swin's attention), while the layers
outside it (the MLP width between its linears) prune as before.

A module torch-pruning prunes itself (`nn.MultiheadAttention`, which uses its ``out_proj`` the same way) and the
model itself are never sealed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from autocompress._inputs import ModelInputs, call_model


class SealedPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning's view of a sealed module: one op whose channels are not pruned (every group through it is
    an ignored one) and whose channel counts it does not know."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        raise RuntimeError(f"{type(layer).__name__} is sealed: torch-pruning cannot remove its channels")

    #: the same function both ways: channels entering a sealed module are coupled to those leaving it
    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    get_in_channels = get_out_channels


@dataclass(frozen=True)
class Sealed:
    """The sealed modules of one model: every instance of each class found by `find_sealed` (torch-pruning
    registers customized layers by class)."""

    modules: tuple[nn.Module, ...] = ()

    @property
    def pruners(self) -> dict[type, tp.pruner.function.BasePruningFunc]:
        """torch-pruning's ``customized_pruners``."""
        return {type(module): SealedPruner() for module in self.modules}

    @contextmanager
    def tracing(self) -> Iterator[None]:
        """While torch-pruning traces the model: each sealed module's output is one autograd node on its inputs."""
        hooks = [module.register_forward_hook(_one_op) for module in self.modules]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def find_sealed(model: nn.Module, example_input: ModelInputs) -> Sealed:
    """The modules to seal, found by running `model` once in eval mode (each module's mode is restored): a
    module (neither the model nor one torch-pruning prunes itself) that returns one tensor and uses the
    parameters of a child it never calls."""
    returns_tensor: dict[nn.Module, bool] = {}  # every module called, and whether it returned one tensor
    hooks = [
        module.register_forward_hook(lambda m, _, out: returns_tensor.__setitem__(m, isinstance(out, torch.Tensor)))
        for module in model.modules()
    ]
    modes = {module: module.training for module in model.modules()}
    with _ParametersPassed() as passed, torch.no_grad():
        try:
            call_model(model.eval(), example_input)
        finally:
            for module, training in modes.items():
                module.training = training
            for hook in hooks:
                hook.remove()
    modules = dict(model.named_modules())
    kinds: set[type] = set()
    for name, module in modules.items():
        if module in returns_tensor or not any(id(p) in passed.ids for p in module.parameters(recurse=False)):
            continue
        owner = name
        while owner and modules[owner] not in returns_tensor:
            owner = owner.rpartition(".")[0]
        if owner and returns_tensor[modules[owner]] and tp.ops.module2type(modules[owner]) == tp.ops.OPTYPE.ELEMENTWISE:
            kinds.add(type(modules[owner]))
    return Sealed(tuple(m for m in model.modules() if type(m) in kinds))


class _ParametersPassed(TorchFunctionMode):
    """Records the parameters passed to any torch function (``F.linear(x, self.qkv.weight)``) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[int] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for leaf in tree_leaves((args, kwargs or {})):
            if isinstance(leaf, nn.Parameter):
                self.ids.add(id(leaf))
        return func(*args, **(kwargs or {}))


class _Sealing(torch.autograd.Function):
    """The output of a sealed module as one autograd node; built only while torch-pruning traces (it reads the
    graph and never differentiates it), so no gradient flows through it."""

    @staticmethod
    def forward(ctx: Any, output: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return output.clone()

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[None, ...]:
        return (None,) * len(ctx.needs_input_grad)


def _one_op(module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor | None:
    """The sealed module's output as one node on its tensor inputs and its parameters (which torch-pruning skips,
    and which give the node a gradient function even when the inputs have none, e.g. the model's input)."""
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    if not isinstance(output, torch.Tensor) or not inputs:
        return None
    return _Sealing.apply(output.detach(), *inputs, *module.parameters())
