"""The contract every quantizer keeps, on every model: one line in QUANTIZERS adds a quantizer to it.

Real trained models, real fake-quant training, real x86 int8 kernels; nothing of ours is mocked.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress import (
    QUANTIZERS,
    get_quantizer,
    lowered_layers,
    needs_training,
    prepare_quantization,
    quantize,
)
from autocompress.measure import count_packed_bytes, to_torchscript
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import SupervisedTask

#: largest accuracy loss at 8 bits vs the float model (test split of 360 digits / 200 token sequences)
TOLERANCE_8BIT = 0.03
#: quantization-aware fine-tuning given to quantizers that train, in epochs; DoReFa's tanh reshapes the
#: (BN-folded) weights themselves and needs longer (MobileNet: -0.136 after 0.5 epochs, +0.014 after 2), and so
#: does LSQ, which learns every step size from its first batch (ResNet: -0.033 after 0.5 epochs, -0.022 after 1,
#: +0.022 after 2; with the baselines trained from a seeded init, their 8 epochs leave room that QAT also fills)
QAT_EPOCHS = {"dorefa": 2.0, "lsq": 2.0}
DEFAULT_QAT_EPOCHS = 0.5


#: quantizers with calibrated (static) activations, which lower every conv and linear layer to int8; the dynamic
#: one quantizes Linear layers only, at 8 bits (tests/test_minilm.py holds its checks)
STATIC = sorted(name for name in QUANTIZERS if not get_quantizer(name).dynamic)


def layer_names(task: SupervisedTask) -> list[str]:
    return [info.name for info in discover_layers(task.baseline_model(), task.example_input(1))]


def uniform(task: SupervisedTask, quantizer: str, bits: int, **extra: object) -> Policy:
    layers = {n: LayerSetting(weight_bits=bits) for n in layer_names(task)}
    return Policy.from_mapping(layers, quantizer=quantizer, **extra)  # type: ignore[arg-type]


def deploy(task: SupervisedTask, policy: Policy) -> nn.Module:
    """What a trial does: prepare trained quantizers, fine-tune through fake-quant, calibrate and lower."""
    x1 = task.example_input(1)
    model = task.baseline_model()
    if needs_training(policy):
        model = prepare_quantization(model, policy, x1)
        task.finetune(model, QAT_EPOCHS.get(policy.quantizer, DEFAULT_QAT_EPOCHS))
    return quantize(model, policy, x1, task.calibration_batches())


#: the models' classifier: a Linear whose output is the model's, so its result stays float and on the x86 lowering
#: it is a float Linear holding its int8 grid's weights (`autocompress.compress._lowering`)
OUTPUT_LINEAR = "fc"


def grid_levels(model: nn.Module) -> int:
    """Most distinct weight values in one output row of the output Linear (at most 255 on an int8 grid)."""
    weight = dict(model.named_modules())[OUTPUT_LINEAR].weight.detach()
    return max(int(row.unique().numel()) for row in weight)


def int_weights(model: nn.Module) -> list[torch.Tensor]:
    return [
        m.weight().int_repr()
        for m in model.modules()
        if ".quantized" in type(m).__module__ and callable(getattr(m, "weight", None))
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", STATIC)
def test_8bit_model_runs_in_int8_and_keeps_accuracy(task: SupervisedTask, name: str) -> None:
    policy = uniform(task, name, 8)
    deployed = deploy(task, policy)
    # every layer but the output Linear really runs an int8 kernel; that one holds int8-grid weights, returns float
    assert lowered_layers(deployed) == len(policy.layers) - 1
    assert grid_levels(deployed) <= 255
    script = to_torchscript(deployed, task.example_input(1))  # the export path
    float_accuracy = task.evaluate(task.baseline_model())
    assert task.evaluate(script) >= float_accuracy - TOLERANCE_8BIT


@pytest.mark.parametrize("name", sorted(set(STATIC) - {"bnn"}))
def test_4bit_weights_lie_on_the_4bit_grid_of_the_int8_kernel(name: str) -> None:
    from tests.quantize.conftest import TASKS

    task = TASKS["resnet"]
    names = layer_names(task)
    inner = names[1:-1]  # first and last layer stay 8-bit, as is usual below 8 bits (calibration-only
    # quantizers at 4 bits on the 8-channel stem of this tiny net fall to near chance)
    deployed = deploy(
        task, Policy.from_mapping({n: LayerSetting(weight_bits=4 if n in inner else 8) for n in names}, quantizer=name)
    )
    weights = int_weights(deployed)
    assert len(weights) == len(names) - 1  # the output Linear is a float layer on its grid (`grid_levels`)
    four_bit = weights[1:]
    assert all(int(w.abs().max()) <= 7 for w in four_bit)
    assert all(int(w.abs().max()) == 7 for w in four_bit) or name == "lsq"  # min-max uses the full grid
    assert int(weights[0].abs().max()) > 7  # the 8-bit stem uses the 8-bit grid
    assert task.evaluate(deployed) > 0.5  # still a classifier, not noise


def test_bnn_binarizes_weights_and_inputs_of_1bit_layers() -> None:
    from tests.quantize.conftest import TASKS

    task = TASKS["resnet"]
    names = layer_names(task)
    inner = names[1:-1]  # first and last layer stay 8-bit, as is usual for binary networks
    layers = {n: LayerSetting(weight_bits=1 if n in inner else 8) for n in names}
    deployed = deploy(task, Policy.from_mapping(layers, quantizer="bnn"))
    weights = int_weights(deployed)
    binary = [w for w in weights if int(w.abs().max()) <= 1]
    assert len(binary) == len(inner)
    assert all(set(w.unique().tolist()) <= {-1, 0, 1} for w in binary)
    signs = [node for node in deployed.graph.nodes if node.target is torch.sign]  # a real op, still float
    assert len(signs) == len(inner)
    assert deployed(task.example_input(4)).shape == (4, 10)


@pytest.mark.parametrize("name", ["histogram", pytest.param("lsq", marks=pytest.mark.slow)])
def test_mixed_precision_policy_gives_one_model_with_float_layers_where_asked(name: str) -> None:
    from tests.quantize.conftest import TASKS

    task = TASKS["mobilenet"]
    names = layer_names(task)
    bits = {n: (32 if i % 3 == 0 else 8 if i % 3 == 1 else 4) for i, n in enumerate(names)}
    policy = Policy.from_mapping({n: LayerSetting(weight_bits=b) for n, b in bits.items()}, quantizer=name)
    deployed = deploy(task, policy)
    modules = dict(deployed.named_modules())
    float_layers = [n for n, b in bits.items() if b == 32]
    assert all(".quantized" not in type(modules[n]).__module__ for n in float_layers)
    int8_output = OUTPUT_LINEAR not in float_layers  # then a float layer on its grid
    assert lowered_layers(deployed) == len(names) - len(float_layers) - int8_output
    assert task.evaluate(to_torchscript(deployed, task.example_input(1))) > 0.8


def test_packed_bytes_shrink_as_the_bit_widths_say() -> None:
    from tests.quantize.conftest import TASKS

    task = TASKS["resnet"]
    model = task.baseline_model()
    weights = {n: m.weight.numel() for n, m in model.named_modules() if n in set(layer_names(task))}
    channels = {n: m.weight.shape[0] for n, m in model.named_modules() if n in weights}
    float_bytes = count_packed_bytes(model, uniform(task, "histogram", 32))
    assert float_bytes == 4 * sum(p.numel() for p in model.parameters())
    for bits in (8, 4, 2):
        packed = count_packed_bytes(model, uniform(task, "histogram", bits))
        saved = sum(4 * w - (-(-w * bits // 8)) - 4 * channels[n] for n, w in weights.items())
        assert packed == float_bytes - saved
    per_tensor = count_packed_bytes(model, uniform(task, "histogram", 8, per_channel=False))
    assert per_tensor < count_packed_bytes(model, uniform(task, "histogram", 8))


def test_int8_artefact_is_smaller_than_float() -> None:
    from autocompress.measure import serialize
    from tests.quantize.conftest import TASKS

    task = TASKS["resnet"]
    x1 = task.example_input(1)
    float_size = len(serialize(to_torchscript(task.baseline_model(), x1)))
    int8_size = len(serialize(to_torchscript(deploy(task, uniform(task, "minmax", 8)), x1)))
    assert int8_size < 0.6 * float_size


def test_1bit_weights_need_the_binary_quantizer() -> None:
    from tests.quantize.conftest import TASKS

    task = TASKS["resnet"]
    with pytest.raises(ValueError, match="1-bit weights need quantizer 'bnn'"):
        prepare_quantization(task.baseline_model(), uniform(task, "qat", 1), task.example_input(1))


def test_every_registered_quantizer_names_itself() -> None:
    assert all(get_quantizer(name).name == name for name in QUANTIZERS)
