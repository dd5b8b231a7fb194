"""Deploy targets: each runtime runs what the policy says (int8 only where quantized, same accuracy as the
PyTorch model), trials are measured on every runtime with the honest speedup, and the export is verified by the
runtime alone in a fresh process."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator

import onnx
import openvino as ov
import pytest
import torch
from torch import nn

import autocompress
from autocompress.compress import copy_for_lowering, prepare_quantization, prune, quantize
from autocompress.deploy import RUNTIMES, Artefact, CompiledModel, get_runtime, installed_runtimes, lower_all
from autocompress.runtime import Gate, honest_figures, run_trial, shipping_runtime, timings_of
from autocompress.space import LayerSetting, Policy, Space
from autocompress.task import load_task
from experiments.tasks.text import majority_accuracy, text_splits

TASK = "experiments.tasks.digits:task"
#: the quantized layers: every conv but the stem; the stem and the classifier stay float
FLOAT_LAYERS = ("stem.0", "fc")
#: accuracy (fraction of the test split) a runtime may differ from the PyTorch model it was lowered from: ONNX
#: and OpenVINO round int8 the same way, but fuse and accumulate in another order
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def task():
    return load_task(TASK)


@pytest.fixture(scope="module")
def mixed(task) -> tuple[nn.Module, Policy]:
    """The pruned digits net and a policy: 50 % channels off two convs, int8 everywhere but two layers."""
    model = task.baseline_model()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    layers = {
        n: LayerSetting(
            channel_sparsity=0.5 if n in ("block1.conv1", "block2.conv1") else 0.0,
            weight_bits=32 if n in FLOAT_LAYERS else 8,
        )
        for n in names
    }
    policy = Policy.from_mapping(layers, "l1", "minmax")
    pruned = prune(model, policy, task.example_input(1))
    task.finetune(pruned, 1.0)
    return pruned, policy


@pytest.fixture(scope="module")
def lowered(task, mixed) -> dict[str, Artefact]:
    model, policy = mixed
    return {
        name: get_runtime(name).lower(model, policy, task.example_input(1), task.calibration_batches())
        for name in RUNTIMES
    }


def test_all_three_runtimes_are_installed_and_name_their_version() -> None:
    assert installed_runtimes() == ["openvino", "onnxruntime", "torchscript"]
    assert all(RUNTIMES[name].version()[0].isdigit() for name in RUNTIMES)


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_lowering_keeps_the_accuracy_of_the_pytorch_int8_model(task, mixed, lowered, runtime) -> None:
    model, policy = mixed
    reference = task.evaluate(quantize(model, policy, task.example_input(1), task.calibration_batches()))
    assert reference > 0.9  # a real model: the check below compares something that works
    shipped = get_runtime(runtime).load(lowered[runtime])
    assert abs(task.evaluate(shipped) - reference) <= TOLERANCE
    x = task.example_input(3)
    assert shipped(x).shape == model(x).shape  # any batch size: the batch dimension is dynamic


@pytest.mark.parametrize("runtime", ["onnxruntime", "torchscript"])
def test_a_trained_quantizer_lowers_with_its_trained_ranges(task, runtime) -> None:
    """QAT: the model `prepare_quantization` returned, fine-tuned, is lowered with its own fake-quant ranges."""
    model = task.baseline_model()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    policy = Policy.from_mapping({n: LayerSetting(weight_bits=8) for n in names}, "l1", "qat")
    prepared = prepare_quantization(model, policy, task.example_input(1))
    task.finetune(prepared, 0.2)
    reference = task.evaluate(quantize(copy_for_lowering(prepared), policy, task.example_input(1), ()))
    artefact = get_runtime(runtime).lower(prepared, policy, task.example_input(1), ())
    assert reference > 0.9 and abs(task.evaluate(get_runtime(runtime).load(artefact)) - reference) <= TOLERANCE


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_the_float_model_runs_the_same_on_each_runtime(task, runtime) -> None:
    model = task.baseline_model()
    artefact = get_runtime(runtime).lower(model, Policy(()), task.example_input(1), ())
    x = task.example_input(32)
    assert torch.allclose(get_runtime(runtime).load(artefact)(x), model(x), atol=1e-4)


@pytest.fixture(scope="module")
def densenet():
    """The trained DenseNet-like net all-int8 (minmax, per-channel weights) and its PyTorch int8 accuracy:
    pre-activation BatchNorms (BN -> ReLU -> conv) and cascaded concatenations."""
    task = load_task("experiments.tasks.cnn:densenet")
    model = task.baseline_model()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    policy = Policy.from_mapping({n: LayerSetting(weight_bits=8) for n in names}, "l1", "minmax")
    reference = task.evaluate(quantize(model, policy, task.example_input(1), task.calibration_batches()))
    return task, model, policy, reference


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_a_densenet_with_cascaded_concats_keeps_its_int8_accuracy(densenet, runtime) -> None:
    """Regression: OpenVINO read the QDQ file's ``Q/DQ -> Concat -> Q/DQ`` cascade as chance (0.1)."""
    task, model, policy, reference = densenet
    assert reference > 0.9
    artefact = get_runtime(runtime).lower(model, policy, task.example_input(1), task.calibration_batches())
    assert abs(task.evaluate(get_runtime(runtime).load(artefact)) - reference) <= TOLERANCE


