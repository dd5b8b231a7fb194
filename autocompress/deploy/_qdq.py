"""The policy's model as a float graph with QuantizeLinear/DequantizeLinear (QDQ) exactly where it is int8.

Both ONNX runtimes start from one ONNX file: the pruned, fine-tuned model with a quantize-dequantize pair on
every int8 activation and a dequantize on every int8 weight, and nothing around the float layers. A runtime
that has int8 kernels fuses each ``DQ -> Conv -> Q`` into an int8 convolution (OpenVINO does); the float
layers stay float.

How it is built: the quantizer is prepared and calibrated (or trained) by `autocompress.compress` exactly as
for the TorchScript lowering, and torch's *reference* conversion (`convert_to_reference_fx`) gives a float
graph with ``quantize_per_tensor`` / ``dequantize`` at every int8 border and reference conv/linear modules
holding each weight's scales. `qdq_module` rewrites that into ``fake_quantize_per_tensor_affine`` on each
activation border and ``fake_quantize_per_channel_affine`` (or per-tensor) on each int8 weight, which the ONNX
exporter writes as QuantizeLinear/DequantizeLinear; `fold_weight_quantize` then stores each weight in int8. The
scales and zero points are the quantizer's own (its calibration or trained ranges, per-channel where the
policy says), so the ONNX model computes what the PyTorch int8 model does. A concatenation of int8 activations
that share one grid is not quantized again (`_drop_requantize_after_cat`: that pair changes no value, and
OpenVINO computed a DenseNet wrongly with it).

``quantizer: dynamic`` (activation ranges chosen per call) has no static QDQ form; its file is instead the float
model with ONNX Runtime's own dynamic int8 (``DynamicQuantizeLinear -> MatMulInteger``) at the policy's int8
Linears (`dynamic_onnx`), which only runtimes with `QDQRuntime.runs_dynamic_int8` (ONNX Runtime) take.

Exporter (measured, torch 2.13): the torch.export-based exporter (``dynamo=True``) cannot take this graph
(``aten.fake_quantize_per_tensor_affine_cachemask`` and, for the reference graph's quantized tensors,
``aten.dequantize.self`` have no fake-tensor kernel) and took 13 s against 0.3 s for the float digits net, so
`to_onnx` uses the TorchScript-based exporter (``dynamo=False``) first and torch.export only as a fallback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import warnings
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.ao.quantization.quantize_fx import convert_to_reference_fx
from torch.nn import functional as F

from autocompress.compress import (
    REFERENCE_LAYERS,
    calibrate_quantization,
    copy_for_lowering,
    dequantized_layer,
    fx_quantization,
    get_quantizer,
    layer_specs,
)
from autocompress.deploy._base import Artefact, Inputs, LoweringError, Runtime, as_tuple, input_names
from autocompress.space import Policy

#: integer range of a quantized activation's dtype (what the int8 kernels clamp to)
_RANGE = {torch.quint8: (0, 255), torch.qint8: (-128, 127)}


class _QDQLayer(nn.Module):
    """A conv or linear layer whose weight passes a fake-quantize with the layer's own scales (ONNX: Q/DQ on
    the weight initializer, which `fold_weight_quantize` turns into an int8 initializer and a DequantizeLinear,
    the form runtimes fuse into int8 kernels). The weight is stored already rounded to its grid, so the full
    int8 range in the fake-quantize changes no value (sub-8-bit weights sit inside it)."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.per_channel = layer.weight_qscheme in (torch.per_channel_affine, torch.per_channel_symmetric)
        self.axis = int(layer.weight_axis) if self.per_channel else 0
        self.scale: torch.Tensor
        self.zero_point: torch.Tensor
        self.register_buffer("scale", layer.weight_scale.detach().float().reshape(-1))
        self.register_buffer("zero_point", layer.weight_zero_point.detach().int().reshape(-1))
        self.layer: Any = dequantized_layer(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            weight = torch.fake_quantize_per_channel_affine(
                self.layer.weight, self.scale, self.zero_point, self.axis, -128, 127
            )
        else:
            weight = torch.fake_quantize_per_tensor_affine(
                self.layer.weight, float(self.scale), int(self.zero_point), -128, 127
            )
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


def qdq_module(
    model: nn.Module, policy: Policy, example: Inputs, calibration: Iterable[torch.Tensor | tuple[torch.Tensor, ...]]
) -> nn.Module:
    """`model` (pruned, fine-tuned; prepared by `prepare_quantization` when its quantizer trains) as a float
    module with decomposed Q/DQ ops at the int8 layers of `policy`; `model` itself unchanged. A policy without
    int8 layers gives a copy of the float model."""
    if not layer_specs(policy):
        return copy.deepcopy(model).eval()
    if get_quantizer(policy.quantizer).dynamic:
        raise LoweringError("quantizer 'dynamic'", "has no static Q/DQ form (activation ranges are chosen per call)")
    prepared = calibrate_quantization(copy_for_lowering(model), policy, as_tuple(example)[0], calibration)
    with fx_quantization():
        reference = convert_to_reference_fx(prepared)  # type: ignore[arg-type]
    for name, module in list(reference.named_modules()):
        if isinstance(module, REFERENCE_LAYERS):
            reference.set_submodule(name, _QDQLayer(module))
    graph = reference.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.quantize_per_tensor:
            continue
        source, scale_node, zero_node, qdtype = node.args
        low, high = _RANGE[qdtype]
        scale = float(getattr(reference, scale_node.target))
        zero_point = int(getattr(reference, zero_node.target))
        with graph.inserting_after(node):
            fake = graph.call_function(torch.fake_quantize_per_tensor_affine, (source, scale, zero_point, low, high))
        for user in list(node.users):
            if not (user.op == "call_method" and user.target == "dequantize"):
                raise LoweringError(f"node {user.name}", f"uses a quantized tensor directly ({user.target})")
            user.replace_all_uses_with(fake)
            graph.erase_node(user)
        graph.erase_node(node)
    _drop_requantize_after_cat(graph)
    graph.eliminate_dead_code()
    reference.recompile()
    return reference.eval()


def _drop_requantize_after_cat(graph: torch.fx.Graph) -> None:
    """Remove the fake-quantize after each ``torch.cat`` whose inputs all lie on that same int8 grid (torch's
    cat shares its observer with its inputs, so its output fake-quantize repeats theirs): values of one grid
    concatenated stay on it, so that fake-quantize changes no value. The inputs keep theirs.

    Why (measured, OpenVINO 2026.4, all-int8 DenseNet-like net: accuracy 0.1 against ONNX Runtime's 0.99):
    ``ov.convert_model``'s graph optimisations (``FakeQuantizeConcatFusion``) turn ``Concat(FQ(a), FQ(b)) ->
    FQ`` with equal FQs into ``Concat(a, b) -> FQ``; where one cat feeds the next cat and a BatchNorm (a dense
    block), the CPU plugin's low-precision transformations then compute wrong values for the concatenated conv
    outputs. Without the redundant fake-quantize that rewrite has nothing to match, and ONNX Runtime is no
    slower (its Concat then runs on float values, a copy either way)."""
    grid_of: dict[torch.fx.Node, tuple[Any, ...]] = {}  # a fake-quantize's grid, or a cat's whose inputs share one
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is torch.fake_quantize_per_tensor_affine:
            grid, source = tuple(node.args[1:]), node.args[0]
            if isinstance(source, torch.fx.Node) and source.target is torch.cat and grid_of.get(source) == grid:
                node.replace_all_uses_with(source)
            grid_of[node] = grid
        elif node.target is torch.cat:
            tensors = list(node.args[0] if node.args else node.kwargs.get("tensors", ()))
            grids = [grid_of.get(x) if isinstance(x, torch.fx.Node) else None for x in tensors]
            first = grids[0] if grids else None
            if first is not None and all(grid == first for grid in grids):
                grid_of[node] = first


#: ONNX exporters in the order `to_onnx` tries them (see the module docstring for why this order)
EXPORTERS = ("torchscript", "dynamo")


def to_onnx(module: nn.Module, example: Inputs, exporters: Sequence[str] = EXPORTERS) -> bytes:
    """ONNX bytes of `module` with a dynamic batch dimension, inputs ``input_0..``, outputs ``output_0..``, and
    the weights that pass a QuantizeLinear stored as int8 (`fold_weight_quantize`).

    The `exporters` are tried in order (``torchscript``: ``torch.onnx.export(dynamo=False)``; ``dynamo``: the
    torch.export-based one); when all fail the `LoweringError` names each one's error (the op it does not
    support, where it says).
    """
    inputs = tuple(torch.cat([x, x]) for x in as_tuple(example))  # batch 2: torch.export specialises batch 1
    names = input_names(inputs)
    with torch.no_grad():
        result = module(*inputs)
    outputs = [f"output_{i}" for i in range(len(result) if isinstance(result, tuple | list) else 1)]
    errors = []
    for exporter in exporters:
        buffer = io.BytesIO()
        try:
            # torch.onnx prints progress on stdout, which `--format json` must keep clean
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    program = torch.onnx.export(
                        module,
                        inputs,
                        dynamo=True,
                        input_names=names,
                        output_names=outputs,
                        dynamic_shapes=tuple({0: batch} for _ in inputs),
                    )
                    assert program is not None
                    program.save(buffer)  # type: ignore[arg-type]
                else:
                    torch.onnx.export(
                        module,
                        inputs,
                        buffer,  # type: ignore[arg-type]
                        dynamo=False,
                        input_names=names,
                        output_names=outputs,
                        dynamic_axes={name: {0: "batch"} for name in names + outputs},
                        opset_version=17,
                    )
            return fold_weight_quantize(buffer.getvalue())
        except Exception as exc:  # noqa: BLE001 - try the next exporter; all errors are reported together
            errors.append(f"{exporter}: {_one_line(exc)}")
    raise LoweringError("ONNX export", f"the model does not export ({'; '.join(errors)})")


def qdq_onnx(model: nn.Module, policy: Policy, example: Inputs, calibration: Iterable[Inputs]) -> bytes:
    """The one ONNX file of `model` under `policy` that every `QDQRuntime` starts from: the QDQ file, or for
    ``quantizer: dynamic`` the float file with ONNX Runtime's dynamic int8 at the policy's Linears
    (`dynamic_onnx`)."""
    if layer_specs(policy) and get_quantizer(policy.quantizer).dynamic:
        return dynamic_onnx(model, policy, example)
    return to_onnx(qdq_module(model, policy, example, calibration), example)


def dynamic_onnx(model: nn.Module, policy: Policy, example: Inputs) -> bytes:
    """`model` (pruned, float) exported as the float path exports it, then ONNX Runtime's own dynamic int8
    (``onnxruntime.quantization.quantize_dynamic``: int8 weights, each input's uint8 range computed per call by
    ``DynamicQuantizeLinear``, ``MatMulInteger``) applied to exactly the MatMuls of the policy's int8 Linears;
    the Linears kept float stay float ``MatMul``/``Gemm``. Weights are symmetric int8, per output channel when
    the policy says so (ONNX Runtime's min-max, as the PyTorch dynamic int8 model's observer).

    The TorchScript-based exporter names each node after its module path (``layers.0.q`` gives
    ``/layers.0/q/MatMul``, or ``/fc/Gemm`` for a 2-D input); a policy layer that matches no such node is a
    `LoweringError`, not a silently float layer. ONNX Runtime's integer mode quantizes MatMul but not Gemm, so
    an int8 Linear exported as Gemm is first written as MatMul + Add (`_gemm_as_matmul`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph_model = onnx.load_from_string(to_onnx(copy.deepcopy(model).eval(), example))
    layers = set(layer_specs(policy))
    nodes = {
        node.name: layer
        for node in graph_model.graph.node
        if node.op_type in ("MatMul", "Gemm") and (layer := ".".join(node.name.split("/")[1:-1])) in layers
    }
    if missing := layers - set(nodes.values()):
        raise LoweringError("quantizer 'dynamic'", f"no MatMul/Gemm node in the ONNX graph for {sorted(missing)}")
    if duplicated := sorted(layer for layer, count in Counter(nodes.values()).items() if count > 1):
        raise LoweringError("quantizer 'dynamic'", f"more than one MatMul/Gemm node for {duplicated}")
    names = [_gemm_as_matmul(graph_model.graph, name) for name in nodes]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        quantize_dynamic(
            graph_model,
            path,
            op_types_to_quantize=["MatMul"],
            per_channel=policy.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=names,
        )
        quantized = path.read_bytes()
    integer = {node.name for node in onnx.load_from_string(quantized).graph.node if node.op_type == "MatMulInteger"}
    if skipped := sorted(name for name in names if f"{name}_quant" not in integer):
        raise LoweringError("quantizer 'dynamic'", f"ONNX Runtime left these MatMuls float: {skipped}")
    return quantized


def _gemm_as_matmul(graph: Any, name: str) -> str:
    """Rewrite the node `name`, when it is a Linear's ``Gemm`` (``transB=1``, weight an initializer, no alpha,
    beta or transA), as ``MatMul`` with the transposed weight plus ``Add`` of the bias: the form ONNX Runtime's
    dynamic quantizer handles. Returns the MatMul's name (`name` itself when the node already is a MatMul)."""
    import onnx
    from onnx import numpy_helper

    node = next(n for n in graph.node if n.name == name)
    if node.op_type == "MatMul":
        return name
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    initializers = {init.name: init for init in graph.initializer}
    if attributes != {"transB": 1} and attributes != {"alpha": 1.0, "beta": 1.0, "transB": 1}:
        raise LoweringError(f"node {name}", f"is a Gemm with {attributes}, not a Linear's")
    if node.input[1] not in initializers:
        raise LoweringError(f"node {name}", "is a Gemm whose weight is not an initializer")
    weight = initializers[node.input[1]]
    transposed = numpy_helper.from_array(numpy_helper.to_array(weight).T.copy(), f"{weight.name}_transposed")
    graph.initializer.append(transposed)
    scope = name.removesuffix("Gemm")
    outputs = [f"{node.output[0]}_matmul"] if len(node.input) > 2 else list(node.output)
    replacement = [onnx.helper.make_node("MatMul", [node.input[0], transposed.name], outputs, f"{scope}MatMul")]
    if len(node.input) > 2:
        replacement.append(onnx.helper.make_node("Add", [outputs[0], node.input[2]], list(node.output), f"{scope}Add"))
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(replacement):
        graph.node.insert(index + offset, new)
    return f"{scope}MatMul"


