"""Measuring a `LatencyTable`: every compressible conv/linear layer alone, on each runtime, at a grid of kept
widths and at each weight bit-width the space allows.

Each layer becomes a one-layer module with its real input shape (taken by a forward hook on the task's example
batch, batch 1) and its kernel, stride, padding and groups; pruning is modelled by shrinking the sides pruning
can shrink (`scaled_sides`) to each width of `WIDTHS`. Each (width, bits) variant is lowered exactly as a
trial lowers a candidate (the space's ``per_channel``; activations follow the weights into int8) by the
`compile` callable the caller passes (the deploy layer's ``lower`` then ``load``), and all variants of a layer
are timed interleaved in one `compare_latency` run. Bit-widths are measured, never assumed: a sub-8-bit layer
runs on the same int8 kernels as an 8-bit one, and the table says so with its own numbers.

Each runtime's cost of a call that computes next to nothing (a 1x1 conv on one value) is measured too: a
model pays it once, not once per layer (on OpenVINO it was most of a small layer's time), so a prediction
counts it once and each layer by what it adds to it.

A Linear that is not the model's output is measured with an int8 output: alone, its output would be the
module's, which the lowering keeps float (a classifier's logits; on TorchScript a float Linear), so it is
followed by an `nn.Identity` that shares its output's grid. The model's own output Linear is measured as it
runs, float output and all (`layer_inputs` finds which the model returns).

What it does not see: a layer alone quantizes its float input and dequantizes its output, which an int8 chain
shares between layers, and ops outside conv/linear (pooling, adds) are left out; the table ranks policies, it
is not the model's latency.
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from autocompress._inputs import ModelInputs, call_model
from autocompress.measure._latency import compare_latency
from autocompress.space import LatencyTable, LayerSetting, Policy, Space, scaled_sides

#: kept shares of a layer's prunable sides the table measures
WIDTHS = (0.25, 0.5, 0.75, 1.0)

#: lower a one-layer module under a policy (for example inputs) to every runtime measured and load it there:
#: the callables by runtime name, without the runtimes that cannot lower it
Compile = Callable[[nn.Module, Policy, torch.Tensor], dict[str, Callable[..., Any]]]


def layer_inputs(
    model: nn.Module, example: ModelInputs, names: Iterable[str]
) -> tuple[dict[str, torch.Size], set[str]]:
    """On one forward pass of `example`: the shape of the first input of each named module, and the named
    modules whose output the model returns as it is (alone or in a tuple, list or dict)."""
    shapes: dict[str, torch.Size] = {}
    produced: dict[int, str] = {}
    hooks = []
    for name in names:

        def pre_hook(_module: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            shapes.setdefault(name, args[0].shape)

        def hook(_module: nn.Module, _args: Any, output: Any, name: str = name) -> None:
            produced[id(output)] = name

        module = model.get_submodule(name)
        hooks += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]
    try:
        with torch.no_grad():
            result = call_model(model.eval(), example)
    finally:
        for handle in hooks:
            handle.remove()
    values = result.values() if isinstance(result, dict) else result if isinstance(result, tuple | list) else [result]
    return shapes, {produced[id(value)] for value in values if id(value) in produced}


def _scaled(channels: int, width: float, multiple: int = 1) -> int:
    return max(multiple, round(channels * width / multiple) * multiple)


def one_layer(
    module: nn.Module, shape: torch.Size, info: dict[str, Any], width: float, returned: bool = True
) -> tuple[nn.Module, torch.Tensor]:
    """A fresh copy of conv/linear `module` with its prunable sides at `width`, and a random input of its
    real shape (channels scaled to match), as a module whose one layer is named ``layer``; a Linear the model
    does not return (`returned` False) is followed by an identity, so that its int8 output is measured too."""
    out_side, in_side = scaled_sides(info)
    layer: nn.Module
    if isinstance(module, nn.Linear):
        out_f = _scaled(module.out_features, width) if out_side else module.out_features
        in_f = _scaled(module.in_features, width) if in_side else module.in_features
        layer = nn.Linear(in_f, out_f, bias=module.bias is not None)
        x = torch.randn(*shape[:-1], in_f)
        if not returned:
            return nn.Sequential(OrderedDict(layer=layer, output=nn.Identity())).eval(), x
    else:
        conv: nn.Conv1d | nn.Conv2d = module  # type: ignore[assignment]
        groups = conv.groups
        if groups > 1 and groups == conv.in_channels == conv.out_channels:  # depthwise: one side
            in_c = out_c = groups = _scaled(conv.out_channels, width) if out_side else conv.out_channels
        else:
            out_c = _scaled(conv.out_channels, width, groups) if out_side else conv.out_channels
            in_c = _scaled(conv.in_channels, width, groups) if in_side else conv.in_channels
        kind = type(conv) if type(conv) in (nn.Conv1d, nn.Conv2d) else nn.Conv2d
        layer = kind(
            in_c,
            out_c,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            groups,
            conv.bias is not None,
            conv.padding_mode,
        )
        x = torch.randn(shape[0], in_c, *shape[2:])
    return nn.Sequential(OrderedDict(layer=layer)).eval(), x


def _bound(run: Callable[..., Any], x: torch.Tensor) -> Callable[[Any], Any]:
    """`run` on its own input `x`, whatever `compare_latency` passes (variants of a layer differ in shape)."""
    return lambda _: run(x)


def build_latency_table(
    model: nn.Module,
    example: ModelInputs,
    space: Space,
    runtimes: Sequence[str],
    compile_: Compile,
    *,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 15,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyTable:
    """Measure the table of `space`'s conv/linear layers on each of `runtimes`, lowered by `compile_` under the
    space's quantizer; a runtime that cannot run some variant (``compile_`` leaves it out, as ONNX runtimes do
    for dynamic int8) is left out of the table."""
    start = time.perf_counter()
    kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
    names = [n for n in space.layers if n in space.layer_info and isinstance(model.get_submodule(n), kinds)]
    shapes, returned = layer_inputs(model, example, names)
    bits = sorted({b for n in names for b in space.layers[n].weight_bits}, reverse=True)
    entries: dict[str, dict[str, dict[int, tuple[float, ...]]]] = {runtime: {} for runtime in runtimes}
    timing: dict[str, Any] = {"threads": threads, "warmup": warmup, "repeats": repeats, "clock": clock}
    # a call that computes next to nothing: what each runtime spends per call whatever the model. It is timed
    # among each layer's variants, so it sees the load they saw; the table keeps its median over the layers
    # (one number, subtracted from every entry: measured once, a burst of load on it skewed them all)
    empty = torch.zeros(1, 1, 1, 1)
    calls = compile_(nn.Sequential(OrderedDict(layer=nn.Conv2d(1, 1, 1))).eval(), Policy(()), empty)
    empty_calls = {runtime: _bound(calls[runtime], empty) for runtime in runtimes}
    failed: set[str] = set()  # runtimes that cannot run some variant: left out of the table
    overheads: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    for name in [n for n in names if n in shapes]:
        info = space.layer_info[name]
        widths = WIDTHS if any(scaled_sides(info)) else (1.0,)
        variants: dict[tuple[str, int, float], Callable[[Any], Any]] = {}
        for width in widths:
            module, x = one_layer(model.get_submodule(name), shapes[name], info, width, name in returned)
            for b in bits:
                policy = Policy.from_mapping(
                    {"layer": LayerSetting(weight_bits=b)}, quantizer=space.quantizer, per_channel=space.per_channel
                )
                compiled = compile_(module, policy, x)
                for runtime in runtimes:
                    if runtime in compiled:
                        variants[(runtime, b, width)] = _bound(compiled[runtime], x)
                    else:
                        failed.add(runtime)
        variants.update({(runtime, 0, 0.0): run for runtime, run in empty_calls.items()})  # bits 0: empty
        times = compare_latency({str(k): run for k, run in variants.items()}, empty, **timing)
        for runtime in set(runtimes) - failed:
            entries[runtime][name] = {b: tuple(times[str((runtime, b, w))] for w in widths) for b in bits}
            overheads[runtime].append(times[str((runtime, 0, 0.0))])
    entries = {runtime: layers for runtime, layers in entries.items() if runtime not in failed}
    if not entries:
        raise ValueError(f"no runtime of {', '.join(runtimes)} runs every layer of the space alone")
    coupling = {
        n: {k: space.layer_info[n][k] for k in ("out_root", "in_roots", "in_channels")}
        for n in next(iter(entries.values()))
    }
    if not any(overheads.values()):  # no layer to time it among: timed alone, as before
        alone = compare_latency(empty_calls, empty, **timing)
        overheads = {runtime: [ms] for runtime, ms in alone.items()}
    overhead = {runtime: statistics.median(overheads[runtime]) for runtime in entries}
    return LatencyTable(WIDTHS, entries, coupling, overhead, threads, time.perf_counter() - start)