def _weight_producers(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    """(op, producer of its weight) for every Conv and Gemm/MatMul in graph order: 'DequantizeLinear' for an
    int8 weight, 'initializer' for a float one."""
    producers = {out: node.op_type for node in graph.node for out in node.output}
    inits = {init.name for init in graph.initializer}
    return [
        (node.op_type, "initializer" if node.input[1] in inits else producers.get(node.input[1], "?"))
        for node in graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul")
    ]


def test_float_layers_stay_float_in_the_onnx_graph(lowered) -> None:
    graph = onnx.load_from_string(lowered["onnxruntime"].files["model.onnx"]).graph
    weights = _weight_producers(graph)
    # graph order is the model's: stem.0 first, fc (Gemm) last; the six convs between read int8 weights
    assert weights[0] == ("Conv", "initializer") and weights[-1] == ("Gemm", "initializer")
    assert weights[1:-1] == [("Conv", "DequantizeLinear")] * 6
    int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8) == 6  # the weights are stored in int8, one tensor per quantized layer
    per_channel = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 1]
    assert {i.dims[0] for i in int8} <= {d for i in per_channel for d in i.dims}  # one scale per output channel


def test_float_layers_stay_float_in_the_openvino_ir(lowered) -> None:
    files = lowered["openvino"].files
    model = ov.Core().read_model(model=files["model.xml"].decode(), weights=ov.Tensor(_uint8(files["model.bin"])))
    int8_weights = [
        op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]
    float_convs = [
        op
        for op in model.get_ops()
        if op.get_type_name() in ("Convolution", "MatMul")
        and op.input_value(1).get_node().get_type_name() == "Constant"
        and op.input_value(1).get_node().get_element_type() == ov.Type.f32
    ]
    assert len(int8_weights) == 6 and len(float_convs) == 2


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_the_classifier_in_int8_returns_float_logits_on_every_runtime(task, runtime) -> None:
    """int8 input and weights, but no rounding of what the model returns: 8-bit logits flip close calls (a
    quarter-epoch MNIST ResNet-50 lost 1.56 points to them)."""
    model = task.baseline_model()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    policy = Policy.from_mapping({n: LayerSetting(weight_bits=8) for n in names})
    x1 = task.example_input(1)
    artefact = get_runtime(runtime).lower(model, policy, x1, task.calibration_batches())
    logits = get_runtime(runtime).load(artefact)(task.example_input(64))
    assert torch.as_tensor(logits).unique().numel() > 256  # 640 values, not on one 8-bit grid
    reference = task.evaluate(quantize(model, policy, x1, task.calibration_batches()))
    assert abs(task.evaluate(get_runtime(runtime).load(artefact)) - reference) <= TOLERANCE
    if runtime == "onnxruntime":  # OpenVINO's IR is built from the same ONNX file
        graph = onnx.load_from_string(artefact.files["model.onnx"]).graph
        last = next(node for node in graph.node if graph.output[0].name in node.output)
        assert last.op_type in ("Gemm", "MatMul", "Add")  # the linear layer itself, no QuantizeLinear after it


