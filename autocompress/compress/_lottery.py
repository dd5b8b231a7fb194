"""`lottery`: iterative magnitude pruning with weight rewinding (Frankle & Carbin, 2019), fitted into one
fine-tuning budget: rewinding to weights from early in the baseline's training where the task kept them
(Frankle et al., 2020, "Stabilizing the Lottery Ticket Hypothesis" / "Linear Mode Connectivity and the Lottery
Ticket Hypothesis"), otherwise to the trained weights (what Renda et al., 2020 compare as fine-tuning)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from autocompress.compress._sparse_base import Masks, Trainer, UnstructuredPruner, layer_weights

#: `LotteryPruner.rewound_to` with ``early=False``: the trained baseline as compressed, or a continued
#: trial's parent
LOTTERY_TRAINED = "the weights the trial started from (pruner lottery_trained)"


class LotteryPruner(UnstructuredPruner):
    """`rounds` rounds, each of ``epochs / rounds``: prune each layer to ``final * r / rounds`` by the magnitudes
    reached so far (the trained weights in the first round), rewind the whole model (weights and buffers) to
    the trainer's `RewindPoint`, keep the zeros, and fine-tune. The survivors of the last round are the
    winning ticket, trained once more.

    The rewind point is the task's early checkpoint made to fit the model (the same channels removed, the same
    quantization prepared) when the task kept one, else the model as the pruner was given it (the trained
    baseline as compressed). `rewound_to` (the trial's ``rewound_to`` metric) names the one used and, for the
    trained weights, why no early one was. ``early=False`` (the ``lottery_trained`` pruner) always rewinds to
    the trained weights: with a fine-tuning budget of a few epochs that is often the more accurate ticket
    (`experiments/bench_rewind.py`), since early weights need most of the original training again.
    """

    name = "lottery"

    def __init__(self, rounds: int = 3, early: bool = True) -> None:
        self.rounds = rounds
        self.early = early
        self.rewound_to = ""

    def run(self, model: nn.Module, targets: Mapping[str, float], trainer: Trainer, epochs: float) -> None:
        point = trainer.rewind_point() if self.early else None
        state = point.state if point is not None and point.state is not None else model.state_dict()
        start = copy.deepcopy(dict(state))
        self.rewound_to = point.label if point is not None else LOTTERY_TRAINED
        masks = Masks(layer_weights(model, targets))
        for round_ in range(1, self.rounds + 1):
            masks.prune({name: final * round_ / self.rounds for name, final in targets.items()})
            model.load_state_dict(start)  # copies into the same tensors: the masks still point at them
            masks.apply()
            trainer.train(model, epochs / self.rounds, masks.apply)

    def metrics(self) -> dict[str, Any]:
        return {"rewound_to": self.rewound_to}
