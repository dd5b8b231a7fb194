"""`lottery`: iterative magnitude pruning with rewinding (Frankle & Carbin, 2019; rewinding to trained
weights as in Renda et al., 2020), fitted into one fine-tuning budget."""

from __future__ import annotations

import copy
from collections.abc import Mapping

from torch import nn

from autocompress.compress._sparse_base import Masks, Trainer, UnstructuredPruner, layer_weights


class LotteryPruner(UnstructuredPruner):
    """`rounds` rounds, each of ``epochs / rounds``: prune each layer to ``final * r / rounds`` by the magnitudes
    reached so far, rewind the whole model (weights and buffers) to the trained baseline it started from, keep
    the zeros, and fine-tune. The survivors of the last round are the winning ticket, trained once more."""

    name = "lottery"

    def __init__(self, rounds: int = 3) -> None:
        self.rounds = rounds

    def run(self, model: nn.Module, targets: Mapping[str, float], trainer: Trainer, epochs: float) -> None:
        baseline = copy.deepcopy(model.state_dict())
        masks = Masks(layer_weights(model, targets))
        for round_ in range(1, self.rounds + 1):
            masks.prune({name: final * round_ / self.rounds for name, final in targets.items()})
            model.load_state_dict(baseline)  # copies into the same tensors: the masks still point at them
            masks.apply()
            trainer.train(model, epochs / self.rounds, masks.apply)
