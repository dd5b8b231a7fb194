"""The real digits task, wrapped to record every fine-tuning call: its seed (the study seed plus the trial number),
epochs, optimiser steps, and the model's weights when it starts and ends. The evidence that a promoted ASHA trial
goes on from its parent's fine-tuned weights for exactly the extra steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.task import FinetunePart
from experiments.tasks.digits import task as digits


@dataclass(frozen=True)
class Call:
    seed: int
    epochs: float
    steps: int
    start: dict[str, torch.Tensor]
    end: dict[str, torch.Tensor]
    part: FinetunePart | None = None


#: every fine-tuning call in this process, in order
CALLS: list[Call] = []


def call_of(number: int) -> Call:
    """The one fine-tuning call of trial `number` of a study with seed 0 (its trainer's seed is the number)."""
    (call,) = [c for c in CALLS if c.seed == number]
    return call


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class FinetuneRecordingTask:
    name = "finetune-recording-digits"

    def __getattr__(self, attr: str) -> Any:  # everything but finetune is the digits task's own
        return getattr(digits, attr)

    def finetune(
        self, model: nn.Module, epochs: float, seed: int = 0, on_step: Callable[[], None] | None = None
    ) -> None:
        _recorded(model, epochs, seed, on_step, None)


class PartRecordingTask(FinetuneRecordingTask):
    """The same, with a ``finetune`` that trains a stretch of a longer fine-tune (`FinetunePart`), as the
    built-in tasks can: ASHA's rungs then run as parts of one fine-tune."""

    name = "part-recording-digits"

    def finetune(
        self,
        model: nn.Module,
        epochs: float,
        seed: int = 0,
        on_step: Callable[[], None] | None = None,
        part: FinetunePart | None = None,
    ) -> None:
        _recorded(model, epochs, seed, on_step, part)


def _recorded(
    model: nn.Module, epochs: float, seed: int, on_step: Callable[[], None] | None, part: FinetunePart | None
) -> None:
    """The digits task's fine-tune of `model`, recorded in `CALLS`."""
    start, steps = _weights(model), 0

    def step() -> None:
        nonlocal steps
        steps += 1
        if on_step is not None:
            on_step()

    digits.finetune(model, epochs, seed=seed, on_step=step, part=part)
    CALLS.append(Call(seed, epochs, steps, start, _weights(model), part))


task = FinetuneRecordingTask()
part_task = PartRecordingTask()
