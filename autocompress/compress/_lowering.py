"""From a policy to a model that really runs in int8: per-layer qconfigs, prepare, calibrate, bake, lower.

Lowering path, measured and picked (see experiments/bench_quant.py and STACK.md): `torch.ao` FX graph mode
with the x86 backend (fbgemm/oneDNN kernels). It keeps the int8 regions int8 (activations, residual adds
and pooling between quantized layers run quantized), the result traces to TorchScript for the one export
path, and it runs per call without compilation. pt2e + X86InductorQuantizer is faster at batch 32 only
together with ``torch.compile``, whose artefact is not a TorchScript file; torchao's ``quantize_`` was slower
than float on this CPU.

Mixed precision: each layer of the policy gets its own QConfig from the policy's quantizer (its weight
bits, activation bits, per-channel); layers at 32 bits get none and stay float, with quantize/dequantize at
the borders. Bits below 8 have no CPU kernel: the weights sit on the coarser grid exactly (a ``b``-bit
symmetric weight is an int8 weight with a larger scale) and activations use the coarser scale, but the
kernels clamp at the int8 range, so the latency is that of int8 (`latency_basis`) and values beyond the
calibrated range saturate later than a true ``b``-bit kernel would.

ReLU6 (MobileNet's activation) has no fused int8 kernel: lowered as is it runs as a separate clamp on the
quantized tensor after every conv. When a calibration quantizer can cap a layer's output range at 6
(`Quantizer.clamped_activation_quant`), a ReLU6 right after a quantized conv (through its batch norm) or
linear becomes a ReLU, which torch fuses into the conv's kernel, and the capped range saturates at 6: the
same function in one op instead of two (12 of the MobileNetV2-like model's 37 int8 ops).

A Linear whose output is the model's output (a classifier's logits) keeps that output float: its input and
weight are int8, but nothing rounds what it returns (`_float_model_outputs`), as NNCF and OpenVINO place their
quantizers. Rounding logits to 8 bits flips close calls: a quarter-epoch MNIST ResNet-50, whose logits span
-204..482 (2.7 a step), lost 1.56 points with only its ``fc`` in int8 on every runtime, and kept 0.9626 of its
0.9630 with float logits (all 54 layers int8: 0.9474 before in bench_search's trials, 0.9628 after, OpenVINO).
OpenVINO and ONNX Runtime run that layer as an int8 MatMul with a float result. torch's x86 kernels have no
static int8 Linear with a float output, so on the TorchScript lowering it is a float Linear holding the int8
grid's weights (`dequantized_layer`): the same values as the Q/DQ file, at float cost for that one layer (a
classifier head; torch's dynamic int8 Linear re-quantizes its input per call at 7 bits and kept 0.9610 there).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.ao.quantization import (
    QConfig,
    QConfigMapping,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quantize_dynamic,
)
from torch.ao.quantization.fake_quantize import FakeQuantizeBase
from torch.ao.quantization.fx.utils import assert_and_get_unique_device
from torch.ao.quantization.observer import ObserverBase
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from autocompress._inputs import ModelInputs, as_args, call_model
from autocompress.compress._bnn import BNNQuantizer
from autocompress.compress._dorefa import DoReFaQuantizer
from autocompress.compress._dynamic import DynamicQuantizer
from autocompress.compress._lsq import LSQQuantizer
from autocompress.compress._ptq import NaiveQuantizer, ObserverQuantizer
from autocompress.compress._qat import QATQuantizer
from autocompress.compress._quant_base import FLOAT_BITS, QuantFactory, Quantizer, QuantSpec
from autocompress.space import Policy

BACKEND = "x86"

#: quantizers by `Policy.quantizer` name
QUANTIZERS: dict[str, Callable[[], Quantizer]] = {
    "naive": NaiveQuantizer,
    "minmax": lambda: ObserverQuantizer("minmax"),
    "ema": lambda: ObserverQuantizer("ema"),
    "histogram": lambda: ObserverQuantizer("histogram"),
    "percentile": lambda: ObserverQuantizer("percentile"),
    "qat": QATQuantizer,
    "dorefa": DoReFaQuantizer,
    "bnn": BNNQuantizer,
    "lsq": LSQQuantizer,
    "dynamic": DynamicQuantizer,
}

#: attribute set on a prepared model: the policy it was prepared for
_PREPARED_FOR = "_autocompress_quant_policy"


def register_quantizer(name: str, factory: Callable[[], Quantizer]) -> None:
    """Make a `Quantizer` available as ``quantizer: NAME`` in space files. Register it in the module that
    defines your task, which every worker imports before it quantizes."""
    QUANTIZERS[name] = factory


def get_quantizer(name: str) -> Quantizer:
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; known: {sorted(QUANTIZERS)}")
    return QUANTIZERS[name]()


def layer_specs(policy: Policy) -> dict[str, QuantSpec]:
    """The quantized layers of `policy` (weight bits <= 8) and how each is quantized."""
    return {
        name: QuantSpec(s.weight_bits, s.activation_bits or s.weight_bits, policy.per_channel)
        for name, s in policy
        if s.weight_bits < FLOAT_BITS
    }


def quantized_layers(policy: Policy) -> list[str]:
    return list(layer_specs(policy))


def latency_basis(policy: Policy) -> str:
    """What the measured latency of this policy's model is: ``float``, ``int8``, or ``int8-kernel`` when
    some layer is below 8 bits and is simulated on int8 kernels (its latency is that of int8)."""
    specs = layer_specs(policy)
    if not specs:
        return "float"
    return "int8-kernel" if any(spec.simulated for spec in specs.values()) else "int8"


def needs_training(policy: Policy) -> bool:
    """Whether the policy's quantizer must be prepared before fine-tuning (`prepare_quantization`)."""
    return bool(layer_specs(policy)) and get_quantizer(policy.quantizer).trains


