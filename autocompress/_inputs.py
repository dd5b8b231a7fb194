"""Model inputs as the pipeline passes them: one tensor, or a tuple of tensors for a model with several
positional inputs (``model(input_ids, attention_mask)``).

A task's ``example_input`` and ``calibration_batches`` give either form; discovery, pruning (torch-pruning
takes a tuple as positional inputs), tracing (``torch.jit.trace`` the same), FX quantization, calibration,
the MACs counters and latency call the model through `call_model`, so no part assumes a single tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import torch

#: one tensor, or a tuple of tensors: the model's positional inputs
ModelInputs: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...]


def as_args(inputs: ModelInputs) -> tuple[torch.Tensor, ...]:
    """The positional arguments of a model call."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def call_model(model: Callable[..., Any], inputs: ModelInputs) -> Any:
    return model(*as_args(inputs))


def batch_size_of(inputs: ModelInputs) -> int:
    """The batch dimension of the inputs (the first input's first dimension)."""
    return int(as_args(inputs)[0].shape[0])


def take(inputs: ModelInputs, count: int) -> ModelInputs:
    """The first `count` examples of a batch, repeated when it holds fewer."""
    parts = as_args(inputs)
    reps = -(-count // parts[0].shape[0])
    out = tuple(p.repeat(reps, *([1] * (p.dim() - 1)))[:count].clone() for p in parts)
    return out if isinstance(inputs, tuple) else out[0]


def concat(batches: list[ModelInputs]) -> ModelInputs:
    """Batches joined along the batch dimension (each input separately)."""
    if isinstance(batches[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*map(as_args, batches), strict=True))
    return torch.cat([as_args(b)[0] for b in batches])
