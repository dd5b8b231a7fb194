"""The real (trivial) digits task, wrapped to record every split it is evaluated on, in order: the evidence that the
search selects on the validation split and reads the test split only once it is over."""

from __future__ import annotations

from typing import Any

from torch import nn

from experiments.tasks.trivial import task as digits

#: what happened, in order: ("evaluate", split) for each evaluation, ("trial", number) after each recorded trial
EVENTS: list[tuple[str, Any]] = []


class SplitRecordingTask:
    name = "split-recording-trivial"

    def __getattr__(self, attr: str) -> Any:  # everything but evaluate is the digits task's own
        return getattr(digits, attr)

    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        EVENTS.append(("evaluate", split))
        return digits.evaluate(model, split)


task = SplitRecordingTask()
