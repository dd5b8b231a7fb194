"""Trials run inline, one after another in one process (the inline executor; `experiments.bench_search` runs
all its studies so), leave nothing of theirs alive: before `fx_quantization` emptied torch's module cache,
every int8 trial kept its prepared and lowered graph modules, and a ResNet-18 search grew to 12 GB."""

from __future__ import annotations

import gc

import pytest
import torch

from autocompress.compress import latency_basis
from autocompress.runtime._executors import Job, execute
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import load_task

TASK = "experiments.tasks.digits:task"
#: both lowerings that go through torch's FX quantization: convert_fx (TorchScript) and the reference
#: conversion of the QDQ file (ONNX Runtime)
MEASURE = {"threads": 1, "warmup": 0, "repeats": 1, "runtimes": ["torchscript", "onnxruntime"]}


def live_graph_modules() -> int:
    gc.collect()
    return sum(isinstance(obj, torch.fx.GraphModule) for obj in gc.get_objects())


@pytest.mark.slow
def test_inline_int8_trials_keep_no_graph_module_alive() -> None:
    task = load_task(TASK)
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    policy = Policy.from_mapping({info.name: LayerSetting(0.0, 8) for info in layers})
    assert latency_basis(policy) == "int8"
    jobs = [Job(number, TASK, policy.to_dict(), 0.0, MEASURE, seed=0) for number in range(3)]
    execute(jobs[0])  # the task and its float baseline are cached once per process, on purpose
    before = live_graph_modules()
    for job in jobs[1:]:
        execute(job)
    assert live_graph_modules() == before
