"""Static costs of a model: MACs per sample, parameters, bit-operations and serialised bytes."""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from autocompress._inputs import ModelInputs, batch_size_of, call_model
from autocompress.compress._lowering import get_quantizer, layer_specs
from autocompress.space import Policy


@torch.no_grad()
def count_macs(model: nn.Module, example_input: ModelInputs) -> dict[str, int]:
    """Multiply-accumulates per sample of every conv and linear layer, by name, for a float model.

    Conv: output elements x (input channels / groups) x kernel area. Linear: output elements x input features.
    `nn.MultiheadAttention` computes its projections without calling its ``out_proj`` module (packed weights,
    ``F.multi_head_attention_forward``): their MACs (q and output per query token, k and v per key token) are
    counted under ``NAME.out_proj``, the layer that carries its heads (`autocompress.space.shipped_heads`), so a
    model compares with its heads-pruned form (separate Linears, counted as such). Any other layer whose weight
    a forward passes to ``F.linear``/``F.conv2d`` without calling the layer (torchvision's Swin attention:
    ``F.linear(x, self.qkv.weight)``) is counted from those calls (`_LayerWeightCalls`).
    """
    macs: dict[str, int] = {}
    hooks = []
    batch = batch_size_of(example_input)
    calls = _LayerWeightCalls(macs, batch)
    attention = [name for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)]
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            if not any(name.startswith(f"{owner}.") for owner in attention):
                calls.weights[id(module.weight)] = name
            hooks.append(module.register_forward_pre_hook(lambda m, _, n=name: calls.running.add(n)))
        if isinstance(module, nn.Conv2d):

            def conv_hook(m: nn.Conv2d, _: object, out: torch.Tensor, n: str = name) -> None:
                kernel = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
                macs[n] = macs.get(n, 0) + out.numel() // batch * kernel
                calls.running.discard(n)

            hooks.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):

            def linear_hook(m: nn.Linear, _: object, out: torch.Tensor, n: str = name) -> None:
                macs[n] = macs.get(n, 0) + out.numel() // batch * m.in_features
                calls.running.discard(n)

            hooks.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.MultiheadAttention):

            def mha_hook(m: nn.MultiheadAttention, args: tuple[torch.Tensor, ...], out: object, n: str = name) -> None:
                per_token = m.embed_dim * m.embed_dim
                queries = args[0].numel() // batch // m.embed_dim
                keys = args[1].numel() // batch // m.kdim if len(args) > 1 else queries
                macs[f"{n}.out_proj"] = macs.get(f"{n}.out_proj", 0) + 2 * (queries + keys) * per_token

            hooks.append(module.register_forward_hook(mha_hook))
    try:
        with calls:
            call_model(model.eval(), example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return macs


class _LayerWeightCalls(TorchFunctionMode):
    """Counts into `macs` the MACs of each ``F.linear``/``F.conv2d`` call that takes a layer's weight (`weights`:
    tensor id -> layer name) outside that layer's own forward (`running`: the layers whose forward runs, which
    their hooks count): output elements per sample x the weight's elements per output channel."""

    def __init__(self, macs: dict[str, int], batch: int) -> None:
        super().__init__()
        self.macs, self.batch = macs, batch
        self.weights: dict[int, str] = {}
        self.running: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear or func is F.conv2d:
            weight: torch.Tensor = args[1] if len(args) > 1 else kwargs["weight"]
            name = self.weights.get(id(weight))
            if name is not None and name not in self.running:
                self.macs[name] = self.macs.get(name, 0) + out.numel() // self.batch * weight[0].numel()
        return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_bits(policy: Policy | None, name: str) -> tuple[int, int]:
    """(weight bits, activation bits) a layer computes at: activations follow the weights unless the policy
    says, and the policy's quantizer has the last word (dynamic int8 always runs 8-bit activations)."""
    if policy is None:
        return 32, 32
    spec = layer_specs(policy).get(name)
    if spec is None:
        return 32, 32  # a float layer keeps float activations whatever activation_bits says
    return get_quantizer(policy.quantizer).bits_run(spec)


def count_bops(layer_macs: dict[str, int], policy: Policy | None) -> int:
    """Bit-operations: MACs x weight bits x activation bits per layer."""
    total = 0
    for name, macs in layer_macs.items():
        weight_bits, activation_bits = _layer_bits(policy, name)
        total += macs * weight_bits * activation_bits
    return total


def count_packed_bytes(model: nn.Module, policy: Policy | None) -> int:
    """Bytes of the parameters if each quantized layer's weight were stored packed at its bit-width (plus
    one float32 scale per output channel, or one per tensor), everything else as float32.

    This is the storage a sub-8-bit model needs, which no serialised int8 file shows; `model` is the float
    (pruned) model the policy is applied to.
    """
    per_channel = policy.per_channel if policy is not None else True
    total = 0
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            bits, _ = _layer_bits(policy, name) if param_name == "weight" else (32, 32)
            if bits >= 32 or not isinstance(module, nn.Conv2d | nn.Linear):
                total += param.numel() * 4
                continue
            scales = param.shape[0] if per_channel else 1
            total += -(-param.numel() * bits // 8) + 4 * scales
    return total


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight values of every conv and linear layer by layer name, in a float model or a quantized one
    (int8 modules are read back through their ``weight()``; a float conv inside a fused conv-relu is named
    after the fused module, as the policy names it)."""
    weights: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and "quantized" in type(module).__module__:
            value = weight()
            weights[name] = value.dequantize() if value.is_quantized else value.detach()
        elif isinstance(module, nn.Conv2d | nn.Linear):
            parent, _, last = name.rpartition(".")
            fused = last == "0" and isinstance(model.get_submodule(parent), torch.ao.nn.intrinsic._FusedModule)
            weights[parent if fused else name] = module.weight.detach()
    return weights


def count_weight_sparsity(model: nn.Module) -> float:
    """The measured fraction of zeros over all conv and linear weights of `model` (float or quantized)."""
    weights = layer_weights(model).values()
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def count_sparse_bytes(model: nn.Module, policy: Policy | None, packed_bytes: int) -> int:
    """`packed_bytes` with each conv/linear weight of `model` stored in a bitmask format where that is smaller:
    one bit per element saying whether it is nonzero, plus the nonzero values packed at the layer's bit-width
    (float32 at 32 bits). Scales and the other parameters count as in `count_packed_bytes`.

    This is a storage figure: dense kernels run zeros at full cost, so it says nothing about latency.
    """
    total = packed_bytes
    for name, weight in layer_weights(model).items():
        bits, _ = _layer_bits(policy, name)
        dense = weight.numel() * 4 if bits >= 32 else -(-weight.numel() * bits // 8)
        sparse = -(-weight.numel() // 8) + -(-int((weight != 0).sum()) * bits // 8)
        total -= dense - min(dense, sparse)
    return total


def to_torchscript(model: nn.Module, example_input: ModelInputs) -> torch.jit.ScriptModule:
    """Trace and freeze: the deployable form, loadable with plain ``torch.jit.load``. The trace is not re-run to
    compare outputs (``check_trace``: a sixth of a torchvision trial's time, and its warnings were ignored
    anyway); the trial evaluates the traced model itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), example_input, check_trace=False)
            return torch.jit.freeze(traced)


def serialize(script: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(script, buffer)
    return buffer.getvalue()
