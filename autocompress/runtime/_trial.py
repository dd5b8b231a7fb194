"""`run_trial`: one candidate, start to end, in whatever process runs it (inline or a Ray worker).

Pure with respect to the store: it returns a `TrialResult` (metrics and the artefact's bytes) and never
opens the database, so a worker on another node needs only the task's import path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress._inputs import ModelInputs, call_model
from autocompress.compress import (
    ChannelPruning,
    RewindPoint,
    copy_for_lowering,
    latency_basis,
    make_criterion,
    needs_training,
    out_widths,
    prepare_criterion,
    prepare_quantization,
    prune_to_widths,
    quantize,
    sparse_finetune,
    structured_admm,
)
from autocompress.deploy import Artefact, LoweringError, get_runtime, lower_all
from autocompress.errors import UserError
from autocompress.measure import (
    build_latency_table,
    compare_latency,
    count_bops,
    count_macs,
    count_packed_bytes,
    count_params,
    count_sparse_bytes,
    count_weight_sparsity,
    cpu_model,
    torch_threads,
)
from autocompress.space import LatencyTable, Policy, Space
from autocompress.task import FinetunePart, Task, cache_dir, checked_metric, load_task, write_atomic


@dataclass(frozen=True)
class TrialResult:
    """What a finished trial returns: metrics by the names of DESIGN.md (numbers, and the names of the runtimes
    the figures come from) and the deployable artefacts: the one of each runtime a figure ships on. `weights`:
    the fine-tuned model before quantization (`save_weights`), when the trial was asked to keep them."""

    metrics: dict[str, Any]
    artefacts: tuple[Artefact, ...] = ()
    worker: str = ""
    intermediate: list[tuple[int, str, float]] = field(default_factory=list)
    weights: bytes | None = None


#: what a promoted trial's ``parent_weights`` metric says: it went on from them, or why it fine-tuned from the
#: baseline (the parent's weights file is gone, has other bytes than stored, or does not fit the model)
PARENT_LOADED, PARENT_MISSING, PARENT_DAMAGED, PARENT_INCOMPATIBLE = "loaded", "missing", "damaged", "incompatible"


@dataclass(frozen=True)
class Continuation:
    """Where a trial that goes on from an earlier one starts: the fine-tuned weights of that parent trial
    (`save_weights` bytes; None when they cannot be had, `problem` says why) after `epochs` epochs of
    fine-tuning. `policy` is the parent's policy when it is not the trial's own (None: the same policy, an ASHA
    promotion): the trial then removes from the parent's model the channels its own policy prunes beyond it.
    `seed`: the seed the parent's fine-tune drew its batches with, when it was a stretch of a longer fine-tune
    (its ``finetune_seed`` metric), so that the trial goes on drawing the same fine-tune's batches.
    `timings`: the parent's interleaved timings (`timings_of` its metrics) when its policy is the trial's own: the
    same policy lowers to the same network, whose speed its weights do not change (zeros do not speed dense
    kernels), so the trial reuses them instead of timing it again (``latency_reused``). Timed again, one
    MNIST ResNet-18 came out 2.69x, 3.20x and 2.47x at three ASHA rungs against a 2.5x target."""

    epochs: float
    weights: bytes | None
    problem: str = ""
    policy: Policy | None = None
    seed: int | None = None
    timings: dict[str, dict[str, float]] | None = None


def save_weights(model: torch.nn.Module) -> bytes:
    """The model's state dict as safetensors bytes (tensors only; each copied, so none share storage)."""
    from safetensors.torch import save

    state = model.state_dict()
    return save({k: v.detach().clone().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)})