def _uint8(data: bytes):
    import numpy as np

    return np.frombuffer(data, dtype=np.uint8).copy()


class SessionCountingGate(Gate):
    """The runtime's own extension point, noting which runtime sessions are alive each time a measurement
    starts (by their class: `_Request` for OpenVINO, `_Session` for ONNX Runtime)."""

    def __init__(self) -> None:
        self.alive: list[list[str]] = []

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        self.alive.append(sorted(type(o).__name__ for o in gc.get_objects() if isinstance(o, CompiledModel)))
        yield


def test_a_trial_holds_one_runtimes_sessions_at_a_time(task, mixed) -> None:
    """Each measurement runs with only the baseline's and the candidate's session of the runtime it times
    alive: the sessions of the other runtime, of the other batch size and of the accuracy runs are released
    (each holds its own copy of the weights; all at once took vit_b_16 to 17x its float weights)."""
    _, policy = mixed
    gate = SessionCountingGate()
    measure = {"threads": 1, "repeats": 1, "warmup": 0, "runtimes": ["openvino", "onnxruntime"]}
    metrics = run_trial(TASK, policy, 0.0, measure=measure, gate=gate).metrics
    assert gate.alive == [["_Request", "_Request"]] * 2 + [["_Session", "_Session"]] * 2  # b1 and b32 of each
    for suffix in ("", "_b32"):  # and every figure is still measured
        for name in ("openvino", "onnxruntime"):
            assert metrics[f"latency_ms{suffix}@{name}"] > 0 and metrics[f"baseline_latency_ms{suffix}@{name}"] > 0


def test_a_trial_ships_on_the_fastest_runtime_within_the_accuracy_budget_at_the_batch_it_is_judged_at() -> None:
    at_b1 = {"cand@openvino": 1.0, "cand@onnxruntime": 2.0, "cand@torchscript": 3.0}
    accuracies = {"openvino": 0.90, "onnxruntime": 0.97, "torchscript": 0.99}
    assert shipping_runtime(at_b1, accuracies, None) == "openvino"  # no budget: the fastest
    assert shipping_runtime(at_b1, accuracies, 0.95) == "onnxruntime"  # the fastest within it
    assert shipping_runtime(at_b1, accuracies, 0.995) == "openvino"  # none within it: the fastest
    # a runtime that could not lower the candidate has no accuracy and never ships
    assert shipping_runtime(at_b1, {"torchscript": 0.99}, None) == "torchscript"
    latencies = {
        "": {"base@openvino": 4.0, "base@torchscript": 5.0, "cand@openvino": 2.0, "cand@torchscript": 1.0},
        "_b32": {"base@openvino": 40.0, "base@torchscript": 60.0, "cand@openvino": 10.0, "cand@torchscript": 20.0},
    }
    shipped = shipping_runtime(latencies["_b32"], {"openvino": 0.99, "torchscript": 0.99}, None)
    assert shipped == "openvino"  # judged at batch 32, although torchscript is faster at batch 1
    m = honest_figures(latencies, shipped)
    assert m["runtime"] == m["runtime_b32"] == "openvino"
    assert (m["latency_ms"], m["latency_ms_b32"]) == (2.0, 10.0)  # both batches of what ships
    assert (m["speedup"], m["speedup_b32"]) == (4.0 / 2.0, 40.0 / 10.0)  # over the baseline's fastest runtime
    assert (m["baseline_runtime"], m["speedup@torchscript"]) == ("openvino", 5.0 / 1.0)
    assert timings_of(m) == latencies  # read back from the metrics, as a promotion of the same network reuses them