class QDQRuntime(Runtime):
    """A runtime whose artefact is made from the shared ONNX file (OpenVINO, ONNX Runtime): `lower` builds the
    file and hands it to `from_onnx`, and `lower_all` builds it once for all such runtimes of a trial."""

    #: whether the runtime runs ``quantizer: dynamic``'s file (`dynamic_onnx`: DynamicQuantizeLinear and
    #: MatMulInteger); one that does not is unsupported for such policies (`check`)
    runs_dynamic_int8: ClassVar[bool] = False

    def check(self, policy: Policy) -> None:
        """Raise `LoweringError` when the runtime cannot run `policy`'s ONNX file (a dynamic int8 policy on a
        runtime without `runs_dynamic_int8`)."""
        if not self.runs_dynamic_int8 and layer_specs(policy) and get_quantizer(policy.quantizer).dynamic:
            raise LoweringError(self.name, "quantizer 'dynamic': no dynamic int8 form (see the runtime's docstring)")

    def lower(self, model: nn.Module, policy: Policy, example: Inputs, calibration: Iterable[Inputs]) -> Artefact:
        self.check(policy)
        return self.from_onnx(qdq_onnx(model, policy, example, calibration), example)

    @abstractmethod
    def from_onnx(self, onnx_bytes: bytes, example: Inputs) -> Artefact:
        """The runtime's artefact from the shared ONNX file (`qdq_onnx`); raises `LoweringError` when it cannot
        convert or compile it."""


