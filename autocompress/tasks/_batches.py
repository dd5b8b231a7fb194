"""Batches as users' DataLoaders give them, turned into what the pipeline passes: model inputs (`ModelInputs`,
a tensor or a tuple of positional tensors) and targets.

A batch is ``(inputs, targets)``, where inputs are a tensor, a tuple or list of tensors, or a dict of tensors
by the model's ``forward`` argument names; or a dict holding the inputs by name and the targets under one
key (Hugging Face style, ``labels``). Named inputs become positional in the order of ``forward``'s
parameters, so tracing, torch-pruning and FX quantization see plain positional tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autocompress._inputs import ModelInputs
from autocompress.errors import UserError


def forward_names(model: nn.Module) -> list[str]:
    """The names of ``model.forward``'s parameters, in order (``self`` excluded)."""
    return [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def positional(named: Mapping[str, torch.Tensor], order: Sequence[str], where: str) -> ModelInputs:
    """Named inputs as positional ones in `order` (the model's ``forward`` parameters); they must fill its
    first parameters, since a skipped one cannot be passed positionally to a traced model."""
    names = list(order[: len(named)])
    if sorted(names) != sorted(named):
        raise UserError(
            where,
            f"batch inputs {sorted(named)} are not the first parameters of the model's forward {list(order)}; "
            "give the inputs as a tuple in forward's order, or only forward's leading arguments",
        )
    values = tuple(named[name] for name in names)
    return values[0] if len(values) == 1 else values


def split_batch(batch: Any, order: Sequence[str], target_key: str, where: str) -> tuple[ModelInputs, Any]:
    """``(inputs, targets)`` of one DataLoader batch (see the module docstring for the accepted forms)."""
    if isinstance(batch, Mapping):
        if target_key not in batch:
            raise UserError(where, f"a dict batch needs its targets under {target_key!r}; it has {sorted(batch)}")
        named = {k: v for k, v in batch.items() if k != target_key}
        return positional(named, order, where), batch[target_key]
    if isinstance(batch, list | tuple) and len(batch) == 2:
        inputs, targets = batch
        if isinstance(inputs, Mapping):
            return positional(inputs, order, where), targets
        if isinstance(inputs, list | tuple):
            return tuple(inputs), targets
        if isinstance(inputs, torch.Tensor):
            return inputs, targets
    raise UserError(
        where,
        f"a batch is {type(batch).__name__}; expected (inputs, targets) with inputs a tensor, a tuple of tensors "
        f"or a dict by forward's argument names, or a dict with the targets under {target_key!r}",
    )