@pytest.mark.parametrize(
    ("objectives", "constraints", "rule"),
    [
        (
            {"accuracy": "max", "latency_ms": "min"},
            {"max_accuracy_drop": 0.01},
            {"serving_batch": 1, "max_accuracy_drop": 0.01},
        ),
        ({"accuracy": "max", "latency_ms_b32": "min"}, {"min_speedup": 2.0}, {"serving_batch": 32}),
        ({"accuracy": "max", "size_bytes": "min"}, {"min_speedup_b32": 2.0}, {"serving_batch": 32}),
        ({"accuracy": "max"}, {}, {"serving_batch": 1}),
    ],
)
def test_the_space_says_which_batch_a_trial_ships_for_and_its_accuracy_budget(objectives, constraints, rule) -> None:
    space = Space(TASK, objectives, constraints, (0.0,), {})
    assert space.shipping() == rule


SPACE = """
task: experiments.tasks.digits:task
objectives: {accuracy: max, latency_ms: min}
constraints: {max_accuracy_drop: 0.05}
fidelity: {finetune_epochs: [0.5]}
defaults: {channel_sparsity: [0.0, 0.5], weight_bits: [8, 32]}
layers: {"stem.0": {channel_sparsity: [0.0]}, fc: {weight_bits: [32]}}
measure: {threads: 1, repeats: 3, warmup: 1, runtimes: [openvino, onnxruntime]}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("deploy-study")
    (work / "space.yaml").write_text(SPACE)
    return autocompress.search(
        work / "space.yaml",
        study="deploy",
        storage=f"sqlite:///{work / 'store.db'}",
        trials=2,
        executor="inline",
        strategy="random",
        seed=1,
    )


@pytest.mark.slow
def test_trials_store_per_runtime_latency_and_the_honest_speedup(study) -> None:
    trials = [t for t in study.trials() if t.state == "complete"]
    assert len(trials) == 2
    for trial in trials:
        m = trial.metrics
        runtimes = ("openvino", "onnxruntime")
        # the space judges batch 1 with a 5-pt budget: it ships on the fastest runtime at batch 1 within it
        floor = study.record.baseline["accuracy"] - 0.05
        within = [rt for rt in runtimes if m[f"accuracy@{rt}"] >= floor] or list(runtimes)
        assert m["runtime"] == min(within, key=lambda rt: m[f"latency_ms@{rt}"])
        for suffix in ("", "_b32"):
            cand = {rt: m[f"latency_ms{suffix}@{rt}"] for rt in runtimes}
            base = {rt: m[f"baseline_latency_ms{suffix}@{rt}"] for rt in runtimes}
            # the candidate on the runtime it ships on against the baseline on *its* fastest one
            assert m[f"runtime{suffix}"] == m["runtime"]
            assert m[f"baseline_runtime{suffix}"] == min(base, key=base.__getitem__)
            assert m[f"latency_ms{suffix}"] == cand[m["runtime"]]
            assert m[f"speedup{suffix}"] == pytest.approx(min(base.values()) / cand[m["runtime"]])
            for rt in cand:
                assert m[f"speedup{suffix}@{rt}"] == pytest.approx(base[rt] / cand[rt])
        assert m["accuracy"] == m[f"accuracy@{m['runtime']}"]  # accuracy of what ships, on its runtime
        assert {a.kind for a in trial.artefacts} == {f"{m['runtime']}-model"}  # and only its file is kept
    board = study.leaderboard()
    assert [row["trial"] for row in board] and all(row["runtime"] in ("openvino", "onnxruntime") for row in board)
    frame = study.trials_dataframe()
    assert {"latency_ms@openvino", "speedup_b32@onnxruntime", "runtime", "baseline_runtime"} <= set(frame.columns)
    baseline = study.record.baseline
    assert baseline["runtime"] in ("openvino", "onnxruntime")


@pytest.mark.slow
def test_export_writes_the_runtime_file_verified_by_the_runtime_alone(study, tmp_path) -> None:
    out = tmp_path / "export"
    best = study.leaderboard()[0]
    path = study.export(out, trial=best["trial"], allow_infeasible=True)
    manifest = json.loads((out / "manifest.json").read_text())
    runtime = manifest["artefact"]["runtime"]
    assert runtime == best["runtime"] and manifest["artefact"]["runtime_version"] == RUNTIMES[runtime].version()
    expected = {"openvino": {"model.xml", "model.bin"}, "onnxruntime": {"model.onnx"}}[runtime]
    assert {f["file"] for f in manifest["artefact"]["files"]} == expected and path.name in expected
    assert manifest["artefact"]["inputs"] == [{"name": "input_0", "shape": [-1, 1, 16, 16], "dtype": "float32"}]
    # verify (run by export) loaded it in a fresh interpreter with the runtime's own API and re-evaluated it
    assert abs(manifest["verified"]["accuracy"] - best["accuracy"]) <= 0.005
    assert f"{runtime}" in manifest["artefact"]["load"] and "autocompress" not in manifest["artefact"]["load"]


#: the text transformer's Linears kept float in the dynamic int8 policy (the FFN outputs); the rest are int8
DYNAMIC_FLOAT = ("layers.0.ffn_out", "layers.1.ffn_out")


@pytest.fixture(scope="module")
def dynamic_text():
    """The trained text transformer, a dynamic int8 policy (every Linear int8, the classifier ``fc`` too, but
    the FFN outputs) lowered to every runtime, and the PyTorch dynamic int8 model's accuracy."""
    task = load_task("experiments.tasks.text:transformer")
    model = task.baseline_model()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    policy = Policy.from_mapping(
        {n: LayerSetting(weight_bits=32 if n in DYNAMIC_FLOAT else 8) for n in names}, quantizer="dynamic"
    )
    artefacts, unsupported = lower_all(RUNTIMES.values(), model, policy, task.example_input(1), ())
    reference = task.evaluate(quantize(model, policy, task.example_input(1), ()))
    return task, set(names), artefacts, unsupported, reference


