"""Digits tasks that fail on purpose, for crash-safety tests with real processes.

Which trial fails is chosen by the fine-tune seed (study seed + trial number); the baseline (no fine-tune)
never fails. ``AUTOCOMPRESS_FAULT_DIR`` holds marker files so a fault can happen once, then not again.
``stop-db`` runs the command line in ``AUTOCOMPRESS_FAULT_DB_STOP`` (stopping a test's own PostgreSQL server) once,
in the middle of the trial.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from experiments.tasks.digits import task as digits


class FaultyTask:
    def __init__(self, fault: str, trials: tuple[int, ...]) -> None:
        self.name = f"faulty-{fault}"
        self.fault = fault
        self.trials = trials

    def __getattr__(self, attr: str):  # everything but finetune behaves like the digits task
        return getattr(digits, attr)

    def baseline_model(self) -> nn.Module:
        return digits.baseline_model()

    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        return digits.evaluate(model, split)

    def calibration_batches(self):
        return digits.calibration_batches()

    def example_input(self, batch_size: int = 1):
        return digits.example_input(batch_size)

    def finetune(self, model: nn.Module, epochs: float, seed: int = 0) -> None:
        if seed in self.trials:
            if self.fault == "raise":
                raise RuntimeError(f"injected failure in trial seed {seed}")
            if self.fault == "stop-db":
                marker = Path(os.environ["AUTOCOMPRESS_FAULT_DIR"]) / f"db-stopped-{seed}"
                if not marker.exists():
                    marker.touch()
                    subprocess.run(shlex.split(os.environ["AUTOCOMPRESS_FAULT_DB_STOP"]), check=True)
            if self.fault == "hog":  # far beyond any sane limit, 256 MB at a time, each page touched
                hoard = [torch.ones(2**26) for _ in range(64)]
                raise AssertionError(f"allocated {len(hoard) / 4:g} GB: no memory limit stopped this trial")
            if self.fault == "hang":
                time.sleep(3600)
            if self.fault in ("die", "die-once"):
                marker = Path(os.environ["AUTOCOMPRESS_FAULT_DIR"]) / f"died-{seed}"
                if self.fault == "die" or not marker.exists():
                    marker.touch()
                    os.kill(os.getpid(), signal.SIGKILL)
        digits.finetune(model, epochs, seed)


raising = FaultyTask("raise", (1, 3))
hanging = FaultyTask("hang", (1,))
dies_once = FaultyTask("die-once", (1,))
dies_always = FaultyTask("die", (2,))
stops_db = FaultyTask("stop-db", (1,))
hogs_memory = FaultyTask("hog", (1,))


class _RunningMax(nn.Module):
    """``cummax``: an op neither ONNX exporter supports (torch 2.13), so no ONNX runtime can take the model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cummax(dim=1).values


class UnexportableTask(FaultyTask):
    """The digits task whose model ends in `_RunningMax`: TorchScript runs it, ONNX export fails naming the op."""

    def baseline_model(self) -> nn.Module:
        return nn.Sequential(digits.baseline_model(), _RunningMax()).eval()


unexportable = UnexportableTask("unexportable", ())
