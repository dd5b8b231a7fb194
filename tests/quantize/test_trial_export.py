"""A quantization-aware trial end to end: prepared before fine-tuning, lowered, measured, and its artefact
re-verified in a fresh process through the export path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from autocompress.export import verify
from autocompress.runtime import run_trial
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import load_task
from experiments.tasks.text import majority_accuracy

TASK = "experiments.tasks.text:transformer"


@pytest.mark.slow
def test_lsq_4bit_trial_exports_an_artefact_that_reproduces_its_accuracy(tmp_path: Path) -> None:
    task = load_task(TASK)
    names = [info.name for info in discover_layers(task.baseline_model(), task.example_input(1))]
    layers = {n: LayerSetting(weight_bits=4, activation_bits=8) for n in names}
    policy = Policy.from_mapping(layers, quantizer="lsq")
    result = run_trial(TASK, policy, 0.5, measure={"threads": 1, "warmup": 1, "repeats": 3})
    metrics = result.metrics
    assert metrics["latency_int8_kernel"] == 1.0  # 4-bit weights: int8 kernels, labelled so
    baseline_model = task.baseline_model()
    float_bytes = 4 * sum(p.numel() for p in baseline_model.parameters())
    linear_weights = sum(m.weight.numel() for m in baseline_model.modules() if isinstance(m, nn.Linear))
    # each linear weight takes half a byte instead of four (the embedding table stays float)
    assert metrics["packed_bytes"] < float_bytes - 0.9 * 3.5 * linear_weights
    baseline = task.evaluate(baseline_model)
    assert metrics["accuracy"] > max(baseline - 0.1, majority_accuracy(task.data))  # still beats guessing
    (tmp_path / "model.pt").write_bytes(result.artefacts[0].files["model.pt"])
    (tmp_path / "manifest.json").write_text(json.dumps({"task": TASK, "metrics": metrics}))
    test_accuracy = verify(tmp_path)  # raises unless the val figure reproduces
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert abs(manifest["verified"]["accuracy"] - metrics["accuracy"]) <= 0.005
    assert manifest["metrics"]["test_accuracy"] == test_accuracy > majority_accuracy(task.data)
