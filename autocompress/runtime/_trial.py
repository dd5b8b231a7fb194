"""`run_trial`: one candidate, start to end, in whatever process runs it (inline or a Ray worker).

Pure with respect to the store: it returns a `TrialResult` (metrics and the artefact's bytes) and never
opens the database, so a worker on another node needs only the task's import path.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from autocompress.compress import (
    latency_basis,
    needs_training,
    prepare_criterion,
    prepare_quantization,
    prune,
    quantize,
)
from autocompress.measure import (
    compare_latency,
    count_bops,
    count_macs,
    count_packed_bytes,
    count_params,
    serialize,
    to_torchscript,
    torch_threads,
)
from autocompress.space import Policy
from autocompress.task import Task, load_task


@dataclass(frozen=True)
class TrialResult:
    """What a finished trial returns: metrics by the names of DESIGN.md and the deployable model's bytes."""

    metrics: dict[str, float]
    artefact: bytes = b""
    worker: str = ""
    intermediate: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class _Baseline:
    script: torch.jit.ScriptModule
    accuracy: float
    macs: int
    params: int
    size_bytes: int


@lru_cache(maxsize=4)
def cached_task(task_ref: str) -> Task:
    return load_task(task_ref)


@lru_cache(maxsize=4)
def _baseline(task_ref: str) -> _Baseline:
    task = cached_task(task_ref)
    model = task.baseline_model()
    x1 = task.example_input(1)
    script = to_torchscript(model, x1)
    return _Baseline(script, task.evaluate(script), sum(count_macs(model, x1).values()), count_params(model),
                     len(serialize(script)))


class Gate:
    """Where a trial tells the machine what it is doing; the default does nothing (a trial alone).

    `computing` wraps the trial's compute, `measuring` its latency measurement, and `checkpoint` is called
    between fine-tuning steps. A shared gate (the Ray executor's `CoreGate`) uses them to keep every
    measurement alone on the cores.
    """

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        yield

    def checkpoint(self) -> None:
        """Between training steps."""


def _finetune(task: Task, model: torch.nn.Module, epochs: float, seed: int, gate: Gate) -> None:
    """Fine-tune, pausing at steps for the gate where the task supports a step callback."""
    if "on_step" in inspect.signature(task.finetune).parameters:
        task.finetune(model, epochs, seed=seed, on_step=gate.checkpoint)  # type: ignore[call-arg]
    else:
        task.finetune(model, epochs, seed=seed)


def worker_id() -> str:
    """host:pid, plus the Ray node id when running on a Ray worker (several nodes may share a host)."""
    ident = f"{socket.gethostname()}:{os.getpid()}"
    try:
        import ray

        if ray.is_initialized():
            ident += f":node={ray.get_runtime_context().get_node_id()[:12]}"
    except ImportError:
        pass
    return ident


def run_trial(
    task_ref: str,
    policy: Policy,
    finetune_epochs: float,
    *,
    measure: dict[str, int],
    seed: int = 0,
    train_threads: int | None = None,
    gate: Gate | None = None,
) -> TrialResult:
    """Prune, fine-tune, quantize, then evaluate and measure the deployable (TorchScript) model.

    A pruning criterion that needs the task (activations, a sparsity-training phase, gradients) runs its
    `prepare` phase on the trained model first, pausing at the gate between its training steps.

    A quantizer that trains (QAT, DoReFa, BNN, LSQ) is prepared before fine-tuning, so the fine-tune epochs
    are quantization-aware; calibration-only quantizers run after it. ``latency_int8_kernel`` is 1 when a
    layer is below 8 bits: it runs on int8 kernels, so the latency is that of int8, not of its bit-width.

    Latency is measured interleaved with the baseline in this process, inside `gate.measuring()` so that no
    other trial's work shares the measured cores; ``speedup`` is therefore a same-run ratio.
    """
    gate = gate or Gate()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with gate.computing():
        task = cached_task(task_ref)
        base = _baseline(task_ref)
        x1, x32 = task.example_input(1), task.example_input(32)
        with torch_threads(train_threads or torch.get_num_threads()):
            model = task.baseline_model()
            if any(s.channel_sparsity > 0 for _, s in policy):
                criterion = prepare_criterion(policy.criterion, model, task, finetune_epochs, gate.checkpoint)
                model = prune(model, policy, x1, importance=criterion)
            layer_macs, params = count_macs(model, x1), count_params(model)
            packed_bytes = count_packed_bytes(model, policy)
            if needs_training(policy):
                model = prepare_quantization(model, policy, x1)
            gate.checkpoint()
            if finetune_epochs > 0 and not policy.is_identity:
                _finetune(task, model, finetune_epochs, seed, gate)
            deployed = quantize(model, policy, x1, task.calibration_batches())
            gate.checkpoint()
            script = to_torchscript(deployed, x1)
            gate.checkpoint()
            accuracy = task.evaluate(script)
        artefact = serialize(script)
    timing: dict[str, Any] = dict(threads=measure["threads"], warmup=measure["warmup"], repeats=measure["repeats"])
    with gate.measuring():
        b1 = compare_latency({"base": base.script, "cand": script}, x1, **timing)
        b32 = compare_latency({"base": base.script, "cand": script}, x32, **timing)
    metrics = {
        "accuracy": accuracy,
        "accuracy_drop": base.accuracy - accuracy,
        "latency_ms": b1["cand"],
        "latency_ms_b32": b32["cand"],
        "baseline_latency_ms": b1["base"],
        "baseline_latency_ms_b32": b32["base"],
        "speedup": b1["base"] / b1["cand"],
        "speedup_b32": b32["base"] / b32["cand"],
        "macs": float(sum(layer_macs.values())),
        "params": float(params),
        "size_bytes": float(len(artefact)),
        "packed_bytes": float(packed_bytes),
        "latency_int8_kernel": float(latency_basis(policy) == "int8-kernel"),
        "bops": float(count_bops(layer_macs, policy)),
        "finetune_epochs": float(finetune_epochs),
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
    }
    return TrialResult(metrics, artefact, worker_id(), [(0, "accuracy", accuracy)])


def baseline_metrics(task_ref: str, measure: dict[str, int]) -> dict[str, float]:
    """The uncompressed model measured the same way as every trial (identity policy, no fine-tune)."""
    result = run_trial(task_ref, Policy(()), 0.0, measure=measure)
    metrics = dict(result.metrics)
    metrics["size_bytes"] = float(_baseline(task_ref).size_bytes)
    return metrics
