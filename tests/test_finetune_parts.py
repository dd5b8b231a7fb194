"""A fine-tune run in parts (`FinetunePart`, ASHA's rungs): each part follows the whole fine-tune's learning-rate
schedule and draws its batches, so the parts together see what one run sees, step for step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from autocompress.task import FinetunePart, finetune_schedule, train_minibatches, train_steps
from autocompress.tasks import FunctionTask

STEPS = 10


def _recorded(parts: Iterable[tuple[int, int]], total: int = STEPS) -> list[tuple[int, float]]:
    """(step, learning rate) of every step of `train_steps` run once per (first step, steps) of `parts`."""
    seen: list[tuple[int, float]] = []
    weight = nn.Parameter(torch.ones(1))
    optimizers: list[torch.optim.Optimizer] = []  # one a part; the last is the one training

    def make(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        optimizers.append(torch.optim.SGD(params, lr=1.0))
        return optimizers[-1]

    def loss_at(step: int) -> torch.Tensor:
        seen.append((step, optimizers[-1].param_groups[0]["lr"]))
        return (weight * 0.0).sum()

    for first, steps in parts:
        train_steps([weight], loss_at, steps=steps, optimizer=make, first_step=first, schedule_steps=total)
    return seen


def test_the_parts_follow_the_whole_schedule_step_for_step() -> None:
    whole = _recorded([(0, STEPS)])
    assert [s for s, _ in whole] == list(range(STEPS))
    assert whole[0][1] == 1.0 and whole[5][1] == 0.5 and whole[-1][1] < 0.03  # cosine from 1 towards 0
    parts = _recorded([(0, 3), (3, 2), (5, 5)])
    assert [s for s, _ in parts] == list(range(STEPS))
    assert [lr for _, lr in parts] == [lr for _, lr in whole]
    restarted = _recorded([(0, 3), (0, 7)], total=STEPS)  # a second run from step 0 starts the schedule again
    assert restarted[3][1] == 1.0


def test_a_part_draws_the_batches_the_whole_fine_tune_draws_from_its_first_step() -> None:
    def batches(parts: Iterable[tuple[int, int]]) -> list[list[int]]:
        drawn: list[list[int]] = []
        weight = nn.Parameter(torch.ones(1))
        for first, steps in parts:
            train_minibatches(
                [weight],
                50,
                lambda idx: drawn.append(idx.tolist()) or (weight * 0.0).sum(),
                steps=steps,
                batch_size=8,
                lr=1e-3,
                weight_decay=0.0,
                seed=3,
                first_step=first,
                schedule_steps=STEPS,
            )
        return drawn

    whole = batches([(0, STEPS)])
    assert len(whole) == STEPS and len({tuple(b) for b in whole}) == STEPS  # 7 batches an epoch, then a new order
    assert batches([(0, 4), (4, 6)]) == whole


def test_a_parts_steps_are_counted_by_the_tasks_own_steps_per_epoch() -> None:
    def per_epoch(epochs: float) -> int:
        return round(epochs * 40)

    assert finetune_schedule(0.05, per_epoch, FinetunePart(0.0, 0.45)) == (0, 2, 18)
    assert finetune_schedule(0.10, per_epoch, FinetunePart(0.05, 0.45)) == (2, 4, 18)
    assert finetune_schedule(0.30, per_epoch, FinetunePart(0.15, 0.45)) == (6, 12, 18)  # 2 + 4 + 12 = the whole 18
    assert finetune_schedule(0.45, per_epoch, None) == (0, 18, 18)  # a fine-tune of its own


def test_a_function_task_passes_train_loss_the_whole_fine_tunes_step_numbers() -> None:
    steps: list[int] = []
    model = nn.Linear(2, 1)

    def train_loss(module: nn.Module, step: int) -> torch.Tensor:
        steps.append(step)
        return module(torch.ones(1, 2)).sum()

    task = FunctionTask(model, lambda m, split: 1.0, torch.ones(1, 2), train_loss=train_loss, steps_per_epoch=10)
    task.finetune(task.baseline_model(), 0.3, part=FinetunePart(0.0, 1.0))
    task.finetune(task.baseline_model(), 0.7, part=FinetunePart(0.3, 1.0))
    assert steps == list(range(10))