def load_weights(model: torch.nn.Module, data: bytes) -> bool:
    """Load `save_weights` bytes into `model` in place; False when they do not fit it (names or shapes differ,
    or the bytes are no safetensors file): the model may then be partly overwritten, and is to be discarded."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        model.load_state_dict(load(data), strict=True)
    except (RuntimeError, SafetensorError):
        return False
    return True


#: the split trials are evaluated, ranked and constrained on; the test split is read only after the search
#: (`evaluate_test`) and by export
SELECTION_SPLIT = "val"


@dataclass
class _Baseline:
    accuracy: float
    macs: int
    params: int
    #: the float model lowered to each runtime, by runtime name
    artefacts: dict[str, Artefact]


@lru_cache(maxsize=4)
def cached_task(task_ref: str) -> Task:
    return load_task(task_ref)


#: runtimes of a `measure` setting that names none (studies stored before deploy targets existed)
LEGACY_RUNTIMES = ("torchscript",)


@lru_cache(maxsize=4)
def _baseline(task_ref: str, runtimes: tuple[str, ...]) -> _Baseline:
    """The task's float model, its accuracy (as PyTorch runs it) and its artefact on each runtime, once per
    process; a runtime that cannot lower or compile the float model raises `LoweringError`."""
    task = cached_task(task_ref)
    model = task.baseline_model()
    x1 = task.example_input(1)
    artefacts, unsupported = lower_all([get_runtime(name) for name in runtimes], model, Policy(()), x1, ())
    if unsupported:
        raise next(iter(unsupported.values()))
    accuracy = checked_metric(task, SELECTION_SPLIT, task.evaluate(model, SELECTION_SPLIT))
    return _Baseline(accuracy, sum(count_macs(model, x1).values()), count_params(model), artefacts)


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


@dataclass
class TaskTrainer:
    """The task's fine-tuning as a pruner's `autocompress.compress.Trainer`, pausing at steps for the gate.

    A task whose ``finetune`` takes no ``on_step`` gets the pruner's step once, after training: masks then
    hold only at the end, and schedules over steps (agp) refuse to run without ``finetune_steps``.
    After training, the batch norms' running statistics are re-estimated on the task's calibration batches
    (`recalibrate_batch_norm`): a short fine-tune of a pruned model moves its activations further than a small
    momentum lets the running averages follow.
    `taken` counts the optimisation steps trained so far (None for a task without ``on_step``: not counted).
    `rewind` builds the `rewind_point` (a trial sets it to `rewind_point` of its compressed model; by default
    the model as the pruner is given it).
    `part`: set when this trial's training is a stretch of one longer fine-tune (an ASHA rung, `FinetunePart`), and
    only for a task whose ``finetune`` accepts ``part`` (`takes_part`; others train each call as a fine-tune of its
    own); each `train` call then trains the next stretch of it.
    """

    task: Task
    seed: int
    gate: Gate
    part: FinetunePart | None = None
    taken: int | None = field(default=0, init=False)
    rewind: Callable[[], RewindPoint] = field(
        default=functools.partial(RewindPoint, None, "the weights it was given (no rewind point was set)"), init=False
    )

    def train(self, model: torch.nn.Module, epochs: float, on_step: Callable[[], None]) -> None:
        if epochs <= 0:
            return

        def step() -> None:
            on_step()
            self.gate.checkpoint()

        def counted_step() -> None:
            self.taken = (self.taken or 0) + 1
            step()

        if self.part is not None:
            part, self.part = self.part, replace(self.part, after=self.part.after + epochs)
            self.task.finetune(model, epochs, seed=self.seed, on_step=counted_step, part=part)  # type: ignore[call-arg]
        elif "on_step" in inspect.signature(self.task.finetune).parameters:
            self.task.finetune(model, epochs, seed=self.seed, on_step=counted_step)  # type: ignore[call-arg]
        else:
            self.taken = None
            self.task.finetune(model, epochs, seed=self.seed)
            step()
        recalibrate_batch_norm(model, self.task.calibration_batches())

    def steps(self, epochs: float) -> int | None:
        count = getattr(self.task, "finetune_steps", None)
        return int(count(epochs)) if callable(count) else None

    def rewind_point(self) -> RewindPoint:
        return self.rewind()


def takes_part(task: Task) -> bool:
    """Whether the task's ``finetune`` can train a stretch of a longer fine-tune (``part``, with ``on_step``)."""
    return {"part", "on_step"} <= inspect.signature(task.finetune).parameters.keys()


