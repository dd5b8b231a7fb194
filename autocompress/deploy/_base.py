"""The deploy contract: a `Runtime` lowers a compressed PyTorch model to its own artefact and runs it."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from autocompress.space import Policy

#: what a model takes: one tensor, or a tuple of tensors (named ``input_0``, ``input_1``, ... in ONNX)
Inputs = torch.Tensor | tuple[torch.Tensor, ...]


class LoweringError(RuntimeError):
    """A model cannot be lowered to a runtime, or the runtime cannot compile it; the message says which op or
    step. Raised for the baseline (before any trial: the caller turns it into bad input) or for one candidate
    (that runtime is left out of the trial, or the trial fails when no runtime is left)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


#: words of a runtime error's line that names what it cannot do (OpenVINO's first line is only where it checked)
_REASONS = ("no conversion rule", "not support", "unsupported", "not implemented", "could not find")


def runtime_error(runtime: str, step: str, exc: BaseException) -> LoweringError:
    """A runtime's own error (its converter or compiler) as a `LoweringError` of one line: the line that says
    what it cannot do (e.g. OpenVINO's "No conversion rule found for operations: Det-17"), else the first."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    reason = next((line for line in lines if any(word in line.lower() for word in _REASONS)), None)
    text = reason or (lines[0] if lines else type(exc).__name__)
    return LoweringError(runtime, f"cannot {step} the model: {text[:300]}")


def as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def input_names(inputs: Inputs) -> list[str]:
    return [f"input_{i}" for i in range(len(as_tuple(inputs)))]


@dataclass(frozen=True)
class Artefact:
    """What a runtime lowered: its files by name (``model.onnx``; ``model.xml`` + ``model.bin``; ``model.pt``)
    and the inputs it takes (name, shape with the batch dimension as -1, dtype)."""

    runtime: str
    files: dict[str, bytes]
    inputs: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def size_bytes(self) -> int:
        return sum(len(data) for data in self.files.values())


def describe_inputs(example: Inputs) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"name": name, "shape": [-1, *x.shape[1:]], "dtype": str(x.dtype).removeprefix("torch.")}
        for name, x in zip(input_names(example), as_tuple(example), strict=True)
    )


class CompiledModel(nn.Module):
    """A loaded artefact as something `Task.evaluate` and `compare_latency` call like the PyTorch model:
    torch tensors in (one per model input), torch tensors out. It holds no parameters; `eval` and `train`
    do nothing to the compiled graph."""

    def forward(self, *inputs: torch.Tensor) -> Any:
        outputs = self.run([x.detach().contiguous().numpy() for x in inputs])
        tensors = [torch.from_numpy(np.array(out, copy=True)) for out in outputs]
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class Runtime(ABC):
    """A deploy target (OpenVINO, ONNX Runtime, TorchScript): where a compressed model is measured and shipped.

    Life cycle, driven by `autocompress.runtime.run_trial` and `autocompress.export` (never by the runtime):

    1. `available` is asked when a space file is validated: a runtime named there that is not installed is bad
       input before any trial runs.
    2. `lower` is called once per task for the float baseline (identity policy) and once per trial for the
       candidate, in the worker, with the pruned and fine-tuned model (for a quantizer that trains: the model
       `prepare_quantization` returned, fine-tuned), its policy, example inputs and the task's calibration
       batches. It must not change `model` (lowering copies it) and returns an `Artefact`: the runtime's own
       files, with int8 exactly in the policy's quantized layers, the quantizer's scales, and float layers
       left float. It raises `LoweringError` naming the op or step when it cannot.
    3. `load` turns an artefact into a `CompiledModel` with a fixed thread count; every call gives a fresh
       session (as a server that loads the file has), used once for accuracy and once for latency.
    4. `export` writes the artefact's files; `server_code` is the Python a server would run to load those
       files with the runtime's own API, which `autocompress.export.verify` runs in a fresh interpreter.

    A runtime holds no state; it is cheap to construct and safe to share.
    """

    #: name in space files (``measure.runtimes``) and in metric names (``latency_ms@NAME``)
    name: ClassVar[str]
    #: the PyPI distribution that provides it
    package: ClassVar[str]
    #: the module whose presence means it is installed
    module: ClassVar[str]

    def available(self) -> bool:
        try:
            importlib.import_module(self.module)
        except ImportError:
            return False
        return True

    def version(self) -> str:
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return "not installed"

    @abstractmethod
    def lower(self, model: nn.Module, policy: Policy, example: Inputs, calibration: Iterable[Inputs]) -> Artefact: ...

    @abstractmethod
    def load(self, artefact: Artefact, threads: int = 1) -> nn.Module: ...

    @abstractmethod
    def server_code(self) -> str:
        """Python that defines ``model`` from the files in folder ``out`` with this runtime's API only, taking
        and returning torch tensors (so that a task's ``evaluate`` can call it)."""
