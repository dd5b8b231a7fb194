"""`FunctionTask`: a `Task` from plain functions, for what `ClassificationTask` does not fit (regression,
distillation, detection heads, a metric over whole sequences ...)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress._inputs import ModelInputs, take
from autocompress.errors import UserError
from autocompress.task import (
    FinetunePart,
    checked_metric,
    default_optimizer,
    eval_mode,
    finetune_schedule,
    seed_everything,
    train_steps,
)
from autocompress.tasks._classification import trained_model


@dataclass
class FunctionTask:
    """A trained model and plain functions, as a `Task`.

    `model` is the trained ``nn.Module`` (copied, never modified) or a callable returning one; `checkpoint`, if
    given, a state dict file loaded into it. ``evaluate_fn(model, split)`` returns the metric on ``"val"`` or
    ``"test"`` (a number, higher is better); `model` may be any callable (the trial's TorchScript module).
    `example` is a real input batch (a tensor, or a tuple of tensors for several inputs): example inputs of
    any batch size are its examples, repeated as needed. `calibration` is a few input batches (a list or a
    DataLoader of inputs; default: `example`). ``train_loss(model, step)`` returns the training loss of
    optimisation step `step` (draw the step's batch yourself); fine-tuning takes `steps_per_epoch` steps per
    epoch with `optimizer(params)` (default AdamW, lr 1e-3, cosine decay), calling ``on_step`` after each.
    Without `train_loss` only policies that need no fine-tuning (post-training quantization) can run.
    """

    model: nn.Module | Callable[[], nn.Module]
    evaluate_fn: Callable[[Callable[..., Any], str], float]
    example: ModelInputs
    calibration: Iterable[ModelInputs] | None = None
    train_loss: Callable[[nn.Module, int], torch.Tensor] | None = None
    steps_per_epoch: int = 1
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = default_optimizer
    checkpoint: str | os.PathLike[str] | None = None
    name: str = "functions"

    def baseline_model(self) -> nn.Module:
        return trained_model(self.model, self.checkpoint, f"task {self.name!r}")

    @torch.no_grad()
    def evaluate(self, model: Callable[..., Any], split: str = "test") -> float:
        eval_mode(model)
        return checked_metric(self, split, self.evaluate_fn(model, split))

    def finetune(
        self,
        model: nn.Module,
        epochs: float,
        seed: int = 0,
        on_step: Callable[[], None] | None = None,
        part: FinetunePart | None = None,
    ) -> None:
        """`finetune_steps(epochs)` steps of ``train_loss``; a `part` of a longer fine-tune passes
        ``train_loss`` that fine-tune's step numbers and follows its schedule."""
        first, steps, total = finetune_schedule(epochs, self.finetune_steps, part)
        if steps == 0:
            return
        if self.train_loss is None:
            raise UserError(
                f"task {self.name!r}: train_loss",
                "is not given, so the task cannot fine-tune; give train_loss(model, step), or search only "
                "post-training quantization (no channel_sparsity, no weight_sparsity, no training quantizer)",
            )
        seed_everything(seed)
        loss = self.train_loss
        model.train()
        train_steps(
            model.parameters(),
            lambda step: loss(model, step),
            steps=steps,
            optimizer=self.optimizer,
            on_step=on_step,
            first_step=first,
            schedule_steps=total,
        )
        model.eval()

    def finetune_steps(self, epochs: float) -> int:
        """`steps_per_epoch` steps per epoch (fractional epochs: that share, at least one; none for 0)."""
        return 0 if epochs <= 0 else max(1, round(epochs * self.steps_per_epoch))

    def early_checkpoint(self) -> None:
        """None: the model comes trained, and nothing of the run that trained it is known (the ``lottery``
        pruner then rewinds to the trained baseline, `autocompress.task.Task`)."""
        return None

    def calibration_batches(self) -> Iterator[ModelInputs]:
        yield from self.calibration if self.calibration is not None else [self.example]

    def example_input(self, batch_size: int = 1) -> ModelInputs:
        return take(self.example, batch_size)
