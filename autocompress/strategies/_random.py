"""`random`: uniform sampling of every per-layer choice; the baseline every strategy must beat."""

from __future__ import annotations

import numpy as np

from autocompress.space import Space
from autocompress.strategies._base import Controller, Outcome, Proposal


class RandomController(Controller):
    name = "random"
    description = "uniform random per-layer sparsity and bits; the baseline to beat (no knobs)"

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._rng = np.random.default_rng(seed)

    def _ask(self, number: int) -> Proposal:
        params = {
            f"{layer}/{setting}": choices[int(self._rng.integers(len(choices)))]
            for layer, setting, choices in self.space.dimensions()
        }
        return Proposal(number, self.space.policy_from_params(params), self.full_fidelity)

    def _tell(self, number: int, outcome: Outcome) -> None:
        """Random search ignores outcomes."""
