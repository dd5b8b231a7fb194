"""Torchvision models as they ship: imported beside the CPU torch, compressed end to end or refused up front."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torchvision")  # installed by make (--no-deps, the 'vision' extra)

from autocompress.errors import UserError  # noqa: E402
from autocompress.space import discover_layers, output_layers, parse_space, resolve_space  # noqa: E402
from experiments.bench_zoo import bench_one  # noqa: E402
from experiments.tasks import zoo  # noqa: E402


@pytest.mark.slow
def test_torchvision_and_transformers_import_beside_the_cpu_torch() -> None:
    code = (
        "import autocompress, torch\n"
        "tv = autocompress.import_torchvision()\n"
        "assert torch.version.cuda is None\n"
        "print(tv.models.resnet18(num_classes=3).eval()(torch.randn(1, 3, 32, 32)).shape)\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('transformers'):\n"
        "    from transformers import BertConfig, BertModel\n"
        "    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "torch.Size([1, 3])"


def test_every_classification_builder_is_listed() -> None:
    archs = zoo.classification_models()
    assert len(archs) >= 80 and {"resnet18", "shufflenet_v2_x1_0", "vit_b_16", "maxvit_t"} <= set(archs)


def test_shufflenet_channel_shuffle_is_refused_up_front_with_the_op_named() -> None:
    """torch-pruning raised ZeroDivisionError on the channel shuffle's view: now every layer says why it
    cannot be pruned, and a space asking for pruning is refused naming the layer, before any trial."""
    task = zoo.task_for("shufflenet_v2_x0_5")
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    inner = [info for info in layers if info.name != "fc"]
    assert inner and not any(info.prunable for info in layers)
    assert all("_Reshape" in info.reason and "ZeroDivisionError" in info.reason for info in inner)
    spec = parse_space(
        "task: experiments.tasks.zoo:shufflenet_v2_x0_5\nlayers: {'stage2.0.branch2.0': {channel_sparsity: [0.5]}}"
    )
    with pytest.raises(UserError, match="stage2.0.branch2.0.*cannot be pruned.*channel shuffle"):
        resolve_space(spec, layers)


@pytest.mark.slow
def test_shufflenet_still_quantizes_end_to_end() -> None:
    row = bench_one("shufflenet_v2_x0_5")
    assert row["status"] == "int8 only" and row["reloads"], row
    # random weights, static int8 calibrated on noise: the logits keep their direction only roughly
    assert row["cosine"] > 0.4 and "ZeroDivisionError" in row["refused"]


def test_squeezenet_output_conv_behind_pooling_is_the_output_layer() -> None:
    task = zoo.task_for("squeezenet1_1")
    assert output_layers(task.baseline_model(), task.example_input(1)) == {"classifier.1"}


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param("mobilenet_v3_small", marks=pytest.mark.slow),
        "squeezenet1_1",
        pytest.param("resnet18", marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", marks=pytest.mark.slow),
        pytest.param("vit_b_32", marks=pytest.mark.slow),
    ],
)
def test_model_is_pruned_quantized_exported_and_reloads(arch: str) -> None:
    row = bench_one(arch)
    assert row["status"] == "compressed" and row["reloads"], row
    assert row["prunable"] > 0 and row["macs_ratio"] < 0.6 and row["params_after"] < row["params"]
    assert row["latency_ms"] > 0 and row["speedup"] > 0


def test_vit_embedding_width_through_multihead_attention_is_refused_and_mlp_width_stays_prunable() -> None:
    task = zoo.task_for("vit_b_32")
    layers = {info.name: info for info in discover_layers(task.baseline_model(), task.example_input(1))}
    assert all(layers[f"encoder.layers.encoder_layer_{i}.mlp.0"].prunable for i in range(12))
    roots = [info for info in layers.values() if "nn.MultiheadAttention" in info.reason]
    assert roots and "remove heads instead" in roots[0].reason and not any(info.prunable for info in roots)
    out_proj = roots[0].reason.split("channel_sparsity of ")[1].strip("')")
    assert layers[out_proj].prunable and layers[out_proj].heads == 12  # heads: the fraction removed, searchable
    assert not layers["conv_proj"].prunable
