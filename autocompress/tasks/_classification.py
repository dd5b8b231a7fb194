"""`ClassificationTask`: a trained classifier and the user's train/val/test DataLoaders as a `Task`.

The baseline is the user's model as given (a module, or a factory, optionally with a checkpoint file of its
state dict): it is never retrained. Fine-tuning runs the user's loss with the user's optimiser over the train
loader, one ``on_step`` per optimiser step, and ``finetune_steps`` is that exact count. ``evaluate`` takes any
callable model (an ``nn.Module``, the trial's TorchScript module, a runtime's compiled model).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress._inputs import ModelInputs, batch_size_of, call_model, concat, take
from autocompress.errors import UserError
from autocompress.task import (
    FinetunePart,
    default_optimizer,
    eval_mode,
    finetune_schedule,
    seed_everything,
    train_steps,
)
from autocompress.tasks._batches import forward_names, split_batch

#: how many examples `example_input` draws from the validation loader before repeating them
EXAMPLE_POOL = 64


def top1_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The share of examples whose highest output is the target class (the default metric)."""
    return float((outputs.argmax(dim=1) == targets).float().mean())


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss."""
    return nn.functional.cross_entropy(outputs, targets)


def trained_model(
    model: nn.Module | Callable[[], nn.Module], checkpoint: str | os.PathLike[str] | None, where: str
) -> nn.Module:
    """A fresh copy of the user's trained model in eval mode: `model` itself (deep-copied: callers mutate
    it) or what the factory returns, with `checkpoint` loaded into it if given."""
    built = model() if not isinstance(model, nn.Module) and callable(model) else model
    if not isinstance(built, nn.Module):
        raise UserError(f"{where}: model", f"is {type(built).__name__}; give an nn.Module or a factory returning one")
    built = copy.deepcopy(built)
    if checkpoint is not None:
        load_checkpoint(built, checkpoint, where)
    return built.eval()


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], where: str) -> nn.Module:
    """Load a state dict file (``torch.save(model.state_dict(), path)``; ``{"state_dict": ...}`` too) into
    `model`. Read afresh on every call, so a replaced file is never silently reused."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{where}: checkpoint", f"{str(file)!r} is not a file; give the path of a saved state dict")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{where}: checkpoint {str(file)!r}", f"does not fit the model ({first})") from None
    return model


