"""`level`: one-shot magnitude pruning, then masked fine-tuning (Han et al., 2015, without the iteration)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from autocompress.compress._sparse_base import Masks, Trainer, UnstructuredPruner, layer_weights


class LevelPruner(UnstructuredPruner):
    """Zero the smallest-magnitude weights of each layer at once, then fine-tune with the zeros held."""

    name = "level"

    def run(self, model: nn.Module, targets: Mapping[str, float], trainer: Trainer, epochs: float) -> None:
        masks = Masks(layer_weights(model, targets))
        masks.prune(targets)
        trainer.train(model, epochs, masks.apply)