def lower_all(
    runtimes: Iterable[Runtime], model: nn.Module, policy: Policy, example: Inputs, calibration: Iterable[Inputs]
) -> tuple[dict[str, Artefact], dict[str, LoweringError]]:
    """`model` lowered to each runtime: (artefact by runtime name, the `LoweringError` by name of those that
    cannot).

    The ONNX file is built once for every `QDQRuntime` that can run the policy (on the digits net that halves
    the ONNX work of a trial lowered to OpenVINO and ONNX Runtime); when it cannot be built, each of them is
    unsupported with that reason. Calibration batches are read once and shared."""
    batches, runtimes = list(calibration), list(runtimes)
    onnx_bytes: bytes | LoweringError = b""
    refused: dict[str, LoweringError] = {}
    for runtime in runtimes:
        if isinstance(runtime, QDQRuntime):
            try:
                runtime.check(policy)
            except LoweringError as exc:
                refused[runtime.name] = exc
    if any(isinstance(runtime, QDQRuntime) and runtime.name not in refused for runtime in runtimes):
        try:
            onnx_bytes = qdq_onnx(model, policy, example, batches)
        except LoweringError as exc:
            onnx_bytes = exc
    artefacts: dict[str, Artefact] = {}
    unsupported: dict[str, LoweringError] = dict(refused)
    for runtime in runtimes:
        try:
            if runtime.name in refused:
                continue
            if not isinstance(runtime, QDQRuntime):
                artefacts[runtime.name] = runtime.lower(model, policy, example, batches)
            elif isinstance(onnx_bytes, LoweringError):
                unsupported[runtime.name] = onnx_bytes
            else:
                artefacts[runtime.name] = runtime.from_onnx(onnx_bytes, example)
        except LoweringError as exc:
            unsupported[runtime.name] = exc
    return artefacts, unsupported