def _qconfig(quantizer: Quantizer, spec: QuantSpec) -> QConfig:
    return QConfig(activation=quantizer.activation_quant(spec), weight=quantizer.weight_quant(spec))


@contextlib.contextmanager
def fx_quantization() -> Iterator[None]:
    """Around a call of torch.ao's FX quantization (``prepare_fx``, ``prepare_qat_fx``, ``convert_fx``,
    ``convert_to_reference_fx``): its warnings silenced, and its module cache emptied afterwards.

    Why the cache: torch's ``assert_and_get_unique_device`` (``torch.ao.quantization.fx.utils``, torch 2.13) is
    an unbounded ``functools.cache`` keyed by the module it is asked about, and prepare and convert ask it about
    the graph module they build, so every model ever prepared or converted stayed alive, weights and all, for
    the life of the process: each int8 trial running inline left 9 graph modules behind (prepared and lowered,
    for TorchScript and for the QDQ file), and an MNIST ResNet-18 search grew by about 70 MB a trial (2.3 to
    3.1 GB in 12 trials; 12 GB after 80 in `experiments.bench_search`). The cache only spares a walk over the
    module's parameters within one call.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        assert_and_get_unique_device.cache_clear()


def prepare_quantization(model: nn.Module, policy: Policy, example_input: ModelInputs) -> nn.Module:
    """A copy of `model` with observers (calibration quantizers) or fake-quant modules in training mode
    (trained quantizers: fine-tune it, then pass it to `quantize`). `model` is not changed."""
    quantizer = get_quantizer(policy.quantizer)
    specs = layer_specs(policy)
    quantizer.check(specs)
    torch.backends.quantized.engine = BACKEND
    model = quantizer.rewrite(copy.deepcopy(model).eval(), specs)
    capped = {name: quantizer.clamped_activation_quant(specs[name], _RELU6_TOP) for name in specs}
    absorbed = _absorb_relu6(model, {name for name, factory in capped.items() if factory is not None})
    if quantizer.dynamic:  # only the policy's layers: everything between them stays float
        mapping = QConfigMapping()
    else:
        default_mapping = get_default_qat_qconfig_mapping if quantizer.trains else get_default_qconfig_mapping
        mapping = default_mapping(BACKEND)
        # glue ops (adds, pooling, concatenation) between quantized layers run in 8 bits
        mapping.set_global(_qconfig(quantizer, QuantSpec(8, 8, policy.per_channel)))
    mapping.set_object_type(nn.Embedding, None)  # not a policy layer; a table look-up gains nothing from int8
    for name, _ in policy:
        mapping.set_module_name(name, _qconfig(quantizer, specs[name]) if name in specs else None)
    with fx_quantization():
        try:
            if quantizer.trains:
                prepared = prepare_qat_fx(model.train(), mapping, as_args(example_input))
            else:
                prepared = prepare_fx(model, mapping, as_args(example_input))
        except Exception as exc:  # torch.fx's own failure, cryptic on its own (e.g. a slice of a traced shape)
            raise ValueError(
                f"quantizer {policy.quantizer!r} needs a torch.fx trace of the model, which failed "
                f"({type(exc).__name__}: {str(exc)[:200]}); quantizer 'dynamic' needs none"
            ) from exc
        _float_model_outputs(prepared)
        if not quantizer.trains:
            _observe_outputs_with(
                prepared, {name: factory for name in absorbed if (factory := capped[name]) is not None}
            )
    setattr(prepared, _PREPARED_FOR, policy)
    return prepared


def copy_for_lowering(model: nn.Module) -> nn.Module:
    """A deep copy of `model` that `quantize` and `calibrate_quantization` still recognise as prepared (an FX
    GraphModule's deep copy drops the mark `prepare_quantization` leaves, and a trained model would be prepared
    a second time)."""
    copied = copy.deepcopy(model)
    if hasattr(model, _PREPARED_FOR):
        setattr(copied, _PREPARED_FOR, getattr(model, _PREPARED_FOR))
    return copied


@torch.no_grad()
def quantize(
    model: nn.Module, policy: Policy, example_input: ModelInputs, calibration: Iterable[ModelInputs]
) -> nn.Module:
    """The int8 model of `policy`: prepares `model` (unless `prepare_quantization` already did, e.g.
    before quantization-aware fine-tuning), calibrates on `calibration`, bakes weight transforms and lowers.

    A policy with no quantized layer returns `model` itself. A float `model` is not changed; a model from
    `prepare_quantization` is consumed (lowered in place). A dynamic quantizer needs no graph: its Linears are
    swapped module by module (`torch.ao.quantization.quantize_dynamic`, the same int8 modules FX would give), so
    models torch.fx cannot trace (Hugging Face transformers as they ship) quantize too.
    """
    specs = layer_specs(policy)
    if not specs:
        return model
    quantizer = get_quantizer(policy.quantizer)
    if quantizer.dynamic:
        quantizer.check(specs)
        torch.backends.quantized.engine = BACKEND
        rewritten = quantizer.rewrite(copy.deepcopy(model).eval(), specs)
        qconfigs = {name: _qconfig(quantizer, spec) for name, spec in specs.items()}
        return quantize_dynamic(rewritten, qconfigs, inplace=True)  # type: ignore[arg-type]
    prepared = calibrate_quantization(model, policy, example_input, calibration)
    with fx_quantization():
        lowered = convert_fx(prepared)
    for name, module in list(lowered.named_modules()):
        if isinstance(module, torch.ao.nn.quantized.reference.Linear):  # an output Linear (`_float_model_outputs`)
            lowered.set_submodule(name, dequantized_layer(module))
    return lowered


@torch.no_grad()
def calibrate_quantization(
    model: nn.Module,
    policy: Policy,
    example_input: torch.Tensor,
    calibration: Iterable[torch.Tensor | tuple[torch.Tensor, ...]],
) -> nn.Module:
    """The steps of `quantize` before lowering: prepare `model` (unless `prepare_quantization` already did),
    calibrate on `calibration` and bake weight transforms. The result holds every scale and zero point; it is
    what `convert_fx` lowers to x86 int8 and what the ONNX lowering (`autocompress.deploy`) turns into Q/DQ
    ops. A model from `prepare_quantization` is consumed (calibrated in place)."""
    prepared = (
        model if getattr(model, _PREPARED_FOR, None) == policy else prepare_quantization(model, policy, example_input)
    )
    prepared.eval()
    for batch in calibration:
        call_model(prepared, batch)
    for module in prepared.modules():
        _bake_weight(module)
    return prepared


_RELU6_TOP = 6.0
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _absorb_relu6(model: nn.Module, layers: set[str]) -> list[str]:
    """Replace by a ReLU each ReLU6 module that only follows one of `layers` (a conv, through at most its
    batch norm, or a linear) and is called once; return those layers, whose output range must be capped at 6.
    Models torch.fx cannot trace are left as they are (the FX lowering would reject them anyway)."""
    if not layers:
        return []
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models keep their ReLU6 ops
        return []
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")

    def single_module_input(node: torch.fx.Node, kinds: tuple[type, ...]) -> torch.fx.Node | None:
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and len(source.users) == 1
            and calls[source.target] == 1
            and isinstance(modules[source.target], kinds)
        ):
            return source
        return None

    absorbed = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.ReLU6) or calls[node.target] != 1:
            continue
        norm = single_module_input(node, _BATCH_NORM)
        layer = single_module_input(norm, _CONV) if norm is not None else single_module_input(node, (*_CONV, nn.Linear))
        if layer is None or layer.target not in layers:
            continue
        model.set_submodule(node.target, nn.ReLU().train(modules[node.target].training))
        absorbed.append(layer.target)
    return absorbed


def _float_model_outputs(prepared: torch.fx.GraphModule) -> None:
    """Remove the observer (or fake-quant) on the output of each Linear whose output only the model returns, so
    that the Linear's int8 result is not rounded again to 8 bits (see the module docstring). Its input and
    weight observers stay; conversion then leaves it a reference Linear, which `quantize` lowers as a float
    Linear with the grid's weights and the ONNX lowering as Q/DQ on its input and weight only. A convolution
    keeps its observer: a model ending in one (a segmentation head) would then run a large layer in float on
    TorchScript."""
    modules = dict(prepared.named_modules())
    output = next(node for node in prepared.graph.nodes if node.op == "output")

    def is_linear(node: torch.fx.Node) -> bool:
        module = modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
        return isinstance(module, nn.Linear) or (
            isinstance(module, nn.Sequential) and len(module) > 0 and isinstance(module[0], nn.Linear)
        )

    for node in list(prepared.graph.nodes):
        observer = modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
        source = node.args[0] if node.args else None
        if (
            isinstance(observer, ObserverBase | FakeQuantizeBase)
            and set(node.users) == {output}
            and isinstance(source, torch.fx.Node)
            and is_linear(source)
        ):
            node.replace_all_uses_with(source)
            prepared.graph.erase_node(node)
    prepared.recompile()


def _observe_outputs_with(prepared: torch.fx.GraphModule, factories: dict[str, QuantFactory]) -> None:
    """Swap the observer of each named layer's output for one from its factory. Only the output: the layer's
    qconfig also observes its input where float meets int8, and that range must not be capped."""
    modules = dict(prepared.named_modules())
    for node in prepared.graph.nodes:
        if node.op != "call_module" or node.target not in factories:
            continue
        for user in node.users:
            if user.op == "call_module" and isinstance(modules[user.target], ObserverBase):
                prepared.set_submodule(user.target, factories[node.target]())


def _bake_weight(module: nn.Module) -> None:
    """Store in `module` the weight its fake-quant's ``bake`` transform gives, so that lowering (which
    quantizes the stored weight, batch norm folded in) holds exactly what training saw.

    In a Conv-BN QAT module the fake-quant sees ``w * s`` with ``s = gamma / sqrt(running_var + eps)``, and
    lowering folds the same ``s`` in, so the stored weight is ``bake(w * s) / s``.
    """
    bake = getattr(getattr(module, "weight_fake_quant", None), "bake", None)
    if bake is None:
        return
    bn = getattr(module, "bn", None)
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        module.weight.data = bake(module.weight.detach())
        return
    shape = (-1, *([1] * (module.weight.dim() - 1)))
    scale = (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).view(shape)
    module.weight.data = bake(module.weight.detach() * scale) / scale


REFERENCE_LAYERS = (
    torch.ao.nn.quantized.reference.Conv1d,
    torch.ao.nn.quantized.reference.Conv2d,
    torch.ao.nn.quantized.reference.Conv3d,
    torch.ao.nn.quantized.reference.Linear,
)


def dequantized_layer(layer: nn.Module) -> nn.Module:
    """A plain float conv or linear layer computing what a torch.ao *reference* quantized layer computes: its
    hyperparameters and bias, and its weight rounded to its int8 grid and dequantized. (A reference layer
    re-rounds its weight on every call, and its state holds ``qscheme`` values the TorchScript-based ONNX
    exporter cannot trace.)"""
    if not isinstance(layer, REFERENCE_LAYERS):
        raise TypeError(f"not a reference quantized conv or linear layer: {type(layer).__name__}")
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        plain: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias)
    else:
        conv_type = next(t for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d) if isinstance(layer, t))
        plain = conv_type(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            bias,
            layer.padding_mode,
        )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized tensors are deprecated; only their values are used
        plain.weight.copy_(layer.get_weight())  # type: ignore[operator]
        if layer.bias is not None:
            plain.bias.copy_(layer.bias.detach())
    return plain.eval()


def lowered_layers(model: nn.Module) -> int:
    """Number of conv/linear layers of a lowered model that run quantized kernels (for checks)."""
    return sum(
        1
        for m in model.modules()
        if ".quantized" in type(m).__module__
        and isinstance(m, torch.ao.nn.quantized.modules.conv._ConvNd | torch.ao.nn.quantized.Linear)
    )
