"""The examples of docs/extending.md, as a task module: the digits task plus a criterion and a strategy.
`tests/test_extending.py` checks that this file and the page say the same thing."""

from __future__ import annotations

import torch
import torch_pruning as tp

from autocompress.compress import register_criterion
from autocompress.strategies import Controller, Outcome, Proposal, register_strategy
from experiments.tasks.digits import task  # noqa: F401  (the task the space file names)


class RandomImportance(tp.importance.Importance):
    """Scores channels at random: a sanity baseline for the data-driven criteria."""

    def __call__(self, group, **kwargs):
        return torch.rand(len(group[0].idxs))


register_criterion("random", RandomImportance)


@register_strategy
class GreedySparsity(Controller):
    """Starts dense and raises every layer's sparsity one step per trial while results stay feasible."""

    name = "greedy"
    description = "raise all sparsities one step per trial until infeasible (knob: start_step)"
    knobs = {"start_step": 0}

    def __init__(self, space, seed=0):
        super().__init__(space, seed)
        self.step = int(self.options["start_step"])

    def _ask(self, number):
        params = {
            f"{layer}/{setting}": choices[min(self.step, len(choices) - 1)]
            for layer, setting, choices in self.space.dimensions()
            if setting == "channel_sparsity"
        }
        return Proposal(number, self.space.policy_from_params(params), self.full_fidelity)

    def _tell(self, number, outcome: Outcome):
        if outcome.feasible:
            self.step += 1