def fold_weight_quantize(onnx_bytes: bytes) -> bytes:
    """Replace each ``QuantizeLinear`` whose input, scale and zero point are initializers (a weight) by the
    integer initializer it computes, so the weight is stored in int8 and feeds its ``DequantizeLinear``
    directly: the QDQ form ONNX Runtime's and OpenVINO's int8 fusions look for, and a file 4x smaller."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # the TorchScript exporter passes some through Constant, Identity or Cast nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
        elif node.op_type == "Cast" and node.input[0] in constants:
            to = onnx.helper.tensor_dtype_to_np_dtype(node.attribute[0].i)
            constants[node.output[0]] = constants[node.input[0]].astype(to)
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(name in constants for name in node.input):
            continue
        weight, scale, zero_point = (constants[name] for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * weight.ndim
            shape[axis] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        info = np.iinfo(zero_point.dtype)
        q = np.clip(np.rint(weight / scale) + zero_point.astype(np.int64), info.min, info.max).astype(zero_point.dtype)
        graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    if not folded:
        return onnx_bytes
    _drop_unused(graph)
    return model.SerializeToString()


def _drop_unused(graph: Any) -> None:
    """Remove nodes and initializers no output depends on any more (the float weights `fold_weight_quantize`
    replaced, and the Identity/Cast nodes that fed them)."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _one_line(error: BaseException) -> str:
    """The informative line of an exporter error: the unsupported op when it names one."""
    text = str(error)
    for line in text.splitlines():
        if "Unsupported" in line or "not supported" in line or "aten." in line:
            return line.strip()[:300]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first[:300]}"


def count_qdq(onnx_bytes: bytes) -> dict[str, int]:
    """Op counts of an ONNX model (for checks: which layers got a DequantizeLinear on their weight)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_from_string(onnx_bytes).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