@dataclass
class ClassificationTask:
    """A trained classifier with its data, as a `Task`.

    `model` is the trained ``nn.Module`` (copied, never modified) or a callable returning one; `checkpoint`,
    if given, is a state dict file loaded into it. `train`, `val` and `test` are iterables of batches
    (``torch.utils.data.DataLoader``): ``(inputs, targets)`` with inputs a tensor, a tuple of tensors (a model
    with several inputs) or a dict by forward's argument names, or a dict with the targets under
    `target_key`. `loss(outputs, targets)` trains (default cross-entropy); `metric(outputs, targets)` judges,
    higher is better, over a whole split at once (default top-1 accuracy). `optimizer(params)` builds the
    fine-tuning optimiser (default AdamW, lr 1e-3); its learning rate decays by cosine over the fine-tune
    steps. One epoch is one pass over `train`. Calibration uses the first `calibration_batches_count`
    training batches; example inputs come from the validation loader.
    """

    model: nn.Module | Callable[[], nn.Module]
    train: Iterable[Any]
    val: Iterable[Any]
    test: Iterable[Any]
    checkpoint: str | os.PathLike[str] | None = None
    loss: Callable[[Any, Any], torch.Tensor] = cross_entropy
    metric: Callable[[Any, Any], float] = top1_accuracy
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = default_optimizer
    calibration_batches_count: int = 4
    target_key: str = "labels"
    name: str = "classification"
    _order: list[str] | None = field(default=None, init=False, repr=False)
    _examples: ModelInputs | None = field(default=None, init=False, repr=False)

    # -- protocol -----------------------------------------------------------------------------------------
    def baseline_model(self) -> nn.Module:
        model = trained_model(self.model, self.checkpoint, f"task {self.name!r}")
        if self._order is None:
            self._order = forward_names(model)
        return model

    @torch.no_grad()
    def evaluate(self, model: Callable[..., Any], split: str = "test") -> float:
        eval_mode(model)
        outputs, targets = [], []
        for inputs, target in self._batches(split):
            outputs.append(call_model(model, inputs))
            targets.append(target)
        if not outputs:
            raise UserError(f"task {self.name!r}: {split}", "the loader gave no batch")
        return float(self.metric(torch.cat(outputs), torch.cat(targets)))

    def finetune(
        self,
        model: nn.Module,
        epochs: float,
        seed: int = 0,
        on_step: Callable[[], None] | None = None,
        part: FinetunePart | None = None,
    ) -> None:
        """`finetune_steps(epochs)` steps of the user's loss and optimiser over the train loader (restarted
        as often as needed), calling `on_step` after each optimiser step. A `part` of a longer fine-tune skips
        the batches the fine-tune took before it (they are loaded and dropped: a loader cannot seek)."""
        first, steps, total = finetune_schedule(epochs, self.finetune_steps, part)
        if steps == 0:
            return
        seed_everything(seed)
        batches = self._cycle("train")
        for _ in range(first):
            next(batches)
        model.train()

        def loss_at(_: int) -> torch.Tensor:
            inputs, target = next(batches)
            return self.loss(call_model(model, inputs), target)

        train_steps(
            model.parameters(),
            loss_at,
            steps=steps,
            optimizer=self.optimizer,
            on_step=on_step,
            first_step=first,
            schedule_steps=total,
        )
        model.eval()

    def finetune_steps(self, epochs: float) -> int:
        """Optimiser steps `finetune` takes for `epochs`: that many passes over the train loader (fractional
        epochs: that share of its batches, at least one step; none for 0 epochs)."""
        if epochs <= 0:
            return 0
        if not isinstance(self.train, Sized):
            raise UserError(f"task {self.name!r}: train", "the train loader has no len(); fine-tuning needs one")
        return max(1, round(epochs * len(self.train)))

    def early_checkpoint(self) -> None:
        """None: the model comes trained, and nothing of the run that trained it is known (the ``lottery``
        pruner then rewinds to the trained baseline, `autocompress.task.Task`)."""
        return None

    def calibration_batches(self) -> Iterator[ModelInputs]:
        for index, (inputs, _) in enumerate(self._batches("train")):
            if index >= self.calibration_batches_count:
                break
            yield inputs

    def example_input(self, batch_size: int = 1) -> ModelInputs:
        """`batch_size` real validation inputs (the first ones, repeated if the split is smaller)."""
        if self._examples is None:
            pool: list[ModelInputs] = []
            for inputs, _ in self._batches("val"):
                pool.append(inputs)
                if sum(batch_size_of(b) for b in pool) >= EXAMPLE_POOL:
                    break
            if not pool:
                raise UserError(f"task {self.name!r}: val", "the loader gave no batch")
            self._examples = concat(pool)
        return take(self._examples, batch_size)

    # -- batches ------------------------------------------------------------------------------------------
    def _batches(self, split: str) -> Iterator[tuple[ModelInputs, Any]]:
        loaders = {"train": self.train, "val": self.val, "test": self.test}
        if split not in loaders:
            raise UserError(f"task {self.name!r}", f"unknown split {split!r}; the splits are train, val and test")
        if self._order is None:
            self.baseline_model()
        assert self._order is not None
        for batch in loaders[split]:
            yield split_batch(batch, self._order, self.target_key, f"task {self.name!r}: {split} loader")

    def _cycle(self, split: str) -> Iterator[tuple[ModelInputs, Any]]:
        while True:
            yield from self._batches(split)
