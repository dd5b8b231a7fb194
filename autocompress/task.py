"""The `Task`: what the user brings (a trained model, its data and how to judge it).

Tasks are referenced by import path (``experiments.tasks.digits:task``) so that a Ray worker on another node can
rebuild the same task from the string alone. `SupervisedTask` implements the protocol for the common case of
an in-memory classification data set and caches the trained baseline on disk.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import io
import math
import numbers
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from autocompress._inputs import ModelInputs, take
from autocompress.errors import UserError


@runtime_checkable
class Task(Protocol):
    """What a worker needs to compress and judge a model.

    `baseline_model` returns a fresh copy of the trained float model each call (callers mutate it).
    `evaluate` returns the task metric on a split, higher is better (accuracy, or cosine fidelity).
    `finetune` trains a (compressed) model in place for a number of epochs on the training split; it may
    accept ``on_step``, a callable to call after every optimisation step (the runtime uses it to pause training
    while another trial measures latency, and pruners to hold masks or take ADMM steps); a task may also
    offer ``finetune_steps(epochs)``, the number of optimisation steps ``finetune`` takes (schedules over
    steps, such as the ``agp`` pruner's, need it).
    ``finetune`` may also accept ``part``, a `FinetunePart`: the epochs to train are then a stretch of one longer
    fine-tune (ASHA runs its rungs so), trained on that fine-tune's learning-rate schedule and batches; a task
    without it trains each call as a fine-tune of its own.
    A task that trained its baseline itself may also offer ``early_checkpoint()``: an `EarlyCheckpoint`, the
    baseline's whole state dict (weights and buffers, loadable into ``baseline_model()``) from early in the very
    training run that produced it, or None when it has none (a model that came trained, a cache that predates
    it). The ``lottery`` pruner rewinds the surviving weights to it (Frankle et al., 2020) and otherwise to the
    trained baseline; a new copy each call (callers may mutate it).
    `calibration_batches` yields a few input batches for quantization observers and data-driven criteria.
    `example_input` gives an input batch of the given size for tracing and latency measurement. Inputs are
    one tensor, or a tuple of tensors for a model with several positional inputs (`ModelInputs`).
    """

    name: str

    def baseline_model(self) -> nn.Module: ...

    def evaluate(self, model: nn.Module, split: str = "test") -> float: ...

    def finetune(self, model: nn.Module, epochs: float, seed: int = 0) -> None: ...

    def calibration_batches(self) -> Iterator[ModelInputs]: ...

    def example_input(self, batch_size: int = 1) -> ModelInputs: ...


def load_task(ref: str, *, where: str = "task") -> Task:
    """Import a task from ``module.path:attribute``; an attribute that is callable is called once."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(where, f"{ref!r} is not an import path; expected 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(where, f"cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    if not hasattr(module, attr):
        raise UserError(where, f"module {module_name!r} has no attribute {attr!r}")
    task = getattr(module, attr)
    if not isinstance(task, Task) and callable(task):
        try:
            task = task()
        except Exception as exc:  # the user's factory: report it as their input, in one line
            raise UserError(
                where,
                f"{ref!r} is not a Task and calling it to build one failed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            ) from None
    if not isinstance(task, Task):
        raise UserError(where, f"{ref!r} is not a Task (needs baseline_model, evaluate, finetune, ...)")
    return task


def eval_mode(model: Callable[..., object]) -> None:
    """Put a module (a ScriptModule too) in eval mode; other callables (a runtime's compiled model) have none."""
    if isinstance(model, nn.Module):
        model.eval()


def checked_metric(task: Task, split: str, value: object) -> float:
    """`value`, the task's ``evaluate`` result on `split`, as a float; a `UserError` unless it is a finite number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(
            f"task {getattr(task, 'name', type(task).__name__)!r}: evaluate(model, {split!r})",
            f"returned {value!r} ({type(value).__name__}); it must return a finite number, higher is better "
            "(e.g. accuracy as a float)",
        )
    return float(value)


def checked_baseline(task: Task) -> tuple[nn.Module, ModelInputs]:
    """The task's baseline model and ``example_input(1)``, checked: the model is an ``nn.Module`` and the
    inputs a tensor or a tuple of tensors with batch size 1 (the written form of the protocol's rules), so a
    mistake there is a `UserError` naming it, not a crash inside tracing or pruning."""
    where = f"task {getattr(task, 'name', type(task).__name__)!r}"
    model = task.baseline_model()
    if not isinstance(model, nn.Module):
        raise UserError(f"{where}: baseline_model()", f"returned {type(model).__name__}; it must return an nn.Module")
    for size in (1, 2):
        inputs = task.example_input(size)
        parts = inputs if isinstance(inputs, tuple) else (inputs,)
        if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
            raise UserError(
                f"{where}: example_input({size})",
                f"returned {type(inputs).__name__}; it must return a tensor, or a tuple of tensors for a model "
                "with several inputs",
            )
        if any(p.dim() == 0 or p.shape[0] != size for p in parts):
            raise UserError(
                f"{where}: example_input({size})",
                f"returned shapes {[tuple(p.shape) for p in parts]}; every input's first dimension must be the "
                f"batch size {size}",
            )
    return model, task.example_input(1)


@dataclass(frozen=True)
class EarlyCheckpoint:
    """The baseline's state dict after `step` of the `steps` optimisation steps of the training that produced
    the trained baseline (step 0: its initialisation), what `Task.early_checkpoint` gives."""

    state: dict[str, torch.Tensor]
    step: int
    steps: int


@dataclass(frozen=True)
class FinetunePart:
    """The stretch of one fine-tune of `of` epochs that starts after `after` epochs of it: what a trial promoted
    to a higher ASHA rung trains, going on from its parent's weights. A task's ``finetune`` that accepts ``part``
    trains that stretch as the whole fine-tune would: its learning rate follows the whole fine-tune's schedule from
    there, and it draws the batches the whole fine-tune draws from there (the same ``seed``). So a fine-tune run
    in parts differs from one run at once only in the optimiser's moments, which start afresh with each part.

    Why: a promoted trial that restarts the schedule (back to the full rate, annealed again) ended 0.18 ± 0.14 pt
    below one fine-tune of the same length over 10 runs on MNIST ResNet-18 at 0.05 / 0.15 / 0.45 epoch; run as
    parts, 0.05 ± 0.21 pt (`experiments/bench_continuation.py`)."""

    after: float
    of: float


def finetune_schedule(
    epochs: float, steps_of: Callable[[float], int], part: FinetunePart | None
) -> tuple[int, int, int]:
    """(first step, steps to take, steps of the schedule) of `epochs` of fine-tuning, counted by the task's
    ``finetune_steps`` (`steps_of`): a fine-tune of its own, or the stretch `part` of a longer one."""
    if part is None:
        steps = steps_of(epochs)
        return 0, steps, steps
    first = steps_of(part.after)
    return first, max(0, steps_of(part.after + epochs) - first), steps_of(part.of)


def cache_dir() -> Path:
    """The folder for trained baselines and decoded data (``$AUTOCOMPRESS_CACHE``, default
    ``~/.cache/autocompress``), created if missing."""
    root = os.environ.get("AUTOCOMPRESS_CACHE") or Path.home() / ".cache" / "autocompress"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW at lr 1e-3, weight decay 1e-4: the fine-tuning optimiser of the adapters unless the user gives one."""
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


def train_steps(
    params: Iterable[nn.Parameter],
    loss_at: Callable[[int], torch.Tensor],
    *,
    steps: int,
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = default_optimizer,
    on_step: Callable[[], None] | None = None,
    first_step: int = 0,
    schedule_steps: int | None = None,
) -> None:
    """`steps` optimisation steps of `optimizer` with cosine decay of its learning rate to zero over
    `schedule_steps` (default `steps`), starting at step `first_step` of that schedule (a `FinetunePart`);
    ``loss_at(step)`` is the loss of step `step`, counted from the schedule's start.

    The one training loop of every task here, so each calls ``on_step`` the same way: after each optimiser
    step, while the step's gradients are still on the parameters (pruners and criteria rely on it); the
    number of ``on_step`` calls is exactly `steps`, what a task's ``finetune_steps`` must report.
    """
    total = max(1, steps if schedule_steps is None else schedule_steps)
    opt = optimizer(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (1 + math.cos(math.pi * (first_step + i) / total)) / 2)
    for step in range(first_step, first_step + steps):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step()


def train_minibatches(
    params: Iterable[nn.Parameter],
    examples: int,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    on_step: Callable[[], None] | None = None,
    first_step: int = 0,
    schedule_steps: int | None = None,
) -> None:
    """AdamW with cosine decay (`train_steps`) for `steps` optimisation steps over shuffled mini-batches of
    `examples` examples (epoch after epoch, the last one cut short); ``loss_of(indices)`` is the loss of the
    batch at those indices. From `first_step` of a schedule of `schedule_steps`, the batches are those the whole
    schedule draws from that step on."""
    gen = torch.Generator().manual_seed(seed)

    def batches() -> Iterator[torch.Tensor]:
        while True:
            order = torch.randperm(examples, generator=gen)
            yield from (order[start : start + batch_size] for start in range(0, examples, batch_size))

    indices = batches()
    for _ in range(first_step):
        next(indices)
    train_steps(
        params,
        lambda _: loss_of(next(indices)),
        steps=steps,
        optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=weight_decay),
        on_step=on_step,
        first_step=first_step,
        schedule_steps=schedule_steps,
    )


@dataclass
class SupervisedTask:
    """A classification task on tensors held in memory.

    The baseline is trained once with `train_recipe` and cached under ``$AUTOCOMPRESS_CACHE`` (default
    ``~/.cache/autocompress``), keyed by a hash of the model factory's source code, the weights it returns
    (so a factory that loads a checkpoint file retrains when the file is replaced), the data and the recipe:
    a change to any of them retrains and nothing stale is ever loaded. With ``train_epochs=0`` the factory's
    model is the baseline as it is (a pre-trained model): no step is taken and nothing is cached.

    While the baseline trains, its state after the fraction `rewind_fraction` of the training steps is kept as
    its `EarlyCheckpoint` (``early_checkpoint()``, for lottery rewinding; 0 keeps the initialisation), cached
    beside it (the same name with ``-stepK`` before the suffix). The fraction is not part of the cache key (the
    baseline does not depend on it): a baseline cached before early checkpoints were kept, or under another
    fraction, loads as it is with no early checkpoint (None; delete its file to retrain with one), since an
    early state re-derived by another run might not lie on the trajectory that produced the cached weights.
    """

    name: str
    model_factory: Callable[[], nn.Module]
    data: dict[str, tuple[torch.Tensor, torch.Tensor]]
    train_epochs: float = 30
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    rewind_fraction: float = 0.05
    _baseline_state: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False)
    _early: EarlyCheckpoint | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rewind_fraction < 1:
            raise UserError(
                f"task {self.name!r}: rewind_fraction",
                f"is {self.rewind_fraction!r}; it must be at least 0 (the initialisation) and below 1",
            )

    # -- protocol -----------------------------------------------------------------------------------------
    def baseline_model(self) -> nn.Module:
        if self._baseline_state is None:
            self._baseline_state, self._early = self._load_or_train()
        model = self.model_factory()
        model.load_state_dict(copy.deepcopy(self._baseline_state))
        return model.eval()

    def early_checkpoint(self) -> EarlyCheckpoint | None:
        """The baseline's state after `rewind_fraction` of its training steps, or None when this task did not
        train its baseline (``train_epochs=0``) or its cached baseline has none (see the class docstring)."""
        if self._baseline_state is None:
            self._baseline_state, self._early = self._load_or_train()
        return copy.deepcopy(self._early)

    @torch.no_grad()
    def evaluate(self, model: Callable[..., torch.Tensor], split: str = "test") -> float:
        eval_mode(model)
        x, y = self.data[split]
        correct = 0
        for start in range(0, len(x), 256):
            logits = model(x[start : start + 256])
            correct += int((logits.argmax(dim=1) == y[start : start + 256]).sum())
        return correct / len(x)

    def finetune(
        self,
        model: nn.Module,
        epochs: float,
        seed: int = 0,
        on_step: Callable[[], None] | None = None,
        part: FinetunePart | None = None,
    ) -> None:
        self._train(model, epochs, self.finetune_lr, seed, on_step, part)

    def finetune_steps(self, epochs: float) -> int:
        """Optimisation steps of `finetune` for `epochs`: fractional epochs train on that fraction of batches
        (at least one step; none for 0 epochs)."""
        return 0 if epochs <= 0 else max(1, round(epochs * -(-len(self.data["train"][0]) // self.batch_size)))

    def calibration_batches(self) -> Iterator[torch.Tensor]:
        x, _ = self.data["train"]
        for start in range(0, min(len(x), 512), 128):
            yield x[start : start + 128]

    def example_input(self, batch_size: int = 1) -> ModelInputs:
        return take(self.data["test"][0], batch_size)

    # -- training -----------------------------------------------------------------------------------------
    def _train(
        self,
        model: nn.Module,
        epochs: float,
        lr: float,
        seed: int,
        on_step: Callable[[], None] | None = None,
        part: FinetunePart | None = None,
    ) -> None:
        """Adam with cosine decay; fractional epochs train on that fraction of the batches; none for 0 epochs;
        a `part` of a longer fine-tune on its schedule and batches."""
        if epochs <= 0:
            return
        seed_everything(seed)
        x, y = self.data["train"]
        first, steps, total = finetune_schedule(epochs, self.finetune_steps, part)
        model.train()
        train_minibatches(
            model.parameters(),
            len(x),
            lambda idx: nn.functional.cross_entropy(model(x[idx]), y[idx]),
            steps=steps,
            batch_size=self.batch_size,
            lr=lr,
            weight_decay=self.weight_decay,
            seed=seed,
            on_step=on_step,
            first_step=first,
            schedule_steps=total,
        )
        model.eval()

    def cache_key(self) -> str:
        digest = hashlib.sha256()
        digest.update(inspect.getsource(inspect.getmodule(self.model_factory) or self.model_factory).encode())
        seed_everything(self.seed)  # a factory that initialises at random gives the same weights every time
        for name, tensor in self.model_factory().state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        for split in sorted(self.data):
            for tensor in self.data[split]:
                digest.update(tensor.numpy().tobytes())
        digest.update(repr((self.train_epochs, self.lr, self.batch_size, self.weight_decay, self.seed)).encode())
        digest.update(torch.__version__.encode())
        return digest.hexdigest()[:20]

    def _load_or_train(self) -> tuple[dict[str, torch.Tensor], EarlyCheckpoint | None]:
        """The trained baseline's state dict and its early checkpoint, from the cache or trained (and cached)."""
        if self.train_epochs <= 0:
            return self.model_factory().state_dict(), None
        steps = self.finetune_steps(self.train_epochs)
        step = round(self.rewind_fraction * steps)
        path = cache_dir() / f"{self.name}-{self.cache_key()}.pt"
        early_path = path.with_name(f"{path.stem}-step{step}.pt")
        if path.exists():
            early = (
                EarlyCheckpoint(torch.load(early_path, weights_only=True), step, steps) if early_path.exists() else None
            )
            return torch.load(path, weights_only=True), early
        seed_everything(self.seed)
        model = self.model_factory()
        early_state = copy.deepcopy(model.state_dict())  # step 0; replaced after the step-th step
        taken = 0

        def keep_early() -> None:
            nonlocal taken, early_state
            taken += 1
            if taken == step:
                early_state = copy.deepcopy(model.state_dict())

        self._train(model, self.train_epochs, self.lr, self.seed, keep_early)
        state = model.state_dict()
        _save_atomic(early_path, early_state)  # first: a baseline file written here always has its early one
        _save_atomic(path, state)
        return state, EarlyCheckpoint(early_state, step, steps)


def _save_atomic(path: Path, state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file renamed over it: concurrent workers never read half a
    file."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
