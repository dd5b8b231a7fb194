"""Static costs of a model: MACs per sample, parameters, bit-operations and serialised bytes."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from autocompress.space import Policy


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per sample of every conv and linear layer, by name, for a float model.

    Conv: output elements x (input channels / groups) x kernel area. Linear: output elements x input features.
    """
    macs: dict[str, int] = {}
    hooks = []
    batch = example_input.shape[0]
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            def conv_hook(m: nn.Conv2d, _: object, out: torch.Tensor, n: str = name) -> None:
                kernel = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
                macs[n] = macs.get(n, 0) + out.numel() // batch * kernel
            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            def linear_hook(m: nn.Linear, _: object, out: torch.Tensor, n: str = name) -> None:
                macs[n] = macs.get(n, 0) + out.numel() // batch * m.in_features
            hooks.append(module.register_forward_hook(linear_hook))
    try:
        model.eval()(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return macs


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_bops(layer_macs: dict[str, int], policy: Policy | None) -> int:
    """Bit-operations: MACs x weight bits x activation bits per layer (activations follow weight bits)."""
    total = 0
    for name, macs in layer_macs.items():
        bits = 32
        if policy is not None:
            try:
                bits = policy[name].weight_bits
            except KeyError:
                bits = 32
        total += macs * bits * bits
    return total


def to_torchscript(model: nn.Module, example_input: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace and freeze: the deployable form, loadable with plain ``torch.jit.load``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), example_input)
            return torch.jit.freeze(traced)


def serialize(script: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(script, buffer)
    return buffer.getvalue()
