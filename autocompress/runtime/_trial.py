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
from collections.abc import Callable, Iterator
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
    sparse_finetune,
    structured_admm,
)
from autocompress.measure import (
    compare_latency,
    count_bops,
    count_macs,
    count_packed_bytes,
    count_params,
    count_sparse_bytes,
    count_weight_sparsity,
    serialize,
    to_torchscript,
    torch_threads,
)
from autocompress.space import Policy
from autocompress.task import Task, checked_metric, load_task


@dataclass(frozen=True)
class TrialResult:
    """What a finished trial returns: metrics by the names of DESIGN.md and the deployable model's bytes."""

    metrics: dict[str, float]
    artefact: bytes = b""
    worker: str = ""
    intermediate: list[tuple[int, str, float]] = field(default_factory=list)


#: the split trials are evaluated, ranked and constrained on; the test split is read only after the search
#: (`evaluate_test`) and by export
SELECTION_SPLIT = "val"


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
    return _Baseline(
        script,
        checked_metric(task, SELECTION_SPLIT, task.evaluate(script, SELECTION_SPLIT)),
        sum(count_macs(model, x1).values()),
        count_params(model),
        len(serialize(script)),
    )


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


@dataclass(frozen=True)
class TaskTrainer:
    """The task's fine-tuning as a pruner's `autocompress.compress.Trainer`, pausing at steps for the gate.

    A task whose ``finetune`` takes no ``on_step`` gets the pruner's step once, after training: masks then
    hold only at the end, and schedules over steps (agp) refuse to run without ``finetune_steps``.
    """

    task: Task
    seed: int
    gate: Gate

    def train(self, model: torch.nn.Module, epochs: float, on_step: Callable[[], None]) -> None:
        if epochs <= 0:
            return

        def step() -> None:
            on_step()
            self.gate.checkpoint()

        if "on_step" in inspect.signature(self.task.finetune).parameters:
            self.task.finetune(model, epochs, seed=self.seed, on_step=step)  # type: ignore[call-arg]
        else:
            self.task.finetune(model, epochs, seed=self.seed)
            step()

    def steps(self, epochs: float) -> int | None:
        count = getattr(self.task, "finetune_steps", None)
        return int(count(epochs)) if callable(count) else None


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

    Channel pruning is physical. A pruning criterion that needs the task (activations, a sparsity-training
    phase, gradients) runs its `prepare` phase on the trained model first, pausing at the gate between its
    training steps; with the ``admm`` criterion the first `STRUCTURED_ADMM_SHARE` of the fine-tuning trains by
    ADMM towards the channel sparsity before the channels are removed. The fine-tuning realises each layer's
    ``weight_sparsity`` through the policy's unstructured pruner; ``weight_sparsity`` (measured zeros in
    conv/linear weights of the deployed model) and ``sparse_bytes`` (bitmask storage, see `count_sparse_bytes`)
    report it. Zeros do not make dense kernels faster: latency is measured as it runs.

    A quantizer that trains (QAT, DoReFa, BNN, LSQ) is prepared before fine-tuning, so the fine-tune epochs
    are quantization-aware; calibration-only quantizers run after it. A policy that neither prunes nor trains
    a quantizer is not fine-tuned (``finetune_epochs`` reports 0): its float weights are the trained ones, and
    more training would mix extra training (or, for a distillation task such as MiniLM's, drift: 1 epoch cost
    ~0.006 cosine there) into what compression is measured to cost. ``latency_int8_kernel`` is 1 when a
    layer is below 8 bits: it runs on int8 kernels, so the latency is that of int8, not of its bit-width.

    Latency is measured interleaved with the baseline in this process, inside `gate.measuring()` so that no
    other trial's work shares the measured cores, on `measurement_clock`; ``speedup`` is therefore a same-run
    ratio.
    """
    gate = gate or Gate()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with gate.computing():
        task = cached_task(task_ref)
        base = _baseline(task_ref)
        x1, x32 = task.example_input(1), task.example_input(32)
        trainer = TaskTrainer(task, seed, gate)
        with torch_threads(train_threads or torch.get_num_threads()):
            model = task.baseline_model()
            admm_epochs = structured_admm(model, policy, x1, trainer, finetune_epochs)
            if any(s.channel_sparsity > 0 for _, s in policy):
                criterion = prepare_criterion(policy.criterion, model, task, finetune_epochs, gate.checkpoint)
                model = prune(model, policy, x1, importance=criterion)
            layer_macs, params = count_macs(model, x1), count_params(model)
            packed_bytes = count_packed_bytes(model, policy)
            trains_quantizer = needs_training(policy)
            if trains_quantizer:
                model = prepare_quantization(model, policy, x1)
            gate.checkpoint()
            tuned = finetune_epochs if policy.prunes or trains_quantizer else 0.0
            if tuned:
                sparse_finetune(model, policy, trainer, tuned - admm_epochs)
            deployed = quantize(model, policy, x1, task.calibration_batches())
            weight_sparsity = count_weight_sparsity(deployed)
            sparse_bytes = count_sparse_bytes(deployed, policy, packed_bytes)
            gate.checkpoint()
            script = to_torchscript(deployed, x1)
            gate.checkpoint()
            accuracy = task.evaluate(script, SELECTION_SPLIT)
        artefact = serialize(script)
    timing: dict[str, Any] = dict(
        threads=measure["threads"],
        warmup=measure["warmup"],
        repeats=measure["repeats"],
        clock=measurement_clock(measure["threads"]),
    )
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
        "weight_sparsity": weight_sparsity,
        "sparse_bytes": float(sparse_bytes),
        "latency_int8_kernel": float(latency_basis(policy) == "int8-kernel"),
        "bops": float(count_bops(layer_macs, policy)),
        "finetune_epochs": float(tuned),
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
    }
    return TrialResult(metrics, artefact, worker_id(), [(0, "accuracy", accuracy)])


def measurement_clock(threads: int) -> Callable[[], float]:
    """The clock latency is read on: with one thread every op runs on the measuring thread, so its CPU time
    (`time.thread_time`) is the latency without the time it sat preempted; on a machine shared with other
    work, wall time inflates the longer (baseline) calls more and so overstates speedups. With several
    threads the work is spread over a pool and only wall time sees all of it."""
    return time.thread_time if threads == 1 else time.perf_counter


def baseline_metrics(task_ref: str, measure: dict[str, int]) -> dict[str, float]:
    """The uncompressed model measured the same way as every trial (identity policy, no fine-tune)."""
    result = run_trial(task_ref, Policy(()), 0.0, measure=measure)
    metrics = dict(result.metrics)
    metrics["size_bytes"] = float(_baseline(task_ref).size_bytes)
    return metrics


def evaluate_test(task_ref: str, artefact: str | os.PathLike[str] | None) -> float:
    """The test-split metric of a finished trial's stored artefact (None: the uncompressed baseline), read
    once the search has chosen (the final Pareto front, the exported trial); never during the search."""
    model = _baseline(task_ref).script if artefact is None else torch.jit.load(str(artefact))
    return cached_task(task_ref).evaluate(model, "test")