def _layer_of(node: onnx.NodeProto) -> str:
    """The module path the TorchScript-based exporter named the node after (``/layers.0/q/MatMul_quant``)."""
    return ".".join(node.name.split("/")[1:-1])


def test_dynamic_int8_lowers_to_onnx_runtime_int8_only_where_the_policy_says(dynamic_text) -> None:
    task, names, artefacts, unsupported, reference = dynamic_text
    graph = onnx.load_from_string(artefacts["onnxruntime"].files["model.onnx"]).graph
    inits = {init.name for init in graph.initializer}
    int8 = [_layer_of(node) for node in graph.node if node.op_type == "MatMulInteger"]
    float_linears = [
        _layer_of(node)
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in inits  # a weight, not attention's q @ k
    ]
    assert sorted(int8) == sorted(names - set(DYNAMIC_FLOAT))  # fc (a Gemm in the float file) included
    assert sorted(float_linears) == sorted(DYNAMIC_FLOAT)
    assert any(node.op_type == "DynamicQuantizeLinear" for node in graph.node)
    assert reference > majority_accuracy(text_splits()) + 0.1  # a trained model: the comparison below means something
    shipped = get_runtime("onnxruntime").load(artefacts["onnxruntime"])
    assert abs(task.evaluate(shipped) - reference) <= TOLERANCE
    assert "torchscript" in artefacts and "quantizer 'dynamic'" in str(unsupported["openvino"])
