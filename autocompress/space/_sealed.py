"""Modules that torch-pruning must see as one op: those whose forward uses a child's weights without calling it,
and those that multiply two activations (attention written with explicit matmuls).

torch-pruning follows channels through every autograd op between the modules it knows, and sees a layer only
when the layer is called. torchvision's Swin attention calls none of its linears: it passes their weights to
``F.linear(x, self.qkv.weight, ...)``. torch-pruning then reads the projection as an element-wise op (C
channels in, 3C out taken for the same channels), and the head split and the score matmuls (``q @ k.T``,
``attn @ v``, element-wise to it as well) close a loop in its graph that holds a reshape multiplying every
channel index by the head width: enumerating a channel group goes around that loop forever, each lap with a
larger index list (minutes, then tens of GB; `autocompress.space.endless_group` names such a loop).

The matmuls are the root of it: a product of two activations contracts one tensor's channels against the
other's positions, which no channel mapping describes. torchvision's MaxViT calls its linears but multiplies
q, k and v with ``einsum``; traced op by op, the group of its ``to_qkv`` reaches the output projection with
indices up to 11 times its width and goes around the loop its einsums close thousands of times, each lap with
the indices reordered (a reverse mapping goes through a set) so that torch-pruning never sees the same list
twice (10 GB after 11 minutes). Its residual width could not be pruned either: the attention reshapes its output
heads to the width of its input.

Such a module is sealed instead (`find_sealed`): while torch-pruning traces the model (`Sealed.tracing`), its
output is re-attached to its inputs by one autograd node, so the graph holds it as a single op (a torch-pruning
customized layer, `SealedPruner`) and nothing inside it is traced. Its channels stay: every channel group that
runs through it is left out (its width is the residual width around Swin's and MaxViT's attention), while the
layers outside it (the MLP width between its linears, MaxViT's MBConv) prune as before.

A module torch-pruning prunes itself (`nn.MultiheadAttention`, which uses its ``out_proj`` the same way), the
model itself, and attention whose heads are removed whole (the ``keep`` of `find_sealed`) are never sealed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from autocompress._inputs import ModelInputs, as_args

#: why a module is sealed, by what `find_sealed` saw it do
USES_WEIGHTS = "it uses its layers' weights without calling them"
MULTIPLIES = "it multiplies two activations: attention written with explicit matmuls"


class SealedPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning's view of a sealed module: one op whose channels are not pruned (every group through it is
    an ignored one) and whose channel counts it does not know; `why` says why its class is sealed."""

    TARGET_MODULES = None

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

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
    registers customized layers by class), and why each class is sealed."""

    modules: tuple[nn.Module, ...] = ()
    why: dict[type, str] = field(default_factory=dict)

    @property
    def pruners(self) -> dict[type, tp.pruner.function.BasePruningFunc]:
        """torch-pruning's ``customized_pruners``."""
        return {kind: SealedPruner(why) for kind, why in self.why.items()}

    @contextmanager
    def tracing(self) -> Iterator[None]:
        """While torch-pruning traces the model: each sealed module's output is one autograd node on its inputs."""
        hooks = [module.register_forward_hook(_one_op) for module in self.modules]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def find_sealed(model: nn.Module, example_input: ModelInputs, keep: Collection[nn.Module] = ()) -> Sealed:
    """The modules to seal, found by running `model` once in eval mode (each module's mode is restored): a
    module (neither the model, nor one torch-pruning prunes itself, nor one of `keep`) that returns one tensor
    and either uses the parameters of a child it never calls or, in its own forward, multiplies two activations
    (`_Recorder`)."""
    returns_tensor: dict[nn.Module, bool] = {}  # every module called, and whether it returned one tensor
    active: list[nn.Module] = []  # the modules whose forward is running, innermost last

    def leave(module: nn.Module, _: Any, out: Any) -> None:
        active.pop()
        returns_tensor[module] = isinstance(out, torch.Tensor)

    hooks = [
        hook
        for module in model.modules()
        for hook in (
            module.register_forward_pre_hook(lambda m, _: active.append(m)),
            module.register_forward_hook(leave),
        )
    ]
    modes = {module: module.training for module in model.modules()}
    # inputs that require gradients: whatever is computed from them has a grad_fn, even in a frozen model
    inputs = [t.detach().requires_grad_() if t.is_floating_point() else t for t in as_args(example_input)]
    with _Recorder(active) as recorded, torch.enable_grad():
        try:
            model.eval()(*inputs)
        finally:
            for module, training in modes.items():
                module.training = training
            for hook in hooks:
                hook.remove()
    modules = dict(model.named_modules())
    owners = dict.fromkeys(recorded.multiplying, MULTIPLIES)
    for name, module in modules.items():
        if module in returns_tensor or not any(id(p) in recorded.parameters for p in module.parameters(recurse=False)):
            continue
        owner = name
        while owner and modules[owner] not in returns_tensor:
            owner = owner.rpartition(".")[0]
        owners[modules[owner]] = USES_WEIGHTS
    why = {
        type(owner): reason
        for owner, reason in owners.items()
        if owner is not model
        and owner not in keep
        and returns_tensor[owner]
        and tp.ops.module2type(owner) == tp.ops.OPTYPE.ELEMENTWISE
    }
    return Sealed(tuple(m for m in model.modules() if type(m) in why), why)


#: the torch functions that multiply tensors along a contracted dimension (``q @ k`` calls ``Tensor.matmul``)
_PRODUCTS = {
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.bmm,
    torch.Tensor.bmm,
    torch.baddbmm,
    torch.Tensor.baddbmm,
    torch.einsum,
    F.scaled_dot_product_attention,
}


class _Recorder(TorchFunctionMode):
    """While active, records the parameters passed to any torch function (``F.linear(x, self.qkv.weight)``) and
    the modules whose own forward (the innermost running one, `active`) multiplies two activations (`_PRODUCTS`
    with two operands that have a grad_fn and are no parameter nor a view of one: ``q @ k.transpose(-2, -1)``, not
    ``x @ self.weight``). A torch function's own calls are not seen (``nn.MultiheadAttention``'s matmuls)."""

    def __init__(self, active: list[nn.Module]) -> None:
        super().__init__()
        self.active = active
        self.parameters: set[int] = set()
        self.multiplying: set[nn.Module] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        tensors = [leaf for leaf in tree_leaves((args, kwargs or {})) if isinstance(leaf, torch.Tensor)]
        self.parameters.update(id(t) for t in tensors if isinstance(t, nn.Parameter))
        if func in _PRODUCTS and self.active and sum(map(_is_activation, tensors)) >= 2:
            self.multiplying.add(self.active[-1])
        return func(*args, **(kwargs or {}))


def _is_activation(tensor: torch.Tensor) -> bool:
    return tensor.grad_fn is not None and not isinstance(tensor._base, nn.Parameter)


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