def recalibrate_batch_norm(model: nn.Module, batches: Iterable[ModelInputs]) -> None:
    """Replace the running statistics of every batch norm of `model` that tracks them by their plain average
    over `batches` (forward passes without gradients, every other module in eval mode); nothing changes
    without a batch. Each module's train/eval mode and each batch norm's momentum are restored.

    Why: a batch norm's running averages follow its input at its ``momentum`` per training step, and
    torchvision's MobileNetV3 uses 0.01, so the 43 steps of a trial's fine-tune moved them only 35 % of the way
    to the pruned, fine-tuned model's statistics: evaluated with them, MNIST MobileNetV3-Small pruned by a
    quarter fell to 18 % accuracy where the same weights score 83 % with re-estimated ones (the adaptive batch
    norm of Li et al. 2020, EagleEye)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    inputs = list(batches) if norms else []
    if not inputs:
        return
    modes = {module: module.training for module in model.modules()}
    momenta = [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    try:
        with torch.no_grad():
            for batch in inputs:
                call_model(model, batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in modes.items():
            module.training = training


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


@dataclass(frozen=True)
class _Compressed:
    """What fine-tuning starts from, with the counts of the pruned float model."""

    model: torch.nn.Module
    layer_macs: dict[str, int]
    params: int
    packed_bytes: int
    #: epochs of the fine-tune budget already spent by structured ADMM
    admm_epochs: float
    #: the channel pruning applied to the model (None when the policy removes no channel)
    pruning: ChannelPruning | None


def _compress(
    task: Task, policy: Policy, x1: Any, trainer: TaskTrainer, epochs: float, gate: Gate, *, shape_only: bool
) -> _Compressed:
    """The trained model with the policy's channels physically removed and, for a quantizer that trains,
    prepared for it.

    A pruning criterion that needs the task runs its `prepare` phase first; with ``admm`` the first
    `STRUCTURED_ADMM_SHARE` of `epochs` trains towards the channel sparsity. With `shape_only` (a continuation,
    whose weights are loaded over these) neither runs and channels are chosen by l1 magnitude: how many each
    layer keeps follows the policy alone, so the shapes are those of any criterion."""
    model = task.baseline_model()
    pruning = None
    if any(s.channel_sparsity > 0 for _, s in policy):
        # the criterion's prepare phase and structured ADMM never both act (ADMM's criterion prepares
        # nothing); the pruner's dependency graph is the trial's one graph of the unpruned model
        criterion = (
            make_criterion("l1")
            if shape_only
            else prepare_criterion(policy.criterion, model, task, epochs, gate.checkpoint)
        )
        pruning = ChannelPruning(model, policy, x1, importance=criterion)
    graph = pruning.graph if pruning and policy.criterion == "admm" else None
    admm_epochs = 0.0 if shape_only else structured_admm(model, policy, x1, trainer, epochs, graph)
    if pruning:
        model = pruning.apply()
    layer_macs, params, packed_bytes = count_macs(model, x1), count_params(model), count_packed_bytes(model, policy)
    if needs_training(policy):
        model = prepare_quantization(model, policy, x1)
    return _Compressed(model, layer_macs, params, packed_bytes, admm_epochs, pruning)


def _continued(
    task: Task, policy: Policy, start: Continuation, x1: Any, trainer: TaskTrainer, epochs: float, gate: Gate
) -> _Compressed | None:
    """The parent trial's fine-tuned model (`start`) as this trial goes on from it, or None when its weights do not
    fit (the trial then starts from the baseline).

    With the parent's own policy (``start.policy`` None) the model is pruned to the policy's shape and the weights
    loaded. With another policy, the parent's model is rebuilt (its policy's shape, its weights) and each layer
    loses the channels this policy removes beyond the parent's, chosen by the policy's criterion on the parent's
    weights (prepared with `epochs`, the fine-tune this trial adds; no structured ADMM). That fits only when the
    result has exactly the shapes this policy gives the baseline (every layer pruned at least as much as in the
    parent; attention heads and FFN width, whose counts round per module, are checked the same way) and neither
    policy trains a quantizer (the parent's weights would hold its fake-quantized modules)."""
    target = _compress(task, policy, x1, trainer, 0.0, gate, shape_only=True)
    if start.policy is None:
        return target if load_weights(target.model, start.weights or b"") else None
    if needs_training(policy) or needs_training(start.policy):
        return None
    parent = _compress(task, start.policy, x1, trainer, 0.0, gate, shape_only=True)
    if not load_weights(parent.model, start.weights or b""):
        return None
    criterion = prepare_criterion(policy.criterion, parent.model, task, epochs, gate.checkpoint)
    try:
        model = prune_to_widths(parent.model, policy, out_widths(target.model, policy), x1, criterion)
    except ValueError:  # the parent pruned a layer more than this policy does
        return None
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    if shapes != {name: tuple(value.shape) for name, value in target.model.state_dict().items()}:
        return None
    return replace(target, model=model)


def rewind_point(task: Task, policy: Policy, x1: Any, compressed: _Compressed) -> RewindPoint:
    """Where a pruner that rewinds takes `compressed`'s model back to: the task's early checkpoint
    (`autocompress.task.EarlyCheckpoint`) with the same channels removed (`ChannelPruning.replay`) and the same
    quantization prepared, labelled ``early (step K of N)``; or, labelled ``trained baseline (why)``, the model
    as compressed, when the task keeps none or it cannot be made to fit (names or shapes differ)."""
    offered = getattr(task, "early_checkpoint", None)
    checkpoint = offered() if callable(offered) else None
    if checkpoint is None:
        return RewindPoint(None, "trained baseline (the task keeps no early checkpoint)")
    model = task.baseline_model()
    try:
        model.load_state_dict(checkpoint.state)
        if compressed.pruning is not None:
            model = compressed.pruning.replay(model)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return RewindPoint(None, f"trained baseline (the early checkpoint cannot be pruned the same way: {reason})")
    if needs_training(policy):
        model = prepare_quantization(model, policy, x1)
    state = model.state_dict()
    shapes = {name: getattr(value, "shape", None) for name, value in state.items()}
    if shapes != {name: getattr(value, "shape", None) for name, value in compressed.model.state_dict().items()}:
        return RewindPoint(None, "trained baseline (the early checkpoint, pruned the same way, has other shapes)")
    return RewindPoint(state, f"early (step {checkpoint.step} of {checkpoint.steps})")


def run_trial(
    task_ref: str,
    policy: Policy,
    finetune_epochs: float,
    *,
    measure: dict[str, Any],
    seed: int = 0,
    train_threads: int | None = None,
    gate: Gate | None = None,
    continue_from: Continuation | None = None,
    keep_weights: bool = False,
    schedule_epochs: float | None = None,
) -> TrialResult:
    """Prune, fine-tune, quantize, lower to every runtime of ``measure["runtimes"]``, then evaluate and
    measure what each runtime runs.

    A trial that goes on from an earlier one (an ASHA promotion, a NetAdapt candidate) passes `continue_from`, its
    parent's fine-tuned weights after ``epochs``: for the same policy the model is pruned to the same shape
    (channel counts follow the policy alone, so no criterion is prepared and no ADMM runs), quantizers that train
    are prepared and the weights are loaded; for a policy that prunes further, the parent's model loses the
    channels beyond it (`_continued`). Fine-tuning goes on for the extra ``finetune_epochs - epochs`` only (a
    fresh optimiser and learning-rate schedule over those epochs; the pruner realises the weight sparsity over
    them again). ``parent_weights`` says whether
    it did (`PARENT_LOADED`) or why it fine-tuned from the baseline for all ``finetune_epochs`` instead;
    ``continued_epochs`` is ``epochs`` or 0. `keep_weights` returns the fine-tuned model before quantization
    (`save_weights`) in `TrialResult.weights`, for a trial that may be promoted. With `schedule_epochs` the
    trial's fine-tune is the stretch of one fine-tune of that many epochs after the epochs it goes on from (an
    ASHA rung: `autocompress.task.FinetunePart`, for a task whose ``finetune`` takes ``part``; others ignore it),
    drawing the batches of its chain's first trial (``finetune_seed``, reported). ``finetune_epochs`` is the
    epochs the final weights have been fine-tuned in total; ``finetune_steps`` the optimiser steps taken in
    this trial (for a task whose ``finetune`` takes ``on_step``).

    Channel pruning is physical. A pruning criterion that needs the task (activations, a sparsity-training
    phase, gradients) runs its `prepare` phase on the trained model first, pausing at the gate between its
    training steps; with the ``admm`` criterion the first `STRUCTURED_ADMM_SHARE` of the fine-tuning trains by
    ADMM towards the channel sparsity before the channels are removed. The fine-tuning realises each layer's
    ``weight_sparsity`` through the policy's unstructured pruner; ``weight_sparsity`` (measured zeros in
    conv/linear weights of the deployed model) and ``sparse_bytes`` (bitmask storage, see `count_sparse_bytes`)
    report it. Zeros do not make dense kernels faster: latency is measured as it runs. A pruner that rewinds
    (``lottery``) rewinds to the task's early checkpoint pruned and prepared like the trial's model
    (`rewind_point`), and ``rewound_to`` names where it went: ``early (step K of N)``, ``trained baseline
    (why)``, or the parent trial's weights in a continued trial (its budget is only the extra epochs).

    A quantizer that trains (QAT, DoReFa, BNN, LSQ) is prepared before fine-tuning, so the fine-tune epochs
    are quantization-aware; calibration-only quantizers run after it. A policy that neither prunes nor trains
    a quantizer is not fine-tuned (``finetune_epochs`` reports 0): its float weights are the trained ones, and
    more training would mix extra training (or, for a distillation task such as MiniLM's, drift: 1 epoch cost
    ~0.006 cosine there) into what compression is measured to cost. ``latency_int8_kernel`` is 1 when a
    layer is below 8 bits: it runs on int8 kernels, so the latency is that of int8, not of its bit-width.

    Latency is measured interleaved with the baseline in this process, inside `gate.measuring()` so that no
    other trial's work shares the measured cores, on `measurement_clock`: the float baseline and the candidate
    on each runtime in turn, freshly loaded, at batch 1 and 32 (``latency_ms@RUNTIME``,
    ``baseline_latency_ms@RUNTIME``, ``speedup@RUNTIME`` and the ``_b32`` ones; `measure_runtimes`). A trial that
    goes on from a parent of its own policy takes the parent's timings instead (`Continuation.timings`,
    ``latency_reused``): the same network, timed once.
    The trial ships on one runtime, ``runtime`` (`shipping_runtime`): the fastest at ``measure``'s
    ``serving_batch`` (1 or 32, `Space.shipping`) among those whose artefact keeps the accuracy budget
    (``max_accuracy_drop``, when given), else the fastest. ``latency_ms`` (and ``_b32``) is the candidate on
    it, and ``speedup`` divides the baseline's latency on *its* fastest runtime (``baseline_runtime``) by it, a
    same-process ratio (`honest_figures`); ``accuracy`` and ``size_bytes`` are of the artefact on it, run by
    the runtime (``accuracy@RUNTIME`` for each); its files are the trial's artefacts. A runtime that cannot
    lower the candidate is left out of the trial (``unsupported@RUNTIME`` is 1); the trial fails when none can.
    """
    gate = gate or Gate()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with gate.computing():
        task = cached_task(task_ref)
        runtimes = tuple(measure.get("runtimes") or LEGACY_RUNTIMES)
        base = _baseline(task_ref, runtimes)
        x1, x32 = task.example_input(1), task.example_input(32)
        part_of = schedule_epochs if takes_part(task) else None  # the fine-tune this trial is a stretch of
        batches_seed = seed  # a stretch of a longer fine-tune draws that fine-tune's batches
        if part_of is not None and continue_from is not None and continue_from.seed is not None:
            batches_seed = continue_from.seed
        trainer = TaskTrainer(task, batches_seed, gate)
        with torch_threads(train_threads or torch.get_num_threads()):
            trains_quantizer = needs_training(policy)
            tuned = finetune_epochs if policy.prunes or trains_quantizer else 0.0
            continuation: dict[str, Any] = {}
            compressed = None
            if continue_from is not None and tuned:
                continuation = {"parent_weights": continue_from.problem or PARENT_LOADED, "continued_epochs": 0.0}
                if continue_from.weights is not None:
                    step = finetune_epochs - continue_from.epochs
                    compressed = _continued(task, policy, continue_from, x1, trainer, step, gate)
                    if compressed is None:
                        continuation["parent_weights"] = PARENT_INCOMPATIBLE
                    else:
                        continuation["continued_epochs"] = continue_from.epochs
            if part_of is not None:
                trainer.part = FinetunePart(continuation.get("continued_epochs", 0.0), part_of)
            if compressed is None:
                compressed = _compress(task, policy, x1, trainer, finetune_epochs, gate, shape_only=False)
            model = compressed.model
            trainer.rewind = (
                functools.partial(RewindPoint, None, "the parent trial's weights (a continued trial goes on from them)")
                if continuation.get("continued_epochs")
                else functools.partial(rewind_point, task, policy, x1, compressed)
            )
            gate.checkpoint()
            pruner_metrics: dict[str, Any] = {}
            if tuned:
                extra = tuned - compressed.admm_epochs - continuation.get("continued_epochs", 0.0)
                pruner = sparse_finetune(model, policy, trainer, extra)
                pruner_metrics = pruner.metrics() if pruner is not None else {}
            weights = save_weights(model) if keep_weights and tuned else None
            counted = copy_for_lowering(model) if trains_quantizer else model  # lowering needs it too
            deployed = quantize(counted, policy, x1, task.calibration_batches())
            weight_sparsity = count_weight_sparsity(deployed)
            sparse_bytes = count_sparse_bytes(deployed, policy, compressed.packed_bytes)
            gate.checkpoint()
            runners = [get_runtime(name) for name in runtimes]
            artefacts, unsupported = lower_all(runners, model, policy, x1, task.calibration_batches())
            gate.checkpoint()
            if not artefacts:
                raise LoweringError("policy", "no runtime can run it: " + "; ".join(map(str, unsupported.values())))
            # each runtime's session is released once evaluated (a session holds a copy of the weights)
            accuracies = {
                name: task.evaluate(get_runtime(name).load(art, measure["threads"]), SELECTION_SPLIT)
                for name, art in artefacts.items()
            }
    timing: dict[str, Any] = dict(
        threads=measure["threads"],
        warmup=measure["warmup"],
        repeats=measure["repeats"],
        clock=measurement_clock(measure["threads"]),
    )
    reused = continue_from.timings if continue_from is not None else None
    if reused is None or {k for k in reused.get("", {}) if k.startswith("cand@")} != {f"cand@{n}" for n in artefacts}:
        reused = None  # a parent timed on other runtimes than this trial runs on: timed afresh
    latencies = reused or measure_runtimes(base.artefacts, artefacts, {"": x1, "_b32": x32}, timing, gate)
    budget = measure.get("max_accuracy_drop")
    runtime = shipping_runtime(
        latencies["_b32" if measure.get("serving_batch") == 32 else ""],
        accuracies,
        None if budget is None else base.accuracy - budget,
    )
    metrics: dict[str, Any] = honest_figures(latencies, runtime)
    accuracy = accuracies[runtime]
    metrics.update({f"accuracy@{name}": value for name, value in accuracies.items()})
    metrics.update({f"unsupported@{name}": 1.0 for name in unsupported})
    metrics.update(
        {
            "accuracy": accuracy,
            "accuracy_drop": base.accuracy - accuracy,
            "macs": float(sum(compressed.layer_macs.values())),
            "params": float(compressed.params),
            "size_bytes": float(artefacts[runtime].size_bytes),
            "packed_bytes": float(compressed.packed_bytes),
            "weight_sparsity": weight_sparsity,
            "sparse_bytes": float(sparse_bytes),
            "latency_int8_kernel": float(latency_basis(policy) == "int8-kernel"),
            "bops": float(count_bops(compressed.layer_macs, policy)),
            "finetune_epochs": float(tuned),
            **({"latency_reused": 1.0} if reused else {}),
            **continuation,
            **pruner_metrics,
            **({"finetune_steps": float(trainer.taken)} if trainer.taken is not None else {}),
            **({"finetune_seed": float(trainer.seed)} if part_of is not None else {}),
            "wall_s": time.perf_counter() - start_wall,
            "cpu_s": time.process_time() - start_cpu,
        }
    )
    return TrialResult(metrics, (artefacts[runtime],), worker_id(), [(0, "accuracy", accuracy)], weights)


def measure_runtimes(
    baseline: dict[str, Artefact],
    candidate: dict[str, Artefact],
    inputs: dict[str, Any],
    timing: dict[str, Any],
    gate: Gate,
) -> dict[str, dict[str, float]]:
    """Latency of the float baseline on each runtime of `baseline` (also those the candidate cannot run on: its
    fastest float runtime) and of the candidate on each of `candidate`, at each batch of `inputs` (metric
    suffix to example input): ``{suffix: {"base@RUNTIME" or "cand@RUNTIME": ms}}`` for `honest_figures`.

    One runtime at a time, one batch size at a time: the baseline and the candidate on that runtime are loaded
    fresh (as a server that loads the files has), timed interleaved by `compare_latency` inside
    `gate.measuring()`, and released before the next pair is loaded. Holding every runtime's sessions for both
    batch sizes at once took vit_b_16 (86 M parameters, OpenVINO and ONNX Runtime) to 5.9 GB, 17x its float
    weights, and vit_l_16 past 17 GB: each session holds its own copy of the weights."""
    latencies: dict[str, dict[str, float]] = {suffix: {} for suffix in inputs}
    for name in dict.fromkeys([*baseline, *candidate]):
        runtime = get_runtime(name)
        pair = {
            f"{role}@{name}": files[name] for role, files in (("base", baseline), ("cand", candidate)) if name in files
        }
        for suffix, example in inputs.items():
            with gate.computing():
                models = {key: runtime.load(artefact, timing["threads"]) for key, artefact in pair.items()}
            with gate.measuring():
                latencies[suffix].update(compare_latency(models, example, **timing))
            del models  # released before the next pair is loaded, not when the name is bound again
    return latencies


def shipping_runtime(latencies: dict[str, float], accuracies: dict[str, float], floor: float | None) -> str:
    """The one runtime a trial ships on: of the runtimes that ran the candidate (`accuracies`, validation
    accuracy by runtime), the fastest at the serving batch (`latencies`: ``{"cand@RUNTIME": ms, ...}`` at that
    batch) among those at or above the accuracy `floor` (baseline accuracy minus the budget), else the fastest.

    Runtimes lower the same policy differently (MiniLM's int8 Linears: ONNX Runtime's dynamic quantization kept
    0.9925 cosine where TorchScript's kept 0.9722), so the fastest artefact is not always the one a user with an
    accuracy budget ships; and a study judged at batch 32 ships what is fastest at 32, not at 1."""
    cand = {name: latencies[f"cand@{name}"] for name in accuracies}
    within = [name for name in cand if floor is None or accuracies[name] >= floor]
    return min(within or cand, key=cand.__getitem__)


def honest_figures(latencies: dict[str, dict[str, float]], runtime: str) -> dict[str, Any]:
    """Latency metrics from interleaved timings (``{"" or "_b32": {"base@RUNTIME" or "cand@RUNTIME": ms}}``) of a
    candidate that ships on `runtime` (`shipping_runtime`): per runtime (the baseline on every runtime, the
    candidate on those it runs on), and the honest figures at each batch: ``latency_ms{suffix}`` is the
    candidate on `runtime` (``runtime{suffix}``, the same at both batches: what ships is one file),
    ``baseline_latency_ms{suffix}`` the float baseline on its own fastest runtime at that batch
    (``baseline_runtime{suffix}``), and ``speedup{suffix}`` their ratio."""
    metrics: dict[str, Any] = {}
    for suffix, times in latencies.items():
        base = {key.removeprefix("base@"): ms for key, ms in times.items() if key.startswith("base@")}
        cand = {key.removeprefix("cand@"): ms for key, ms in times.items() if key.startswith("cand@")}
        for name in base:
            metrics[f"baseline_latency_ms{suffix}@{name}"] = base[name]
        for name in cand:
            metrics[f"latency_ms{suffix}@{name}"] = cand[name]
            metrics[f"speedup{suffix}@{name}"] = base[name] / cand[name]
        fastest_base = min(base, key=base.__getitem__)
        metrics[f"runtime{suffix}"] = runtime
        metrics[f"baseline_runtime{suffix}"] = fastest_base
        metrics[f"latency_ms{suffix}"] = cand[runtime]
        metrics[f"baseline_latency_ms{suffix}"] = base[fastest_base]
        metrics[f"speedup{suffix}"] = base[fastest_base] / cand[runtime]
    return metrics


def timings_of(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The interleaved timings a trial's metrics were figured from (`honest_figures`' per-runtime metrics read
    back into `measure_runtimes`' form), for a later trial of the same network to reuse (`Continuation`)."""
    timings: dict[str, dict[str, float]] = {}
    for key, ms in metrics.items():
        for prefix, role in (("baseline_latency_ms", "base"), ("latency_ms", "cand")):
            if key.startswith(prefix) and "@" in key:
                suffix, runtime = key.removeprefix(prefix).split("@", 1)
                timings.setdefault(suffix, {})[f"{role}@{runtime}"] = float(ms)
    return timings


def measurement_clock(threads: int) -> Callable[[], float]:
    """The clock latency is read on: with one thread every op runs on the measuring thread, so its CPU time
    (`time.thread_time`) is the latency without the time it sat preempted; on a machine shared with other
    work, wall time inflates the longer (baseline) calls more and so overstates speedups. With several
    threads the work is spread over a pool and only wall time sees all of it."""
    return time.thread_time if threads == 1 else time.perf_counter


def baseline_metrics(task_ref: str, measure: dict[str, Any]) -> dict[str, Any]:
    """The uncompressed model measured the same way as every trial (identity policy, no fine-tune).

    It lowers the float model to every runtime first: a runtime that cannot is bad input, raised here as
    `UserError` before any trial runs."""
    runtimes = tuple(measure.get("runtimes") or LEGACY_RUNTIMES)
    try:
        _baseline(task_ref, runtimes)
    except LoweringError as exc:
        raise UserError(f"measure.runtimes: {exc.where}", f"the task's float model: {exc.message}") from None
    return dict(run_trial(task_ref, Policy(()), 0.0, measure=measure).metrics)


def measure_latency_table(space: Space) -> LatencyTable:
    """The study's `LatencyTable`: each layer of the task's float model alone, lowered as trials lower (the
    space's quantizer; the QDQ file built once for the ONNX runtimes) to every runtime of ``space.measure`` that
    can run it, timed as trials are timed.

    Measured once per machine and kept in `latency_table_dir`, keyed by what the table depends on
    (`latency_table_key`): a later study of the same layers, bit-widths, runtimes and timing on this CPU reads it
    instead of measuring again (on an MNIST ResNet-50 that took 9-13 CPU-minutes a study). Delete the file to
    measure afresh: a table measured while other work loaded the machine is read back as it was measured."""
    runtimes = tuple(space.measure.get("runtimes") or LEGACY_RUNTIMES)
    cached = latency_table_dir() / f"{latency_table_key(space, runtimes)}.json"
    try:
        return LatencyTable.from_dict(json.loads(cached.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or a damaged file: measured again
        pass
    table = _build_latency_table(space, runtimes)
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cached, json.dumps(table.to_dict()).encode())  # a concurrent study reads a whole table or none
    return table


def latency_table_dir() -> Path:
    """Where measured latency tables are kept: ``$AUTOCOMPRESS_LATENCY_TABLES``, default ``latency-tables/`` in
    `autocompress.task.cache_dir`. The test suite points it at a folder of its own, so no table one run measured
    under load steers a later run's searches."""
    folder = os.environ.get("AUTOCOMPRESS_LATENCY_TABLES")
    return Path(folder) if folder else cache_dir() / "latency-tables"


def latency_table_key(space: Space, runtimes: tuple[str, ...]) -> str:
    """A digest of everything a latency table depends on: the task and its layers (their shapes and choices of
    bit-width), quantizer, timing settings, the runtimes and their versions, torch, this CPU, and the source of
    this package (a change to lowering or measuring makes a new table)."""
    names = sorted(set(space.layer_info) & set(space.layers))
    facts = {
        "task": space.task,
        "layers": {name: [space.layer_info[name], list(space.layers[name].weight_bits)] for name in names},
        "quantizer": [space.quantizer, space.per_channel],
        "timing": {key: space.measure.get(key) for key in ("threads", "warmup", "repeats")},
        "runtimes": {name: get_runtime(name).version() for name in runtimes},
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "source": _package_digest(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:24]


@functools.cache
def _package_digest() -> str:
    """sha256 of this package's Python source files."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _build_latency_table(space: Space, runtimes: tuple[str, ...]) -> LatencyTable:
    task = cached_task(space.task)
    threads = space.measure["threads"]

    def compile_(module: torch.nn.Module, policy: Policy, x: torch.Tensor) -> dict[str, Callable[..., Any]]:
        if needs_training(policy):  # lowered as a trial lowers it: the prepared model, here untrained
            module = prepare_quantization(module, policy, x)
        artefacts, _ = lower_all([get_runtime(n) for n in runtimes], module, policy, x, [x])
        return {name: get_runtime(name).load(artefact, threads) for name, artefact in artefacts.items()}

    with torch_threads(threads):
        return build_latency_table(
            task.baseline_model(),
            task.example_input(1),
            space,
            runtimes,
            compile_,
            threads=threads,
            warmup=space.measure["warmup"],
            repeats=space.measure["repeats"],
            clock=measurement_clock(threads),
        )


def evaluate_test(task_ref: str, runtime: str | None = None, files: dict[str, bytes] | None = None) -> float:
    """The test-split metric of a finished trial's shipped model (its `runtime` and the files stored for it;
    none: the uncompressed PyTorch baseline), read once the search has chosen (the final Pareto front, the
    exported trial); never during the search."""
    task = cached_task(task_ref)
    if runtime is None or files is None:
        return task.evaluate(task.baseline_model(), "test")
    return task.evaluate(get_runtime(runtime).load(Artefact(runtime, files)), "test")
